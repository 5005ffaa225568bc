//! Bad input and verbs used in the wrong state: berth must fail as runc does
//! (exit 1, the words engines and people look for) and leave nothing behind
//! — no state directory, no process, no cgroup, no mount.
//!
//! Each case runs berth and runc 1.1.5 side by side where that is cheap.
//! Where berth's words differ from runc's, the test asserts the words both
//! share (or berth's current words) and a `DIFFERENCE` comment quotes runc.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use berth_integration::*;
use serde_json::{json, Value};

/// Both runtimes, each with its own state root.
fn runtimes() -> [Runtime; 2] {
    [Runtime::berth(), Runtime::runc()]
}

/// stderr, lower-cased, with runc's logfmt quoting (`msg="... \"x\" ..."`) undone.
fn message(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .replace("\\\"", "\"")
        .to_lowercase()
}

/// The command failed with exit status 1 and its message holds every word
/// (case-insensitive). Returns the message.
#[track_caller]
fn assert_fails(rt: &Runtime, out: &Output, words: &[&str]) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{:?} should fail with status 1\n{}",
        rt.kind,
        text(out)
    );
    let msg = message(out);
    if rt.kind == Kind::Berth {
        let last = msg.lines().last().unwrap_or_default();
        assert!(last.starts_with("berth: "), "berth's error line: {msg}");
    }
    for word in words {
        assert!(
            msg.contains(&word.to_lowercase()),
            "{:?}: expected {word:?} in the message\n{}",
            rt.kind,
            text(out)
        );
    }
    msg
}

/// Processes that belong to container `id` or run from `bundle`: their
/// arguments name either (a runtime still at work), or they sit in a cgroup
/// named `id` (any container process, `berth init` and `runc init` included).
fn processes_of(id: &str, bundle: &Path) -> Vec<String> {
    let own = std::process::id().to_string();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == own {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let named = args
            .iter()
            .any(|a| a == id || (!a.is_empty() && Path::new(a).starts_with(bundle)));
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let in_cgroup = cgroup.lines().any(|line| {
            line.splitn(3, ':')
                .nth(2)
                .is_some_and(|p| Path::new(p).file_name().is_some_and(|n| n == id))
        });
        if named || in_cgroup {
            found.push(format!("{pid}: {}", args.join(" ")));
        }
    }
    found
}

/// Cgroup directories named `id` in any hierarchy: berth's `/berth/ID`,
/// runc's `/ID` or one below the runtime's own cgroup.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, id: &str, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            // file_type does not follow symlinks (`cpu,cpuacct` links on some hosts).
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                if entry.file_name() == id {
                    found.push(path.clone());
                }
                walk(&path, id, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), id, &mut found);
    found
}

