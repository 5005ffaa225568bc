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
