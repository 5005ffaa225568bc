//! berth's conformance matrix: many generated configs, each run under berth
//! and under runc with berth's checker as the container process. The checker
//! prints TAP of what the config asked for, checked from inside; runc is the
//! reference, and berth must pass every check runc passes.

use std::collections::BTreeMap;

use berth_integration::*;
use serde_json::{json, Value};

/// One generated case: a name, the config edit, and which runtimes take it.
struct Case {
    name: &'static str,
    edit: Box<dyn Fn(&mut Value)>,
    /// runc 1.1.5 refuses some valid configs (time namespaces): berth only.
    berth_only: bool,
}

fn case(name: &'static str, edit: impl Fn(&mut Value) + 'static) -> Case {
    Case {
        name,
        edit: Box::new(edit),
        berth_only: false,
    }
}

fn push_mount(config: &mut Value, mount: Value) {
    config["mounts"].as_array_mut().unwrap().push(mount);
}

fn add_namespace(config: &mut Value, ns: Value) {
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(ns);
}

fn cases(shared_dir: &str, netns_path: String, netns_inode: u64) -> Vec<Case> {
    let all_caps = json!(DOCKER_CAPS);
    let shared = shared_dir.to_string();
    let shared2 = shared_dir.to_string();
    let mut cases = vec![
        case("defaults", |_| {}),
        case("read-write root", |c| c["root"]["readonly"] = json!(false)),
        case("hostname and domainname", |c| {
            c["hostname"] = json!("conformance-host");
            c["domainname"] = json!("example.test");
        }),
        case("non-root user with groups and umask", |c| {
            c["process"]["user"] =
                json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20, 30], "umask": 63});
        }),
        case("uid only", |c| {
            c["process"]["user"] = json!({"uid": 65534, "gid": 65534})
        }),
        case("docker's default capabilities", move |c| {
            c["process"]["capabilities"] = json!({
                "bounding": all_caps, "effective": all_caps, "permitted": all_caps,
                "inheritable": all_caps, "ambient": all_caps
            });
        }),
        case("empty capability sets", |c| {
            c["process"]["capabilities"] = json!({"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []});
        }),
        case("capabilities for a non-root user", |c| {
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            let set = json!(["CAP_NET_BIND_SERVICE", "CAP_KILL"]);
            c["process"]["capabilities"] = json!({"bounding": set, "effective": set, "permitted": set, "inheritable": set, "ambient": set});
        }),
        case("sys_admin added", |c| {
            let set = json!(["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_KILL"]);
            c["process"]["capabilities"] =
                json!({"bounding": set, "effective": set, "permitted": set});
        }),
        case("rlimits", |c| {
            c["process"]["rlimits"] = json!([
                {"type": "RLIMIT_NPROC", "hard": 4096, "soft": 2048},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                {"type": "RLIMIT_MSGQUEUE", "hard": 8192, "soft": 4096},
                {"type": "RLIMIT_STACK", "hard": 16777216, "soft": 8388608}
            ]);
        }),
        case("no_new_privs off", |c| {
            c["process"]["noNewPrivileges"] = json!(false)
        }),
        case("oom score adj", |c| {
            c["process"]["oomScoreAdj"] = json!(500)
        }),
        case("cwd created", |c| c["process"]["cwd"] = json!("/work/dir")),
        case("environment", |c| {
            c["process"]["env"] = json!(["PATH=/bin", "A=1", "EMPTY=", "WITH_EQUALS=a=b"]);
        }),
        case("sysctl", |c| {
            c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1", "kernel.msgmax": "4096"});
        }),
        case("tmpfs mount options", |c| {
            push_mount(
                c,
                json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                "options": ["noexec", "nosuid", "nodev", "size=1m", "mode=700"]}),
            );
            push_mount(
                c,
                json!({"destination": "/scratch/ro", "type": "tmpfs", "source": "tmpfs",
                "options": ["ro", "noatime"]}),
            );
        }),
        case("bind mounts ro and rbind", move |c| {
            push_mount(
                c,
                json!({"destination": "/shared", "type": "bind", "source": shared,
                "options": ["rbind", "ro", "nosuid", "nodev"]}),
            );
            push_mount(
                c,
                json!({"destination": "/shared-rw", "source": shared2,
                "options": ["bind", "rprivate"]}),
            );
        }),
        case("recursive read-only", |c| {
            push_mount(
                c,
                json!({"destination": "/hostdev", "type": "bind", "source": "/dev",
                "options": ["rbind", "rro", "nosuid", "noexec"]}),
            );
        }),
        case("devices", |c| {
            c["linux"]["devices"] = json!([
                {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 384, "uid": 0, "gid": 0},
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438},
                {"path": "/dev/extra/loop-control", "type": "c", "major": 10, "minor": 237}
            ]);
        }),
        case("masked and read-only paths", |c| {
            c["linux"]["maskedPaths"]
                .as_array_mut()
                .unwrap()
                .extend([json!("/etc/passwd"), json!("/bin/../tmp")]);
            c["linux"]["readonlyPaths"]
                .as_array_mut()
                .unwrap()
                .extend([json!("/etc"), json!("/does/not/exist")]);
        }),
        case("cgroup namespace", |c| {
            add_namespace(c, json!({"type": "cgroup"}))
        }),
        case("host network namespace", |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "network");
            c["linux"].as_object_mut().unwrap().remove("sysctl");
        }),
        case("joined network namespace", move |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "network");
            add_namespace(c, json!({"type": "network", "path": netns_path}));
            c["annotations"]["berth.test/ns-inode.network"] = json!(netns_inode.to_string());
        }),
        case("user namespace", |c| {
            add_namespace(c, json!({"type": "user"}));
            c["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            // The host's devices and cgroups are not the mapped root's to use.
            c["linux"].as_object_mut().unwrap().remove("resources");
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .retain(|m| m["type"] != "cgroup");
        }),
        case("user namespace with several ranges", |c| {
            add_namespace(c, json!({"type": "user"}));
            c["linux"]["uidMappings"] = json!([
                {"containerID": 0, "hostID": 200000, "size": 1000},
                {"containerID": 1000, "hostID": 201000, "size": 1000}
            ]);
            c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 2000}]);
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            c["linux"].as_object_mut().unwrap().remove("resources");
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .retain(|m| m["type"] != "cgroup");
        }),
        case("private rootfs propagation", |c| {
            c["linux"]["rootfsPropagation"] = json!("private")
        }),
        case("everything at once", |c| {
            c["hostname"] = json!("all");
            c["root"]["readonly"] = json!(false);
            c["process"]["user"] =
                json!({"uid": 1234, "gid": 1234, "additionalGids": [5], "umask": 18});
            c["process"]["cwd"] = json!("/tmp");
            c["process"]["oomScoreAdj"] = json!(100);
            c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
            add_namespace(c, json!({"type": "cgroup"}));
        }),
    ];
    cases.push(Case {
        name: "time namespace with offsets",
        edit: Box::new(|c| {
            add_namespace(c, json!({"type": "time"}));
            c["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 86400, "nanosecs": 0}, "boottime": {"secs": 3600, "nanosecs": 0}});
        }),
        berth_only: true,
    });
    cases
}

