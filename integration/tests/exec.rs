//! `berth exec` into real containers.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;

use berth_integration::*;
use serde_json::json;

/// A running `sleep` container.
fn running(berth: &Runtime, name: &str) -> (Bundle, String) {
    let mut bundle = Bundle::new(name);
    bundle.config["root"]["readonly"] = json!(false);
    bundle.args(&["/bin/sleep", "1000"]);
    bundle.write();
    let id = unique(name);
    let out = berth.exec(&["run", "-d", "--bundle", bundle.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", text(&out));
    (bundle, id)
}

#[test]
fn exec_joins_the_inits_namespaces_and_returns_the_exit_status() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let (_bundle, id) = running(&berth, "exec-ns");
    let out = berth.exec(&[
        "exec", &id, "/bin/sh", "-c",
        "for n in pid mnt net ipc uts; do [ \"$(readlink /proc/self/ns/$n)\" = \"$(readlink /proc/1/ns/$n)\" ] || echo differs $n; done; cat /proc/1/comm; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sleep\n");
    // Killed by a signal: 128 + signal, as a shell reports it.
    let out = berth.exec(&["exec", &id, "/bin/sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
}

#[test]
fn exec_applies_user_env_cwd_caps_and_no_new_privs() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let (bundle, id) = running(&berth, "exec-opts");
    std::fs::create_dir_all(bundle.rootfs().join("work")).unwrap();
    let out = berth.exec(&[
        "exec",
        "--user",
        "1000:2000",
        "--additional-gids",
        "44",
        "--env",
        "GREETING=hello",
        "--cwd",
        "/work",
        "--no-new-privs",
        "--cap",
        "CAP_SYS_NICE",
        &id,
        "/bin/sh",
        "-c",
        "id; pwd; echo $GREETING; grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("uid=1000 gid=2000 groups=44"), "{stdout}");
    assert!(stdout.contains("/work\nhello\n"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    // CAP_SYS_NICE (23) joins the spec's KILL, NET_BIND_SERVICE, AUDIT_WRITE.
    assert!(stdout.contains("CapBnd:\t0000000020800420"), "{stdout}");
}

#[test]
fn exec_from_a_process_file_and_detached_with_a_pid_file() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let (bundle, id) = running(&berth, "exec-file");
    let process = bundle.dir.join("process.json");
    std::fs::write(
        &process,
        json!({"args": ["/bin/sh", "-c", "echo from file $X"], "env": ["X=42", "PATH=/bin"], "cwd": "/"}).to_string(),
    )
    .unwrap();
    let out = berth.exec(&["exec", "--process", process.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from file 42\n");

    let pid_file = bundle.dir.join("exec.pid");
    let out = berth.exec(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "/bin/sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let init = berth.state(&id).unwrap()["pid"].as_i64().unwrap();
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(ns(pid.trim()), ns(&init.to_string()));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).unwrap(),
        "sleep\n"
    );
}

#[test]
fn exec_is_confined_by_the_containers_seccomp_profile() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("exec-seccomp");
    bundle.config["root"]["readonly"] = json!(false);
    bundle.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    bundle.args(&["/bin/sleep", "1000"]);
    bundle.write();
    let id = unique("exsc");
    assert!(berth
        .exec(&["run", "-d", "--bundle", bundle.dir.to_str().unwrap(), &id])
        .status
        .success());
    // Editing the bundle afterwards changes nothing: exec applies the
    // config validated at create.
    let mut edited = bundle.config.clone();
    edited["linux"].as_object_mut().unwrap().remove("seccomp");
    std::fs::write(
        bundle.dir.join("config.json"),
        serde_json::to_vec(&edited).unwrap(),
    )
    .unwrap();
    let out = berth.exec(&["exec", &id, "/bin/mkdir", "/tmp/x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_runtime_binary_is_out_of_reach_through_proc_exe() {
    if !can_run() {
        return;
    }
    // Until `start`, the init is berth itself (CVE-2019-5736): a process
    // exec'd into the created container, root with the default capabilities,
    // can neither read nor write it through /proc/1/exe.
    let berth = Runtime::berth();
    let mut bundle = Bundle::new("exe");
    bundle.args(&["/bin/true"]);
    bundle.write();
    let id = unique("exe");
    let size_before = std::fs::metadata(berth_bin()).unwrap().len();
    assert!(berth
        .exec(&["create", "--bundle", bundle.dir.to_str().unwrap(), &id])
        .status
        .success());
    let out = berth.exec(&[
        "exec", &id, "/bin/sh", "-c",
        "cat /proc/1/exe > /dev/null && echo READ; echo x >> /proc/1/exe && echo WROTE; readlink /proc/1/exe || echo hidden",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("READ") && !stdout.contains("WROTE"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("hidden"), "{}", text(&out));
    assert_eq!(
        std::fs::metadata(berth_bin()).unwrap().len(),
        size_before,
        "berth was modified"
    );
}

#[test]
fn a_process_with_cap_sys_ptrace_cannot_rewrite_the_runtime_binary() {
    if !can_run() {
        return;
    }
    // CVE-2019-5736 with CAP_SYS_PTRACE, which non-dumpable does not stop:
    // open /proc/1/exe while the created init is berth, wait until `start`
    // replaced it, then write through the descriptor. berth runs from a
    // read-only view of itself, so the write fails. A copy of the binary is
    // the target, so that a failure here breaks no other test.
    let target = BinaryCopy::new();
    let berth = &target.berth;

    let mut bundle = Bundle::new("exe-ptrace");
    bundle.config["root"]["readonly"] = json!(false);
    bundle.args(&["/bin/sleep", "1000"]);
    bundle.write();
    let rootfs = bundle.dir.join("rootfs");
    let id = unique("exe-ptrace");
    let out = berth.exec(&["create", "--bundle", bundle.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", text(&out));
    // Detached: the attacker outlives every berth process, so nothing
    // executes the binary any more when it writes.
    let out = berth.exec(&[
        "exec",
        "-d",
        "--cap",
        "CAP_SYS_PTRACE",
        &id,
        "/bin/sh",
        "-c",
        "exec 3< /proc/1/exe || exit 10; touch /opened; \
         while [ ! -e /go ]; do sleep 0.05; done; \
         { echo x >> /proc/self/fd/3 && echo WROTE; readlink /proc/self/fd/3; } > /partial 2>&1; mv /partial /result",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for_file(&rootfs, "opened");
    let out = berth.exec(&["start", &id]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(rootfs.join("go"), "").unwrap();
    wait_for_file(&rootfs, "result");
    let result = std::fs::read_to_string(rootfs.join("result")).unwrap();
    target.assert_untouched(&result);
    // What it held was the init's sealed launcher, not berth.
    assert!(result.contains("memfd:berth-launch"), "{result}");
    assert!(berth.exec(&["delete", "--force", &id]).status.success());
}

#[test]
fn an_init_program_of_proc_self_exe_reaches_only_the_sealed_launcher() {
    proc_self_exe_as_the_init_program(false);
}

/// The same through `run --detach`, which releases its init together with
/// `Prepared` (as the shim's `run` does): its last execve must come from the
/// launcher too, however late the runtime saves the state.
#[test]
fn a_run_init_program_of_proc_self_exe_reaches_only_the_sealed_launcher() {
    proc_self_exe_as_the_init_program(true);
}

fn proc_self_exe_as_the_init_program(run_detached: bool) {
    if !can_run() {
        return;
    }
    // CVE-2019-5736 against the init itself: its program is a script whose
    // interpreter is /proc/self/exe, which at the init's last execve is the
    // sealed launcher (from `Ready` on the init is never berth). The kernel
    // runs the launcher again as an ordinary, dumpable process; it refuses
    // (it was not started by the init) on a full stderr pipe, which holds it
    // while its executable is opened as a container process could, then
    // written through once nothing runs it: the seals refuse.
    let target = BinaryCopy::new();
    let berth = &target.berth;
    let mut bundle = Bundle::new("exe-launch");
    bundle.args(&["/evil"]);
    bundle.write();
    let rootfs = bundle.rootfs();
    write_evil(&rootfs);
    let id = unique("exe-launch");
    let dir = bundle.dir.to_str().unwrap();
    let (hold, stderr) = full_pipe();
    let first: &[&str] = match run_detached {
        true => &["run", "--detach", "--bundle", dir, &id],
        false => &["create", "--bundle", dir, &id],
    };
    let status = berth
        .command(first)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .status()
        .unwrap();
    assert!(status.success());
    let pid = berth.state(&id).unwrap()["pid"].as_i64().unwrap();
    if !run_detached {
        let out = berth.exec(&["start", &id]);
        assert!(out.status.success(), "{}", text(&out));
    }
    // The release returned after the launcher's execve of /evil: the
    // process now is the launcher again, blocked on its stderr.
    let held = std::fs::File::open(format!("/proc/{pid}/exe")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    assert!(
        link.to_string_lossy().starts_with("/memfd:berth-launch"),
        "{link:?}"
    );
    drop(hold);
    berth.wait_stopped(&id);
    let written = std::fs::OpenOptions::new()
        .append(true)
        .open(format!("/proc/self/fd/{fd}"))
        .and_then(|mut f| f.write_all(b"x"));
    assert_eq!(
        written.unwrap_err().raw_os_error(),
        Some(libc::EPERM),
        "the launcher's memfd is writable"
    );
    assert!(std::fs::read(&target.berth.bin).unwrap() == target.original);
    assert!(berth.exec(&["delete", "--force", &id]).status.success());
}

#[test]
fn a_user_namespace_leaving_the_binarys_owner_unmapped_needs_no_sealed_copy() {
    if !can_run() {
        return;
    }
    // berth skips the sealed re-execution (CVE-2019-5736) when the container
    // has a user namespace of its own that does not map the binary's owner
    // (root): capabilities there do not override the permissions of an
    // inode whose owner it does not map, so no handle on the binary the
    // container could get is writable. The init runs the binary as it is
    // (the link names the file), and the container, root with every
    // capability that could help and the binary itself bound into it, can
    // neither write nor chmod it.
    let target = BinaryCopy::new();
    let berth = &target.berth;
    let bin = target.berth.bin.to_str().unwrap().to_string();
    let mut bundle = Bundle::new("exe-userns");
    let c = &mut bundle.config;
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // The host's devices and cgroups are not the mapped root's to use.
    c["linux"].as_object_mut().unwrap().remove("resources");
    c["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["type"] != "cgroup");
    c["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/target", "type": "bind", "source": bin, "options": ["bind"]}),
    );
    for cap in [
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
    ] {
        add_capability(c, cap);
    }
    bundle.args(&["/bin/sleep", "1000"]);
    bundle.write();
    std::fs::write(bundle.rootfs().join("target"), "").unwrap();
    let id = unique("exe-userns");
    let out = berth.exec(&["create", "--bundle", bundle.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", text(&out));
    let pid = berth.state(&id).unwrap()["pid"].as_i64().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, target.berth.bin, "the init was re-executed");
    let out = berth.exec(&[
        "exec",
        "--cap",
        "CAP_DAC_OVERRIDE",
        "--cap",
        "CAP_FOWNER",
        &id,
        "/bin/sh",
        "-c",
        "echo x >> /target && echo WROTE; chmod 777 /target && echo CHMOD; \
         echo x >> /proc/1/exe && echo WROTE-INIT; true",
    ]);
    let report = text(&out);
    assert!(
        !report.contains("WROTE") && !report.contains("CHMOD"),
        "{report}"
    );
    assert!(
        report.contains("Permission denied") || report.contains("Operation not permitted"),
        "{report}"
    );
    assert!(
        std::fs::read(&target.berth.bin).unwrap() == target.original,
        "berth was modified: {report}"
    );
    assert!(berth.exec(&["delete", "--force", &id]).status.success());
}

/// A copy of berth to attack, so that an attack that works breaks no
/// other test.
struct BinaryCopy {
    /// Dropped first: it cleans its containers up with the copy.
    berth: Runtime,
    _dir: RemovedOnDrop,
    original: Vec<u8>,
}

struct RemovedOnDrop(std::path::PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl BinaryCopy {
    fn new() -> BinaryCopy {
        let mut berth = Runtime::berth();
        let dir = std::env::temp_dir().join(unique("berth-it-exe"));
        std::fs::create_dir_all(&dir).unwrap();
        berth.bin = dir.join("berth");
        std::fs::copy(berth_bin(), &berth.bin).unwrap();
        let original = std::fs::read(&berth.bin).unwrap();
        BinaryCopy {
            berth,
            _dir: RemovedOnDrop(dir),
            original,
        }
    }

    /// The attacker's report says the write failed, and the file agrees.
    fn assert_untouched(&self, report: &str) {
        assert!(!report.contains("WROTE"), "{report}");
        assert!(
            report.contains("Read-only file system") || report.contains("Operation not permitted"),
            "{report}"
        );
        assert!(
            std::fs::read(&self.berth.bin).unwrap() == self.original,
            "berth was modified: {report}"
        );
    }
}

/// Waits (up to 30 s) for the container to create `/name`.
fn wait_for_file(rootfs: &std::path::Path, name: &str) {
    let start = std::time::Instant::now();
    while !rootfs.join(name).exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no /{name} in the container"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn an_entry_point_of_proc_self_exe_cannot_rewrite_the_runtime_binary() {
    if !can_run() {
        return;
    }
    // CVE-2019-5736 as published, no capability needed: a program whose
    // interpreter is /proc/self/exe makes the kernel run the runtime's own
    // binary as a container process (dumpable again after execve). Held on
    // a full stderr pipe, it stays long enough for a container process to
    // open /proc/PID/exe, kill it and write through the descriptor. (The
    // link reads "/" when the binary is the root of berth's bind mount.)
    let target = BinaryCopy::new();
    let report = entry_point_attack(&target.berth, "exe-shebang");
    target.assert_untouched(&report);
    assert!(
        report.contains("\n/\n") || report.ends_with("\n/"),
        "{report}"
    );
}

#[test]
fn a_binary_on_a_read_only_mount_runs_as_it_is_and_stays_unwritable() {
    if !can_run() {
        return;
    }
    // The install README suggests for busy hosts: the binary bound
    // read-only onto itself. berth runs it without re-executing (the link
    // names the file itself) and the attack above still cannot write it.
    let target = BinaryCopy::new();
    let bin = target.berth.bin.to_str().unwrap().to_string();
    let mount = |args: &[&str]| {
        let out = Command::new("mount").args(args).output().unwrap();
        assert!(out.status.success(), "mount {args:?}: {}", text(&out));
    };
    mount(&["--bind", &bin, &bin]);
    let _unmount = Unmount(target.berth.bin.clone());
    mount(&["-o", "remount,bind,ro", &bin]);
    let report = entry_point_attack(&target.berth, "exe-ro");
    target.assert_untouched(&report);
    assert!(report.contains(&bin), "{report}");
}

/// Unmounts a path when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `/evil`: a script whose interpreter is `/proc/self/exe`.
fn write_evil(rootfs: &std::path::Path) {
    std::fs::write(rootfs.join("evil"), "#!/proc/self/exe\n").unwrap();
    std::fs::set_permissions(
        rootfs.join("evil"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
}

/// Runs the `#!/proc/self/exe` attack against `berth` and returns what the
/// attacker wrote down: the write's error, or WROTE, and the file it held.
fn entry_point_attack(berth: &Runtime, name: &str) -> String {
    let (bundle, id) = running(berth, name);
    let rootfs = bundle.rootfs();
    write_evil(&rootfs);
    std::fs::write(
        rootfs.join("attack"),
        "while :; do\n\
           for p in /proc/[0-9]*; do\n\
             case \"$(busybox readlink $p/exe 2>/dev/null)\" in\n\
               *berth|/) exec 3< $p/exe && { busybox kill -9 ${p#/proc/}; break 2; } ;;\n\
             esac\n\
           done\n\
         done\n\
         busybox sleep 0.3\n\
         { echo x >> /proc/self/fd/3 && echo WROTE; busybox readlink /proc/self/fd/3; } > /partial 2>&1\n\
         busybox mv /partial /result\n",
    )
    .unwrap();
    let out = berth.exec(&["exec", "-d", &id, "/bin/sh", "/attack"]);
    assert!(out.status.success(), "{}", text(&out));

    let (hold, stderr) = full_pipe();
    let status = berth
        .command(&["exec", "-d", &id, "/evil"])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_file(&rootfs, "result");
    drop(hold);
    let result = std::fs::read_to_string(rootfs.join("result")).unwrap();
    assert!(berth.exec(&["delete", "--force", &id]).status.success());
    result
}

/// A pipe whose buffer is full (a blocking write end, for a child's
/// stderr) and its read end, which nobody reads.
fn full_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&write);
    // SAFETY: fcntl and write on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        let chunk = [b'x'; 4096];
        while libc::write(fd, chunk.as_ptr().cast(), chunk.len()) > 0 {}
        libc::fcntl(fd, libc::F_SETFL, flags);
    }
    (read, write)
}

#[test]
fn exec_with_a_terminal_echoes_typed_input() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let (bundle, id) = running(&berth, "exec-tty");
    let socket = bundle.dir.join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut command = berth.command(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        socket.to_str().unwrap(),
        &id,
        "/bin/sh",
    ]);
    let child = std::thread::spawn(move || command.output().unwrap());
    let master = receive_fd(&listener);
    let out = child.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut tty = std::fs::File::from(master);
    tty.write_all(b"echo typed-$((6*7))\n").unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    while !seen.contains("typed-42\r\n") {
        match tty.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    // The terminal echoes what was typed, then the shell's answer.
    assert!(seen.contains("echo typed-$((6*7))"), "{seen:?}");
    assert!(seen.contains("typed-42\r\n"), "{seen:?}");
    tty.write_all(b"exit\n").unwrap();
}

#[test]
fn bad_exec_requests_fail_with_runcs_words() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let out = berth.exec(&["exec", "no-such-container", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exec failed: container does not exist"),
        "{}",
        text(&out)
    );

    let (bundle, id) = running(&berth, "exec-bad");
    let process = bundle.dir.join("bad.json");
    std::fs::write(&process, "{not json").unwrap();
    let out = berth.exec(&["exec", "--process", process.to_str().unwrap(), &id]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid process file"),
        "{}",
        text(&out)
    );
    let out = berth.exec(&["exec", &id, "/no/such/program"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/program"),
        "{}",
        text(&out)
    );

    assert!(berth.exec(&["kill", &id, "KILL"]).status.success());
    berth.wait_stopped(&id);
    let out = berth.exec(&["exec", &id, "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("exec failed: cannot exec in a stopped container"),
        "{}",
        text(&out)
    );
}

#[test]
fn exec_t_in_the_foreground_relays_the_callers_terminal() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let (_bundle, id) = running(&berth, "exec-relay");
    let out = berth.exec_on_terminal(
        &[
            "exec",
            "-t",
            &id,
            "/bin/sh",
            "-c",
            "tty; read x; echo got $x; exit 6",
        ],
        b"there\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    assert!(stdout.contains("got there"), "{stdout}");
}
