//! The runc CLI contract: lifecycle verbs, their output and exit codes.

use berth_integration::*;

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
    // The init has not exec'd the process yet.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "berth");

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