/// Nothing of container `id` (made from `bundle`) is left on the host.
#[track_caller]
fn assert_nothing_left(rt: &Runtime, id: &str, bundle: &Path) {
    let kind = rt.kind;
    assert!(
        !rt.root.join(id).exists(),
        "{kind:?} left its state directory {}",
        rt.root.join(id).display()
    );
    assert!(rt.state(id).is_none(), "{kind:?} still knows {id}");
    // After a `run`, berth's cleaner (the runtime's own binary, forked by
    // the create) removes the state directory `run` retired once `run` has
    // returned (see `container::run`): it may be finishing. Anything else
    // must be gone at once.
    let runtime_binary = std::fs::canonicalize(&rt.bin).ok();
    let start = std::time::Instant::now();
    let procs = loop {
        let procs = processes_of(id, bundle);
        let runtime_only = procs.iter().all(|p| {
            let pid = p.split(':').next().unwrap_or_default();
            std::fs::read_link(format!("/proc/{pid}/exe")).ok() == runtime_binary
        });
        if procs.is_empty() || !runtime_only || start.elapsed().as_secs() >= 5 {
            break procs;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(
        procs.is_empty(),
        "{kind:?} left processes of {id}: {procs:?}"
    );
    let cgroups = cgroup_dirs(id);
    assert!(
        cgroups.is_empty(),
        "{kind:?} left cgroups of {id}: {cgroups:?}"
    );
    let mounts = mounts_under(bundle);
    assert!(
        mounts.is_empty(),
        "{kind:?} left mounts in {}: {mounts:?}",
        bundle.display()
    );
}

fn dir(bundle: &Bundle) -> &str {
    bundle.dir.to_str().expect("utf8 bundle path")
}

/// `create` of `bundle` (as written) fails on both runtimes with `shared`
/// words in both messages and leaves nothing; returns [berth's, runc's] message.
#[track_caller]
fn create_fails_on_both(bundle: &Bundle, shared: &[&str]) -> [String; 2] {
    runtimes().map(|rt| {
        let id = unique("bad");
        let out = rt.exec(&["create", "--bundle", dir(bundle), &id]);
        let msg = assert_fails(&rt, &out, shared);
        assert_nothing_left(&rt, &id, &bundle.dir);
        msg
    })
}

/// A bundle whose config is the default one changed by `edit`.
fn bundle_with(name: &str, edit: impl FnOnce(&mut Value)) -> Bundle {
    let mut bundle = Bundle::new(name);
    edit(&mut bundle.config);
    bundle.write();
    bundle
}

fn pid_of(rt: &Runtime, id: &str) -> i64 {
    rt.state(id).expect("state")["pid"]
        .as_i64()
        .expect("pid in state")
}

#[test]
fn missing_bundle_directory_fails_create_and_run() {
    if !can_run() {
        return;
    }
    let missing = std::env::temp_dir().join(unique("berth-it-no-bundle"));
    let path = missing.to_str().expect("utf8");
    for rt in runtimes() {
        for verb in ["create", "run"] {
            let id = unique("nobundle");
            let out = rt.exec(&[verb, "--bundle", path, &id]);
            // DIFFERENCE: runc says `chdir PATH: no such file or directory`;
            // berth `bundle PATH: No such file or directory (os error 2)`.
            assert_fails(&rt, &out, &[path, "no such file or directory"]);
            assert_nothing_left(&rt, &id, &missing);
        }
    }
    assert!(!missing.exists(), "nobody may create the missing bundle");
}

#[test]
fn malformed_config_json_is_refused_and_named() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new("malformed");
    std::fs::write(bundle.dir.join("config.json"), "not json {").expect("write");
    let config = bundle.dir.join("config.json");
    // DIFFERENCE: runc prints only the decoder's words (`invalid character
    // 'o' in literal null (expecting 'u')`), without the file; berth names
    // the file, which is better, and shares only "invalid".
    let [berth, _runc] = create_fails_on_both(&bundle, &["invalid"]);
    assert!(
        berth.contains(&config.to_string_lossy().to_lowercase()),
        "berth must name the file: {berth}"
    );
}

#[test]
fn wrong_typed_config_json_is_refused_and_named() {
    if !can_run() {
        return;
    }
    wrong_type("args", |c| c["process"]["args"] = json!("sh"), &["string"]);
    wrong_type("hostname", |c| c["hostname"] = json!(5), &[]);
}

/// `field` set to a value of the wrong type: both refuse; berth names the file.
#[track_caller]
fn wrong_type(field: &str, edit: impl FnOnce(&mut Value), shared: &[&str]) {
    let bundle = bundle_with("wrongtype", edit);
    let config = bundle.dir.join("config.json");
    let [berth, runc] = create_fails_on_both(&bundle, shared);
    // DIFFERENCE: runc names the field, not the file: `json: cannot
    // unmarshal string into Go struct field Process.process.args of type
    // []string` / `json: cannot unmarshal number into Go struct field
    // Spec.hostname of type string`. berth names the file and the position
    // (`invalid PATH/config.json: invalid type: string "sh", expected a
    // sequence at line 9 column 16`) but not the field.
    assert!(runc.contains(field), "runc names the field: {runc}");
    assert!(
        berth.contains(&config.to_string_lossy().to_lowercase()),
        "berth must name the file: {berth}"
    );
    assert!(berth.contains("invalid type"), "{berth}");
}

#[test]
fn unknown_namespace_type_is_refused() {
    if !can_run() {
        return;
    }
    let bundle = bundle_with("badns", |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(json!({"type": "foo"}));
    });
    // DIFFERENCE: runc says `namespace {"foo" ""} does not exist`; berth
    // `invalid config.json: unknown namespace type "foo"`.
    let [berth, _] = create_fails_on_both(&bundle, &["namespace", "foo"]);
    assert!(berth.contains("unknown namespace type \"foo\""), "{berth}");
}

#[test]
fn config_without_process_is_refused() {
    if !can_run() {
        return;
    }
    let bundle = bundle_with("noprocess", |c| {
        c.as_object_mut().expect("object").remove("process");
    });
    // DIFFERENCE: runc says `process property must not be empty`; berth
    // `invalid config.json: process must be specified`.
    create_fails_on_both(&bundle, &["process"]);
}

#[test]
fn relative_cwd_is_refused() {
    if !can_run() {
        return;
    }
    let bundle = bundle_with("relcwd", |c| c["process"]["cwd"] = json!("tmp"));
    // DIFFERENCE: runc says `Cwd must be an absolute path`; berth `invalid
    // config.json: cwd "tmp" is not an absolute path inside the container`.
    create_fails_on_both(&bundle, &["cwd", "absolute path"]);
}

