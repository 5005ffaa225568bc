//! Seccomp user notification (`SCMP_ACT_NOTIFY`, `listenerPath`,
//! `listenerMetadata`) beside runc: a small agent in this file receives the
//! listener and the container's state from the runtime, and answers every
//! `mkdir` of the container itself (success without a directory, or an
//! errno of its choosing), for `run` and for `exec`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_integration::*;
use serde_json::{json, Value};

/// The agent's answer to a `mkdir`.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// The call returns 0, and nothing is made.
    Success,
    /// The call fails with this errno.
    Errno(i32),
}

// The kernel's seccomp_notif and seccomp_notif_resp (linux/seccomp.h).
#[repr(C)]
#[derive(Default)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

// _IOWR('!', 0, struct seccomp_notif) and _IOWR('!', 1, struct seccomp_notif_resp).
const SECCOMP_IOCTL_NOTIF_RECV: u64 = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: u64 = 0xc018_2101;
const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;
const MKDIR: i32 = 83;
const MKDIRAT: i32 = 258;

/// A seccomp agent on a unix socket of its own: takes every listener sent
/// to it and answers the calls they carry until stopped.
struct Agent {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Value>>>,
}

impl Agent {
    fn start(answer: Answer) -> Agent {
        let path = std::env::temp_dir()
            .join(unique("berth-agent"))
            .with_extension("sock");
        let socket = UnixListener::bind(&path).expect("bind the agent's socket");
        socket.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || serve(socket, answer, &stopping));
        Agent {
            path,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the agent; returns the states it received, in order.
    fn finish(mut self) -> Vec<Value> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("agent thread"))
            .unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(socket: UnixListener, answer: Answer, stop: &AtomicBool) -> Vec<Value> {
    let mut states = Vec::new();
    let mut listeners: Vec<OwnedFd> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok((stream, _)) = socket.accept() {
            stream.set_nonblocking(false).expect("blocking");
            let (text, fd) = receive_with_fd(&stream);
            states.push(serde_json::from_slice(&text).expect("the state is JSON"));
            listeners.push(fd);
        }
        let mut polls: Vec<libc::pollfd> = listeners
            .iter()
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll over a live array of pollfd.
        unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 20) };
        let mut gone = Vec::new();
        for (i, p) in polls.iter().enumerate() {
            if p.revents & libc::POLLIN != 0 {
                answer_one(p.fd, answer);
            } else if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            listeners.remove(i);
        }
    }
    states
}

fn answer_one(listener: i32, answer: Answer) {
    let mut notif = Notif::default();
    // SAFETY: the ioctl fills the zeroed struct it is given.
    let rc = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV as _, &mut notif) };
    if rc != 0 {
        // The caller went away (ENOENT) or was interrupted: nothing to answer.
        return;
    }
    let mut resp = NotifResp {
        id: notif.id,
        val: 0,
        error: 0,
        flags: 0,
    };
    match (notif.nr, answer) {
        (MKDIR | MKDIRAT, Answer::Success) => {}
        (MKDIR | MKDIRAT, Answer::Errno(errno)) => resp.error = -errno,
        _ => resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE,
    }
    // SAFETY: the ioctl reads the struct it is given.
    unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND as _, &resp) };
}

fn notify_bundle(agent: &Agent, nnp: bool, flags: &[&str]) -> Bundle {
    let mut bundle = Bundle::new("notify");
    bundle.config["root"]["readonly"] = json!(false);
    bundle.config["process"]["noNewPrivileges"] = json!(nnp);
    bundle.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": agent.path,
        "listenerMetadata": "berth-test-agent",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": flags,
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    bundle
}

const MKDIR_SCRIPT: &str = "mkdir /tmp/made; echo rc=$?; test -d /tmp/made && echo exists; true";

/// What the container said (stdout and stderr) and what the agent received.
fn run_under_agent(
    rt: &Runtime,
    answer: Answer,
    nnp: bool,
    flags: &[&str],
) -> (String, String, Vec<Value>) {
    let agent = Agent::start(answer);
    let mut bundle = notify_bundle(&agent, nnp, flags);
    bundle.args(&["/bin/sh", "-c", MKDIR_SCRIPT]);
    let id = unique("notify");
    let out = rt.run(&bundle, &id);
    let states = agent.finish();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        states,
    )
}

fn check_state(state: &Value, status: &str, id_prefix: &str) {
    assert_eq!(state["fds"], json!(["seccompFd"]), "{state}");
    assert_eq!(state["metadata"], "berth-test-agent", "{state}");
    assert_eq!(state["state"]["status"], status, "{state}");
    assert!(
        state["state"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with(id_prefix)),
        "{state}"
    );
    assert!(state["pid"].as_i64().is_some_and(|p| p > 0), "{state}");
    assert!(
        state["state"]["pid"].as_i64().is_some_and(|p| p > 0),
        "{state}"
    );
    assert!(state["state"]["bundle"].is_string(), "{state}");
}

