//! Hooks, descriptors, terminals, `--no-pivot` and state bookkeeping, each
//! checked on real containers.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use berth_integration::*;
use serde_json::json;

fn hook(path: &Path, name: &str, log: &Path) -> serde_json::Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("read -r state; echo \"{name} $state\" >> {}", log.display()), path.display().to_string()]
    })
}

#[test]
fn all_six_hooks_run_in_order_with_the_state_on_stdin() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("hooks");
    let log = bundle.dir.join("hooks.log");
    let host = Path::new("/bin/sh");
    bundle.args(&["/bin/sh", "-c", "sleep 0.2"]);
    bundle.config["root"]["readonly"] = json!(false);
    bundle.config["hooks"] = json!({
        "prestart": [hook(host, "prestart", &log)],
        "createRuntime": [hook(host, "createRuntime", &log)],
        "createContainer": [hook(host, "createContainer", &log)],
        // startContainer runs inside the container, after pivot_root.
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "read -r state; echo \"startContainer $state\" > /tmp/start-hook"]}],
        "poststart": [hook(host, "poststart", &log)],
        "poststop": [hook(host, "poststop", &log)]
    });
    bundle.write();
    let id = unique("hooks");
    let dir = bundle.dir.to_str().unwrap();
    let out = berth.exec(&["create", "--bundle", dir, &id]);
    assert!(out.status.success(), "{}", text(&out));
    let names = |log: &Path| -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&log),
        ["prestart", "createRuntime", "createContainer"]
    );
    let out = berth.exec(&["start", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        names(&log),
        ["prestart", "createRuntime", "createContainer", "poststart"]
    );
    let start_hook = std::fs::read_to_string(bundle.rootfs().join("tmp/start-hook")).unwrap();
    assert!(start_hook.starts_with("startContainer {"), "{start_hook}");
    berth.wait_stopped(&id);
    let out = berth.exec(&["delete", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(names(&log).last().unwrap(), "poststop");
    for line in &lines {
        let state: serde_json::Value =
            serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(state["id"], id.as_str(), "{line}");
        assert_eq!(state["bundle"], dir, "{line}");
        assert!(state["ociVersion"].is_string());
    }
    let first: serde_json::Value =
        serde_json::from_str(lines[0].split_once(' ').unwrap().1).unwrap();
    assert_eq!(first["status"], "creating");
    assert!(first["pid"].as_i64().unwrap() > 1);
}

#[test]
fn a_hook_that_times_out_or_fails_fails_create_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    for (phase, hook) in [
        (
            "prestart",
            json!({"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}),
        ),
        ("createRuntime", json!({"path": "/bin/false"})),
        (
            "createContainer",
            json!({"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"]}),
        ),
    ] {
        let mut bundle = Bundle::new("hook-fail");
        bundle.config["hooks"] = json!({ phase: [hook] });
        bundle.write();
        let id = unique("hookfail");
        let started = std::time::Instant::now();
        let out = berth.exec(&["create", "--bundle", bundle.dir.to_str().unwrap(), &id]);
        assert_eq!(out.status.code(), Some(1), "{phase}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{phase} hook")),
            "{phase}: {stderr}"
        );
        if phase == "prestart" {
            assert!(stderr.contains("timed out after 1s"), "{stderr}");
            assert!(started.elapsed().as_secs() < 20);
        }
        if phase == "createContainer" {
            assert!(stderr.contains("broken"), "{stderr}");
        }
        assert!(!berth.root.join(&id).exists(), "{phase}: state left behind");
        assert!(
            !Path::new(&format!("/sys/fs/cgroup/pids/berth/{id}")).exists(),
            "{phase}: cgroup left behind"
        );
    }
}

/// Opens `path` at exactly `fd` in this process (for passing to a runtime).
fn open_at(path: &Path, fd: i32) -> OwnedFd {
    let file = std::fs::File::create(path).unwrap();
    // SAFETY: dup2 onto a number the test owns for the duration of the test.
    unsafe {
        assert!(libc::dup2(file.as_raw_fd(), fd) >= 0);
        OwnedFd::from_raw_fd(fd)
    }
}