#[test]
fn missing_executable_fails_create_and_run() {
    if !can_run() {
        return;
    }
    let bundle = bundle_with("noexec", |c| c["process"]["args"] = json!(["/bin/nope"]));
    for rt in runtimes() {
        for verb in ["create", "run"] {
            let id = unique("noexec");
            let out = rt.exec(&[verb, "--bundle", dir(&bundle), &id]);
            // runc: `unable to start container process: exec: "/bin/nope":
            // stat /bin/nope: no such file or directory`; berth: `container
            // init failed: exec: "/bin/nope": No such file or directory (os
            // error 2)`.
            assert_fails(
                &rt,
                &out,
                &["exec: \"/bin/nope\"", "no such file or directory"],
            );
            assert_nothing_left(&rt, &id, &bundle.dir);
        }
    }
}

#[test]
fn invalid_id_is_refused_without_touching_paths() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new("badid");
    bundle.write();
    for rt in runtimes() {
        let name = unique("escape");
        let id = format!("../{name}");
        let out = rt.exec(&["create", "--bundle", dir(&bundle), &id]);
        // DIFFERENCE: runc says `invalid container ID format`; berth
        // `invalid container id "../NAME": use letters, digits, ...`.
        assert_fails(&rt, &out, &["invalid container id"]);
        let outside = rt.root.parent().expect("root has a parent").join(&name);
        assert!(
            !outside.exists(),
            "{:?} created {}",
            rt.kind,
            outside.display()
        );
        assert_nothing_left(&rt, &name, &bundle.dir);
    }
}

#[test]
fn mount_destination_symlinks_resolve_inside_the_rootfs() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        // The host directory an escaping runtime would write into.
        let host = std::env::temp_dir().join(unique("berth-it-host"));
        std::fs::create_dir(&host).expect("host dir");
        let mut bundle = Bundle::new("symdest");
        let source = bundle.dir.join("source");
        std::fs::create_dir(&source).expect("source dir");
        std::fs::write(source.join("marker"), "dir\n").expect("marker");
        let file_source = bundle.dir.join("file-source");
        std::fs::write(&file_source, "file\n").expect("file source");
        // Dangling inside the rootfs: an escaping runtime would create
        // HOST/dir and HOST/file on the host.
        symlink(host.join("dir"), bundle.rootfs().join("evil")).expect("symlink");
        symlink(host.join("file"), bundle.rootfs().join("evilfile")).expect("symlink");
        let mounts = bundle.config["mounts"].as_array_mut().expect("mounts");
        mounts.push(json!({"destination": "/evil", "type": "bind",
                           "source": source, "options": ["bind"]}));
        mounts.push(json!({"destination": "/evilfile", "type": "bind",
                           "source": file_source, "options": ["bind"]}));
        bundle.args(&["/bin/sh", "-c", "cat /evil/marker /evilfile"]);
        let id = unique("symdest");
        let out = rt.run(&bundle, &id);
        assert_eq!(out.status.code(), Some(0), "{:?}\n{}", rt.kind, text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "dir\nfile\n",
            "{:?}",
            rt.kind
        );

        let on_host: Vec<_> = std::fs::read_dir(&host)
            .expect("host dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            on_host.is_empty(),
            "{:?} wrote on the host: {on_host:?}",
            rt.kind
        );
        let mounts = mounts_under(&host);
        assert!(
            mounts.is_empty(),
            "{:?} mounted on the host: {mounts:?}",
            rt.kind
        );
        // The symlinks were followed as if the rootfs were `/`.
        let inside = bundle
            .rootfs()
            .join(host.strip_prefix("/").expect("absolute temp dir"));
        assert!(
            inside.join("dir").is_dir(),
            "{:?}: {}",
            rt.kind,
            inside.display()
        );
        assert!(
            inside.join("file").is_file(),
            "{:?}: {}",
            rt.kind,
            inside.display()
        );
        assert_nothing_left(&rt, &id, &bundle.dir);
        std::fs::remove_dir(&host).expect("remove host dir");
    }
}

