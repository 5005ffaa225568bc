//! Helpers shared by berth's end-to-end tests.
//!
//! Tests run as root against the real kernel: [`Bundle`] builds a
//! busybox-static rootfs (with berth's conformance checker in it) and a
//! `config.json`; [`Runtime`] drives `berth` or `runc` with a private
//! `--root` and deletes every container it made when dropped, even when the
//! test fails.

pub mod imaged;
pub mod kube;
pub mod netns;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_oci::fd_passing::Wait;
use serde_json::{json, Value};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The mount points of the host's mount namespace that are `path` or lie
/// under it, in mount order, compared by path components: a test's
/// `/tmp/x-1` is no prefix of another's `/tmp/x-12`, which a test running
/// at the same time may own.
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .filter(|mount_point| mount_point.starts_with(path))
        .collect()
}

/// The directory holding the workspace's built binaries.
pub fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BERTH_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // .../target/<triple>/debug/deps/test-binary
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn berth_bin() -> PathBuf {
    target_dir().join("berth")
}

pub fn checker_bin() -> PathBuf {
    target_dir().join("berth-checker")
}

/// `arg` quoted for `sh`.
pub fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// `program args…` as a shell line under `timeout --foreground -k5 60`: a
/// program that hangs fails the test instead of hanging it, and stays in
/// the terminal's foreground process group. (Without --foreground, `timeout`
/// makes a group of its own unless the shell execs it, as bash does and dash
/// does not, and a tcsetattr on the terminal stops the program with SIGTTOU.)
pub fn foreground_line(program: &str, args: &[&str]) -> String {
    let mut line = vec![
        "timeout --foreground -k5 60".to_string(),
        shell_quote(program),
    ];
    line.extend(args.iter().map(|a| shell_quote(a)));
    line.join(" ")
}

/// Runs the shell line `line` on a terminal of its own (`script`; with
/// TERM=xterm, since CI has no TERM and that is a `dumb` terminal), typing
/// each input after its delay and holding the terminal's input open `hold`
/// after the last.
pub fn on_terminal(
    line: &str,
    inputs: &[(std::time::Duration, &[u8])],
    hold: std::time::Duration,
) -> Output {
    let mut command = Command::new("script");
    command
        .args(["-qec", line, "/dev/null"])
        .env("TERM", "xterm");
    typed_output(command, inputs, hold)
}

/// Runs `command` with its stdout and stderr collected and `inputs` written
/// to its stdin from a thread (a child like `script` stops reading its
/// input while nobody reads its output), each after its delay; stdin stays
/// open `hold` after the last, then closes.
pub fn typed_output(
    mut command: Command,
    inputs: &[(std::time::Duration, &[u8])],
    hold: std::time::Duration,
) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let inputs: Vec<(std::time::Duration, Vec<u8>)> =
        inputs.iter().map(|(d, i)| (*d, i.to_vec())).collect();
    let typist = std::thread::spawn(move || {
        use std::io::Write;
        for (delay, input) in inputs {
            std::thread::sleep(delay);
            let _ = stdin.write_all(&input);
            let _ = stdin.flush();
        }
        std::thread::sleep(hold);
    });
    let output = child.wait_with_output().expect("wait");
    let _ = typist.join();
    output
}

/// Whether the tests run under CI (`CI=true`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A test's prerequisite is missing. On a developer's machine the test is
/// skipped with the reason on stderr (returns false); under CI it fails,
/// naming what is missing: a suite that did not run must never look green.
pub fn missing_prerequisite(what: &str) -> bool {
    skip_or_fail(under_ci(), what)
}

fn skip_or_fail(ci: bool, what: &str) -> bool {
    assert!(!ci, "cannot run under CI=true: {what}");
    eprintln!("skipping: {what}");
    false
}

