//! The init's sealed launcher (`runtime/launcher/launcher.rs`) against the
//! path it replaced: the same container with a `startContainer` hook keeps
//! the init's re-execution of berth, which then execs the process itself
//! (see `runtime/src/sealed_init.rs`). Whatever the process sees, and
//! whatever `run` and `start` report, must not tell the two apart.

use std::os::unix::fs::PermissionsExt;

use berth_integration::*;
use serde_json::{json, Value};

/// Which way the init ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The sealed launcher (the default).
    Launcher,
    /// The re-executed berth, forced by a `startContainer` hook.
    Reexecuted,
}

/// How the container is started.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Run,
    CreateStart,
}

fn bundle_for(name: &str, path: Path, adjust: impl FnOnce(&mut Value)) -> Bundle {
    let mut bundle = Bundle::new(name);
    adjust(&mut bundle.config);
    if path == Path::Reexecuted {
        bundle.config["hooks"] = json!({"startContainer": [{"path": "/bin/true"}]});
    }
    bundle.write();
    bundle
}

/// Starts the bundle's container, waits for it, and returns what berth
/// and the process printed (the id replaced by `ID`) and the exit status.
fn outcome(bundle: &Bundle, verb: Verb) -> (Option<i32>, String, String) {
    let berth = Runtime::berth();
    let id = unique("launch");
    let dir = bundle.dir.to_str().unwrap();
    let out = match verb {
        Verb::Run => berth.exec(&["run", "--bundle", dir, &id]),
        Verb::CreateStart => {
            let created = berth.exec(&["create", "--bundle", dir, &id]);
            match created.status.success() {
                true => berth.exec(&["start", &id]),
                false => created,
            }
        }
    };
    let _ = berth.exec(&["delete", "--force", &id]);
    let clean = |bytes: &[u8]| String::from_utf8_lossy(bytes).replace(&id, "ID");
    (out.status.code(), clean(&out.stdout), clean(&out.stderr))
}

/// A file in the rootfs with `mode`.
fn put(bundle: &Bundle, name: &str, content: &str, mode: u32) {
    let path = bundle.rootfs().join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_failed_exec_reads_as_it_did_through_run_and_create_start() {
    if !can_run() {
        return;
    }
    // ENOENT from the interpreter, ENOEXEC from a file no loader knows (both
    // from the launcher's execve), EACCES from the lookup the init still
    // does while it builds the container.
    let cases = [
        (
            "/bad-interpreter",
            "#!/no/such/interpreter\n",
            0o755,
            "exec \"/bad-interpreter\": No such file or directory (os error 2)",
        ),
        (
            "/not-a-program",
            "just text\n",
            0o755,
            "exec \"/not-a-program\": Exec format error (os error 8)",
        ),
        (
            "/not-executable",
            "#!/bin/sh\n",
            0o644,
            "exec: \"/not-executable\": Permission denied (os error 13)",
        ),
    ];
    for (program, content, mode, expected) in cases {
        for verb in [Verb::Run, Verb::CreateStart] {
            let mut seen = Vec::new();
            for path in [Path::Launcher, Path::Reexecuted] {
                let bundle = bundle_for("launch-fail", path, |c| {
                    c["process"]["args"] = json!([program]);
                });
                put(&bundle, &program[1..], content, mode);
                let (code, _, stderr) = outcome(&bundle, verb);
                assert_ne!(code, Some(0), "{program} {verb:?} {path:?}: {stderr}");
                assert!(
                    stderr.contains(expected),
                    "{program} {verb:?} {path:?}: {stderr}"
                );
                seen.push((code, stderr));
            }
            assert_eq!(seen[0], seen[1], "{program} {verb:?}");
        }
    }
}

/// The process's view of itself: capability sets, no_new_privs, seccomp,
/// umask, limits and working directory, read by the process (pid 1).
const SELF_VIEW: &str = "grep -E '^(Cap|NoNewPrivs|Seccomp|Umask)' /proc/1/status; \
                         cat /proc/1/limits; pwd; umask";

fn bits(names: &[u32]) -> String {
    format!("{:016x}", names.iter().fold(0u64, |m, c| m | 1 << c))
}

fn line<'a>(view: &'a str, key: &str) -> &'a str {
    view.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in {view}"))
}