#[test]
fn only_stdio_and_preserved_fds_reach_the_container() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("fds");
    // The shell is pid 1: list its descriptors and where they lead.
    bundle.args(&["/bin/sh", "-c", "ls -l /proc/1/fd/"]);
    bundle.write();
    // Fds 3 and 4 are passed to berth without close-on-exec; only 3 is preserved.
    let three = open_at(&bundle.dir.join("preserved-marker"), 53);
    let four = open_at(&bundle.dir.join("leaked-marker"), 54);
    let mut command = berth.command(&[
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        bundle.dir.to_str().unwrap(),
        &unique("fds"),
    ]);
    pass_fds(&mut command, &[(53, 3), (54, 4)]);
    let out = command.output().unwrap();
    drop((three, four));
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("preserved-marker"),
        "preserved fd missing: {listing}"
    );
    assert!(
        !listing.contains("leaked-marker"),
        "unpreserved fd leaked: {listing}"
    );
    // Nothing of berth's own (state dir, sockets) either.
    assert!(!listing.contains("socket:"), "{listing}");
    assert!(!listing.contains("berth-it-root"), "{listing}");
}

#[test]
fn no_pivot_runs_with_a_moved_root() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("nopivot");
    bundle.args(&[
        "/bin/sh",
        "-c",
        "ls / | grep -c berth-checker; cat /proc/self/mountinfo | head -1",
    ]);
    bundle.write();
    let out = berth.exec(&[
        "run",
        "--no-pivot",
        "--bundle",
        bundle.dir.to_str().unwrap(),
        &unique("nopivot"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("1\n"),
        "{}",
        text(&out)
    );
}

/// What a terminal's master reads until the slave closes (EIO) or "done"
/// arrives.
fn read_terminal_until_done(master: OwnedFd) -> String {
    let mut output = String::new();
    let mut file = std::fs::File::from(master);
    let mut buf = [0u8; 1024];
    while !output.contains("done") {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => output.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    output
}

#[test]
fn terminal_master_goes_to_the_console_socket() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("tty");
    bundle.config["process"]["terminal"] = json!(true);
    bundle.config["process"]["consoleSize"] = json!({"height": 33, "width": 111});
    bundle.args(&[
        "/bin/sh",
        "-c",
        "tty; stty size 2>/dev/null || cat /proc/self/stat | head -c0; echo done",
    ]);
    bundle.write();
    let socket = bundle.dir.join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let id = unique("tty");
    let dir = bundle.dir.to_str().unwrap().to_string();
    let sock = socket.to_str().unwrap().to_string();
    let root = berth.root.clone();
    let bin = berth.bin.clone();
    let create = std::thread::spawn(move || {
        std::process::Command::new(bin)
            .args([
                "--root",
                root.to_str().unwrap(),
                "create",
                "--bundle",
                &dir,
                "--console-socket",
                &sock,
                &id,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    });
    let master = receive_fd(&listener);
    let out = create.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let id = berth.exec(&["list", "-q"]).stdout;
    let id = String::from_utf8_lossy(&id).trim().to_string();
    assert!(berth.exec(&["start", &id]).status.success());
    let output = read_terminal_until_done(master);
    assert!(output.contains("/dev/pts/0"), "{output}");
    berth.wait_stopped(&id);
}

#[test]
fn create_without_console_socket_for_a_terminal_is_refused() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("tty-refused");
    bundle.config["process"]["terminal"] = json!(true);
    bundle.write();
    let id = unique("ttyno");
    let out = berth.exec(&["create", "--bundle", bundle.dir.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot allocate tty if"),
        "{}",
        text(&out)
    );
    assert!(!berth.root.join(&id).exists());
}

#[test]
fn a_reused_pid_is_not_taken_for_the_container() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("pidreuse");
    bundle.args(&["/bin/sleep", "1000"]);
    bundle.write();
    let id = unique("reuse");
    assert!(berth
        .exec(&["run", "-d", "--bundle", bundle.dir.to_str().unwrap(), &id])
        .status
        .success());
    let state_file = berth.root.join(&id).join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let real_pid = state["pid"].clone();
    // Pretend the init died and the kernel gave its pid to another process:
    // a bystander of ours with the same pid number but another start time
    // (start times count clock ticks: let one pass first).
    std::thread::sleep(std::time::Duration::from_millis(30));
    let mut bystander = Helper::spawn("sleep", &["1000"]);
    state["pid"] = json!(bystander.pid());
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(berth.status(&id), "stopped");
    let out = berth.exec(&["kill", &id, "KILL"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container not running"),
        "{}",
        text(&out)
    );
    assert!(
        bystander.0.try_wait().unwrap().is_none(),
        "the bystander was signalled"
    );
    // Put the real pid back so the container is cleaned up.
    state["pid"] = real_pid;
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(berth.status(&id), "running");
    assert!(berth.exec(&["delete", "-f", &id]).status.success());
}

#[test]
fn the_pids_limit_is_written_and_zero_leaves_it_alone() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    for (limit, expected) in [(42, "42"), (-1, "max"), (0, "max")] {
        let mut bundle = Bundle::new("pids");
        bundle.config["linux"]["resources"]["pids"] = json!({ "limit": limit });
        bundle.args(&["/bin/cat", "/sys/fs/cgroup/pids/pids.max"]);
        let out = berth.run(&bundle, &unique("pids"));
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expected,
            "limit {limit}"
        );
    }
}

#[test]
fn the_process_starts_with_default_signal_dispositions() {
    if !can_run() {
        return;
    }
    // Ignored signals survive execve; berth itself ignores SIGPIPE (Rust).
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("signals");
    bundle.args(&["/bin/grep", "-E", "^(SigIgn|SigBlk)", "/proc/self/status"]);
    let out = berth.run(&bundle, &unique("sigs"));
    assert!(out.status.success(), "{}", text(&out));
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("SigIgn:\t0000000000000000"), "{status}");
    assert!(status.contains("SigBlk:\t0000000000000000"), "{status}");
}