/// Whether each tool (what it is, its path under `/usr`, or directly under
/// `/` on a merged-usr system) is installed; the first missing one is a
/// [`missing_prerequisite`].
pub fn tools_installed(tools: &[(&str, &str)]) -> bool {
    for (what, path) in tools {
        if !Path::new(path).exists() && !Path::new(&path.replace("/usr/", "/")).exists() {
            return missing_prerequisite(&format!(
                "{what} is not installed: run ./scripts/setup.sh"
            ));
        }
    }
    true
}

/// Whether the end-to-end tests can run here: they need root.
pub fn can_run() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    missing_prerequisite("end-to-end tests need root")
}

/// Busybox applets the tests use.
const APPLETS: &[&str] = &[
    "sh",
    "true",
    "false",
    "echo",
    "cat",
    "ls",
    "id",
    "hostname",
    "mount",
    "sleep",
    "grep",
    "stat",
    "touch",
    "readlink",
    "test",
    "ps",
    "kill",
    "wc",
    "env",
    "pwd",
    "head",
    "umask",
    "mkdir",
    "domainname",
    "sysctl",
    "ulimit",
    "printf",
];

/// A bundle directory: `rootfs/` with busybox and the checker, and `config.json`.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    pub fn new(name: &str) -> Bundle {
        let dir = std::env::temp_dir().join(unique(&format!("berth-it-{name}")));
        let bin = dir.join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("create rootfs");
        for sub in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(dir.join("rootfs").join(sub)).expect("mkdir");
        }
        std::fs::write(
            dir.join("rootfs/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .expect("passwd");
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .expect("copy busybox (apt install busybox-static)");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink applet");
        }
        std::fs::copy(checker_bin(), dir.join("rootfs/berth-checker"))
            .expect("copy berth-checker (cargo build --workspace first)");
        Bundle {
            dir,
            config: default_config(),
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Sets the process arguments.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// Makes the checker the process, reading this bundle's config through a read-only bind.
    pub fn run_checker(&mut self) -> &mut Self {
        // The mount point exists up front: a mapped root in a user namespace
        // may not create files in a rootfs owned by the host's root.
        std::fs::write(self.rootfs().join("berth-config.json"), b"").expect("mount point");
        let mounts = self.config["mounts"].as_array_mut().expect("mounts");
        mounts.push(json!({
            "destination": "/berth-config.json",
            "type": "bind",
            "source": self.dir.join("config.json"),
            "options": ["bind", "ro"]
        }));
        self.args(&["/berth-checker", "/berth-config.json"])
    }

    /// Writes `config.json`.
    pub fn write(&self) {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config).expect("json"),
        )
        .expect("write config.json");
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `runc spec`'s shape (berth's default, without the cgroup namespace runc
/// 1.1 does not add) with a non-terminal process: every test starts here.
pub fn default_config() -> Value {
    let mut config = berth_oci::defaults::spec(false);
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["/bin/true"]);
    config["hostname"] = json!("berth-test");
    config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != "cgroup");
    config
}

/// Grants `cap` (`CAP_SYS_ADMIN`, …) to the config's process: bounding,
/// effective and permitted sets.
pub fn add_capability(config: &mut Value, cap: &str) {
    for set in ["bounding", "effective", "permitted"] {
        if let Some(list) = config["process"]["capabilities"][set].as_array_mut() {
            list.push(json!(cap));
        }
    }
}

/// Which runtime binary a [`Runtime`] drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Berth,
    Runc,
}

/// A runtime with a private state root; deletes its containers when dropped.
pub struct Runtime {
    pub kind: Kind,
    pub bin: PathBuf,
    pub root: PathBuf,
}

impl Runtime {
    pub fn berth() -> Runtime {
        Self::new(Kind::Berth, berth_bin())
    }

    pub fn runc() -> Runtime {
        Self::new(Kind::Runc, PathBuf::from("runc"))
    }

    fn new(kind: Kind, bin: PathBuf) -> Runtime {
        let root = std::env::temp_dir().join(unique("berth-it-root"));
        Runtime { kind, bin, root }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command.arg("--root").arg(&self.root).args(args);
        command.stdin(Stdio::null());
        command
    }