#[test]
fn the_process_gets_the_same_credentials_and_settings_either_way() {
    if !can_run() {
        return;
    }
    const CHOWN: u32 = 0;
    const KILL: u32 = 5;
    const NET_BIND_SERVICE: u32 = 10;
    // A non-root user with ambient capabilities, no_new_privs, a seccomp
    // filter, a limit, a umask and a cwd of its own.
    let user = |c: &mut Value| {
        let caps = json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "umask": 0o027});
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps,
        });
        c["process"]["noNewPrivileges"] = json!(true);
        c["process"]["cwd"] = json!("/tmp");
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mknodat"], "action": "SCMP_ACT_ERRNO"}],
        });
        c["process"]["args"] = json!(["/bin/sh", "-c", SELF_VIEW]);
    };
    // Root with the default sets, one capability more in the bounding set
    // only, an inheritable one, and without no_new_privs (which would keep
    // the permitted set from growing to the bounding set at the execve).
    let root = |c: &mut Value| {
        c["process"]["noNewPrivileges"] = json!(false);
        let caps = &mut c["process"]["capabilities"];
        caps["bounding"]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_CHOWN"));
        caps["inheritable"] = json!(["CAP_KILL"]);
        c["process"]["args"] = json!(["/bin/sh", "-c", SELF_VIEW]);
    };
    let mut views = Vec::new();
    for (name, adjust) in [("user", &user as &dyn Fn(&mut Value)), ("root", &root)] {
        let mut seen = Vec::new();
        for path in [Path::Launcher, Path::Reexecuted] {
            let bundle = bundle_for("launch-creds", path, adjust);
            let (code, stdout, stderr) = outcome(&bundle, Verb::Run);
            assert_eq!(code, Some(0), "{name} {path:?}: {stderr}");
            seen.push(stdout);
        }
        assert_eq!(seen[0], seen[1], "{name}: launcher, then re-executed");
        views.push(seen.swap_remove(0));
    }
    // And what the kernel's rules say they are: a non-root user keeps its
    // ambient set, root gets its bounding set with its inheritable one.
    let user = &views[0];
    let ambient = bits(&[KILL, NET_BIND_SERVICE]);
    for key in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
        assert_eq!(line(user, key), ambient, "{key} {user}");
    }
    assert_eq!(
        line(user, "CapBnd:"),
        bits(&[CHOWN, KILL, NET_BIND_SERVICE])
    );
    assert_eq!(line(user, "NoNewPrivs:"), "1");
    assert_eq!(line(user, "Seccomp:"), "2");
    assert_eq!(line(user, "Umask:"), "0027");
    let files = line(user, "Max open files");
    assert_eq!(
        files.split_whitespace().take(2).collect::<Vec<_>>(),
        ["256", "512"]
    );
    assert!(user.ends_with("/tmp\n0027\n"), "{user}");
    let root = &views[1];
    const AUDIT_WRITE: u32 = 29;
    let bounding = bits(&[CHOWN, KILL, NET_BIND_SERVICE, AUDIT_WRITE]);
    for key in ["CapBnd:", "CapPrm:", "CapEff:"] {
        assert_eq!(line(root, key), bounding, "{key} {root}");
    }
    assert_eq!(line(root, "CapInh:"), bits(&[KILL]), "{root}");
    // The spec's ambient set, where its inheritable set allows.
    assert_eq!(line(root, "CapAmb:"), bits(&[KILL]), "{root}");
}

// --- The review's findings: each container runs on both paths (the
// launcher, and the re-execution forced by a profile).

/// Makes `launcher_passes` false with a rule that never matches (an
/// `execveat` of descriptor 999999): the init re-executes berth, with no
/// `startContainer` hook (which would fork after the uid switch).
fn force_reexecution(config: &mut Value) {
    let seccomp = &mut config["linux"]["seccomp"];
    if seccomp.is_null() {
        *seccomp = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []});
    }
    seccomp["syscalls"].as_array_mut().unwrap().push(json!({
        "names": ["execveat"],
        "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 999_999, "op": "SCMP_CMP_EQ"}],
    }));
}

/// no_new_privs, and a profile that allows everything but
/// `prctl(PR_SET_DUMPABLE, …)` (busybox itself calls `prctl(PR_GET_NAME)`).
fn refuse_prctl(config: &mut Value, action: &str) {
    const PR_SET_DUMPABLE: u64 = 4;
    config["process"]["noNewPrivileges"] = json!(true);
    config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["prctl"],
            "action": action,
            "args": [{"index": 0, "value": PR_SET_DUMPABLE, "op": "SCMP_CMP_EQ"}],
        }],
    });
}