#[test]
fn a_relative_program_is_found_from_the_cwd() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("relative");
    std::fs::create_dir_all(bundle.rootfs().join("app")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", bundle.rootfs().join("app/echo")).unwrap();
    bundle.config["process"]["cwd"] = json!("/app");
    bundle.args(&["./echo", "relative ok"]);
    let out = berth.run(&bundle, &unique("rel"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "relative ok\n");
}

#[test]
fn listen_fds_in_the_container_env_keeps_nothing_open() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("listenfds");
    bundle.config["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("LISTEN_FDS=5"));
    bundle.args(&["/bin/sh", "-c", "ls -l /proc/1/fd/"]);
    bundle.write();
    let marker = open_at(&bundle.dir.join("leaked-marker"), 55);
    let mut command = berth.command(&[
        "run",
        "--bundle",
        bundle.dir.to_str().unwrap(),
        &unique("lfd"),
    ]);
    pass_fds(&mut command, &[(55, 4)]);
    let out = command.output().unwrap();
    drop(marker);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("leaked-marker"),
        "{}",
        text(&out)
    );
}

#[test]
fn usage_errors_reach_the_json_log() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let log = std::env::temp_dir().join(unique("usage-log"));
    let out = berth.exec(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format=json",
        "frobnicate",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let content = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let record: serde_json::Value =
        serde_json::from_str(content.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(record["level"], "error", "{content}");
    assert!(
        record["msg"].as_str().unwrap_or("").contains("frobnicate"),
        "{content}"
    );
}

#[test]
fn a_cwd_through_a_leaked_fd_is_refused() {
    if !can_run() {
        return;
    }
    // CVE-2024-21626: a cwd of /proc/self/fd/N with N a host directory the
    // runtime (or its caller) left open would start the process outside the
    // root. berth resolves the cwd inside the rootfs without magic links.
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("leaky-cwd");
    bundle.config["process"]["cwd"] = json!("/proc/self/fd/3");
    bundle.args(&["/bin/pwd"]);
    bundle.write();
    let host_dir = std::fs::File::open("/").unwrap();
    let fd = host_dir.as_raw_fd();
    let mut command = berth.command(&[
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        bundle.dir.to_str().unwrap(),
        &unique("leak"),
    ]);
    pass_fds(&mut command, &[(fd, 3)]);
    let out = command.output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/proc/self/fd/3"),
        "{}",
        text(&out)
    );
}