#[test]
fn proc_on_a_symlink_is_refused() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let host = std::env::temp_dir().join(unique("berth-it-host"));
        std::fs::create_dir(&host).expect("host dir");
        let mut bundle = Bundle::new("symproc");
        symlink(&host, bundle.rootfs().join("evil")).expect("symlink");
        bundle.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({"destination": "/evil", "type": "proc", "source": "proc"}));
        bundle.write();
        let id = unique("symproc");
        let out = rt.exec(&["create", "--bundle", dir(&bundle), &id]);
        // DIFFERENCE: runc says `error mounting "proc" to rootfs at "/evil":
        // filesystem "proc" must be mounted on ordinary directory`; berth
        // `container init failed: proc cannot be mounted on /evil: the
        // destination is a symlink`.
        let msg = assert_fails(&rt, &out, &["proc", "/evil"]);
        match rt.kind {
            Kind::Berth => assert!(msg.contains("the destination is a symlink"), "{msg}"),
            Kind::Runc => assert!(msg.contains("ordinary directory"), "{msg}"),
        }
        let mounts = mounts_under(&host);
        assert!(
            mounts.is_empty(),
            "{:?} mounted on the host: {mounts:?}",
            rt.kind
        );
        let on_host = std::fs::read_dir(&host).expect("host dir").count();
        assert_eq!(on_host, 0, "{:?} wrote on the host", rt.kind);
        assert_nothing_left(&rt, &id, &bundle.dir);
        std::fs::remove_dir(&host).expect("remove host dir");
    }
}

#[test]
fn duplicate_id_leaves_the_first_container_untouched() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let mut first = Bundle::new("dup-first");
        first.args(&["/bin/sleep", "1000"]);
        first.write();
        let second = Bundle::new("dup-second");
        second.write();
        let id = unique("dup");
        let out = rt.exec(&["create", "--bundle", dir(&first), &id]);
        assert!(out.status.success(), "{:?}\n{}", rt.kind, text(&out));
        let pid = pid_of(&rt, &id);

        let out = rt.exec(&["create", "--bundle", dir(&second), &id]);
        // runc 1.1.5 says `container with given ID already exists`; berth
        // says the same and names the id. (`msg` is lowercased.)
        let msg = assert_fails(&rt, &out, &["container with", "exists"]);
        if rt.kind == Kind::Berth {
            assert!(
                msg.contains(&format!("container with given id already exists: {id}")),
                "{msg}"
            );
        }

        let state = rt.state(&id).expect("first container's state");
        assert_eq!(state["status"], "created", "{:?}", rt.kind);
        assert_eq!(state["pid"], pid, "{:?}", rt.kind);
        assert_eq!(state["bundle"], dir(&first), "{:?}", rt.kind);
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "{:?}", rt.kind);
        // Still startable: the failed create did not take its start channel.
        let out = rt.exec(&["start", &id]);
        assert!(out.status.success(), "{:?}\n{}", rt.kind, text(&out));
        assert_eq!(rt.status(&id), "running", "{:?}", rt.kind);

        let out = rt.exec(&["delete", "--force", &id]);
        assert!(out.status.success(), "{:?}\n{}", rt.kind, text(&out));
        assert_nothing_left(&rt, &id, &first.dir);
        assert_nothing_left(&rt, &id, &second.dir);
    }
}

#[test]
fn start_refuses_containers_that_are_not_created() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let mut bundle = Bundle::new("restart");
        bundle.args(&["/bin/sleep", "1000"]);
        bundle.write();
        let id = unique("restart");
        assert!(rt
            .exec(&["create", "--bundle", dir(&bundle), &id])
            .status
            .success());
        assert!(rt.exec(&["start", &id]).status.success());

        let out = rt.exec(&["start", &id]);
        assert_fails(&rt, &out, &["cannot start an already running container"]);
        assert_eq!(rt.status(&id), "running", "{:?}", rt.kind);

        assert!(rt.exec(&["kill", &id, "KILL"]).status.success());
        rt.wait_stopped(&id);
        let out = rt.exec(&["start", &id]);
        assert_fails(&rt, &out, &["cannot start a container that has stopped"]);
        assert_eq!(rt.status(&id), "stopped", "{:?}", rt.kind);

        let out = rt.exec(&["start", &unique("nosuch")]);
        assert_fails(&rt, &out, &["container does not exist"]);

        let out = rt.exec(&["delete", &id]);
        assert!(out.status.success(), "{:?}\n{}", rt.kind, text(&out));
        assert_nothing_left(&rt, &id, &bundle.dir);
    }
}