fn bundle_on_either_path(name: &str, reexecute: bool, adjust: impl FnOnce(&mut Value)) -> Bundle {
    let mut bundle = Bundle::new(name);
    adjust(&mut bundle.config);
    if reexecute {
        force_reexecution(&mut bundle.config);
    }
    bundle.write();
    bundle
}

#[test]
fn a_no_new_privs_profile_that_kills_prctl_runs_either_way() {
    if !can_run() {
        return;
    }
    // With no_new_privs the filter goes on last: the re-executed init
    // makes no prctl under it, the launcher does (PR_SET_DUMPABLE first).
    for reexecute in [true, false] {
        let bundle = bundle_on_either_path("launch-prctl-kill", reexecute, |c| {
            refuse_prctl(c, "SCMP_ACT_KILL")
        });
        let (code, _, stderr) = outcome(&bundle, Verb::Run);
        assert_eq!(code, Some(0), "reexecuted {reexecute}: {stderr}");
        let (code, _, stderr) = outcome(&bundle, Verb::CreateStart);
        assert_eq!(
            code,
            Some(0),
            "create+start, reexecuted {reexecute}: {stderr}"
        );
    }
}

#[test]
fn a_waiting_launcher_is_non_dumpable_even_where_prctl_is_refused() {
    if !can_run() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    // A non-root process: /proc/PID/* belongs to root only while the
    // process is non-dumpable.
    for reexecute in [true, false] {
        let bundle = bundle_on_either_path("launch-prctl-errno", reexecute, |c| {
            refuse_prctl(c, "SCMP_ACT_ERRNO");
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        });
        let berth = Runtime::berth();
        let id = unique("launch-dump");
        let out = berth.exec(&["create", "--bundle", bundle.dir.to_str().unwrap(), &id]);
        assert!(out.status.success(), "{}", text(&out));
        let pid = berth.state(&id).unwrap()["pid"].as_i64().unwrap();
        let owner = std::fs::metadata(format!("/proc/{pid}/fd")).unwrap().uid();
        let _ = berth.exec(&["delete", "--force", &id]);
        assert_eq!(
            owner, 0,
            "reexecuted {reexecute}: the created container's init is dumpable"
        );
    }
}

#[test]
fn an_nproc_refusal_reads_as_it_did() {
    if !can_run() {
        return;
    }
    use std::os::unix::process::CommandExt;
    // One process of uid 4243 elsewhere on the host: the init's switch to
    // that uid under RLIMIT_NPROC 0 marks it over the limit, and the next
    // execve fails with EAGAIN. That execve was the user's (at the
    // release), now it is the launcher's (at create).
    let mut holder = std::process::Command::new("sleep")
        .arg("60")
        .uid(4243)
        .gid(4243)
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for reexecute in [true, false] {
        let bundle = bundle_on_either_path("launch-nproc", reexecute, |c| {
            c["process"]["user"] = json!({"uid": 4243, "gid": 4243});
            c["process"]["rlimits"] = json!([{"type": "RLIMIT_NPROC", "hard": 0, "soft": 0}]);
        });
        let (code, _, stderr) = outcome(&bundle, Verb::Run);
        seen.push((code, stderr));
    }
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        seen[0]
            .1
            .contains("exec \"/bin/true\": Resource temporarily unavailable"),
        "{seen:?}"
    );
    assert_eq!(seen[0], seen[1], "re-executed, then launcher");
}

#[test]
fn a_create_container_hook_does_not_find_the_host_binary_at_proc_1_exe() {
    if !can_run() {
        return;
    }
    // createContainer hooks run in the container's pid namespace, children
    // of the init: before the launcher, the init re-executed first and its
    // /proc/1/exe was never the host's file.
    let berth = std::fs::canonicalize(berth_bin()).unwrap();
    for reexecute in [true, false] {
        let seen = std::env::temp_dir().join(unique("hook-exe"));
        let bundle = bundle_on_either_path("launch-hook-exe", reexecute, |c| {
            c["hooks"] = json!({"createContainer": [{
                "path": "/bin/sh",
                "args": ["sh", "-c", format!("readlink proc/1/exe > {}", seen.display())],
            }]});
        });
        let (code, _, stderr) = outcome(&bundle, Verb::Run);
        assert_eq!(code, Some(0), "reexecuted {reexecute}: {stderr}");
        let link = std::fs::read_to_string(&seen).unwrap();
        let _ = std::fs::remove_file(&seen);
        assert_ne!(
            link.trim(),
            berth.to_str().unwrap(),
            "reexecuted {reexecute}: a createContainer hook's /proc/1/exe is the host's berth"
        );
    }
}