#[test]
fn proc_sys_refuses_writes_and_masked_paths_read_empty() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("proc-ro");
    bundle.args(&[
        "/bin/sh",
        "-c",
        "echo 1 > /proc/sys/kernel/shm_rmid_forced && echo SYSCTL-WRITTEN; \
         echo 1 > /proc/sys/net/ipv4/ip_forward && echo NET-SYSCTL-WRITTEN; \
         wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; echo end",
    ]);
    let out = berth.run(&bundle, &unique("procro"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("WRITTEN"), "{}", text(&out));
    // Masked: files read as /dev/null, directories as an empty tmpfs.
    assert!(stdout.contains("0\n0\n0\nend"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out)
    );
}

#[test]
fn run_with_a_terminal_and_no_socket_relays_the_callers_terminal() {
    if !can_run() {
        return;
    }
    // `script` gives berth a terminal as a person's shell would; berth
    // allocates the container's pty and relays it, as runc does.
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("run-tty");
    bundle.config["process"]["terminal"] = json!(true);
    bundle.args(&["/bin/sh", "-c", "tty; read x; echo got $x; exit 3"]);
    bundle.write();
    let out = berth.exec_on_terminal(
        &[
            "run",
            "--bundle",
            bundle.dir.to_str().unwrap(),
            &unique("runtty"),
        ],
        b"hello\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(stdout.contains("/dev/pts/0"), "{stdout}");
    assert!(stdout.contains("got hello"), "{stdout}");
}

/// Typed-ahead input the container never reads must not stop its output:
/// the relay keeps input waiting and goes on copying the pty's output.
#[test]
fn the_terminal_relay_keeps_output_flowing_while_input_waits() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("run-tty-flood");
    bundle.config["process"]["terminal"] = json!(true);
    // 200 KB of output and no reads of stdin at all, on a raw terminal (a
    // canonical one drops what does not fit; a raw one makes writers wait).
    bundle.args(&[
        "/bin/sh",
        "-c",
        "/bin/busybox stty raw -echo; sleep 0.3; i=0; while [ $i -lt 2000 ]; do echo 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789; i=$((i+1)); done; echo finished",
    ]);
    bundle.write();
    // More than the kernel buffers for the pty's input (64 KiB), less than
    // that plus the relay's own 64 KiB.
    let input = "typed ahead\n".repeat(8000);
    let out = berth.exec_on_terminal(
        &[
            "run",
            "--bundle",
            bundle.dir.to_str().unwrap(),
            &unique("flood"),
        ],
        input.as_bytes(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout.contains("finished"),
        "{}",
        &stdout[stdout.len().saturating_sub(500)..]
    );
}

/// prestart and createRuntime run "in the runtime namespace": not in the
/// network namespace the container joins by path, nor in its new time
/// namespace.
#[test]
fn runtime_hooks_run_in_the_runtime_namespaces() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    // A network namespace of someone else's for the container to join.
    let holder = Helper::spawn("unshare", &["--net", "sleep", "30"]);
    let joined = format!("/proc/{}/ns/net", holder.pid());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_link(&joined).ok() == std::fs::read_link("/proc/self/ns/net").ok()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let joined_inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&joined).unwrap().ino()
    };
    let mut bundle = Bundle::new("hookns");
    let log = bundle.dir.join("ns.log");
    let record = |name: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
            "echo {name} $(stat -L -c %i /proc/self/ns/net) $(stat -L -c %i /proc/self/ns/time) >> {}",
            log.display())]})
    };
    bundle.config["hooks"] = json!({
        "prestart": [record("prestart")],
        "createRuntime": [record("createRuntime")],
    });
    let namespaces = bundle.config["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|n| n["type"] != "network");
    namespaces.push(json!({"type": "network", "path": joined}));
    namespaces.push(json!({"type": "time"}));
    let out = berth.run(&bundle, &unique("hookns"));
    assert!(out.status.success(), "{}", text(&out));
    let host = format!("{} {}", host_ns_inode("net"), host_ns_inode("time"));
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines,
        format!("prestart {host}\ncreateRuntime {host}\n"),
        "the container's network namespace is {joined_inode}"
    );
}