#[test]
fn delete_without_force_keeps_a_running_container() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let mut bundle = Bundle::new("delrun");
        bundle.args(&["/bin/sleep", "1000"]);
        bundle.write();
        let id = unique("delrun");
        let out = rt.exec(&["run", "--detach", "--bundle", dir(&bundle), &id]);
        assert!(out.status.success(), "{:?}\n{}", rt.kind, text(&out));
        let pid = pid_of(&rt, &id);

        let out = rt.exec(&["delete", &id]);
        assert_fails(
            &rt,
            &out,
            &[&format!(
                "cannot delete container {id} that is not stopped: running"
            )],
        );
        assert_eq!(rt.status(&id), "running", "{:?}", rt.kind);
        assert_eq!(pid_of(&rt, &id), pid, "{:?}", rt.kind);
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(comm.trim(), "sleep", "{:?}", rt.kind);
        assert!(rt.root.join(&id).exists(), "{:?}", rt.kind);

        let out = rt.exec(&["delete", "--force", &id]);
        assert!(out.status.success(), "{:?}\n{}", rt.kind, text(&out));
        assert_nothing_left(&rt, &id, &bundle.dir);
    }
}

#[test]
fn kill_of_a_stopped_container_fails() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let mut bundle = Bundle::new("killstopped");
        bundle.args(&["/bin/true"]);
        bundle.write();
        let id = unique("killstopped");
        assert!(rt
            .exec(&["create", "--bundle", dir(&bundle), &id])
            .status
            .success());
        assert!(rt.exec(&["start", &id]).status.success());
        rt.wait_stopped(&id);

        let out = rt.exec(&["kill", &id, "KILL"]);
        assert_fails(&rt, &out, &["container not running"]);
        assert_eq!(rt.status(&id), "stopped", "{:?}", rt.kind);

        let out = rt.exec(&["delete", &id]);
        assert!(out.status.success(), "{:?}\n{}", rt.kind, text(&out));
        assert_nothing_left(&rt, &id, &bundle.dir);
    }
}

/// runc 1.1.5 is not raced here: two of its creates of one id sometimes both
/// get past the id check, and the loser then fails with `exec fifo
/// ROOT/ID/exec.fifo already exists`, leaving an orphan `runc init` in the
/// cgroup `/ID`. berth reserves the id with one mkdir, before anything else.
#[test]
fn racing_creates_of_one_id_let_exactly_one_win() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("race");
    bundle.args(&["/bin/sleep", "1000"]);
    bundle.write();
    for round in 0..8 {
        let id = unique("race");
        let barrier = std::sync::Barrier::new(2);
        let outs: Vec<Output> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        berth.exec(&["create", "--bundle", dir(&bundle), &id])
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().expect("racer"))
                .collect()
        });
        let (won, lost): (Vec<&Output>, Vec<&Output>) =
            outs.iter().partition(|o| o.status.success());
        assert_eq!(
            (won.len(), lost.len()),
            (1, 1),
            "round {round}:\n{}\n{}",
            text(&outs[0]),
            text(&outs[1])
        );
        assert_fails(
            &berth,
            lost[0],
            &[&format!("container with given ID already exists: {id}")],
        );

        let pid = pid_of(&berth, &id);
        assert_eq!(berth.status(&id), "created", "round {round}");
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "round {round}");
        let out = berth.exec(&["start", &id]);
        assert!(out.status.success(), "round {round}\n{}", text(&out));
        let out = berth.exec(&["delete", "--force", &id]);
        assert!(out.status.success(), "round {round}\n{}", text(&out));
        assert_nothing_left(&berth, &id, &bundle.dir);
    }
}

#[test]
fn sysctls_that_would_change_the_host_are_refused() {
    if !can_run() {
        return;
    }
    // Not namespaced at all: writing it through the container's /proc/sys
    // would retune the host kernel.
    let bundle = bundle_with("sysctl-host", |c| {
        c["linux"]["sysctl"] = json!({"kernel.panic": "0"});
    });
    let [berth, _] = create_fails_on_both(&bundle, &["kernel.panic"]);
    assert!(berth.contains("not namespaced"), "{berth}");

    // Namespaced, but the config shares the host's network namespace.
    let bundle = bundle_with("sysctl-hostnet", |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|n| n["type"] != "network");
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    });
    let [berth, _] = create_fails_on_both(&bundle, &["net.ipv4.ip_forward"]);
    assert!(
        berth.contains("needs a private network namespace"),
        "{berth}"
    );

    // "Joining" the host's own network namespace by path is no better.
    let bundle = bundle_with("sysctl-joinhost", |c| {
        let namespaces = c["linux"]["namespaces"].as_array_mut().expect("namespaces");
        namespaces.retain(|n| n["type"] != "network");
        namespaces.push(json!({"type": "network", "path": "/proc/self/ns/net"}));
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    });
    let [berth, _] = create_fails_on_both(&bundle, &["net.ipv4.ip_forward"]);
    assert!(
        berth.contains("needs a private network namespace"),
        "{berth}"
    );
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    assert_ne!(forward.trim(), "", "host sysctl readable");
}

