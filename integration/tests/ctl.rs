//! berthctl end to end: the real `berthctl` binary against a real
//! `berth-imaged` (with this workspace's shim and runtime) and, for `pull`,
//! a real `docker-registry`. Images come in through `berthctl load`; the
//! interactive cases run under a pty (`script`), as a person's shell would.
//! Every test removes its containers (`rm -f`) and stops its daemon when it
//! ends, failing or not.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_integration::imaged::*;
use berth_integration::{
    foreground_line, mounts_under, on_terminal, shims_where, target_dir, text, unique,
};
use serde_json::Value;

const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "true", "false", "sleep", "id", "head", "tr", "tty", "stty", "test",
    "touch", "wc", "hostname", "env", "pwd", "mkdir", "grep",
];

/// The files `busybox_layer` holds, as `image mount` must show them.
fn busybox_paths() -> BTreeSet<String> {
    let mut paths: BTreeSet<String> = [
        "bin",
        "bin/busybox",
        "etc",
        "etc/passwd",
        "etc/group",
        "tmp",
        "data",
        "data/seed.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    paths.extend(APPLETS.iter().map(|a| format!("bin/{a}")));
    paths
}

/// An OCI layout tar of the busybox image named `name`.
fn busybox_archive(name: &str) -> Vec<u8> {
    busybox_layout("ctl-busybox", APPLETS, name).archive()
}

/// A daemon running containers through this workspace's shim and runtime.
struct Env {
    daemon: Daemon,
    runtime_root: PathBuf,
}

impl Env {
    fn start() -> Env {
        Env::start_with_runtime(&target_dir().join("berth"))
    }

    /// A daemon whose shims drive `berth`, the runtime (or a wrapper of it).
    fn start_with_runtime(berth: &Path) -> Env {
        assert!(
            ctl_bin().exists(),
            "{} is missing: cargo build --workspace first",
            ctl_bin().display()
        );
        let runtime_root = std::env::temp_dir().join(unique("berth-ctl-runtime"));
        let shim = target_dir().join("containerd-shim-berth-v2");
        let args = [
            "--shim".to_string(),
            shim.display().to_string(),
            "--runtime".to_string(),
            berth.display().to_string(),
            "--runtime-root".to_string(),
            runtime_root.display().to_string(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Env {
            daemon: Daemon::start_with(&refs),
            runtime_root,
        }
    }

    fn address(&self) -> String {
        self.daemon.socket.display().to_string()
    }

    /// `berthctl --address SOCK ARGS` with `stdin` as input; fails the test
    /// instead of hanging it.
    fn ctl_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_ctl(&self.daemon.socket, args, stdin)
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with_input(args, b"")
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        ctl_succeeded(&self.daemon, args, &self.ctl(args))
    }

    /// `berthctl ARGS` on a terminal of its own, `input` typed there.
    /// `setup` runs in the same shell first (e.g. `stty cols 100`).
    fn ctl_on_terminal(&self, setup: &str, args: &[&str], input: &[u8]) -> Output {
        self.ctl_on_terminal_typed(setup, args, &[(Duration::from_millis(1500), input)])
    }

    /// As [`Env::ctl_on_terminal`], each input typed after its delay.
    fn ctl_on_terminal_typed(
        &self,
        setup: &str,
        args: &[&str],
        inputs: &[(Duration, &[u8])],
    ) -> Output {
        let address = self.address();
        let mut all = vec!["--address", address.as_str()];
        all.extend_from_slice(args);
        let line = foreground_line(&ctl_bin().to_string_lossy(), &all);
        let command = if setup.is_empty() {
            line
        } else {
            format!("{setup}; {line}")
        };
        // Typed slowly: the shell must be up first.
        on_terminal(&command, inputs, Duration::from_secs(5))
    }

    fn load_busybox(&self, name: &str) {
        let out = self.ctl_with_input(&["load"], &busybox_archive(name));
        assert!(out.status.success(), "load: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(name),
            "{}",
            text(&out)
        );
    }

    fn inspect(&self, name: &str) -> Value {
        let out = self.ok(&["inspect", name]);
        let docs: Value = serde_json::from_str(&out).expect("inspect prints JSON");
        docs[0].clone()
    }

    /// `berthctl run --rm --name NAME ARGS`, left running (its output
    /// discarded).
    fn spawn_run_rm(&self, name: &str, args: &[&str]) -> std::process::Child {
        Command::new(ctl_bin())
            .args(["--address", &self.address(), "run", "--rm", "--name", name])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berthctl run")
    }

    /// The container's status as `inspect` shows it; null once it is gone.
    fn status(&self, name: &str) -> Value {
        let out = self.ctl(&["inspect", name]);
        serde_json::from_slice::<Value>(&out.stdout).map_or(Value::Null, |v| v[0]["status"].clone())
    }

    fn until(&self, what: &str, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}\n{}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let out = self.ctl(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.ctl(&["rm", "-f", id.trim()]);
        }
        let _ = std::fs::remove_dir_all(&self.runtime_root);
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A container removed at its exit (`run --rm`, `run -d --rm`) has its
/// rootfs mounted `volatile`: its unmount makes no sync of the whole upper
/// filesystem. A kept container's is not: its writes must survive a crash.
#[test]
fn only_containers_removed_at_their_exit_skip_syncing_their_writes() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let root_line = |args: &[&str]| -> String {
        let out = env.ctl(args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        stdout(&out)
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or_else(|| panic!("no root in {}", stdout(&out)))
            .to_string()
    };
    let mountinfo = ["cat", "/proc/self/mountinfo"];
    let removed = root_line(&[&["run", "--rm", "busybox:ctl"][..], &mountinfo].concat());
    assert!(removed.contains("volatile"), "{removed}");
    let kept = root_line(&[&["run", "--name", "kept", "busybox:ctl"][..], &mountinfo].concat());
    assert!(!kept.contains("volatile"), "{kept}");
    let out = env.ctl(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "gone",
        "busybox:ctl",
        "sleep",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let detached = root_line(&[&["exec", "gone"][..], &mountinfo].concat());
    assert!(detached.contains("volatile"), "{detached}");
    assert_eq!(
        env.ctl(&["rm", "-f", "gone", "kept"]).status.code(),
        Some(0)
    );
    // `rm -f` of a `run -d --rm` container races its own removal at its
    // exit; whichever wins, the client's removal succeeds.
    for round in 0..5 {
        let id = env.ok(&["run", "-d", "--rm", "busybox:ctl", "sleep", "60"]);
        let out = env.ctl(&["rm", "-f", id.trim()]);
        assert_eq!(out.status.code(), Some(0), "round {round}: {}", text(&out));
    }
}

/// The containers the runtime still has state for (under its root, or its
/// root's namespace directory).
fn runtime_states(env: &Env) -> Vec<PathBuf> {
    [env.runtime_root.clone(), env.runtime_root.join("berth")]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|path| path.join("state.json").exists())
        .collect()
}

/// Every task's teardown is done: no bundle, no runtime state.
fn torn_down(env: &Env) -> bool {
    env.daemon.bundles().is_empty() && runtime_states(env).is_empty()
}

/// No container is left, nor anything of one.
fn nothing_left(env: &Env) -> bool {
    env.ok(&["ps", "-a", "-q"]).is_empty() && torn_down(env)
}

/// The pid the shim serving the container of `bundle` wrote there.
fn shim_pid_in(bundle: &Path) -> i32 {
    std::fs::read_to_string(bundle.join("shim.pid"))
        .expect("the shim's pid file")
        .trim()
        .parse()
        .expect("a pid")
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// `run --rm` answers once the exit is known and the container's records
/// are gone (its name is free at once); its task's teardown, rootfs and
/// directories follow. Eight clients at once, each reusing one name, lose
/// no run, and nothing is left once the teardowns end.
#[test]
fn run_rm_frees_the_name_at_once_and_leaves_nothing_behind() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    std::thread::scope(|scope| {
        for client in 0..8 {
            let env = &env;
            scope.spawn(move || {
                let name = format!("again-{client}");
                for round in 0..4 {
                    let out =
                        env.ctl(&["run", "--rm", "--name", &name, "busybox:ctl", "echo", "ok"]);
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "client {client} round {round}: {}",
                        text(&out)
                    );
                    assert_eq!(stdout(&out), "ok\n");
                }
            });
        }
    });
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");
    env.until("the teardowns to end", || torn_down(&env));
    let left = mounts_under(&env.daemon.root);
    assert!(
        left.is_empty(),
        "mounts left under {}: {left:?}",
        env.daemon.root.display()
    );
}

/// The daemon removes a `run --rm` container at its exit, before the exit
/// reaches the client (docker's auto-remove): a client whose output pipe
/// closed early (`| head`) still exits with the container's status and
/// leaves nothing, with no removal of its own; a client killed while its
/// container runs leaves it to be removed at its exit all the same.
#[test]
fn run_rm_containers_are_removed_by_the_daemon_at_their_exit() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let piped = r#""$0" --address "$1" run --rm busybox:ctl sh -c 'seq 1 100000; exit 3' | head -n 1
echo "status ${PIPESTATUS[0]}""#;
    let out = Command::new("bash")
        .args(["-c", piped])
        .arg(ctl_bin())
        .arg(env.address())
        .output()
        .expect("bash");
    assert_eq!(stdout(&out), "1\nstatus 3\n", "{}", text(&out));
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");

    let mut client = env.spawn_run_rm("lonely", &["busybox:ctl", "sleep", "2"]);
    let running = |env: &Env| env.status("lonely") == "running";
    env.until("the container to run", || running(&env));
    // Its bundle is in the daemon's state directory (a tmpfs where /run is
    // one), root's alone; a kept container's is in the daemon's root.
    let state_bundles = env.daemon.root.join("state/bundles");
    let [bundle] = env
        .daemon
        .bundles()
        .try_into()
        .unwrap_or_else(|b| panic!("{b:?}"));
    assert!(bundle.starts_with(&state_bundles), "{}", bundle.display());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&state_bundles).unwrap().permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o700);
    let kept = env.ok(&["create", "busybox:ctl", "true"]);
    assert!(env
        .daemon
        .root
        .join("lib/bundles")
        .join(kept.trim())
        .is_dir());
    env.ok(&["rm", kept.trim()]);
    client.kill().expect("kill the client");
    let _ = client.wait();
    assert!(running(&env), "the container should outlive its client");
    env.until("its removal at its exit", || nothing_left(&env));
}