/// Runs `script` in a container of `config` under both runtimes, returning
/// berth's and runc's outputs (each must succeed).
fn beside_runc(name: &str, edit: impl Fn(&mut serde_json::Value), script: &str) -> [String; 2] {
    [Runtime::berth(), Runtime::runc()].map(|rt| {
        let mut bundle = Bundle::new(name);
        bundle.args(&["/bin/sh", "-c", script]);
        edit(&mut bundle.config);
        let out = rt.run(&bundle, &unique(name));
        assert!(out.status.success(), "{:?}: {}", rt.kind, text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// The device allow-list is runc's: a `linux.devices` node is created but
/// not usable unless the rules allow it, and the host console (c 5:1) is
/// not in the defaults.
#[test]
fn devices_and_the_console_are_allowed_as_runc_allows_them() {
    if !can_run() {
        return;
    }
    let [berth, runc] = beside_runc(
        "devices",
        |c| {
            c["linux"]["devices"] = json!([{"path": "/dev/fuse", "type": "c", "major": 10,
                "minor": 229, "fileMode": 438, "uid": 0, "gid": 0}]);
            add_capability(c, "CAP_MKNOD");
            c["root"]["readonly"] = json!(false);
        },
        // `true`, not `:`: a failed redirection of a special builtin ends sh.
        "test -c /dev/fuse && echo node; true < /dev/fuse && echo fuse open; \
         mknod /tmp/console c 5 1 && echo made; true < /tmp/console && echo console open; \
         true < /dev/null && echo null open",
    );
    assert_eq!(berth, runc);
    assert_eq!(berth, "node\nmade\nnull open\n");
}

/// A tmpfs without `mode=` takes the mode of the directory it covers (runc
/// chmods it so); over a new directory it is the kernel's 1777.
#[test]
fn a_tmpfs_keeps_the_mode_of_the_directory_it_covers() {
    if !can_run() {
        return;
    }
    let [berth, runc] = beside_runc(
        "tmpfs-mode",
        |c| {
            let mounts = c["mounts"].as_array_mut().unwrap();
            for dest in ["/etc", "/fresh"] {
                mounts.push(
                    json!({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                                   "options": ["nosuid", "nodev"]}),
                );
            }
            c["root"]["readonly"] = json!(false);
        },
        "stat -c '%n %a' /etc /fresh",
    );
    assert_eq!(berth, runc);
    assert_eq!(berth, "/etc 755\n/fresh 1777\n");
}

/// `--preserve-fds` beyond the open descriptors is refused by both (runc:
/// "unable to stat preserved-fd"); near 2^32 it must not wrap around.
#[test]
fn preserve_fds_beyond_the_open_descriptors_is_refused() {
    if !can_run() {
        return;
    }
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut bundle = Bundle::new("preserve");
        bundle.args(&["/bin/echo", "ran"]);
        bundle.write();
        for count in ["4294967293", "4294967295", "1000"] {
            let id = unique("preserve");
            let dir = bundle.dir.to_str().unwrap();
            let out = rt.exec(&["run", "--preserve-fds", count, "--bundle", dir, &id]);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{:?} {count}: {}",
                rt.kind,
                text(&out)
            );
            assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
            assert!(rt.state(&id).is_none(), "{:?}: {id} left behind", rt.kind);
        }
    }
}

/// Unmounts (lazily) what a test mounted on the host, even when it fails.
struct HostMounts(Vec<std::path::PathBuf>);

impl Drop for HostMounts {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Kubernetes' Bidirectional volumes: with `rootfsPropagation: rshared` and
/// an `rshared` bind of a shared host directory, a mount made in the
/// container appears on the host, and one made on the host appears in the
/// container. pivot_root must accept the shared root (its parent goes
/// private first, as runc does).
#[test]
fn rshared_root_propagates_mounts_both_ways() {
    if !can_run() {
        return;
    }
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut bundle = Bundle::new("rshared");
        let shared = bundle.dir.join("shared");
        for sub in ["inner", "fromhost"] {
            std::fs::create_dir_all(shared.join(sub)).unwrap();
        }
        let mut mounted = HostMounts(Vec::new());
        let flags = nix::mount::MsFlags::MS_BIND;
        nix::mount::mount(Some(&shared), &shared, None::<&str>, flags, None::<&str>).unwrap();
        mounted.0.push(shared.clone());
        let share = nix::mount::MsFlags::MS_SHARED;
        nix::mount::mount(None::<&str>, &shared, None::<&str>, share, None::<&str>).unwrap();
        mounted.0.push(shared.join("inner"));

        bundle.config["linux"]["rootfsPropagation"] = json!("rshared");
        bundle.config["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/shared", "type": "bind", "source": shared,
            "options": ["rbind", "rshared"]
        }));
        add_capability(&mut bundle.config, "CAP_SYS_ADMIN");
        bundle.args(&[
            "/bin/sh",
            "-c",
            "mount -t tmpfs -o size=1m inner /shared/inner && touch /shared/inner/made-inside \
             || exit 2; i=0; while ! test -e /shared/fromhost/marker; do \
             i=$((i+1)); test $i -gt 3000 && exit 3; sleep 0.01; done; echo saw the host mount",
        ]);
        bundle.write();
        let id = unique("rshared");
        let mut child = rt
            .command(&["run", "--bundle", bundle.dir.to_str().unwrap(), &id])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The container's mount shows on the host (until the container gives up).
        let inside = shared.join("inner/made-inside");
        while !inside.exists() && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let host_saw = inside.exists();
        if host_saw {
            let fromhost = shared.join("fromhost");
            nix::mount::mount(
                Some("tmpfs"),
                &fromhost,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=1m"),
            )
            .unwrap();
            mounted.0.push(fromhost.clone());
            std::fs::write(fromhost.join("marker"), "").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            host_saw,
            "{:?}: the host does not see the container's mount\n{}",
            rt.kind,
            text(&out)
        );
        assert!(out.status.success(), "{:?}: {}", rt.kind, text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "saw the host mount\n");
    }
}