#[test]
fn a_cgroup_with_other_processes_in_it_is_refused() {
    if !can_run() {
        return;
    }
    // A cgroup of ours with a bystander in it, in the pids hierarchy.
    let name = unique("berth-it-busy");
    let dir = PathBuf::from("/sys/fs/cgroup/pids").join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let bystander = Helper::spawn("sleep", &["1000"]);
    std::fs::write(dir.join("cgroup.procs"), bystander.pid().to_string()).unwrap();
    let bundle = bundle_with("busy-cgroup", |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{name}"));
    });
    let berth = Runtime::berth();
    let id = unique("busy");
    let out = berth.exec(&["create", "--bundle", dir_str(&bundle), &id]);
    let msg = assert_fails(&berth, &out, &["already has processes"]);
    assert!(msg.contains(&name), "{msg}");
    assert!(dir.exists(), "berth removed a cgroup it did not make");
    drop(bystander);
    for _ in 0..100 {
        if std::fs::remove_dir(&dir).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn dir_str(bundle: &Bundle) -> &str {
    bundle.dir.to_str().expect("utf8")
}

#[test]
fn delete_force_clears_what_an_interrupted_create_left() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let bundle = bundle_with("unfinished", |_| {});
    let id = unique("unfinished");
    // What a create killed before writing state.json leaves.
    std::fs::create_dir_all(berth.root.join(&id)).unwrap();
    let out = berth.exec(&["create", "--bundle", dir_str(&bundle), &id]);
    assert!(!out.status.success());
    let out = berth.exec(&["delete", "--force", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!berth.root.join(&id).exists());
    let out = berth.exec(&["create", "--bundle", dir_str(&bundle), &id]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn delete_force_after_a_create_killed_midway_removes_its_cgroups() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let (bundle, id) = kill_a_create_after_its_cgroups(&berth);
    assert!(!berth.root.join(&id).join("state.json").exists());
    let out = berth.exec(&["delete", "--force", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_nothing_left(&berth, &id, &bundle.dir);
}

/// Starts a create held by a createRuntime hook after its cgroups exist,
/// and SIGKILLs it there.
fn kill_a_create_after_its_cgroups(rt: &Runtime) -> (Bundle, String) {
    let bundle = bundle_with("killed-create", |c| {
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "3"]}]});
    });
    let id = unique("killed");
    let mut create = rt
        .command(&["create", "--bundle", dir_str(&bundle), &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cgroup_dirs(&id).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        !cgroup_dirs(&id).is_empty(),
        "{:?}: no cgroups made",
        rt.kind
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    create.kill().unwrap();
    create.wait().unwrap();
    (bundle, id)
}

/// A create SIGKILLed half-way (an engine's timeout, the OOM killer) runs
/// no cleanup of its own. berth's leaves nothing behind, with no `delete`
/// needed; runc 1.1.5 leaves its cgroup directories, some even after its
/// `delete --force` (counted here, then removed by the test).
#[test]
fn a_create_killed_midway_leaves_no_cgroups_beside_runc() {
    if !can_run() {
        return;
    }
    for rt in [Runtime::berth(), Runtime::runc()] {
        let (bundle, id) = kill_a_create_after_its_cgroups(&rt);
        if rt.kind == Kind::Berth {
            // The cleanup follows the create's death: wait (boundedly) for it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while (!cgroup_dirs(&id).is_empty() || rt.root.join(&id).exists())
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert_nothing_left(&rt, &id, &bundle.dir);
        } else {
            let _ = rt.exec(&["delete", "--force", &id]);
            let left = cgroup_dirs(&id);
            eprintln!("runc left {} cgroup directories: {left:?}", left.len());
            // Its killed init may still be on its way out: retry, boundedly.
            for _ in 0..500 {
                for dir in left.iter().rev() {
                    let _ = std::fs::remove_dir(dir);
                }
                if cgroup_dirs(&id).is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Whether process `pid` waits for a `flock` (a `->` line of /proc/locks).
fn waits_for_a_lock(pid: u32) -> bool {
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|line| {
            let mut words = line.split_whitespace().skip(1);
            words.next() == Some("->") && words.nth(3) == Some(pid.to_string().as_str())
        })
}

/// Takes `flock(LOCK_EX)` on the directory `path`, as berth's verbs do.
fn lock_dir(path: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(path).expect("open the directory");
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) }, 0);
    dir
}

/// `delete --force` of what a killed create left (no state.json) waits for
/// the directory's lock. Its holder (another `delete --force`, the create's
/// cleaner, a `run`'s cleaner woken by the death of its `run`) may remove
/// the directory meanwhile, and a new create of the same id make its own
/// at once: that one is another container, half-made, and must be left
/// alone (its init killed, its directory removed under it otherwise).
#[test]
fn delete_force_leaves_alone_a_new_create_of_the_id_it_waited_for() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let id = unique("relock");
    let path = berth.root.join(&id);
    std::fs::create_dir_all(&path).expect("left directory");
    std::fs::write(path.join("cgroups.planned"), b"").expect("plan");
    let held = lock_dir(&path);
    let mut delete = berth
        .command(&["delete", "--force", &id])
        .spawn()
        .expect("spawn delete");
    let start = std::time::Instant::now();
    while !waits_for_a_lock(delete.id()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "delete --force never waited for the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The holder removes the directory; a new create makes and locks its own.
    std::fs::remove_dir_all(&path).expect("remove the left directory");
    std::fs::create_dir(&path).expect("the new create's directory");
    std::fs::write(path.join("cgroups.planned"), b"").expect("the new plan");
    let creating = lock_dir(&path);
    drop(held);
    let status = delete.wait().expect("wait delete");
    assert!(status.success(), "delete --force: {status:?}");
    assert!(
        path.join("cgroups.planned").exists(),
        "delete --force removed the new create's directory"
    );
    drop(creating);
    std::fs::remove_dir_all(&path).expect("remove the new directory");
}

#[test]
fn an_unwritable_pid_file_fails_create_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let bundle = bundle_with("pidfile", |_| {});
    let id = unique("pidfile");
    let out = berth.exec(&[
        "create",
        "--bundle",
        dir_str(&bundle),
        "--pid-file",
        "/nonexistent-dir/pid",
        &id,
    ]);
    assert_fails(&berth, &out, &["/nonexistent-dir/pid"]);
    assert_nothing_left(&berth, &id, &bundle.dir);
}