/// `run` (not detached) is one call to the daemon: create, attach, start.
/// Its failures still say which step failed, with docker's exit codes: a
/// create that fails makes nothing (125), a start that fails leaves the
/// container created (127 for a missing command), unless it was `--rm`.
#[test]
fn a_run_creates_attaches_and_starts_in_one_call_and_says_which_step_failed() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let names = |env: &Env| -> String {
        let listed: Value =
            serde_json::from_str(&env.ok(&["ps", "-a", "--format", "json"])).unwrap();
        let mut names: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("?"))
            .collect();
        names.sort();
        names.iter().map(|n| format!("{n}\n")).collect()
    };
    env.ok(&["create", "--name", "taken", "busybox:ctl", "true"]);
    let out = env.ctl(&["run", "--rm", "--name", "taken", "busybox:ctl", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        stderr(&out).contains("cannot create the container") && stderr(&out).contains("taken"),
        "{}",
        text(&out)
    );
    assert_eq!(names(&env), "taken\n");

    let out = env.ctl(&["run", "--name", "kept", "busybox:ctl", "/no/such/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(stderr(&out).contains("cannot start"), "{}", text(&out));
    assert_eq!(names(&env), "kept\ntaken\n");

    let out = env.ctl(&[
        "run",
        "--rm",
        "--name",
        "gone",
        "busybox:ctl",
        "/no/such/command",
    ]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(!names(&env).contains("gone"), "{}", names(&env));

    // Output from the first instant is not lost, and the status is the
    // process's.
    let out = env.ctl(&[
        "run",
        "--rm",
        "busybox:ctl",
        "sh",
        "-c",
        "echo first; exit 4",
    ]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(4), "first\n")
    );
    env.ok(&["rm", "kept", "taken"]);
}

/// A runtime that runs berth after `prelude` (shell, "$@" are the
/// arguments); in a directory the returned guard removes.
fn runtime_wrapper(name: &str, prelude: &str) -> (TempDir, PathBuf) {
    let dir = TempDir(std::env::temp_dir().join(unique(name)));
    std::fs::create_dir_all(&dir.0).unwrap();
    let wrapper = dir.0.join("berth");
    let script = format!(
        "#!/bin/sh\n{prelude}\nexec {} \"$@\"\n",
        target_dir().join("berth").display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    (dir, wrapper)
}

/// The daemon's shims start a container without stdin at Create, with one
/// runtime process (`run --detach`, no `start`); a container with stdin is
/// created, then started once the daemon holds its stdin. Either way the
/// events come in their order: create, start, exit.
#[test]
fn the_daemons_shim_starts_a_container_at_create_unless_it_has_stdin() {
    if !can_run_images() {
        return;
    }
    let (dir, wrapper) = runtime_wrapper(
        "berth-verbs",
        "for a; do case \"$a\" in run|create|start|delete) echo \"$a\" >> \"$(dirname \"$0\")/verbs\"; break;; esac; done",
    );
    let verbs = || std::fs::read_to_string(dir.0.join("verbs")).unwrap_or_default();
    let env = Env::start_with_runtime(&wrapper);
    env.load_busybox("busybox:ctl");
    let mut events = Command::new(ctl_bin())
        .args(["--address", &env.address(), "events", "--format", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("events");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        env.ok(&["run", "--rm", "busybox:ctl", "echo", "hi"]),
        "hi\n"
    );
    env.until("the runtime's delete", || verbs().lines().count() == 2);
    assert_eq!(verbs(), "run\ndelete\n");
    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let seen = stdout(&events.wait_with_output().unwrap());
    let topics: Vec<String> = seen
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("an event as JSON")["topic"].to_string())
        .filter(|t| t.starts_with("\"/tasks/"))
        .collect();
    assert_eq!(
        topics,
        [
            r#""/tasks/create""#,
            r#""/tasks/start""#,
            r#""/tasks/exit""#,
            r#""/tasks/delete""#
        ],
        "{seen}"
    );
    std::fs::remove_file(dir.0.join("verbs")).unwrap();
    let out = env.ctl_with_input(&["run", "--rm", "-i", "busybox:ctl", "cat"], b"typed\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "typed\n");
    env.until("the runtime's delete", || verbs().lines().count() == 3);
    assert_eq!(verbs(), "create\nstart\ndelete\n");
}

/// The spare shims of `env`'s daemon: `-id spare-…` on their command line,
/// and its socket as their `-address`.
fn spare_shims(env: &Env) -> Vec<i32> {
    let address = env.address();
    shims_where(|args| {
        args.windows(2)
            .any(|w| w[0] == "-address" && w[1] == address)
            && args
                .windows(2)
                .any(|w| w[0] == "-id" && w[1].starts_with("spare-"))
    })
    .into_iter()
    // The servers, not a `shim start` that has not yet forked one and
    // ended (same command line): a server leads its own session.
    .filter(|pid| session_of(*pid) == Some(*pid))
    .collect()
}

/// The session id of process `pid`, from `/proc/PID/stat`.
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // From field 3: state, ppid, pgrp, session.
    berth_runtime::state::stat_fields(&stat)?
        .nth(3)?
        .parse()
        .ok()
}

/// The scheduling policy of each thread of `pid`.
fn policies(pid: i32) -> Vec<i32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    threads
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<i32>().ok())
        // SAFETY: reads a thread's policy.
        .map(|tid| unsafe { libc::sched_getscheduler(tid) })
        .collect()
}

/// The daemon keeps one shim started ahead of need (at the idle priority
/// until it is connected, then at the daemon's): a container's start
/// takes it (the container's shim is the spare's process, its bundle holds
/// the spare's address, and it serves the container from there on), the
/// next spare follows, and a daemon killed with SIGKILL takes its spare
/// with it while the container's shim stays; a spare that died meanwhile is
/// passed over.
#[test]
fn a_spare_shim_serves_the_next_container_and_goes_with_its_daemon() {
    if !can_run_images() {
        return;
    }
    let mut env = Env::start();
    env.load_busybox("busybox:ctl");
    env.until("a spare shim", || spare_shims(&env).len() == 1);
    let spare = spare_shims(&env)[0];
    // Connected, it waits at the daemon's policy, every thread of it.
    env.until("the spare at the daemon's policy", || {
        !policies(spare).is_empty() && policies(spare).iter().all(|p| *p == libc::SCHED_OTHER)
    });
    env.ok(&[
        "run",
        "-d",
        "--name",
        "taker",
        "busybox:ctl",
        "sleep",
        "100",
    ]);
    let [bundle] = env.daemon.bundles().try_into().expect("one bundle");
    let shim = shim_pid_in(&bundle);
    assert_eq!(
        shim, spare,
        "the container's shim is the spare that was waiting"
    );
    // Taken, it and the container run at the daemon's policy.
    let init: i32 = std::fs::read_to_string(bundle.join("init.pid"))
        .expect("the init's pid file")
        .trim()
        .parse()
        .expect("a pid");
    for (what, pid) in [("shim", shim), ("init", init)] {
        let taken = policies(pid);
        assert!(
            !taken.is_empty() && taken.iter().all(|p| *p == libc::SCHED_OTHER),
            "the {what}'s threads: {taken:?}"
        );
    }
    let address = std::fs::read_to_string(bundle.join("address")).expect("the address file");
    assert!(
        address.starts_with("unix:///run/containerd/s/berth-"),
        "{address}"
    );
    // Written by the daemon, as every file of its store: root's alone.
    let mode = std::fs::metadata(bundle.join("address"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600,
        "the address file's mode"
    );
    assert_eq!(env.ok(&["exec", "taker", "echo", "served"]), "served\n");
    // The taken shim keeps its `-id spare-…`: the next is the other one.
    let others = |env: &Env| -> Vec<i32> {
        spare_shims(env)
            .into_iter()
            .filter(|pid| *pid != shim)
            .collect()
    };
    env.until("the next spare", || others(&env).len() == 1);
    let next = others(&env)[0];

    env.daemon.kill9();
    env.until("the spare to go with its daemon", || !alive(next));
    assert!(alive(shim), "the container's shim went with the daemon");
    env.daemon.spawn();
    assert_eq!(env.ok(&["exec", "taker", "echo", "again"]), "again\n");
    env.ok(&["rm", "-f", "taker"]);
    env.until("the container's shim to end", || !alive(shim));
    env.until("one spare for the new daemon", || {
        spare_shims(&env).len() == 1
    });

    // A spare that died before it was taken (killed by hand, or by the OOM
    // killer) is passed over: the container gets a shim of its own.
    let dead = spare_shims(&env)[0];
    let socket = std::fs::read_to_string(env.daemon.root.join("state/spare-shim/address"))
        .expect("the spare's address");
    let socket = PathBuf::from(socket.trim().trim_start_matches("unix://"));
    assert!(socket.exists(), "{}", socket.display());
    // SAFETY: kill on the pid of the spare this test's daemon started.
    unsafe { libc::kill(dead, libc::SIGKILL) };
    env.until("the killed spare to be gone", || !alive(dead));
    assert_eq!(
        env.ok(&["run", "--rm", "busybox:ctl", "echo", "served"]),
        "served\n"
    );
    assert!(!spare_shims(&env).contains(&dead));
    assert!(
        !socket.exists(),
        "the dead spare's socket {} stayed",
        socket.display()
    );
}

/// A `run --rm` whose daemon is killed while the container runs has lost
/// the client that would remove it: the daemon's next start adopts the
/// running container (its unsynced run state notwithstanding), which is
/// then removed at its exit.
#[test]
fn a_run_rm_outliving_its_daemon_is_removed_at_its_exit() {
    if !can_run_images() {
        return;
    }
    let mut env = Env::start();
    env.load_busybox("busybox:ctl");
    let mut client = env.spawn_run_rm("orphan", &["busybox:ctl", "sleep", "4"]);
    let status = |env: &Env| env.status("orphan");
    env.until("the container to run", || status(&env) == "running");
    env.daemon.kill9();
    let _ = client.wait();
    env.daemon.spawn();
    assert_eq!(status(&env), "running", "{}", env.daemon.log());
    env.until("the adopted container's removal", || nothing_left(&env));
}

/// A daemon killed between a `run --rm`'s answer and the end of its task's
/// teardown (here held by a runtime whose `delete` is slow) finds at its
/// next start a bundle whose record is gone and whose shim still runs: it
/// ends the shim, lets it clean up after the runtime, and removes the
/// bundle.
#[test]
fn a_daemon_killed_during_a_run_rm_teardown_ends_it_at_its_next_start() {
    if !can_run_images() {
        return;
    }
    let (_dir, wrapper) = runtime_wrapper(
        "berth-slow-delete",
        "for a; do [ \"$a\" = delete ] && sleep 2 && break; done",
    );
    let mut env = Env::start_with_runtime(&wrapper);
    env.load_busybox("busybox:ctl");
    let out = env.ctl(&["run", "--rm", "--name", "crash", "busybox:ctl", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Answered while the runtime's delete still sleeps.
    let [bundle] = env
        .daemon
        .bundles()
        .try_into()
        .unwrap_or_else(|b: Vec<PathBuf>| {
            panic!(
                "one bundle should still be there: {b:?}\n{}",
                env.daemon.log()
            )
        });
    let shim = shim_pid_in(&bundle);
    assert!(alive(shim), "the shim {shim} should still run");
    env.daemon.kill9();
    env.daemon.spawn();
    env.until("the orphaned task to be ended", || {
        !alive(shim) && torn_down(&env)
    });
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");
    // The name stayed free.
    env.ok(&["run", "--rm", "--name", "crash", "busybox:ctl", "true"]);
    // That run's teardown, answered before it too, sleeps in the slow
    // delete: a test that ended now would leave it to remove its cgroups
    // with the daemon's root already gone.
    env.until("the second run to be torn down", || torn_down(&env));
}

/// A reboot empties the daemon's state directory (a tmpfs, where the
/// bundles of containers removed at their exit live) and ends every
/// process, while the records in the root remain: here a `run -d --rm`
/// container's and a `run --rm` one's. The daemon's next start removes
/// both, their snapshots too, and leaves no mount and no name taken.
#[test]
fn a_reboot_leaves_no_run_rm_container_behind() {
    if !can_run_images() {
        return;
    }
    let mut env = Env::start();
    env.load_busybox("busybox:ctl");
    let store = env.daemon.root.join("lib");
    let snapshots = || -> Vec<PathBuf> {
        std::fs::read_dir(store.join("snapshots"))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let image_snapshots = snapshots();
    env.ok(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "detached",
        "busybox:ctl",
        "sleep",
        "60",
    ]);
    let mut client = env.spawn_run_rm("attached", &["busybox:ctl", "sleep", "60"]);
    env.until("both containers to run", || {
        env.status("detached") == "running" && env.status("attached") == "running"
    });
    let ids: Vec<String> = ["detached", "attached"]
        .iter()
        .map(|name| env.inspect(name)["id"].as_str().unwrap().to_string())
        .collect();
    let state = env.daemon.root.join("state");
    let rm_bundles = env.daemon.bundles();
    assert_eq!(rm_bundles.len(), 2, "{rm_bundles:?}");
    assert!(rm_bundles.iter().all(|b| b.starts_with(&state)));

    // The machine goes down: the daemon, the client, the shims and the
    // containers' processes (what the runtime's delete ends; their cgroups
    // and the runtime's state, which a reboot takes too, with them).
    env.daemon.kill9();
    let _ = client.kill();
    let _ = client.wait();
    let shims: Vec<i32> = rm_bundles.iter().map(|b| shim_pid_in(b)).collect();
    // Their sockets, which a reboot's empty /run would not have either.
    let sockets: Vec<PathBuf> = rm_bundles
        .iter()
        .map(|b| {
            let address = std::fs::read_to_string(b.join("address")).expect("the shim's address");
            PathBuf::from(address.trim().trim_start_matches("unix://"))
        })
        .collect();
    for state_dir in runtime_states(&env) {
        let id = state_dir.file_name().unwrap().to_str().unwrap().to_string();
        let out = Command::new(target_dir().join("berth"))
            .arg("--root")
            .arg(state_dir.parent().unwrap())
            .args(["delete", "--force", &id])
            .output()
            .expect("berth delete");
        assert!(out.status.success(), "{}", text(&out));
    }
    for shim in &shims {
        // SAFETY: SIGKILL to a shim this test's daemon started.
        unsafe { libc::kill(*shim, libc::SIGKILL) };
    }
    env.until("the shims to end", || !shims.iter().any(|&s| alive(s)));
    for socket in &sockets {
        let _ = std::fs::remove_file(socket);
    }
    // The tmpfs is gone: nothing mounted under it, nothing in it.
    for bundle in &rm_bundles {
        let rootfs = std::ffi::CString::new(bundle.join("rootfs").display().to_string()).unwrap();
        // SAFETY: unmounting a path this test's daemon mounted.
        unsafe { libc::umount2(rootfs.as_ptr(), libc::MNT_DETACH) };
    }
    std::fs::remove_dir_all(&state).expect("empty the state directory");

    env.daemon.spawn();
    env.until(
        "the records of the rebooted run --rm containers to go",
        || env.ok(&["ps", "-a", "-q"]).is_empty(),
    );
    env.until("their snapshots to go", || snapshots() == image_snapshots);
    assert!(
        env.daemon.bundles().is_empty(),
        "{:?}",
        env.daemon.bundles()
    );
    let left = mounts_under(&env.daemon.root);
    assert!(
        left.is_empty(),
        "mounts left under {}: {left:?}",
        env.daemon.root.display()
    );
    for id in &ids {
        assert!(!store.join("bundles").join(id).exists());
    }
    // The names are free.
    env.ok(&["run", "--rm", "--name", "detached", "busybox:ctl", "true"]);
    env.ok(&["run", "--rm", "--name", "attached", "busybox:ctl", "true"]);
}

/// A daemon removes at its start the bundles in its state directory that
/// its records do not name, and ends their shims: a second daemon (another
/// root) given the first one's state directory would end the first one's
/// `run -d --rm` containers. It is refused, naming the directory, and the
/// container runs on.
#[test]
fn a_state_directory_serves_one_daemon_root_only() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let id = env.ok(&["run", "-d", "--rm", "busybox:ctl", "sleep", "60"]);
    let id = id.trim();
    let [bundle] = env
        .daemon
        .bundles()
        .try_into()
        .unwrap_or_else(|b| panic!("{b:?}"));
    let state = env.daemon.root.join("state");
    let other = TempDir(
        std::env::temp_dir()
            .join(unique("berth-other-root"))
            .join("d"),
    );
    let mut second = Command::new(imaged_bin())
        .arg("--root")
        .arg(other.0.join("lib"))
        .arg("--socket")
        .arg(other.0.join("run/berth.sock"))
        .arg("--state")
        .arg(&state)
        .args(["--default-network", "none", "--shim"])
        .arg(target_dir().join("containerd-shim-berth-v2"))
        .arg("--runtime")
        .arg(target_dir().join("berth"))
        .arg("--runtime-root")
        .arg(&env.runtime_root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the second berth-imaged");
    let start = Instant::now();
    let exited = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break Some(status);
        }
        if other.0.join("run/berth.sock").exists() || start.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = exited else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second daemon started with another daemon's state directory");
    };
    let mut message = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut message).unwrap();
    assert!(!status.success(), "{message}");
    assert!(
        message.contains(&state.display().to_string()) && message.contains("--state"),
        "{message}"
    );
    assert!(bundle.join("config.json").exists());
    assert_eq!(env.inspect(id)["status"], "running");
}

#[test]
fn run_rm_prints_the_output_and_exits_with_the_containers_status() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let mut events = Command::new(ctl_bin())
        .args(["--address", &env.address(), "events", "--format", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("events");
    // Subscribed well before the run (a debug build connects in ~10 ms).
    std::thread::sleep(Duration::from_millis(500));
    let out = env.ctl(&["run", "--rm", "busybox:ctl", "echo", "hi"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "hi\n");
    // The run's events, one JSON document a line.
    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let seen = events.wait_with_output().unwrap();
    let seen: Vec<Value> = stdout(&seen)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("an event as JSON"))
        .collect();
    let topics: Vec<String> = seen
        .iter()
        .map(|e| e["topic"].as_str().unwrap().to_string())
        .collect();
    for topic in [
        "/containers/create",
        "/tasks/start",
        "/tasks/exit",
        "/containers/delete",
    ] {
        assert!(
            topics.iter().any(|t| t == topic),
            "{topic} missing: {topics:?}"
        );
    }
    // The delete names the container the create made.
    let id_of = |topic: &str| {
        seen.iter()
            .find(|e| e["topic"] == topic)
            .map(|e| e["id"].as_str().unwrap_or("").to_string())
            .unwrap()
    };
    assert!(!id_of("/containers/create").is_empty(), "{seen:?}");
    assert_eq!(id_of("/containers/delete"), id_of("/containers/create"));

    let out = env.ctl(&["run", "--rm", "busybox:ctl", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // stdout and stderr stay apart; env, workdir, user and hostname apply.
    let env_file = std::env::temp_dir().join(unique("ctl-env"));
    std::fs::write(&env_file, "# a comment\nFROM_FILE=yes\n").unwrap();
    let out = env.ctl(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hello",
        "--env-file",
        env_file.to_str().unwrap(),
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "--hostname",
        "boat",
        "busybox:ctl",
        "sh",
        "-c",
        "echo $GREETING $FROM_FILE $(pwd) $(id -u) $(hostname); echo oops >&2",
    ]);
    let _ = std::fs::remove_file(&env_file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "hello yes /tmp 65534 boat\n");
    assert_eq!(stderr(&out), "oops\n");

    // --entrypoint replaces the image's.
    let out = env.ctl(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/echo",
        "busybox:ctl",
        "a",
        "b",
    ]);
    assert_eq!(stdout(&out), "a b\n", "{}", text(&out));

    // stdin with -i.
    let out = env.ctl_with_input(
        &["run", "--rm", "-i", "busybox:ctl", "wc", "-l"],
        b"1\n2\n3\n",
    );
    assert_eq!(stdout(&out).trim(), "3", "{}", text(&out));

    // --rm left nothing.
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");

    // A command that does not exist: docker's 127.
    let out = env.ctl(&["run", "--rm", "busybox:ctl", "/no/such/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");

    // JSON for scripts.
    let images: Value = serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(
        images[0]["name"], "docker.io/library/busybox:ctl",
        "{images}"
    );
    assert!(images[0]["target"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let table = env.ok(&["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(table.contains("busybox"), "{table}");
    let version: Value = serde_json::from_str(&env.ok(&["version", "--format", "json"])).unwrap();
    assert_eq!(version["server"]["apiRevision"], 1, "{version}");
    let info: Value = serde_json::from_str(&env.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(info["images"], 1, "{info}");
}

#[test]
fn a_detached_container_is_followed_exec_d_paused_stopped_and_removed() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let script = "trap 'echo bye; exit 0' TERM; while true; do echo tick; sleep 0.2; done";
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox:ctl",
        "sh",
        "-c",
        script,
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert!(env.ok(&["ps"]).contains("ticker"));
    let ps: Value = serde_json::from_str(&env.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(ps[0]["status"], "running", "{ps}");

    // logs -f runs until the container stops.
    let mut follow = Command::new(ctl_bin())
        .args(["--address", &env.address(), "logs", "-f", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logs -f");
    env.until("ticks in the log", || {
        env.ok(&["logs", "--tail", "5", "ticker"])
            .matches("tick")
            .count()
            >= 3
    });

    // A name in use says by whom.
    let out = env.ctl(&["run", "-d", "--name", "ticker", "busybox:ctl", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains(&id), "{}", text(&out));

    let out = env.ctl(&["exec", "ticker", "sh", "-c", "echo inside; exit 4"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(4), "inside\n"),
        "{}",
        text(&out)
    );
    let out = env.ctl(&["exec", "ticker", "/no/such/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    let out = env.ctl(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/data",
        "ticker",
        "sh",
        "-c",
        "echo $X $(pwd)",
    ]);
    assert_eq!(stdout(&out), "1 /data\n", "{}", text(&out));

    env.ok(&["pause", "ticker"]);
    assert_eq!(env.inspect("ticker")["status"], "paused");
    env.ok(&["unpause", "ticker"]);
    assert_eq!(env.inspect("ticker")["status"], "running");

    let stats: Value =
        serde_json::from_str(&env.ok(&["stats", "--no-stream", "--format", "json"])).unwrap();
    assert!(stats[0]["memoryUsage"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats[0]["pids"].as_u64().unwrap() >= 1, "{stats}");
    assert!(env
        .ok(&["stats", "--no-stream", "ticker"])
        .contains("ticker"));

    let out = env.ctl(&["rm", "ticker"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("rm -f"), "{}", text(&out));

    env.ok(&["stop", "-t", "5", "ticker"]);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = follow.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "logs -f did not end with the container"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = follow.wait_with_output().unwrap();
    assert!(status.success(), "{}", text(&out));
    let log = stdout(&out);
    assert!(log.contains("tick\n") && log.ends_with("bye\n"), "{log}");
    let c = env.inspect(&id);
    assert_eq!(
        (c["status"].as_str(), c["exitStatus"].as_u64()),
        (Some("exited"), Some(0))
    );
    assert!(env.ok(&["ps", "-a"]).contains("Exited (0)"));

    // exec into a stopped container: a clear message.
    let out = env.ctl(&["exec", "ticker", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("not running"), "{}", text(&out));

    // start again, then kill -s.
    env.ok(&["start", "ticker"]);
    assert_eq!(env.inspect("ticker")["status"], "running");
    env.ok(&["kill", "-s", "KILL", "ticker"]);
    env.until("the kill", || env.inspect("ticker")["status"] == "exited");
    assert_eq!(env.inspect("ticker")["exitStatus"], 137);

    env.ok(&["rm", "ticker"]);
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");

    // -d --rm: nobody waits for the exit here, so the daemon removes it.
    let gone = env.ok(&["run", "-d", "--rm", "busybox:ctl", "sh", "-c", "sleep 0.5"]);
    assert!(env.ctl(&["inspect", gone.trim()]).status.success());
    env.until("the container to remove itself", || {
        !env.ctl(&["inspect", gone.trim()]).status.success()
    });
    let out = env.ctl(&["run", "--rm", "--restart", "always", "busybox:ctl", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("--rm and --restart"),
        "{}",
        text(&out)
    );
    let out = env.ctl(&["inspect", "ticker"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn run_it_and_exec_it_give_a_real_terminal_with_its_size() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    // run -it: a shell on a pty, typed into, with this terminal's size.
    // The shell around berthctl checks that the terminal's settings are
    // back as they were (cooked, echo) when berthctl has exited.
    let saved = std::env::temp_dir().join(unique("ctl-stty"));
    let setup = format!(
        "stty cols 123 rows 45; stty -g > {0}; trap 'stty -g | cmp -s - {0} || echo TERMINAL-LEFT-RAW' EXIT",
        saved.display()
    );
    let out = env.ctl_on_terminal(
        &setup,
        &["run", "--rm", "-it", "busybox:ctl", "sh"],
        b"tty; stty size; echo $((6*7)); exit 5\r",
    );
    let _ = std::fs::remove_file(&saved);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{screen}\n{}", stderr(&out));
    assert!(!screen.contains("TERMINAL-LEFT-RAW"), "{screen}");
    assert!(screen.contains("/dev/pts/"), "{screen}");
    assert!(screen.contains("45 123"), "{screen}");
    assert!(screen.contains("42"), "{screen}");

    // exec -it into a running container.
    env.ok(&["run", "-d", "--name", "host", "busybox:ctl", "sleep", "60"]);
    let out = env.ctl_on_terminal(
        "stty cols 80 rows 24",
        &["exec", "-it", "host", "sh"],
        b"tty; stty size; exit 7\r",
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{screen}\n{}", stderr(&out));
    assert!(screen.contains("/dev/pts/"), "{screen}");
    assert!(screen.contains("24 80"), "{screen}");

    // The window changes size while the shell runs: SIGWINCH → ResizePty.
    let out = env.ctl_on_terminal_typed(
        "stty cols 80 rows 24; (sleep 3; stty cols 99 rows 33 </dev/tty) & true",
        &["exec", "-it", "host", "sh"],
        &[
            (Duration::from_millis(1500), b"stty size\r"),
            (Duration::from_millis(3000), b"stty size; exit 0\r"),
        ],
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}\n{}", stderr(&out));
    let before = screen
        .find("24 80")
        .unwrap_or_else(|| panic!("no first size: {screen:?}"));
    let after = screen
        .find("33 99")
        .unwrap_or_else(|| panic!("no size after the resize: {screen:?}"));
    assert!(before < after, "{screen}");

    // Without -t the same command sees no terminal.
    let out = env.ctl(&["exec", "host", "sh", "-c", "tty || echo none"]);
    assert!(
        stdout(&out).contains("not a tty") || stdout(&out).contains("none"),
        "{}",
        text(&out)
    );
    env.ok(&["rm", "-f", "host"]);
}

#[test]
fn bind_mounts_and_named_volumes_read_and_write() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let volume = unique("vol");
    assert_eq!(env.ok(&["volume", "create", &volume]).trim(), volume);
    let mount = format!("{volume}:/data");
    let out = env.ctl(&[
        "run",
        "--rm",
        "-v",
        &mount,
        "busybox:ctl",
        "sh",
        "-c",
        "cat /data/seed.txt; echo kept > /data/mine.txt",
    ]);
    assert_eq!(stdout(&out), "from the image\n", "{}", text(&out));
    let out = env.ctl(&[
        "run",
        "--rm",
        "-v",
        &mount,
        "busybox:ctl",
        "cat",
        "/data/mine.txt",
    ]);
    assert_eq!(stdout(&out), "kept\n", "{}", text(&out));
    let ls: Value = serde_json::from_str(&env.ok(&["volume", "ls", "--format", "json"])).unwrap();
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == volume.as_str()),
        "{ls}"
    );
    let inspect: Value = serde_json::from_str(&env.ok(&["volume", "inspect", &volume])).unwrap();
    let mountpoint = inspect[0]["mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(Path::new(&mountpoint).join("mine.txt")).unwrap(),
        "kept\n"
    );
    env.ok(&["volume", "rm", &volume]);
    assert!(!env.ok(&["volume", "ls", "-q"]).contains(&volume));

    // Anonymous volumes (`-v /DST`): seeded like named ones, gone with a
    // --rm container, kept by a plain rm (as docker does), removed by rm -v.
    let volumes = || env.ok(&["volume", "ls", "-q"]).lines().count();
    let before = volumes();
    let out = env.ctl(&[
        "run",
        "--rm",
        "-v",
        "/data",
        "busybox:ctl",
        "cat",
        "/data/seed.txt",
    ]);
    assert_eq!(stdout(&out), "from the image\n", "{}", text(&out));
    assert_eq!(volumes(), before, "--rm left its anonymous volume");
    for name in ["anon-kept", "anon-gone"] {
        env.ok(&[
            "create",
            "--name",
            name,
            "-v",
            "/data",
            "busybox:ctl",
            "true",
        ]);
    }
    assert_eq!(volumes(), before + 2);
    env.ok(&["rm", "anon-kept"]);
    env.ok(&["rm", "-v", "anon-gone"]);
    assert_eq!(volumes(), before + 1);
    // A create that fails after making its anonymous volume leaves none.
    let out = env.ctl(&[
        "create",
        "-v",
        "/data",
        "-v",
        "/no/such/dir:/x",
        "busybox:ctl",
        "true",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(volumes(), before + 1, "a failed create left its volume");

    // A bind mount: read-write, then read-only.
    let host = std::env::temp_dir().join(unique("ctl-bind"));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "host file\n").unwrap();
    let rw = format!("{}:/host", host.display());
    let out = env.ctl(&[
        "run",
        "--rm",
        "-v",
        &rw,
        "busybox:ctl",
        "sh",
        "-c",
        "cat /host/f; echo from-container > /host/g",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout(&out), "host file\n");
    assert_eq!(
        std::fs::read_to_string(host.join("g")).unwrap(),
        "from-container\n"
    );
    let ro = format!("{}:/host:ro", host.display());
    let out = env.ctl(&[
        "run",
        "--rm",
        "-v",
        &ro,
        "busybox:ctl",
        "sh",
        "-c",
        "cat /host/f; echo x > /host/h",
    ]);
    assert_ne!(out.status.code(), Some(0), "a read-only bind was writable");
    assert_eq!(stdout(&out), "host file\n");
    assert!(!host.join("h").exists());
    let _ = std::fs::remove_dir_all(&host);

    // --read-only: the root filesystem refuses writes.
    let out = env.ctl(&["run", "--rm", "--read-only", "busybox:ctl", "touch", "/x"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn save_then_load_into_a_fresh_daemon_keeps_every_digest() {
    if !can_run_images() {
        return;
    }
    let first = Env::start();
    first.load_busybox("busybox:ctl");
    let archive = std::env::temp_dir().join(unique("ctl-save.tar"));
    first.ok(&["save", "-o", archive.to_str().unwrap(), "busybox:ctl"]);
    // To stdout too: the same bytes.
    let out = first.ctl(&["save", "busybox:ctl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, std::fs::read(&archive).unwrap());
    let before: Value = serde_json::from_str(&first.ok(&["images", "--format", "json"])).unwrap();
    drop(first);

    let second = Env::start();
    let out = second.ctl(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let _ = std::fs::remove_file(&archive);
    let after: Value = serde_json::from_str(&second.ok(&["images", "--format", "json"])).unwrap();
    for field in ["target", "manifest", "config"] {
        assert_eq!(
            before[0][field]["digest"], after[0][field]["digest"],
            "{field}"
        );
    }
    assert_eq!(before[0]["chainId"], after[0]["chainId"]);
    assert_eq!(before[0]["name"], after[0]["name"]);
    // And it runs.
    let out = second.ctl(&["run", "--rm", "busybox:ctl", "cat", "/data/seed.txt"]);
    assert_eq!(stdout(&out), "from the image\n", "{}", text(&out));

    // A `docker save` archive (made by skopeo from the same image) loads too,
    // from stdin, under the name it carries.
    let layout = Layout::new("ctl-docker-archive");
    let oci = std::env::temp_dir().join(unique("ctl-oci.tar"));
    std::fs::write(&oci, busybox_archive("busybox:ctl")).unwrap();
    let extracted = std::env::temp_dir().join(unique("ctl-oci-dir"));
    std::fs::create_dir_all(&extracted).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&oci)
        .arg("-C")
        .arg(&extracted)
        .status()
        .unwrap();
    assert!(untar.success());
    let docker = layout.dir.join("docker.tar");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:busybox:ctl", extracted.display()))
        .arg(format!(
            "docker-archive:{}:example.org/saved:2",
            docker.display()
        ))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo: {}", text(&out));
    let out = second.ctl_with_input(&["load"], &std::fs::read(&docker).unwrap());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("example.org/saved:2"),
        "{}",
        text(&out)
    );
    let out = second.ctl(&[
        "run",
        "--rm",
        "example.org/saved:2",
        "cat",
        "/data/seed.txt",
    ]);
    assert_eq!(stdout(&out), "from the image\n", "{}", text(&out));
    let _ = std::fs::remove_file(&oci);
    let _ = std::fs::remove_dir_all(&extracted);
    // rmi of one name keeps the other image.
    let out = second.ctl(&["rmi", "example.org/saved:2"]);
    assert!(out.status.success(), "{}", text(&out));
    let left = second.ok(&["images", "-q"]);
    assert_eq!(left, "docker.io/library/busybox:ctl\n");
}

fn relative_paths(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            out.insert(path.strip_prefix(root).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn image_mount_shows_exactly_the_images_files_read_only() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let dir = std::env::temp_dir().join(unique("ctl-mnt"));
    let printed = env.ok(&["image", "mount", "busybox:ctl", dir.to_str().unwrap()]);
    assert_eq!(Path::new(printed.trim()), dir.canonicalize().unwrap());
    assert_eq!(relative_paths(&dir), busybox_paths());
    assert_eq!(
        std::fs::read_to_string(dir.join("data/seed.txt")).unwrap(),
        "from the image\n"
    );
    let write = std::fs::write(dir.join("new"), "x");
    assert!(write.is_err(), "the view is writable");
    env.ok(&["image", "unmount", dir.to_str().unwrap()]);
    let left = mounts_under(&dir.canonicalize().unwrap());
    assert!(left.is_empty(), "still mounted: {left:?}");
    assert!(relative_paths(&dir).is_empty());
    let _ = std::fs::remove_dir(&dir);
    // The view is gone: a second unmount says it was not mounted.
    std::fs::create_dir_all(&dir).unwrap();
    let out = env.ctl(&["image", "unmount", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("not mounted"), "{}", text(&out));
    let _ = std::fs::remove_dir(&dir);

    // Without a directory: a temporary one, printed, removed on unmount.
    let printed = env.ok(&["image", "mount", "busybox:ctl"]);
    let tmp = PathBuf::from(printed.trim());
    assert!(tmp.join("bin/busybox").exists());
    env.ok(&["image", "unmount", printed.trim()]);
    assert!(!tmp.exists());
}

#[test]
fn memory_limits_are_enforced() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    // 64 MiB of 'a's in a shell variable under a 16 MiB limit: killed.
    let hog = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}";
    let out = env.ctl(&[
        "run",
        "--rm",
        "--memory",
        "16m",
        "busybox:ctl",
        "sh",
        "-c",
        hog,
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert!(!stdout(&out).contains("survived"));
    // Within the limit it runs.
    let small = "x=$(head -c 1048576 /dev/zero | tr '\\0' a); echo ${#x}";
    let out = env.ctl(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "--cpus",
        "0.5",
        "busybox:ctl",
        "sh",
        "-c",
        small,
    ]);
    assert_eq!(
        (out.status.code(), stdout(&out).trim()),
        (Some(0), "1048576"),
        "{}",
        text(&out)
    );
}

#[test]
fn restart_on_failure_restarts_a_failing_container() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    env.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox:ctl",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    env.until("two restarts", || {
        let c = env.inspect("flaky");
        c["restartCount"] == 2 && c["status"] == "exited"
    });
    std::thread::sleep(Duration::from_millis(1000));
    let c = env.inspect("flaky");
    assert_eq!(
        (c["restartCount"].as_u64(), c["exitStatus"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(c["config"]["restart"]["policy"], "on-failure");
    assert_eq!(env.ok(&["logs", "flaky"]), "run\nrun\nrun\n");
}

#[test]
fn pull_draws_bars_on_a_terminal_and_plain_lines_otherwise() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let layout = busybox_layout("ctl-pull", APPLETS, "1");
    registry.push(&layout, "1", "busybox", None);
    let reference = format!("{}/busybox:1", registry.host());

    let env = Env::start();
    let out = env.ctl(&["pull", &reference]);
    assert!(out.status.success(), "{}", text(&out));
    let plain = stdout(&out);
    assert!(plain.contains("resolving\n"), "{plain}");
    assert!(plain.contains(": downloading"), "{plain}");
    assert!(plain.contains(": unpacked\n"), "{plain}");
    assert!(plain.contains(&format!("pulled {reference}")), "{plain}");
    assert!(
        !plain.contains('\r') && !plain.contains('\x1b'),
        "{plain:?}"
    );
    // One line per step, not per chunk.
    assert!(plain.lines().count() < 20, "{plain}");
    let out = env.ctl(&["run", "--rm", &reference, "echo", "pulled and ran"]);
    assert_eq!(stdout(&out), "pulled and ran\n", "{}", text(&out));

    let fresh = Env::start();
    let out = fresh.ctl_on_terminal("", &["pull", &reference], b"");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}\n{}", stderr(&out));
    assert!(
        screen.contains('\x1b') || screen.contains('\r'),
        "no bar drawn: {screen:?}"
    );
    assert!(screen.contains("done"), "{screen:?}");
    assert!(
        screen.contains("MiB") || screen.contains("KiB"),
        "no sizes: {screen:?}"
    );
    assert!(
        !screen.contains(": downloading"),
        "plain lines on a terminal: {screen:?}"
    );

    // A terminal that cannot redraw a line gets the plain lines.
    let out = fresh.ctl_on_terminal("TERM=dumb; export TERM", &["pull", &reference], b"");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}\n{}", stderr(&out));
    assert!(screen.contains("resolving\r\n"), "{screen:?}");
    assert!(!screen.contains('\x1b'), "{screen:?}");

    let out = fresh.ctl(&["pull", &format!("{}/nosuch:1", registry.host())]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("nosuch"), "{}", text(&out));
    assert_eq!(
        stderr(&out).matches("cannot pull").count(),
        1,
        "{}",
        text(&out)
    );
}

#[test]
fn bad_input_gets_a_clear_message_and_a_non_zero_exit() {
    if !can_run_images() {
        return;
    }
    // No daemon: which socket, and how to start one.
    let nowhere = std::env::temp_dir().join(unique("ctl-nowhere.sock"));
    let out = run_ctl(nowhere.to_str().unwrap(), &["ps"], b"");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains(nowhere.to_str().unwrap()) && err.contains("berth-imaged"),
        "{err}"
    );
    // A bad flag value is refused before anything is asked of a daemon.
    let out = run_ctl(
        nowhere.to_str().unwrap(),
        &["run", "--memory", "12parsecs", "busybox", "true"],
        b"",
    );
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("--memory") && err.contains("12parsecs") && err.contains("64m"),
        "{err}"
    );
    for (flag, value) in [
        ("--restart", "sometimes"),
        ("--cpus", "lots"),
        ("-v", "rel:tive"),
        ("--network", ""),
    ] {
        let out = run_ctl(
            nowhere.to_str().unwrap(),
            &["run", flag, value, "busybox", "true"],
            b"",
        );
        assert_eq!(out.status.code(), Some(125), "{flag}");
        assert!(stderr(&out).contains(flag), "{flag}: {}", stderr(&out));
    }
    let out = run_ctl(
        nowhere.to_str().unwrap(),
        &["run", "--no-such-flag", "busybox"],
        b"",
    );
    assert_eq!(out.status.code(), Some(125));

    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let out = env.ctl(&["run", "--rm", "nosuch:image", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("berthctl pull"), "{}", text(&out));
    let out = env.ctl(&["exec", "nosuch", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("nosuch"), "{}", text(&out));
    env.ok(&["create", "--name", "idle", "busybox:ctl", "true"]);
    let out = env.ctl(&["exec", "idle", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("not running"), "{}", text(&out));
    let out = env.ctl(&["image", "mount", "nosuch:image"]);
    assert_eq!(out.status.code(), Some(125));
    let out = env.ctl(&["rmi", "nosuch:image"]);
    assert_ne!(out.status.code(), Some(0));
    // Completions need no daemon.
    let out = run_ctl(nowhere.to_str().unwrap(), &["completion", "bash"], b"");
    assert!(
        out.status.success() && stdout(&out).contains("berthctl"),
        "{}",
        text(&out)
    );
}

#[test]
fn start_attach_reports_each_runs_own_output_and_status() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    env.ok(&[
        "create",
        "--name",
        "again",
        "busybox:ctl",
        "sh",
        "-c",
        "sleep 0.3; echo x >> /tmp/n; n=$(wc -l < /tmp/n); echo run $n; exit $((n + 2))",
    ]);
    // Each start -a waits for its own run: the bug was a stale exit of the
    // run before, reported as this run's status.
    for (run, status) in [(1, 3), (2, 4), (3, 5)] {
        let out = env.ctl(&["start", "-a", "again"]);
        assert_eq!(out.status.code(), Some(status), "{}", text(&out));
        assert_eq!(stdout(&out), format!("run {run}\n"));
    }
}

#[test]
fn security_and_network_flags_reach_the_container() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let status = |flags: &[&str], field: &str| -> String {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend(["busybox:ctl", "grep", field, "/proc/self/status"]);
        let out = env.ctl(&args);
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {}", text(&out));
        stdout(&out)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    let default_caps = status(&[], "CapEff");
    assert_ne!(default_caps, "0000000000000000");
    assert_eq!(status(&["--cap-drop", "ALL"], "CapEff"), "0000000000000000");
    // CAP_NET_ADMIN is bit 12.
    assert_eq!(
        status(&["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"], "CapEff"),
        "0000000000001000"
    );
    let privileged = u64::from_str_radix(&status(&["--privileged"], "CapEff"), 16).unwrap();
    assert!(privileged > u64::from_str_radix(&default_caps, 16).unwrap());
    // Seccomp: 2 is a filter, 0 none.
    assert_eq!(status(&[], "Seccomp:"), "2");
    assert_eq!(
        status(&["--security-opt", "seccomp=unconfined"], "Seccomp:"),
        "0"
    );
    let profile = "/usr/share/gocode/src/github.com/containers/common/pkg/seccomp/seccomp.json";
    let with_file = format!("seccomp={profile}");
    assert_eq!(status(&["--security-opt", &with_file], "Seccomp:"), "2");
    let out = env.ctl(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=/no/such.json",
        "busybox:ctl",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("/no/such.json"), "{}", text(&out));

    // --network none: loopback only; host: the host's interfaces.
    let interfaces = |network: &str| -> usize {
        let out = env.ctl(&[
            "run",
            "--rm",
            "--network",
            network,
            "busybox:ctl",
            "cat",
            "/proc/net/dev",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        stdout(&out).lines().skip(2).count()
    };
    let host = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .count();
    assert_eq!(interfaces("none"), 1);
    assert_eq!(interfaces("host"), host);
}

/// `cmd` as the unprivileged user nobody, as a local attacker would run it.
/// Through a shell: setpriv itself finds its program before it drops root.
fn as_nobody(cmd: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(cmd)
        .output()
        .expect("setpriv")
}

/// Every directory of the daemon's own under `dir` is 0700 and every file
/// 0600; the image's and containers' own trees (a snapshot's `fs/`, a
/// volume's `_data/`, a bundle's `rootfs/`) are theirs and not walked.
fn assert_private_tree(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o700,
        "{} is not root's alone",
        dir.display()
    );
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        let name = entry.file_name();
        if kind.is_dir() {
            if ["fs", "work", "_data", "rootfs"].contains(&name.to_str().unwrap_or("")) {
                continue;
            }
            assert_private_tree(&path);
        } else if kind.is_file() {
            let mode = entry.metadata().unwrap().mode() & 0o7777;
            // The container's /etc files are read by its own users, as any
            // /etc/hosts is: 0644, inside a bundle only root can enter.
            let etc = ["hosts", "hostname", "resolv.conf"].contains(&name.to_str().unwrap_or(""));
            let expected = if etc { 0o644 } else { 0o600 };
            assert_eq!(mode, expected, "{} has mode {mode:o}", path.display());
        }
    }
}

/// Issue 12 (1): the store was 0755 all the way down, so any local user could
/// run a setuid-root program of a pulled image out of `snapshots/N/fs/` as
/// root, and `image mount` honoured setuid bits and device nodes.
#[test]
fn local_users_reach_no_setuid_program_or_device_of_an_image() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    // The checker's `--syscall 105 0` is setuid(0): "ok" only when it runs
    // as root. Setuid root, it says whether the setuid bit took effect.
    let checker = std::fs::read(berth_integration::checker_bin()).expect("checker");
    let mut extra = LayerTar::new();
    extra
        .dir("bin/", 0o755)
        .file("bin/suid-probe", 0o4755, &checker)
        .dir("dev/", 0o755)
        .char_dev("dev/null-copy", 1, 3);
    let mut layout = Layout::new("ctl-suid");
    let image = layout.image(
        &[
            (busybox_layer(APPLETS), Compression::Gzip),
            (extra.finish(), Compression::Gzip),
        ],
        ("amd64", ""),
    );
    layout.tag("suid:1", &image);
    let out = env.ctl_with_input(&["load"], &layout.archive());
    assert!(out.status.success(), "load: {}", text(&out));
    env.ok(&["create", "--name", "held", "-v", "/keep", "suid:1", "true"]);

    let store = env.daemon.root.join("lib");
    let probes: Vec<PathBuf> = std::fs::read_dir(store.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("fs/bin/suid-probe"))
        .filter(|p| p.exists())
        .collect();
    assert!(!probes.is_empty(), "the probe is in some snapshot");
    for probe in &probes {
        let out = as_nobody(&[probe.to_str().unwrap(), "--syscall", "105", "0"]);
        assert!(
            !out.status.success(),
            "nobody ran {}: {}",
            probe.display(),
            text(&out)
        );
        assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    }
    let out = as_nobody(&["ls", store.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "nobody listed the store: {}",
        text(&out)
    );
    assert_private_tree(&store);

    // A store an older daemon left open is closed at the next start.
    use std::os::unix::fs::PermissionsExt;
    for dir in [
        store.clone(),
        store.join("snapshots"),
        store.join("content"),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut env = env;
    env.daemon.restart();
    env.ok(&["images"]);
    assert_private_tree(&store);

    // The image mounted for a person: no setuid, no devices.
    let dir = std::env::temp_dir().join(unique("ctl-suid-mnt"));
    env.ok(&["image", "mount", "suid:1", dir.to_str().unwrap()]);
    let probe = dir.join("bin/suid-probe");
    let ran = as_nobody(&[probe.to_str().unwrap(), "--syscall", "105", "0"]);
    let device = as_nobody(&[
        "head",
        "-c",
        "1",
        dir.join("dev/null-copy").to_str().unwrap(),
    ]);
    env.ok(&["image", "unmount", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "errno 1",
        "the setuid bit took effect on the image mount: {}",
        text(&ran)
    );
    assert!(
        !device.status.success(),
        "nobody opened a device of the image"
    );
    assert!(
        text(&device).contains("Permission denied"),
        "{}",
        text(&device)
    );
    env.ok(&["rm", "-v", "held"]);
}

/// The daemon's open descriptors: how many, and those of deleted files.
fn daemon_fds(env: &Env) -> (usize, Vec<String>) {
    let dir = PathBuf::from(format!("/proc/{}/fd", env.daemon.pid()));
    let mut count = 0;
    let mut deleted = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        count += 1;
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.display().to_string();
            if target.ends_with("(deleted)") {
                deleted.push(target);
            }
        }
    }
    (count, deleted)
}

/// Issue 12 (2): 15–20 `run --rm … echo` at once all exited 0, but some
/// printed nothing, and the daemon kept their deleted fifos open for ever.
#[test]
fn parallel_runs_print_all_their_output_and_leak_no_descriptors() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let (baseline, _) = daemon_fds(&env);
    let address = env.address();
    for round in 0..3 {
        let runs: Vec<_> = (0..30)
            .map(|i| {
                let address = address.clone();
                let line = format!("out-{round}-{i}");
                std::thread::spawn(move || {
                    let out = run_ctl(
                        &address,
                        &["run", "--rm", "busybox:ctl", "echo", &line],
                        b"",
                    );
                    (line, out)
                })
            })
            .collect();
        let mut silent = Vec::new();
        for run in runs {
            let (line, out) = run.join().unwrap();
            assert!(out.status.success(), "{line}: {}", text(&out));
            if stdout(&out) != format!("{line}\n") {
                silent.push(format!("{line}: {}", text(&out)));
            }
        }
        assert!(silent.is_empty(), "round {round}: output lost: {silent:#?}");
    }
    // The removals finish after the clients have their exit: wait for them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = env.ok(&["ps", "-a", "-q"]);
        let (count, deleted) = daemon_fds(&env);
        if listed.trim().is_empty() && count <= baseline && deleted.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon holds {count} descriptors (baseline {baseline}), deleted: {deleted:#?}, containers: {listed}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 12 (8): `-v /tmp:/proc` got as far as the runtime (exit 127, its
/// internal words) and `--cpus` above the host's count was accepted.
#[test]
fn mounts_over_proc_and_more_cpus_than_the_host_has_are_refused_up_front() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.load_busybox("busybox:ctl");
    let out = env.ctl(&["run", "--rm", "-v", "/tmp:/proc", "busybox:ctl", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        stderr(&out).contains("\"/proc\" is inside the container's /proc"),
        "{}",
        text(&out)
    );
    // An lxcfs-style file over one of /proc's is allowed, as runc allows it.
    let out = env.ctl(&[
        "run",
        "--rm",
        "-v",
        "/proc/meminfo:/proc/meminfo:ro",
        "busybox:ctl",
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let cpus = std::thread::available_parallelism().unwrap().get();
    let too_many = (cpus + 1).to_string();
    let out = env.ctl(&["run", "--rm", "--cpus", &too_many, "busybox:ctl", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let words =
        format!("range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available");
    assert!(stderr(&out).contains(&words), "{}", text(&out));
    let out = env.ctl(&[
        "run",
        "--rm",
        "--cpus",
        &cpus.to_string(),
        "busybox:ctl",
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        env.ok(&["ps", "-a", "-q"]).trim().is_empty(),
        "a refused run left a container"
    );
}

#[test]
fn a_killed_pull_is_cancelled_and_a_waiting_pull_resumes_its_download() {
    if !can_run_images() {
        return;
    }
    let (layout, _) = noise_layout("cancel", 4);
    let digest = layout.layer_digest("1", 0);
    let hostile = HostileRegistry::stalling(&layout, 1 << 20);
    // Far longer than the test: only the cancellation can end the download.
    let daemon = Daemon::start_with(&["--registry-read-timeout", "3600"]);
    let reference = format!("{}/noise:1", hostile.host());

    let mut client = Command::new(ctl_bin())
        .arg("--address")
        .arg(&daemon.socket)
        .args(["pull", &reference])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reached = hostile.wait_stalled();
    // A second pull of the same image waits for the first one's download.
    let waiting = pull_on_thread(&daemon.socket, &reference);
    // SAFETY: kill on our own child, not yet reaped.
    unsafe { libc::kill(client.id() as i32, libc::SIGKILL) };
    let _ = client.wait();
    assert!(
        reached,
        "the pull never reached the stall: {}",
        daemon.log()
    );

    // The daemon gives up the download: the registry sees it close.
    assert!(
        hostile.wait_closed(),
        "the daemon kept downloading for a client that is gone: {}",
        daemon.log()
    );

    // The waiting pull takes the download over where it stopped: one
    // download of the blob in all, resumed once.
    done(
        &waiting
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log())),
    );
    assert_eq!(hostile.stalls(), 1);
    let ranges = hostile.log.ranges.lock().unwrap().clone();
    assert!(
        ranges.len() == 1 && ranges[0] > 0,
        "expected one resumed request: {ranges:?}"
    );
    assert!(daemon.blobs().contains(&digest));
}