/// `unbindable` and the other root propagations run, and `/` carries the
/// one asked for. DIFFERENCE: runc 1.1.5 fails `unbindable` when the rootfs
/// lies on the host's `/` mount (its bind of the rootfs is refused) and does
/// not apply the propagation to the container's `/` after pivot_root.
#[test]
fn every_root_propagation_runs() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    for (propagation, shown) in [
        ("shared", "shared:"),
        ("rshared", "shared:"),
        ("slave", ""),
        ("rslave", ""),
        ("private", ""),
        ("rprivate", ""),
        ("unbindable", "unbindable"),
        ("runbindable", "unbindable"),
    ] {
        let mut bundle = Bundle::new("propagation");
        bundle.config["linux"]["rootfsPropagation"] = json!(propagation);
        bundle.args(&["/bin/cat", "/proc/self/mountinfo"]);
        let out = berth.run(&bundle, &unique("propagation"));
        assert!(out.status.success(), "{propagation}: {}", text(&out));
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let root = table
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or_default();
        // Between the mount options and " - ": the propagation fields.
        let fields = root.split(" - ").next().unwrap_or_default();
        assert!(
            fields.split(' ').skip(6).any(|f| f.starts_with(shown)) || shown.is_empty(),
            "{propagation}: {root}"
        );
        if shown.is_empty() {
            assert!(!fields.contains("shared:"), "{propagation}: {root}");
        }
    }
}