/// Text that only looks bad: configs as Go engines write them. Go's
/// decoder (runc's) reads `null` as absent and keys ignoring case, and
/// runc's cgroup code skips the zero values Go writes for unset fields.
/// Each row runs under both runtimes; both must run it and print the same.
#[test]
fn configs_written_by_go_engines_run_as_under_runc() {
    if !can_run() {
        return;
    }
    type Edit = fn(&mut Value);
    let rows: &[(&str, Edit)] = &[
        (
            "dockerd 20.10's resources (blockIO.weight 0 and friends)",
            |c| {
                c["linux"]["resources"] = json!({
                    "devices": [{"allow": false, "access": "rwm"}],
                    "memory": {"limit": 0, "reservation": 0, "swap": 0, "disableOOMKiller": false},
                    "cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0,
                            "realtimePeriod": 0, "cpus": "", "mems": ""},
                    "pids": {"limit": 0},
                    "blockIO": {"weight": 0, "leafWeight": 0, "weightDevice": null},
                    "network": null
                });
            },
        ),
        (
            "containers-common's \"args\": null in a seccomp rule",
            |c| {
                c["linux"]["seccomp"] = json!({
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "architectures": ["SCMP_ARCH_X86_64"],
                    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                  "errnoRet": 13, "args": null}]
                });
            },
        ),
        ("null lists and objects", |c| {
            c["hooks"] = Value::Null;
            c["annotations"] = Value::Null;
            c["process"]["rlimits"] = Value::Null;
            c["process"]["capabilities"]["ambient"] = Value::Null;
            c["linux"]["sysctl"] = Value::Null;
            c["linux"]["uidMappings"] = Value::Null;
        }),
        ("keys in other cases", |c| {
            let object = c.as_object_mut().expect("object");
            let mut process = object.remove("process").expect("process");
            let env = process.as_object_mut().and_then(|p| p.remove("env"));
            process["Env"] = env.expect("env");
            object.insert("PROCESS".into(), process);
            let root = object.remove("root").expect("root");
            object.insert(
                "Root".into(),
                json!({"Path": root["path"], "ReadOnly": root["readonly"]}),
            );
        }),
    ];
    let runtimes = runtimes();
    for (what, edit) in rows {
        let mut outputs = Vec::new();
        for rt in &runtimes {
            let mut bundle = Bundle::new("go-config");
            bundle.args(&["/bin/sh", "-c", "mkdir /tmp/d 2>&1; echo ran as $HOME"]);
            bundle.config["process"]["env"] = json!(["PATH=/bin", "HOME=/root"]);
            edit(&mut bundle.config);
            let out = rt.run(&bundle, &unique("go"));
            assert!(
                out.status.success(),
                "{what}: {:?}\n{}",
                rt.kind,
                text(&out)
            );
            outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        assert_eq!(outputs[0], outputs[1], "{what}: berth, then runc");
        assert!(
            outputs[0].ends_with("ran as /root\n"),
            "{what}: {}",
            outputs[0]
        );
    }
}