    /// Runs the runtime with `args` and collects its output. Output goes
    /// through files, not pipes: a detached container keeps the caller's
    /// stdio open for as long as it runs.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_with(args, |_| {})
    }

    /// [`Runtime::exec`], with the command adjusted by `adjust` first
    /// (e.g. [`without_clone3`]).
    pub fn exec_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Output {
        let base = std::env::temp_dir().join(unique("berth-it-out"));
        let stdout = base.with_extension("stdout");
        let stderr = base.with_extension("stderr");
        let mut command = self.command(args);
        adjust(&mut command);
        let status = command
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .status()
            .expect("spawn runtime");
        let output = Output {
            status,
            stdout: std::fs::read(&stdout).unwrap_or_default(),
            stderr: std::fs::read(&stderr).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(&stdout);
        let _ = std::fs::remove_file(&stderr);
        output
    }

    /// `run --bundle B ID` in the foreground.
    pub fn run(&self, bundle: &Bundle, id: &str) -> Output {
        bundle.write();
        self.exec(&["run", "--bundle", bundle.dir.to_str().expect("utf8"), id])
    }

    /// Runs the runtime with `args` on a terminal of its own (`script`
    /// gives it one, as a person's shell would) and types `input` there.
    pub fn exec_on_terminal(&self, args: &[&str], input: &[u8]) -> Output {
        let bin = self.bin.to_string_lossy();
        let root = self.root.to_string_lossy();
        let mut all = vec!["--root", root.as_ref()];
        all.extend_from_slice(args);
        on_terminal(
            &foreground_line(&bin, &all),
            &[(std::time::Duration::ZERO, input)],
            std::time::Duration::ZERO,
        )
    }

    pub fn state(&self, id: &str) -> Option<Value> {
        let out = self.exec(&["state", id]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("state json"))
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)
            .and_then(|s| s["status"].as_str().map(String::from))
            .unwrap_or_else(|| "absent".into())
    }

    /// Waits (up to 10 s) until the container is stopped.
    pub fn wait_stopped(&self, id: &str) {
        for _ in 0..2000 {
            if self.status(id) == "stopped" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("container {id} did not stop");
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                if let Some(id) = entry.file_name().to_str() {
                    let _ = self.exec(&["delete", "--force", id]);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Makes each `(from, to)` descriptor of this process `to` in the child of
/// `command` (without close-on-exec), as a caller passing fds would.
pub fn pass_fds(command: &mut Command, fds: &[(i32, i32)]) {
    let fds = fds.to_vec();
    // SAFETY: dup2 between fork and exec is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(move || {
            for (from, to) in &fds {
                libc::dup2(*from, *to);
            }
            Ok(())
        });
    }
}

/// Makes `clone3` fail with ENOSYS in the child of `command` and in
/// everything it starts, as docker's default seccomp profile does (a
/// runtime in a docker container meets this): a real seccomp filter,
/// installed between fork and exec.
pub fn without_clone3(command: &mut Command) {
    let filter = clone3_filter();
    // SAFETY: prctl between fork and exec is async-signal-safe; the filter
    // lives in the closure, which outlives the call.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(move || deny_clone3(&filter));
    }
}