#[test]
fn run_an_agent_answers_mkdir_with_success_or_its_errno_as_under_runc() {
    if !can_run() {
        return;
    }
    for (answer, expected) in [
        (Answer::Errno(libc::ENOMEDIUM), "rc=1\n"),
        (Answer::Success, "rc=0\n"),
    ] {
        for rt in [Runtime::berth(), Runtime::runc()] {
            // berth also without no_new_privs (the filter then goes on
            // before the capabilities are dropped) and with TSYNC (which
            // the kernel takes with a listener only beside TSYNC_ESRCH).
            let variants: &[(bool, &[&str])] = if rt.kind == Kind::Berth {
                &[
                    (false, &[]),
                    (true, &[]),
                    (true, &["SECCOMP_FILTER_FLAG_TSYNC"]),
                ]
            } else {
                &[(true, &[])]
            };
            for &(nnp, flags) in variants {
                let (stdout, stderr, states) = run_under_agent(&rt, answer, nnp, flags);
                let what = format!(
                    "{:?} {answer:?} nnp={nnp} {flags:?}: {stdout}{stderr}",
                    rt.kind
                );
                // "exists" never shows: the agent, not the kernel, answered.
                assert_eq!(stdout, expected, "{what}");
                if let Answer::Errno(_) = answer {
                    assert!(stderr.contains("No medium found"), "{what}");
                }
                assert_eq!(states.len(), 1, "{what}: {states:?}");
                check_state(&states[0], "creating", "notify-");
            }
        }
    }
}

#[test]
fn exec_hands_its_own_listener_to_the_agent_as_under_runc() {
    if !can_run() {
        return;
    }
    for rt in [Runtime::berth(), Runtime::runc()] {
        let agent = Agent::start(Answer::Errno(libc::ENOMEDIUM));
        let mut bundle = notify_bundle(&agent, true, &[]);
        bundle.args(&["/bin/sleep", "60"]);
        bundle.write();
        let id = unique("notify-exec");
        let out = rt.exec(&[
            "run",
            "--detach",
            "--bundle",
            bundle.dir.to_str().unwrap(),
            &id,
        ]);
        assert!(out.status.success(), "{:?}: {}", rt.kind, text(&out));
        let out = rt.exec(&["exec", &id, "/bin/sh", "-c", MKDIR_SCRIPT]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let _ = rt.exec(&["delete", "--force", &id]);
        let states = agent.finish();
        let what = format!("{:?}: {stdout}{stderr}", rt.kind);
        assert_eq!(stdout, "rc=1\n", "{what}");
        assert!(stderr.contains("No medium found"), "{what}");
        // One listener from the init, one from the exec'd process.
        assert_eq!(states.len(), 2, "{what}: {states:?}");
        check_state(&states[0], "creating", "notify-exec-");
        check_state(&states[1], "running", "notify-exec-");
        // The exec's listener is its own process's, the state's pid the init's.
        assert_ne!(states[1]["pid"], states[1]["state"]["pid"], "{states:?}");
        assert_eq!(states[0]["pid"], states[1]["state"]["pid"], "{states:?}");
    }
}

#[test]
fn notify_profiles_runc_refuses_are_refused_with_its_words() {
    if !can_run() {
        return;
    }
    let listener = std::env::temp_dir().join(unique("berth-agent-none"));
    for (syscalls, default, words) in [
        (
            json!([{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]),
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_NOTIFY cannot be used for the write syscall",
        ),
        (
            json!([]),
            "SCMP_ACT_NOTIFY",
            "SCMP_ACT_NOTIFY cannot be used as default action",
        ),
        // Nobody listens there.
        (
            json!([{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]),
            "SCMP_ACT_ALLOW",
            "failed to connect with seccomp agent",
        ),
    ] {
        for rt in [Runtime::berth(), Runtime::runc()] {
            let mut bundle = Bundle::new("notify-bad");
            bundle.config["linux"]["seccomp"] = json!({
                "defaultAction": default,
                "listenerPath": listener,
                "syscalls": syscalls,
            });
            let id = unique("notify-bad");
            let out = rt.run(&bundle, &id);
            assert!(!out.status.success(), "{:?}: {}", rt.kind, text(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(words),
                "{:?} {words}: {}",
                rt.kind,
                text(&out)
            );
            assert!(rt.state(&id).is_none(), "{:?}: {id} left behind", rt.kind);
        }
    }
}