/// A freezer cgroup made frozen beforehand; thawed and removed when dropped.
struct FrozenCgroup(PathBuf);

impl FrozenCgroup {
    fn new(name: &str) -> FrozenCgroup {
        let dir = Path::new("/sys/fs/cgroup/freezer").join(name);
        std::fs::create_dir(&dir).expect("freezer cgroup (v1 host)");
        std::fs::write(dir.join("freezer.state"), "FROZEN").expect("freeze");
        FrozenCgroup(dir)
    }
}

impl Drop for FrozenCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `create` into a cgroup that is already frozen is refused (runc: "container's
/// cgroup unexpectedly frozen"), instead of waiting for ever on an init that
/// cannot run; the engine's cgroup is left as it was.
#[test]
fn create_into_a_frozen_cgroup_is_refused() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let id = unique("frozen");
        let frozen = FrozenCgroup::new(&id);
        let mut bundle = Bundle::new("frozen");
        bundle.config["linux"]["cgroupsPath"] = json!(format!("/{id}"));
        bundle.write();
        let mut create = rt
            .command(&["create", "--bundle", dir(&bundle), &id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Bounded so that a regression fails instead of hanging the suite.
        let mut waited = 0;
        while create.try_wait().expect("wait").is_none() && waited < 2000 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            waited += 1;
        }
        if create.try_wait().expect("wait").is_none() {
            let _ = create.kill();
            let _ = std::fs::write(frozen.0.join("freezer.state"), "THAWED");
        }
        let out = create.wait_with_output().expect("output");
        assert_fails(&rt, &out, &["cgroup unexpectedly frozen"]);
        assert_eq!(
            std::fs::read_to_string(frozen.0.join("freezer.state"))
                .unwrap()
                .trim(),
            "FROZEN",
            "{:?} changed the engine's cgroup",
            rt.kind
        );
        assert!(rt.state(&id).is_none(), "{:?} still knows {id}", rt.kind);
    }
}

/// A `create` that fails (here on a blkio weight out of range) closes its `--console-socket`
/// connection: the caller's receiver hears of it instead of waiting for a
/// terminal for ever. runc connects before it builds anything, too.
#[test]
fn a_failed_create_does_not_leave_the_console_receiver_waiting() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let mut bundle = Bundle::new("console-fail");
        bundle.config["process"]["terminal"] = json!(true);
        // berth refuses the weight when it validates the config, runc when
        // the kernel has no file for it: both after connecting.
        bundle.config["linux"]["resources"]["blockIO"] = json!({"weight": 5});
        bundle.write();
        let socket = bundle.dir.join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let id = unique("console-fail");
        let out = rt.exec(&[
            "create",
            "--bundle",
            dir(&bundle),
            "--console-socket",
            socket.to_str().expect("utf8"),
            &id,
        ]);
        assert_eq!(out.status.code(), Some(1), "{:?}: {}", rt.kind, text(&out));
        // The runtime has exited: its connection is there, and closed.
        let (mut stream, _) = listener
            .accept()
            .unwrap_or_else(|e| panic!("{:?} never connected: {e}", rt.kind));
        stream.set_nonblocking(false).expect("blocking");
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut stream, &mut rest).expect("read");
        assert!(rest.is_empty(), "{:?} sent {rest:?}", rt.kind);
        assert_nothing_left(&rt, &id, &bundle.dir);
    }
}

#[test]
fn a_namespace_step_that_fails_is_named_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    // The kernel takes at most 64 bytes. berth's init sets it while the
    // runtime is still making the cgroups (see `init::setup`): the failure
    // must still come back in the init's words, from create and from run.
    // DIFFERENCE: runc 1.1.5 creates the container (with no domain name).
    let long = "d".repeat(100);
    let bundle = bundle_with("long-domainname", |c| {
        c["domainname"] = json!(long);
    });
    let rt = Runtime::berth();
    // Rounds: the init may fail before or after the runtime's `Prepared`
    // reaches it (unread, the kernel's ECONNRESET comes first).
    for verb in ["create", "run"].repeat(8) {
        let id = unique("bad");
        let out = rt.exec(&[verb, "--bundle", dir(&bundle), &id]);
        let msg = assert_fails(&rt, &out, &["setdomainname", "invalid argument"]);
        assert!(!msg.contains("broken pipe"), "{msg}");
        assert_nothing_left(&rt, &id, &bundle.dir);
    }
}
