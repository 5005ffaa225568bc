//! Cgroup limits, pause/resume, ps, update and events, each checked from
//! inside a real container or from its cgroup files. The same suite runs on
//! this (v1/hybrid) host and, through `scripts/cgroup2-vm.sh`, on a pure
//! cgroup v2 kernel under qemu; each test reads the files of the host it
//! finds itself on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_integration::*;
use serde_json::json;

fn sh(bundle: &mut Bundle, script: &str) {
    bundle.args(&["/bin/sh", "-c", script]);
}

/// Whether this host has only the unified hierarchy.
fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The host directory of container `id` that holds `controller`'s files.
fn host_dir(controller: &str, id: &str) -> PathBuf {
    if pure_v2() {
        PathBuf::from(format!("/sys/fs/cgroup/berth/{id}"))
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/{controller}/berth/{id}"))
    }
}

/// `create` with `resources` fails with status 1 and `words`, leaving no
/// state and no cgroup.
fn assert_create_refused(berth: &Runtime, resources: serde_json::Value, words: &str) {
    let mut bundle = Bundle::new("refused");
    bundle.config["linux"]["resources"] = resources.clone();
    bundle.write();
    let id = unique("refused");
    let out = berth.exec(&["create", "--bundle", bundle.dir.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(1), "{resources}: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(words),
        "{resources}: {}",
        text(&out)
    );
    assert!(!berth.root.join(&id).exists());
    for controller in ["memory", "pids", "cpu"] {
        assert!(
            !host_dir(controller, &id).exists(),
            "{resources} left a cgroup"
        );
    }
}

fn read_trimmed(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn each_limit_is_written_and_read_back_from_inside() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("limits");
    bundle.config["linux"]["resources"]["cpu"] =
        json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"});
    bundle.config["linux"]["resources"]["pids"] = json!({"limit": 64});
    let expected = if pure_v2() {
        bundle.config["linux"]["resources"]["memory"] =
            json!({"limit": 67108864, "reservation": 33554432});
        bundle.config["linux"]["resources"]["cpu"]["idle"] = json!(0);
        bundle.config["linux"]["resources"]["unified"] = json!({"memory.high": "50331648"});
        sh(
            &mut bundle,
            "cd /sys/fs/cgroup; cat memory.max memory.low memory.high cpu.weight cpu.max \
            cpu.idle cpuset.cpus cpuset.mems pids.max",
        );
        // cpu.shares 512 is cpu.weight 20 by runc's conversion.
        "67108864\n33554432\n50331648\n20\n50000 100000\n0\n0\n0\n64\n"
    } else {
        bundle.config["linux"]["resources"]["memory"] =
            json!({"limit": 67108864, "reservation": 33554432, "swappiness": 10});
        sh(
            &mut bundle,
            "cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes memory/memory.soft_limit_in_bytes \
            memory/memory.swappiness cpu/cpu.shares cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us \
            cpuset/cpuset.cpus cpuset/cpuset.mems pids/pids.max",
        );
        "67108864\n33554432\n10\n512\n50000\n100000\n0\n0\n64\n"
    };
    let out = berth.run(&bundle, &unique("limits"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn settings_the_host_cannot_apply_are_refused_and_leave_nothing() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let refused = if pure_v2() {
        vec![
            (json!({"memory": {"swappiness": 10}}), "memory.swappiness"),
            (
                json!({"memory": {"disableOOMKiller": true}}),
                "memory.disableOOMKiller",
            ),
            (json!({"cpu": {"realtimeRuntime": 1000}}), "realtime"),
            (json!({"network": {"classID": 1}}), "network"),
            (json!({"unified": {"nosuch.file": "1"}}), "nosuch.file"),
        ]
    } else {
        vec![
            (json!({"unified": {"memory.high": "1"}}), "unified"),
            (json!({"cpu": {"idle": 1}}), "cpu.idle"),
            // net_cls is not mounted on these machines.
            (json!({"network": {"classID": 1}}), "net_cls"),
        ]
    };
    for (resources, words) in refused {
        assert_create_refused(&berth, resources, words);
    }
}

#[test]
fn a_process_past_its_memory_limit_is_oom_killed() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("oom");
    bundle.config["linux"]["resources"]["memory"] = json!({"limit": 16777216});
    // The shell keeps the 64 MiB in a variable: more than the cgroup allows.
    sh(
        &mut bundle,
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}",
    );
    let out = berth.run(&bundle, &unique("oom"));
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("survived"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_pids_limit_stops_a_fork_bomb() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("forkbomb");
    bundle.config["linux"]["resources"]["pids"] = json!({"limit": 8});
    // The shell reports each child before forking it; the kernel refuses the
    // fork that would exceed pids.max, and the shell gives up.
    sh(
        &mut bundle,
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo $i; sleep 5 & done; echo all-forked",
    );
    let out = berth.run(&bundle, &unique("bomb"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("all-forked"), "{}", text(&out));
    let last: u32 = stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    // The shell itself is one of the 8 tasks: at most 7 children, 8 tries.
    assert!(
        (1..=8).contains(&last),
        "forked up to {last} under pids.max=8: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fork"),
        "{}",
        text(&out)
    );
}

fn count(bundle: &Bundle) -> u64 {
    std::fs::read_to_string(bundle.rootfs().join("tmp/count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn pause_stops_a_counter_and_resume_lets_it_continue() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("pause");
    bundle.config["root"]["readonly"] = json!(false);
    sh(
        &mut bundle,
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done",
    );
    bundle.write();
    let id = unique("pause");
    // A created container cannot be paused: its init waits for `start`.
    let created = unique("pause-created");
    assert!(berth
        .exec(&["create", "--bundle", bundle.dir.to_str().unwrap(), &created])
        .status
        .success());
    let out = berth.exec(&["pause", &created]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container not running"),
        "{}",
        text(&out)
    );
    assert!(berth
        .exec(&["delete", "--force", &created])
        .status
        .success());
    assert!(berth
        .exec(&["run", "-d", "--bundle", bundle.dir.to_str().unwrap(), &id])
        .status
        .success());
    std::thread::sleep(Duration::from_millis(200));
    let out = berth.exec(&["pause", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(berth.status(&id), "paused");
    let frozen_at = count(&bundle);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&bundle), frozen_at, "the counter moved while paused");
    let out = berth.exec(&["exec", &id, "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot exec in a paused container"),
        "{}",
        text(&out)
    );
    let out = berth.exec(&["pause", &id]);
    assert!(!out.status.success(), "pausing twice must fail");
    assert!(berth.exec(&["resume", &id]).status.success());
    assert_eq!(berth.status(&id), "running");
    // Generous under load: the counter only has to move again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&bundle) <= frozen_at && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(count(&bundle) > frozen_at, "the counter did not continue");
    let out = berth.exec(&["resume", &id]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container not paused"),
        "{}",
        text(&out)
    );
    // delete --force of a paused container works too.
    assert!(berth.exec(&["pause", &id]).status.success());
    assert!(berth.exec(&["delete", "--force", &id]).status.success());
    assert!(!host_dir("freezer", &id).exists());
}

#[test]
fn update_changes_a_live_limit_and_ps_lists_the_processes() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("update");
    bundle.config["linux"]["resources"]["memory"] = json!({"limit": 67108864});
    sh(&mut bundle, "sleep 1000 & sleep 1000");
    bundle.write();
    let id = unique("update");
    assert!(berth
        .exec(&["run", "-d", "--bundle", bundle.dir.to_str().unwrap(), &id])
        .status
        .success());
    let (memory_file, shares_file, shares_value) = if pure_v2() {
        ("memory.max", "cpu.weight", "10")
    } else {
        ("memory.limit_in_bytes", "cpu.shares", "256")
    };
    let memory = || read_trimmed(host_dir("memory", &id).join(memory_file));
    assert_eq!(memory(), "67108864");
    let out = berth.exec(&["update", "--memory", "32m", "--pids-limit", "20", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(memory(), "33554432");
    assert_eq!(read_trimmed(host_dir("pids", &id).join("pids.max")), "20");
    // The docker form: JSON on stdin.
    let mut update = berth.command(&["update", "--resources", "-", &id]);
    update.stdin(std::process::Stdio::piped());
    let mut child = update.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cpu": {"shares": 256}}"#)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        read_trimmed(host_dir("cpu", &id).join(shares_file)),
        shares_value
    );

    let out = berth.exec(&["ps", "--format", "json", &id]);
    let pids: Vec<i64> = serde_json::from_slice(&out.stdout).unwrap();
    // The shell execs its last command: two sleeps, one of them pid 1.
    assert_eq!(pids.len(), 2, "two sleeps: {pids:?}");
    let out = berth.exec(&["ps", &id]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains("sleep 1000")).count(),
        2,
        "{table}"
    );

    assert!(berth.exec(&["kill", &id, "KILL"]).status.success());
    berth.wait_stopped(&id);
    let out = berth.exec(&["update", "--memory", "64m", &id]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container not running"),
        "{}",
        text(&out)
    );
}

#[test]
fn device_rules_let_dev_null_through_and_refuse_an_unlisted_block_device() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("devices");
    bundle.config["root"]["readonly"] = json!(false);
    let caps = json!(["CAP_MKNOD", "CAP_DAC_OVERRIDE"]);
    bundle.config["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    sh(&mut bundle, "echo ok > /dev/null && echo null-ok; mknod /tmp/disk b 7 0 && head -c 1 /tmp/disk; echo rc=$?");
    let out = berth.run(&bundle, &unique("dev"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("null-ok"), "{}", text(&out));
    assert!(stdout.contains("rc=1"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_limits_are_refused_before_anything_exists() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    for (resources, words) in [
        (json!({"memory": {"limit": -5}}), "memory.limit"),
        (json!({"memory": {"swappiness": 200}}), "memory.swappiness"),
        (
            json!({"memory": {"limit": 67108864, "swap": 1048576}}),
            "memory.swap",
        ),
        (json!({"cpu": {"quota": 500}}), "cpu.quota"),
        (json!({"cpu": {"shares": 1}}), "cpu.shares"),
        (json!({"cpu": {"cpus": "zero-two"}}), "cpu.cpus"),
        (
            json!({"devices": [{"allow": true, "type": "x", "access": "rwm"}]}),
            "device",
        ),
        (
            json!({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]}),
            "page size \"3MB\"",
        ),
    ] {
        assert_create_refused(&berth, resources, words);
    }
    let mut bundle = Bundle::new("dotdot");
    bundle.config["linux"]["cgroupsPath"] = json!("/berth/../../escape");
    bundle.write();
    let out = berth.exec(&[
        "create",
        "--bundle",
        bundle.dir.to_str().unwrap(),
        &unique("dotdot"),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must not contain \"..\""),
        "{}",
        text(&out)
    );
    assert!(!Path::new("/sys/fs/cgroup/memory/escape").exists());
    assert!(!Path::new("/sys/fs/cgroup/escape").exists());
}

#[test]
fn events_reports_stats_and_the_oom_kill() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("events");
    bundle.config["linux"]["resources"]["memory"] = json!({"limit": 16777216});
    // A child of the shell allocates past the limit and is OOM-killed; the
    // shell (pid 1) lives on a little so the stream can see it.
    sh(
        &mut bundle,
        "sleep 0.5; (x=$(head -c 67108864 /dev/zero | tr '\\0' a)); sleep 1.5",
    );
    bundle.write();
    let id = unique("events");
    assert!(berth
        .exec(&["run", "-d", "--bundle", bundle.dir.to_str().unwrap(), &id])
        .status
        .success());

    let out = berth.exec(&["events", "--stats", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["type"], "stats");
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["data"]["memory"]["usage"]["limit"], 16777216);
    assert!(
        record["data"]["pids"]["current"].as_u64().unwrap() >= 1,
        "{record}"
    );
    assert!(
        record["data"]["cpu"]["usage"]["total"].as_u64().unwrap() > 0,
        "{record}"
    );

    // The stream ends with the container.
    let out = berth.exec(&["events", "--interval", "1s", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "oom" && r["id"] == id.as_str()),
        "{records:?}"
    );
    assert!(records.iter().any(|r| r["type"] == "stats"), "{records:?}");

    let out = berth.exec(&["events", "--stats", &id]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container not running"),
        "{}",
        text(&out)
    );
}

/// major:minor of a block device: the one holding `/`, or (in the qemu
/// guest, whose root is a tmpfs) the first under /sys/block.
fn block_device() -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").unwrap().dev();
    if libc::major(dev) != 0 {
        return (libc::major(dev) as u64, libc::minor(dev) as u64);
    }
    let entry = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .next()
        .expect("a block device");
    let text = std::fs::read_to_string(entry.path().join("dev")).unwrap();
    let (major, minor) = text.trim().split_once(':').unwrap();
    (major.parse().unwrap(), minor.parse().unwrap())
}

#[test]
fn block_io_throttling_and_hugepage_limits_are_written() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let (major, minor) = block_device();
    let mut bundle = Bundle::new("blkio");
    bundle.config["linux"]["resources"]["blockIO"] = json!({
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]
    });
    bundle.config["linux"]["resources"]["hugepageLimits"] =
        json!([{"pageSize": "2MB", "limit": 4194304}]);
    let expected = if pure_v2() {
        sh(&mut bundle, "cd /sys/fs/cgroup; cat io.max hugetlb.2MB.max");
        format!("{major}:{minor} rbps=1048576 wbps=max riops=max wiops=100\n4194304\n")
    } else {
        sh(
            &mut bundle,
            "cd /sys/fs/cgroup; cat blkio/blkio.throttle.read_bps_device \
            blkio/blkio.throttle.write_iops_device; cat hugetlb/hugetlb.2MB.limit_in_bytes 2>/dev/null \
            || cat unified/hugetlb.2MB.max",
        );
        format!("{major}:{minor} 1048576\n{major}:{minor} 100\n4194304\n")
    };
    let out = berth.run(&bundle, &unique("blkio"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn systemd_cgroups_are_refused_on_a_host_without_systemd() {
    if !can_run() || Path::new("/run/systemd/system").exists() {
        return;
    }
    let berth = Runtime::berth();
    let bundle = Bundle::new("systemd");
    bundle.write();
    let id = unique("systemd");
    let out = berth.exec(&[
        "--systemd-cgroup",
        "create",
        "--bundle",
        bundle.dir.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not supported yet"),
        "{}",
        text(&out)
    );
    assert!(!berth.root.join(&id).exists());
}

/// net_cls/net_prio are not mounted on these hosts: the test mounts a v1
/// hierarchy for them in a private mount namespace, where berth finds it
/// like any other, and removes it again (after the kernel has let go of
/// the removed children: a hierarchy unmounted with children lives on
/// unseen).
#[test]
fn network_class_and_priorities_are_written_on_v1() {
    if !can_run() || pure_v2() {
        return;
    }
    let cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    if !cgroups.lines().any(|l| l.starts_with("net_cls\t0\t")) {
        missing_prerequisite("an unmounted net_cls controller (it is already mounted or absent)");
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("netcls");
    bundle.config["linux"]["resources"]["network"] =
        json!({"classID": 1048577, "priorities": [{"name": "lo", "priority": 5}]});
    let hierarchy = std::env::temp_dir().join(unique("berth-netcls"));
    let name = hierarchy.file_name().unwrap().to_str().unwrap().to_string();
    sh(
        &mut bundle,
        &format!("cat /sys/fs/cgroup/{name}/net_cls.classid; grep '^lo ' /sys/fs/cgroup/{name}/net_prio.ifpriomap"),
    );
    bundle.write();
    let id = unique("netcls");
    let script = format!(
        "mkdir -p {h} && mount -t cgroup -o net_cls,net_prio berth-test {h} || exit 99; \
         {berth} --root {root} run --bundle {bundle} {id}; rc=$?; \
         test -d {h}/berth/{id} && echo left-behind; rmdir {h}/berth; \
         sleep 0.5; umount {h}; rmdir {h}; exit $rc",
        h = hierarchy.display(),
        berth = berth.bin.display(),
        root = berth.root.display(),
        bundle = bundle.dir.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1048577\nlo 5\n");
}

/// The kernel's own record of processes moved into a cgroup: its
/// `cgroup:cgroup_attach_task` event, enabled in a tracefs instance of the
/// test's own (on a tracefs mount of its own, unmounted when dropped). A
/// process that writes `cgroup.procs` or `tasks` appears there; one born
/// in the cgroup (clone3's `CLONE_INTO_CGROUP`) never does.
struct Moves {
    mount: PathBuf,
    instance: PathBuf,
}

impl Moves {
    /// Starts recording; `None` (a missing prerequisite) where the kernel
    /// has no tracefs or no such event.
    fn record() -> Option<Moves> {
        use std::os::unix::ffi::OsStrExt;
        let mount = std::env::temp_dir().join(unique("berth-it-tracefs"));
        std::fs::create_dir(&mount).expect("tracefs mount point");
        let target = std::ffi::CString::new(mount.as_os_str().as_bytes()).expect("path");
        // SAFETY: mount(2) with NUL-terminated strings alive for the call.
        let rc = unsafe {
            libc::mount(
                c"tracefs".as_ptr(),
                target.as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&mount);
            missing_prerequisite(&format!("cannot mount tracefs: {error}"));
            return None;
        }
        let moves = Moves {
            instance: mount.join("instances").join(unique("berth-it")),
            mount,
        };
        let enable = moves
            .instance
            .join("events/cgroup/cgroup_attach_task/enable");
        if let Err(e) =
            std::fs::create_dir(&moves.instance).and_then(|()| std::fs::write(&enable, "1"))
        {
            missing_prerequisite(&format!("no cgroup_attach_task trace event: {e}"));
            return None;
        }
        Some(moves)
    }

    /// The moves recorded so far into `dir` (as the hierarchy names it:
    /// `/berth/ID`), of the unified hierarchy (id 0) or of v1 ones.
    fn recorded(&self, dir: &str, unified: bool) -> Vec<String> {
        let trace = std::fs::read_to_string(self.instance.join("trace")).expect("read trace");
        let path = format!(" dst_path={dir} ");
        trace
            .lines()
            .filter(|l| l.contains("cgroup_attach_task:") && l.contains(&path))
            .filter(|l| l.contains(" dst_root=0 ") == unified)
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Moves {
    fn drop(&mut self) {
        // Removing the instance turns its events off.
        let _ = std::fs::remove_dir(&self.instance);
        if let Ok(target) = std::ffi::CString::new(self.mount.to_string_lossy().as_bytes()) {
            // SAFETY: umount2 of our own mount, by a NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// Whether this host mounts the unified hierarchy (pure v2, or hybrid
/// with `/sys/fs/cgroup/unified`).
fn has_unified() -> bool {
    pure_v2() || Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
}

/// What `create`, `exec` and `run` of one container showed about its
/// unified cgroup, each berth command started through `adjust`.
struct Births {
    /// `/berth/ID`: the container's directory in every hierarchy.
    dir: String,
    init_pid: i32,
    /// The unified line of `/proc/PID/cgroup`, of the init (read from the
    /// host), of an `exec`'d process and of a `run`'s process.
    seen: [String; 3],
    unified_moves: Vec<String>,
    v1_moves: Vec<String>,
}

fn births(moves: &Moves, adjust: fn(&mut std::process::Command)) -> Births {
    let unified_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("0::"))
            .unwrap_or("no unified line")
            .to_string()
    };
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("born");
    bundle.args(&["/bin/sleep", "30"]);
    bundle.write();
    let id = unique("born");
    let out = berth.exec_with(
        &["create", "--bundle", bundle.dir.to_str().unwrap(), &id],
        adjust,
    );
    assert!(out.status.success(), "{}", text(&out));
    let state = berth.state(&id).expect("state");
    let init_pid = state["pid"].as_i64().expect("pid") as i32;
    let init = std::fs::read_to_string(format!("/proc/{init_pid}/cgroup")).expect("init's cgroup");
    assert!(berth.exec_with(&["start", &id], adjust).status.success());
    let out = berth.exec_with(&["exec", &id, "cat", "/proc/self/cgroup"], adjust);
    assert!(out.status.success(), "{}", text(&out));
    let exec = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(berth.exec(&["kill", &id, "KILL"]).status.success());
    berth.wait_stopped(&id);
    assert!(berth.exec(&["delete", &id]).status.success());

    bundle.args(&["/bin/cat", "/proc/self/cgroup"]);
    bundle.write();
    let out = berth.exec_with(
        &["run", "--bundle", bundle.dir.to_str().unwrap(), &id],
        adjust,
    );
    assert!(out.status.success(), "{}", text(&out));
    let dir = format!("/berth/{id}");
    Births {
        seen: [
            unified_line(&init),
            unified_line(&exec),
            unified_line(&String::from_utf8_lossy(&out.stdout)),
        ],
        unified_moves: moves.recorded(&dir, true),
        v1_moves: moves.recorded(&dir, false),
        dir,
        init_pid,
    }
}

/// [`births`] on a host with a unified hierarchy and tracefs (else a
/// missing prerequisite), each process checked to be in the container's
/// unified cgroup in the end.
fn births_in_unified(adjust: fn(&mut std::process::Command)) -> Option<Births> {
    if !can_run() {
        return None;
    }
    if !has_unified() {
        missing_prerequisite("no unified cgroup hierarchy mounted");
        return None;
    }
    let moves = Moves::record()?;
    let born = births(&moves, adjust);
    let expected = format!("0::{}", born.dir);
    assert_eq!(born.seen, [expected.clone(), expected.clone(), expected]);
    Some(born)
}

/// On cgroup v2 (a pure v2 host, or a hybrid one's unified hierarchy) the
/// init and exec's helper are born in the container's cgroup (clone3's
/// `CLONE_INTO_CGROUP`): the kernel records no move into it, so none
/// waited for the grace period a `cgroup.procs` write can cost.
#[test]
fn the_init_and_an_exec_are_born_in_the_unified_cgroup() {
    let Some(born) = births_in_unified(|_| {}) else {
        return;
    };
    assert_eq!(born.unified_moves, Vec::<String>::new(), "moved, not born");
    if !pure_v2() {
        // The recorder works: v1 hierarchies are still joined by a move.
        assert!(
            born.v1_moves
                .iter()
                .any(|l| l.contains(&format!(" pid={} ", born.init_pid))),
            "no v1 move of the init {} recorded",
            born.init_pid
        );
    }
}

/// Where clone3 answers ENOSYS (docker's default seccomp profile, kernels
/// before 5.3), the init and exec's helper are cloned as before and move
/// themselves into the unified cgroup: the same cgroups in the end, and
/// the kernel records the moves.
#[test]
fn without_clone3_the_init_and_an_exec_move_into_the_unified_cgroup() {
    let Some(born) = births_in_unified(without_clone3) else {
        return;
    };
    // The init of `create`, exec's helper, the init of `run`.
    assert_eq!(born.unified_moves.len(), 3, "{:#?}", born.unified_moves);
    assert!(
        born.unified_moves[0].contains(&format!(" pid={} ", born.init_pid)),
        "{:#?}",
        born.unified_moves
    );
}
