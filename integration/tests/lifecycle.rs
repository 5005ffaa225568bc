//! The runc CLI contract: lifecycle verbs, their output and exit codes.

use berth_integration::*;
use serde_json::json;

#[test]
fn run_prints_output_and_returns_the_exit_status() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("run");
    bundle.args(&["/bin/sh", "-c", "echo hello from $(hostname); exit 3"]);
    let out = berth.run(&bundle, &unique("run"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from berth-test\n"
    );
}

#[test]
fn run_frees_the_id_at_once_and_its_state_directory_goes_after() {
    if !can_run() {
        return;
    }
    // `run` retires the state directory under a name no id has and leaves
    // its removal to the create's cleaner (see `container::run`): the id
    // is free when `run` returns, and nothing stays behind.
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("run-free");
    bundle.args(&["/bin/true"]);
    let id = unique("free");
    for round in 0..3 {
        let out = berth.run(&bundle, &id);
        assert!(out.status.success(), "round {round}\n{}", text(&out));
        let state = berth.exec(&["state", &id]);
        assert!(!state.status.success(), "round {round}: {}", text(&state));
        let list = berth.exec(&["list", "--quiet"]);
        assert_eq!(String::from_utf8_lossy(&list.stdout), "", "round {round}");
    }
    let left = || -> Vec<_> {
        std::fs::read_dir(&berth.root)
            .expect("the runtime root")
            .flatten()
            .map(|e| e.file_name())
            .collect()
    };
    within_10_s(
        || left().is_empty(),
        || format!("left in the runtime root: {:?}", left()),
    );
}

/// Waits for `done`, which the create's cleaner brings about after `run`
/// has returned; fails with `what` after 10 s.
fn within_10_s(done: impl Fn() -> bool, what: impl Fn() -> String) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{}",
            what()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_retired_directory_whose_cleaner_was_killed_does_not_stay_for_ever() {
    if !can_run() {
        return;
    }
    // A cleaner killed before it removed the directory `run` retired
    // (systemd stops what is left of a unit once its main process, `run`,
    // has exited; a pid namespace goes with its first process) leaves
    // `@ID.PID`, which no id names: neither `delete --force` nor `list`
    // can reach it. A later cleaner removes it.
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("run-retired");
    bundle.args(&["/bin/true"]);
    let dead = {
        let mut child = std::process::Command::new("true").spawn().expect("true");
        child.wait().expect("wait true");
        child.id()
    };
    let stale = berth.root.join(format!("@gone.{dead}"));
    std::fs::create_dir_all(&stale).expect("stale retired directory");
    std::fs::write(stale.join("state.json"), b"{}").expect("stale state");
    let id = unique("retired");
    let out = berth.run(&bundle, &id);
    assert!(out.status.success(), "{}", text(&out));
    within_10_s(
        || !stale.exists(),
        || format!("{} is left for ever", stale.display()),
    );
}

#[test]
fn run_reports_128_plus_signal_when_killed() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("signal");
    bundle.args(&["/bin/sleep", "1000"]);
    bundle.write();
    let id = unique("sig");
    let mut run = berth
        .command(&["run", "--bundle", bundle.dir.to_str().unwrap(), &id])
        .spawn()
        .unwrap();
    for _ in 0..2000 {
        if berth.status(&id) == "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // A pid namespace's init ignores signals it has no handler for, except
    // SIGKILL from outside.
    assert!(berth.exec(&["kill", &id, "9"]).status.success());
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    assert!(berth.state(&id).is_none(), "run removes the container");
}