/// The classic BPF program of [`without_clone3`]: x86-64's `clone3`
/// answers ENOSYS, every other system call is allowed.
pub fn clone3_filter() -> [libc::sock_filter; 7] {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    // struct seccomp_data: nr at 0, arch at 4.
    let load = |offset: u32| libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: offset,
    };
    let jump_if = |value: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k: value,
    };
    let ret = |action: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: action,
    };
    [
        load(4),
        jump_if(AUDIT_ARCH_X86_64, 1, 0),
        ret(libc::SECCOMP_RET_ALLOW),
        load(0),
        jump_if(libc::SYS_clone3 as u32, 0, 1),
        ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ret(libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs `filter` on the calling thread (root needs no no_new_privs).
pub fn deny_clone3(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: the program points at `filter`, alive for the call.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Docker's default capability set.
pub use berth_oci::kernel_names::DOCKER_DEFAULT_CAPABILITIES as DOCKER_CAPS;

/// stdout and stderr as text, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether process `pid` runs (a zombie its parent has yet to reap does not).
pub fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The `containerd-shim-berth-v2` processes started for container `id`
/// (`-id ID` on their command line): a shim serving a pod carries the id
/// of the container it was started for.
pub fn shims_started_for(id: &str) -> Vec<i32> {
    shims_where(|args| args.windows(2).any(|w| w[0] == "-id" && w[1] == id))
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    processes_where(|dir| {
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // From field 3: state, ppid.
        let parent: i32 = berth_runtime::state::stat_fields(&stat)?
            .nth(1)?
            .parse()
            .ok()?;
        Some(parent == pid)
    })
}

/// The `containerd-shim-berth-v2` processes whose arguments (the binary's
/// first) satisfy `matches`.
pub fn shims_where(matches: impl Fn(&[String]) -> bool) -> Vec<i32> {
    processes_where(|dir| {
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args.first()?.ends_with("containerd-shim-berth-v2");
        Some(is_shim && matches(&args))
    })
}

/// The pids of the processes whose `/proc/PID` directory `keep` takes
/// (`None`: gone meanwhile, or unreadable).
fn processes_where(keep: impl Fn(&Path) -> Option<bool>) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            keep(&entry.path())?.then_some(pid)
        })
        .collect()
}

/// The inode of `/proc/self/ns/NAME` of this (host) process.
pub fn host_ns_inode(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{name}"))
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Annotates the config with the host's namespace inodes for the checker.
pub fn annotate_host_namespaces(config: &mut Value) {
    let annotations = config
        .as_object_mut()
        .expect("object")
        .entry("annotations")
        .or_insert_with(|| json!({}));
    for (kind, proc_name) in [
        ("user", "user"),
        ("mount", "mnt"),
        ("pid", "pid"),
        ("network", "net"),
        ("ipc", "ipc"),
        ("uts", "uts"),
        ("cgroup", "cgroup"),
    ] {
        annotations[format!("berth.test/host-ns.{kind}")] =
            json!(host_ns_inode(proc_name).to_string());
    }
}

/// A helper process of a test (a namespace holder, a bystander), killed and
/// reaped when dropped so a failing test leaves nothing behind. Its stdio is
/// null so it never holds the test harness's pipes open.
pub struct Helper(pub std::process::Child);

impl Helper {
    pub fn spawn(program: &str, args: &[&str]) -> Helper {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Helper(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Accepts one connection on a console socket and receives the pty master
/// it carries (SCM_RIGHTS).
pub fn receive_fd(listener: &std::os::unix::net::UnixListener) -> OwnedFd {
    let (stream, _) = listener.accept().unwrap();
    receive_with_fd(&stream).1
}

/// Receives one message and the descriptor attached to it (SCM_RIGHTS),
/// as a console socket or a seccomp agent's socket carries them.
pub fn receive_with_fd(stream: &std::os::unix::net::UnixStream) -> (Vec<u8>, OwnedFd) {
    let mut data = vec![0u8; 64 * 1024];
    let (n, fd) = berth_oci::fd_passing::receive_fd(stream, &mut data, Wait::Block)
        .unwrap_or_else(|e| panic!("recvmsg: {e}"));
    data.truncate(n);
    (data, fd.expect("no fd received"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_prerequisite_skips_only_outside_ci() {
        assert!(!super::skip_or_fail(false, "a tool"));
        let under_ci = std::panic::catch_unwind(|| super::skip_or_fail(true, "a tool"));
        let message = under_ci.expect_err("CI must fail the test");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("a tool"), "{text}");
    }
}