/// The console belongs to the process's user (its group stays devpts'),
/// so a non-root process can use its terminal: runc does the same.
#[test]
fn the_console_belongs_to_the_process_user() {
    if !can_run() {
        return;
    }
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut bundle = Bundle::new("console-owner");
        bundle.config["process"]["terminal"] = json!(true);
        bundle.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        bundle.args(&[
            "/bin/sh",
            "-c",
            "stat -L -c 'owner %u' /proc/self/fd/0; echo done",
        ]);
        bundle.write();
        let socket = bundle.dir.join("console.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let id = unique("console");
        let dir = bundle.dir.to_str().unwrap();
        let mut create = rt
            .command(&[
                "create",
                "--bundle",
                dir,
                "--console-socket",
                socket.to_str().unwrap(),
                &id,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let master = receive_fd(&listener);
        assert!(create.wait().unwrap().success(), "{:?}: create", rt.kind);
        assert!(rt.exec(&["start", &id]).status.success());
        let output = read_terminal_until_done(master);
        assert!(output.contains("owner 1000"), "{:?}: {output}", rt.kind);
        rt.wait_stopped(&id);
    }
}

/// A config without a mount namespace still gets one: the container's
/// mounts never land in the host's table. DIFFERENCE: runc 1.1.5 runs such
/// a config in the host's mount namespace (chroot instead of pivot_root)
/// and leaves its proc, dev, sys mounts on the host (17 here), and refuses
/// it when maskedPaths are set; so runc is not run here.
#[test]
fn a_config_without_a_mount_namespace_runs_in_one_of_its_own() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("no-mountns");
    bundle.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "mount");
    bundle.args(&["/bin/readlink", "/proc/self/ns/mnt"]);
    let out = berth.run(&bundle, &unique("nomnt"));
    assert!(out.status.success(), "{}", text(&out));
    let host = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(seen.starts_with("mnt:["), "{seen}");
    assert_ne!(seen, host.to_string_lossy(), "the host's mount namespace");
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !table.contains(bundle.rootfs().to_str().unwrap()),
        "mounts left on the host:\n{table}"
    );
}

/// A createContainer hook runs from the container's root; a startContainer
/// hook runs under the container's seccomp filter (here, one that refuses
/// mkdir): both as runc runs them.
#[test]
fn container_hooks_run_from_the_root_and_under_seccomp() {
    if !can_run() {
        return;
    }
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut bundle = Bundle::new("hook-places");
        let record = bundle.dir.join("create-cwd");
        bundle.config["root"]["readonly"] = json!(false);
        bundle.config["process"]["noNewPrivileges"] = json!(true);
        bundle.config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        });
        bundle.config["hooks"] = json!({
            "createContainer": [{"path": "/bin/sh",
                "args": ["sh", "-c", format!("pwd > {}", record.display())]}],
            "startContainer": [{"path": "/bin/sh",
                "args": ["sh", "-c", "mkdir /made-by-hook"]}]
        });
        bundle.args(&["/bin/true"]);
        bundle.write();
        let id = unique("hooks");
        let dir = bundle.dir.to_str().unwrap();
        let created = rt.exec(&["create", "--bundle", dir, &id]);
        assert!(
            created.status.success(),
            "{:?}: {}",
            rt.kind,
            text(&created)
        );
        let cwd = std::fs::read_to_string(&record).unwrap();
        assert_eq!(
            cwd.trim(),
            bundle.rootfs().to_str().unwrap(),
            "{:?}",
            rt.kind
        );
        // The hook fails, and with it the start (berth's `start` says so;
        // runc's returns before its init runs the hook).
        rt.exec(&["start", &id]);
        rt.wait_stopped(&id);
        let made = bundle.rootfs().join("made-by-hook").exists();
        assert!(!made, "{:?}: the hook's mkdir was allowed", rt.kind);
    }
}