#[test]
fn create_start_state_kill_delete() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("lifecycle");
    bundle.args(&["/bin/sleep", "1000"]);
    bundle.write();
    let id = unique("life");
    let pid_file = bundle.dir.join("pid");
    let out = berth.exec(&[
        "create",
        "--bundle",
        bundle.dir.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let state = berth.state(&id).expect("state");
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["ociVersion"], "1.2.0");
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(state["pid"], pid);
    assert_eq!(state["bundle"], bundle.dir.to_str().unwrap());
    // The init has not exec'd the process yet: it waits as the sealed
    // launcher (the memfd's name; "berth" where it re-executed itself).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert!(
        comm.trim() == "berth" || comm.starts_with("memfd:berth"),
        "{comm}"
    );

    let out = berth.exec(&["start", &id]);
    assert!(out.status.success(), "{}", text(&out));
    // start returns only after execve: the process is sleep now.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");
    assert_eq!(berth.status(&id), "running");

    let list = berth.exec(&["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["status"], "running");
    let table = berth.exec(&["list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id), "{table}");

    let out = berth.exec(&["kill", &id, "KILL"]);
    assert!(out.status.success(), "{}", text(&out));
    berth.wait_stopped(&id);
    assert_eq!(berth.state(&id).unwrap()["pid"], 0);
    let out = berth.exec(&["delete", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(berth.state(&id).is_none());
    assert!(!berth.root.join(&id).exists());
}

#[test]
fn kill_accepts_numbers_and_names_and_delete_force_stops_a_running_container() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("kill");
    bundle.args(&[
        "/bin/sh",
        "-c",
        "trap 'exit 42' USR1; while true; do sleep 0.1; done",
    ]);
    bundle.write();
    let id = unique("kill");
    let dir = bundle.dir.to_str().unwrap();
    assert!(berth
        .exec(&["run", "--detach", "--bundle", dir, &id])
        .status
        .success());
    assert_eq!(berth.status(&id), "running");
    assert!(berth.exec(&["kill", &id, "10"]).status.success());
    berth.wait_stopped(&id);
    assert!(berth.exec(&["delete", &id]).status.success());

    let id = unique("force");
    assert!(berth
        .exec(&["run", "--detach", "--bundle", dir, &id])
        .status
        .success());
    assert!(berth.exec(&["delete", "--force", &id]).status.success());
    assert!(berth.state(&id).is_none());
}

#[test]
fn version_spec_and_features() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let out = berth.exec(&["--version"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("berth version "), "{text}");
    assert!(text.contains("\nspec: 1."), "{text}");

    let dir = std::env::temp_dir().join(unique("spec"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = berth.exec(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(out.status.success());
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["root"]["path"], "rootfs");
    let again = berth.exec(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "spec must not overwrite config.json"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let out = berth.exec(&["features"]);
    let features: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(features["linux"]["namespaces"].as_array().unwrap().len() >= 8);
}

/// berth starts without std's start-up (see its `entry.rs`): descriptors
/// 0-2 a caller left closed are opened on /dev/null all the same, so no
/// file berth opens takes stdout's place.
#[test]
fn berth_runs_with_its_stdio_closed() {
    if !can_run() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let berth = Runtime::berth();
    let run_closed = |args: &[&str], closed: &'static [i32]| {
        let mut command = berth.command(args);
        // SAFETY: close(2) only, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for fd in closed {
                    libc::close(*fd);
                }
                Ok(())
            })
        };
        command.status().unwrap()
    };
    assert!(run_closed(&["--version"], &[0, 1, 2]).success());
    assert_eq!(
        run_closed(&["state", "none-such"], &[0, 1, 2]).code(),
        Some(1)
    );
    // With stdout closed, the log file berth opens first would become its
    // stdout, and `features` would print into the log.
    let log = std::env::temp_dir().join(unique("closed-stdout.log"));
    let log_arg = log.to_str().unwrap();
    assert!(run_closed(&["--log", log_arg, "features"], &[1]).success());
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logged.contains("ociVersionMin"),
        "features went into the log: {logged}"
    );
    let _ = std::fs::remove_file(&log);
}

#[test]
fn errors_go_to_the_json_log_as_engines_read_it() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let log = std::env::temp_dir().join(unique("log"));
    let out = berth.exec(&[
        "--log-format=json",
        "--log",
        log.to_str().unwrap(),
        "state",
        "no-such-container",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let content = std::fs::read_to_string(&log).unwrap();
    let record: serde_json::Value = serde_json::from_str(content.lines().last().unwrap()).unwrap();
    assert_eq!(record["level"], "error");
    assert_eq!(record["msg"], "container does not exist");
    assert!(record["time"].as_str().unwrap().ends_with('Z'));
    std::fs::remove_file(&log).unwrap();
}

/// A temporary directory removed even when the test fails.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn dir(prefix: &str) -> Scratch {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `script` with `sh` as user and group 65534 with no other groups: a
/// local user without privileges.
fn as_nobody(script: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(script)
        .output()
        .expect("setpriv (util-linux)")
}

/// A local user plants symlinks to a root-owned file at every temporary
/// name a pid file could be written through (runc's `.NAME`, berth's old
/// `.NAME.PID.tmp` for the next pids) in a world-writable sticky directory,
/// and tries to read the runtime's state. Both runtimes must leave the file
/// intact (berth writes the pid file, runc refuses), and keep their state
/// from that user.
#[test]
fn a_local_user_can_neither_redirect_the_pid_file_nor_read_the_state() {
    if !can_run() {
        return;
    }
    for rt in [Runtime::berth(), Runtime::runc()] {
        let shared = Scratch::dir("berth-it-sticky");
        std::fs::set_permissions(
            &shared.0,
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        let precious = Scratch::dir("berth-it-precious");
        let precious = precious.0.join("file");
        std::fs::write(&precious, "precious\n").unwrap();
        let next: u64 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let plant = format!(
            "cd {dir} && ln -s {target} .c.pid && for p in $(seq {from} {to}); do ln -s {target} .c.pid.$p.tmp; done",
            dir = shared.0.display(),
            target = precious.display(),
            from = next + 1,
            to = next + 400,
        );
        let planted = as_nobody(&plant);
        assert!(planted.status.success(), "{}", text(&planted));

        let mut bundle = Bundle::new("pidfile");
        bundle.args(&["/bin/sleep", "1000"]);
        bundle.config["process"]["env"] = json!(["PATH=/bin", "TOKEN=s3cret"]);
        bundle.write();
        let id = unique("pidfile");
        let pid_file = shared.0.join("c.pid");
        let out = rt.exec(&[
            "create",
            "--bundle",
            bundle.dir.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
        ]);
        assert_eq!(
            std::fs::read_to_string(&precious).unwrap(),
            "precious\n",
            "{:?} wrote through a planted symlink",
            rt.kind
        );
        if rt.kind == Kind::Runc && !out.status.success() {
            // runc refuses rather than write (its temporary name is fixed);
            // berth's is not known in advance, so it writes the pid file.
            assert!(text(&out).contains("file exists"), "{}", text(&out));
            let dir = bundle.dir.to_str().unwrap();
            assert!(rt.exec(&["create", "--bundle", dir, &id]).status.success());
        } else {
            assert!(out.status.success(), "{:?}: {}", rt.kind, text(&out));
            let meta = std::fs::symlink_metadata(&pid_file).unwrap();
            assert!(meta.file_type().is_file(), "{:?}: pid file", rt.kind);
            let pid = std::fs::read_to_string(&pid_file).unwrap();
            assert_eq!(
                rt.state(&id).unwrap()["pid"].as_i64().unwrap().to_string(),
                pid.trim()
            );
        }

        // The state (which holds the container's environment) is the owner's.
        let root = rt.root.display().to_string();
        let dir = rt.root.join(&id).display().to_string();
        for attempt in [
            format!("ls {root}"),
            format!("cat {dir}/state.json"),
            format!("cat {dir}/config.json"),
            format!("{} --root {root} state {id}", rt.bin.display()),
        ] {
            let out = as_nobody(&attempt);
            assert!(
                !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains(&id),
                "{:?}: a local user ran {attempt:?}\n{}",
                rt.kind,
                text(&out)
            );
        }
        for (path, private) in [
            (rt.root.clone(), 0o700),
            (rt.root.join(&id), 0o711),
            (rt.root.join(&id).join("state.json"), 0o600),
        ] {
            if let Ok(meta) = std::fs::metadata(&path) {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
                assert_eq!(mode, private, "{:?}: {}", rt.kind, path.display());
            }
        }
        assert!(rt.exec(&["delete", "--force", &id]).status.success());
    }
}

/// Until `start`, the init must not show the environment or the command
/// line of whoever ran `create`: a process in the container that may trace
/// (an exec with CAP_SYS_PTRACE) reads `/proc/1/environ` and
/// `/proc/1/cmdline`. runc's init is a fresh program; berth's wipes them.
/// glibc 2.36 points `GLIBC_TUNABLES` at a copy of its own before `main`:
/// the wipe holds with it as the caller's first variable and as its last
/// (`Command` passes them sorted by name).
#[test]
fn the_init_before_start_shows_nothing_of_its_caller() {
    if !can_run() {
        return;
    }
    let tunables = ("GLIBC_TUNABLES", "glibc.malloc.arena_max=1");
    let callers: [(Runtime, &[(&str, &str)]); 4] = [
        (Runtime::berth(), &[]),
        (Runtime::berth(), &[tunables, ("HOST_SECRET", "hunter2")]),
        (Runtime::berth(), &[("A_HOST_SECRET", "hunter2"), tunables]),
        (Runtime::runc(), &[]),
    ];
    for (rt, only) in callers {
        let mut bundle = Bundle::new("environ");
        bundle.args(&["/bin/sleep", "1000"]);
        add_capability(&mut bundle.config, "CAP_SYS_PTRACE");
        bundle.write();
        let id = unique("environ");
        // Not through pipes: the created init keeps the caller's stdio.
        let mut create = rt.command(&["create", "--bundle", bundle.dir.to_str().unwrap(), &id]);
        if only.is_empty() {
            create.env("HOST_SECRET", "hunter2");
        } else {
            create.env_clear().envs(only.iter().copied());
        }
        let status = create
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{:?} {only:?}: create failed", rt.kind);
        let seen = rt.exec(&[
            "exec",
            &id,
            "/bin/sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/environ; echo; tr '\\0' ' ' < /proc/1/cmdline",
        ]);
        assert!(seen.status.success(), "{:?}: {}", rt.kind, text(&seen));
        let seen = String::from_utf8_lossy(&seen.stdout).into_owned();
        for secret in ["hunter2", "HOST_SECRET", bundle.dir.to_str().unwrap()] {
            assert!(
                !seen.contains(secret),
                "{:?} {only:?}: the container sees {secret:?} in its init:\n{seen}",
                rt.kind
            );
        }
        assert!(rt.exec(&["delete", "--force", &id]).status.success());
    }
}

/// A detached `sleep` container of `rt` with its cgroups at `/ID` in every
/// hierarchy (so the test knows where they are).
fn sleeper(rt: &Runtime, name: &str) -> (Bundle, String) {
    let mut bundle = Bundle::new(name);
    bundle.args(&["/bin/sleep", "1000"]);
    let id = unique(name);
    bundle.config["linux"]["cgroupsPath"] = json!(format!("/{id}"));
    bundle.write();
    let dir = bundle.dir.to_str().unwrap();
    let out = rt.exec(&["run", "--detach", "--bundle", dir, &id]);
    assert!(out.status.success(), "{:?}: {}", rt.kind, text(&out));
    (bundle, id)
}

/// Output through a pipe whose reader is gone: the runtime must end as Go
/// programs do (killed by SIGPIPE), without a panic on stderr.
fn into_closed_pipe(rt: &Runtime, args: &[&str]) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = rt
        .command(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What scripts and engines rely on in the CLI, beside runc: quiet EPIPE,
/// the events record's field order, debug records, the version lines,
/// signal 0, negative update values, `exec --ignore-paused` and `--cgroup`,
/// and `ps` of a stopped container.
#[test]
fn cli_contracts_as_runc_keeps_them() {
    if !can_run() {
        return;
    }
    for rt in [Runtime::berth(), Runtime::runc()] {
        let kind = rt.kind;
        let (_bundle, id) = sleeper(&rt, "cli");
        let ok = |args: &[&str]| {
            let out = rt.exec(args);
            assert!(out.status.success(), "{kind:?} {args:?}: {}", text(&out));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };

        for args in [&["state", &id][..], &["events", "--interval", "100ms", &id]] {
            let (signal, stderr) = into_closed_pipe(&rt, args);
            assert_eq!(signal, Some(libc::SIGPIPE), "{kind:?} {args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{kind:?}: {stderr}");
        }
        let stats = ok(&["events", "--stats", &id]);
        let prefix = format!("{{\"type\":\"stats\",\"id\":\"{id}\",\"data\":{{");
        assert!(stats.starts_with(&prefix), "{kind:?}: {stats}");

        let version = ok(&["--version"]);
        let lines: Vec<&str> = version.lines().collect();
        let name = if kind == Kind::Berth { "berth" } else { "runc" };
        assert!(
            lines[0].starts_with(&format!("{name} version ")),
            "{version}"
        );
        assert!(lines.iter().any(|l| l.starts_with("commit: ")), "{version}");
        let spec = lines.iter().find_map(|l| l.strip_prefix("spec: "));
        assert!(spec.is_some_and(|s| s.starts_with("1.")), "{version}");

        ok(&["kill", &id, "0"]);
        ok(&["kill", "--all", &id, "0"]);
        ok(&["update", "--memory-swap", "-1", "--cpu-quota", "-1", &id]);

        // A sub-cgroup in the memory hierarchy only.
        let sub = std::path::Path::new("/sys/fs/cgroup/memory")
            .join(&id)
            .join("sub");
        std::fs::create_dir(&sub).unwrap();
        let cgroups = ok(&[
            "exec",
            "--cgroup",
            "memory:sub",
            &id,
            "cat",
            "/proc/self/cgroup",
        ]);
        let memory = cgroups.lines().find(|l| l.contains(":memory:"));
        assert_eq!(
            memory.and_then(|l| l.rsplit(':').next()),
            Some(format!("/{id}/sub").as_str()),
            "{kind:?}: {cgroups}"
        );
        let missing = rt.exec(&["exec", "--cgroup", "memory:nope", &id, "true"]);
        assert_eq!(
            missing.status.code(),
            Some(255),
            "{kind:?}: {}",
            text(&missing)
        );

        ok(&["pause", &id]);
        let refused = rt.exec(&["exec", &id, "true"]);
        assert_eq!(refused.status.code(), Some(255), "{kind:?}");
        assert!(
            text(&refused).contains("--ignore-paused"),
            "{}",
            text(&refused)
        );
        // The process starts frozen and runs once the container resumes.
        let waiting = rt
            .command(&["exec", "--ignore-paused", &id, "echo", "ran"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        ok(&["resume", &id]);
        let ran = waiting.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "ran\n", "{kind:?}");

        ok(&["kill", &id, "KILL"]);
        rt.wait_stopped(&id);
        assert_eq!(ok(&["ps", "--format", "json", &id]).trim(), "null");
        assert!(ok(&["ps", &id]).starts_with("UID"), "{kind:?}");
        let stopped = rt.exec(&["kill", &id, "0"]);
        assert!(
            text(&stopped).contains("container not running"),
            "{}",
            text(&stopped)
        );
        ok(&["delete", &id]);
        assert!(!sub.exists(), "{kind:?} left {}", sub.display());
    }
}

/// `--debug` writes debug records, to stderr or to `--log`, in text or JSON
/// as `--log-format` says (runc's records name its setup steps).
#[test]
fn debug_writes_debug_records_in_both_formats() {
    if !can_run() {
        return;
    }
    for rt in [Runtime::berth(), Runtime::runc()] {
        let bundle = Bundle::new("debug");
        bundle.write();
        let dir = bundle.dir.to_str().unwrap();
        let out = rt.exec(&["--debug", "run", "--bundle", dir, &unique("debug")]);
        assert!(out.status.success(), "{:?}: {}", rt.kind, text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("level=debug msg="),
            "{:?}: {stderr}",
            rt.kind
        );

        let log = bundle.dir.join("debug.log");
        let log_arg = log.to_str().unwrap();
        let args = [
            "--debug",
            "--log",
            log_arg,
            "--log-format",
            "json",
            "run",
            "--bundle",
            dir,
        ];
        let id = unique("debug");
        let out = rt.exec(&[&args[..], &[id.as_str()]].concat());
        assert!(out.status.success(), "{:?}: {}", rt.kind, text(&out));
        let records = std::fs::read_to_string(&log).unwrap();
        let debug = records
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["level"] == "debug" && r["msg"].is_string() && r["time"].is_string())
            .count();
        assert!(debug > 0, "{:?}: {records}", rt.kind);
    }
}