/// TAP lines of one run: description → passed.
fn tap(output: &str) -> BTreeMap<String, bool> {
    output
        .lines()
        .filter_map(|line| {
            let (passed, rest) = if let Some(rest) = line.strip_prefix("ok ") {
                (true, rest)
            } else {
                (false, line.strip_prefix("not ok ")?)
            };
            let description = rest.split_once(" - ").map(|(_, d)| d).unwrap_or(rest);
            let description = description.split(" # got").next().unwrap_or(description);
            Some((description.trim().to_string(), passed))
        })
        .collect()
}

fn runc_available() -> bool {
    std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn berth_passes_every_check_runc_passes() {
    if !can_run() {
        return;
    }
    assert!(runc_available(), "runc is needed (apt install runc)");
    let shared = std::env::temp_dir().join(unique("conformance-shared"));
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    // A network namespace to join, held by a process of ours.
    let holder = Helper::spawn("unshare", &["--net", "sleep", "1000"]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let netns_path = format!("/proc/{}/ns/net", holder.pid());
    let netns_inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&netns_path).map(|m| m.ino()).unwrap_or(0)
    };

    let berth = Runtime::berth();
    let runc = Runtime::runc();
    let mut summary = Vec::new();
    let mut failures = Vec::new();
    let (mut berth_cases, mut runc_cases, mut total) = (0, 0, 0);
    let (mut berth_checks, mut runc_checks) = (0, 0);
    for case in cases(shared.to_str().unwrap(), netns_path.clone(), netns_inode) {
        total += 1;
        let mut bundle = Bundle::new("conformance");
        annotate_host_namespaces(&mut bundle.config);
        (case.edit)(&mut bundle.config);
        bundle.run_checker();
        let berth_out = berth.run(&bundle, &unique("conf"));
        let berth_tap = tap(&String::from_utf8_lossy(&berth_out.stdout));
        berth_checks += berth_tap.values().filter(|p| **p).count();
        if berth_out.status.success() {
            berth_cases += 1;
        }
        if case.berth_only {
            if !berth_out.status.success() || berth_tap.is_empty() {
                failures.push(format!(
                    "[{}] berth failed (berth-only case):\n{}",
                    case.name,
                    text(&berth_out)
                ));
            }
            summary.push(format!(
                "{:<40} berth {:>3}/{:<3} runc n/a",
                case.name,
                berth_tap.values().filter(|p| **p).count(),
                berth_tap.len()
            ));
            continue;
        }
        let runc_out = runc.run(&bundle, &unique("conf"));
        let runc_tap = tap(&String::from_utf8_lossy(&runc_out.stdout));
        runc_checks += runc_tap.values().filter(|p| **p).count();
        if runc_out.status.success() {
            runc_cases += 1;
        }
        summary.push(format!(
            "{:<40} berth {:>3}/{:<3} runc {:>3}/{:<3}",
            case.name,
            berth_tap.values().filter(|p| **p).count(),
            berth_tap.len(),
            runc_tap.values().filter(|p| **p).count(),
            runc_tap.len()
        ));
        if runc_tap.is_empty() {
            failures.push(format!(
                "[{}] runc did not run the checker:\n{}",
                case.name,
                text(&runc_out)
            ));
            continue;
        }
        for (check, runc_passed) in &runc_tap {
            if !runc_passed {
                eprintln!("  (runc fails [{}] {check})", case.name);
            }
            if *runc_passed && berth_tap.get(check) != Some(&true) {
                failures.push(format!(
                    "[{}] berth fails a check runc passes: {check}\n{}",
                    case.name,
                    text(&berth_out)
                ));
            }
        }
    }
    eprintln!("conformance matrix ({total} configs):");
    for line in &summary {
        eprintln!("  {line}");
    }
    eprintln!(
        "configs passing every check: berth {berth_cases}/{total}, runc {runc_cases}/{}; checks passed: berth {berth_checks}, runc {runc_checks}",
        total - 1
    );
    drop(holder);
    let _ = std::fs::remove_dir_all(&shared);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(berth_cases == total, "berth must pass every config");
}
