//! berth under real engines: podman 4.3 (through conmon) with
//! `--runtime berth`, as a podman user would switch from runc; and docker
//! 20.10 (Debian's `docker.io`), whose dockerd drives berth through
//! containerd's own runc shim (`BinaryName`), each scenario beside runc.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_integration::*;

/// A podman with private storage (vfs: no overlay mounts to leave behind).
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        let dir = std::env::temp_dir().join(unique("berth-it-podman"));
        std::fs::create_dir_all(&dir).unwrap();
        Podman { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .arg("--runtime")
            .arg(berth_bin())
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("podman")
    }

    fn import(&self, rootfs: &Path, name: &str) {
        import_rootfs(self.command(&["import", "-", name]), rootfs);
    }
}

/// Feeds a tar of `rootfs` to an engine's `import -` command: a local
/// image, nothing pulled.
fn import_rootfs(mut import: Command, rootfs: &Path) {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = import.stdin(tar.stdout.take().unwrap()).output().unwrap();
    assert!(tar.wait().unwrap().success(), "tar of the rootfs");
    assert!(out.status.success(), "import: {}", text(&out));
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Options this host needs with any runtime: root's hard NPROC/NOFILE limits
/// are below podman's defaults and there is no CNI network.
const OPTIONS: &[&str] = &[
    "--network",
    "none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];

fn podman_run(podman: &Podman, extra: &[&str], image: &str, cmd: &[&str]) -> Output {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.extend_from_slice(OPTIONS);
    args.push(image);
    args.extend_from_slice(cmd);
    podman.run(&args)
}

#[test]
fn podman_runs_containers_with_berth() {
    if !can_run() {
        return;
    }
    let podman = Podman::new();
    let bundle = Bundle::new("podman");
    let image = "localhost/berth-it-busybox:1";
    podman.import(&bundle.rootfs(), image);

    let out = podman_run(
        &podman,
        &["--rm"],
        image,
        &[
            "/bin/sh",
            "-c",
            "echo hi from $(cat /proc/1/comm); grep ^Seccomp: /proc/self/status; exit 7",
        ],
    );
    // podman's default seccomp profile is in force (2: filter mode).
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi from sh\nSeccomp:\t2\n"
    );

    let out = podman_run(&podman, &["-d", "--name", "long"], image, &["sleep", "100"]);
    assert!(out.status.success(), "{}", text(&out));
    let ps = podman.run(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        String::from_utf8_lossy(&ps.stdout).contains("long Up"),
        "{}",
        text(&ps)
    );
    // podman exec → berth exec (--process FILE --detach --pid-file, through conmon).
    let out = podman.run(&[
        "exec",
        "long",
        "/bin/sh",
        "-c",
        "echo exec in $(cat /proc/1/comm)",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec in sleep\n");
    let out = podman.run(&["stop", "--time", "1", "long"]);
    assert!(out.status.success(), "{}", text(&out));
    let ps = podman.run(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        String::from_utf8_lossy(&ps.stdout).contains("long Exited (137)"),
        "{}",
        text(&ps)
    );
    let out = podman.run(&["rm", "long"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn podman_applies_limits_and_shows_berths_error_for_what_it_cannot() {
    if !can_run() {
        return;
    }
    let podman = Podman::new();
    let bundle = Bundle::new("podman-err");
    let image = "localhost/berth-it-busybox-err:1";
    podman.import(&bundle.rootfs(), image);
    // A memory limit is applied (read back from inside the container).
    let out = podman_run(
        &podman,
        &["--rm", "--memory", "64m"],
        image,
        &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "67108864");
    // A limit the kernel refuses (throttling a character device): berth
    // fails the container rather than run it unlimited, and podman shows
    // berth's words.
    let out = podman_run(
        &podman,
        &["--rm", "--device-read-bps", "/dev/null:1mb"],
        image,
        &["/bin/true"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("blkio.throttle.read_bps_device") && stderr.contains("No such device"),
        "{}",
        text(&out)
    );
}

/// Debian's docker 20.10 client (`/usr/local/bin/docker` may be another).
const DOCKER_CLIENT: &str = "/usr/bin/docker";

/// A private dockerd: its own data root, exec root and containerd, no
/// bridge and no iptables, in a private mount namespace with a tmpfs `/run`
/// (containerd's shims use fixed paths there). berth is added as the
/// runtime `berth`. Stopped and cleaned up by PID when dropped.
struct Dockerd {
    dir: PathBuf,
    daemon: std::process::Child,
    /// The private mount namespace: every process left in it is ours.
    mount_ns: String,
}

impl Dockerd {
    fn start() -> Dockerd {
        assert!(
            Path::new("/usr/sbin/dockerd").exists(),
            "dockerd missing: apt-get install docker.io (scripts/setup.sh)"
        );
        let dir = std::env::temp_dir().join(unique("berth-it-docker"));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("docker.sock");
        let script = format!(
            "mount --make-rprivate / && mount -t tmpfs tmpfs /run && exec dockerd \
             --data-root {d}/data --exec-root {d}/exec --pidfile {d}/docker.pid \
             -H unix://{sock} --containerd-namespace berth-it --bridge=none \
             --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false \
             --storage-driver vfs --add-runtime berth={berth} --cgroup-parent /{cgroup} \
             >{d}/dockerd.log 2>&1",
            d = dir.display(),
            cgroup = dir.file_name().unwrap().to_string_lossy(),
            sock = sock.display(),
            berth = berth_bin().display(),
        );
        let daemon = Command::new("unshare")
            .args(["--mount", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let mut docker = Dockerd {
            dir,
            mount_ns: String::new(),
            daemon,
        };
        for _ in 0..3000 {
            if docker.client(&["version"]).status.success() {
                let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", docker.daemon.id()));
                docker.mount_ns = ns.map(|p| p.display().to_string()).unwrap_or_default();
                return docker;
            }
            if docker.daemon.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(docker.dir.join("dockerd.log")).unwrap_or_default();
        panic!("dockerd did not start:\n{log}");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(DOCKER_CLIENT);
        command
            .arg("--host")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn client(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("docker client")
    }

    fn import(&self, rootfs: &Path, name: &str) {
        import_rootfs(self.command(&["import", "-", name]), rootfs);
    }

    /// The client on a terminal of its own (`-it`): exit status and what
    /// the terminal showed, without carriage returns and the NUL (^@) that
    /// `script` may echo on either side of the output.
    fn on_terminal(&self, args: &[&str]) -> (Option<i32>, String) {
        let host = format!("unix://{}", self.dir.join("docker.sock").display());
        let mut all = vec!["--host", host.as_str()];
        all.extend_from_slice(args);
        let out = on_terminal(
            &foreground_line(DOCKER_CLIENT, &all),
            &[],
            std::time::Duration::ZERO,
        );
        let shown = String::from_utf8_lossy(&out.stdout)
            .replace(['\r'], "")
            .replace("^@", "");
        (out.status.code(), shown.trim().to_string())
    }

    /// Processes still in the daemon's private mount namespace.
    fn leftovers(&self) -> Vec<i32> {
        if self.mount_ns.is_empty() {
            return Vec::new();
        }
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                    .is_ok_and(|ns| ns.display().to_string() == self.mount_ns)
            })
            .collect()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.client(&[
            "rm",
            "--force",
            "--volumes",
            "dk-long",
            "dk-stubborn",
            "dk-polite",
        ]);
        // SAFETY: signalling the dockerd this test started, by its pid.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
        for pid in self.leftovers() {
            // SAFETY: a process in the private mount namespace this test made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // The containers' cgroup parent (dockerd leaves it, empty).
        let parent = self.dir.file_name().unwrap_or_default().to_owned();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(hierarchy.path().join(&parent));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One docker scenario's observable result: exit status and stdout.
fn observed(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// What the scenarios of one runtime showed, by name.
struct Seen<'a>(&'a str, Vec<(String, (Option<i32>, String))>);

impl Seen<'_> {
    /// The exit status and stdout of a command.
    fn out(&mut self, name: &str, out: &Output) {
        self.value(name, observed(out));
    }

    /// The exit status only (the output names ids, which differ).
    fn status(&mut self, name: &str, out: &Output) {
        self.value(name, (out.status.code(), String::new()));
    }

    fn value(&mut self, name: &str, value: (Option<i32>, String)) {
        self.1.push((format!("{}: {name}", self.0), value));
    }
}

/// The everyday docker scenarios with `--runtime RUNTIME`; what each showed.
fn docker_scenarios(
    docker: &Dockerd,
    runtime: &str,
    image: &str,
) -> Vec<(String, (Option<i32>, String))> {
    let mut seen = Seen(runtime, Vec::new());
    let run = |extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", "--runtime", runtime, "--network", "none"];
        args.extend_from_slice(extra);
        args.push(image);
        args.extend_from_slice(cmd);
        docker.client(&args)
    };
    seen.out("run --rm output", &run(&["--rm"], &["echo", "hello"]));
    seen.out("exit code", &run(&["--rm"], &["sh", "-c", "exit 3"]));
    let stdin = {
        let mut args = vec![
            "run",
            "--runtime",
            runtime,
            "--network",
            "none",
            "--rm",
            "-i",
        ];
        args.extend_from_slice(&[image, "cat"]);
        let mut child = docker
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"typed in\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    seen.out("-i stdin", &stdin);
    seen.out(
        "--memory seen inside",
        &run(
            &["--rm", "--memory", "32m"],
            &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
        ),
    );
    let out = run(&["-d", "--name", "dk-long"], &["sleep", "1000"]);
    seen.status("-d", &out);
    let state = |name: &str| {
        let out = docker.client(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            name,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    seen.value("-d state", (None, state("dk-long")));
    seen.out(
        "exec exit code",
        &docker.client(&["exec", "dk-long", "sh", "-c", "exit 4"]),
    );
    seen.out(
        "exec output",
        &docker.client(&["exec", "dk-long", "cat", "/proc/1/comm"]),
    );
    let it = docker.on_terminal(&[
        "exec",
        "-it",
        "dk-long",
        "sh",
        "-c",
        "test -t 0 && echo on a terminal; exit 5",
    ]);
    seen.value("exec -it", it);
    let top = docker.client(&["top", "dk-long"]);
    let shows_sleep = String::from_utf8_lossy(&top.stdout).contains("sleep 1000");
    seen.value("top", (top.status.code(), shows_sleep.to_string()));
    seen.out(
        "update --memory",
        &docker.client(&[
            "update",
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "dk-long",
        ]),
    );
    seen.out(
        "update seen inside",
        &docker.client(&[
            "exec",
            "dk-long",
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]),
    );
    seen.status("pause", &docker.client(&["pause", "dk-long"]));
    seen.value("paused state", (None, state("dk-long")));
    seen.status("unpause", &docker.client(&["unpause", "dk-long"]));
    seen.status(
        "restart",
        &docker.client(&["restart", "-t", "1", "dk-long"]),
    );
    seen.value("restarted state", (None, state("dk-long")));
    seen.status("rm -f", &docker.client(&["rm", "-f", "dk-long"]));

    let out = run(
        &["-d", "--name", "dk-stubborn"],
        &["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
    );
    assert!(out.status.success(), "{runtime}: {}", text(&out));
    seen.status(
        "stop ignoring TERM",
        &docker.client(&["stop", "-t", "1", "dk-stubborn"]),
    );
    seen.value("stopped by KILL", (None, state("dk-stubborn")));
    seen.status("rm", &docker.client(&["rm", "dk-stubborn"]));

    let out = run(
        &["-d", "--name", "dk-polite"],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ],
    );
    assert!(out.status.success(), "{runtime}: {}", text(&out));
    seen.status(
        "graceful stop",
        &docker.client(&["stop", "-t", "30", "dk-polite"]),
    );
    seen.value("stopped by TERM", (None, state("dk-polite")));
    seen.status("rm after stop", &docker.client(&["rm", "dk-polite"]));

    let run_it = docker.on_terminal(&[
        "run",
        "--runtime",
        runtime,
        "--network",
        "none",
        "--rm",
        "-it",
        image,
        "sh",
        "-c",
        "test -t 0 && echo on a terminal; exit 6",
    ]);
    seen.value("run -it", run_it);
    seen.1
}

/// docker 20.10 through containerd's runc shim (`BinaryName` = berth): the
/// everyday scenarios give what they give with runc.
#[test]
fn docker_runs_containers_with_berth_as_with_runc() {
    if !can_run() {
        return;
    }
    let docker = Dockerd::start();
    let bundle = Bundle::new("docker");
    let image = "berth-it/busybox:1";
    docker.import(&bundle.rootfs(), image);
    let with_runc = docker_scenarios(&docker, "runc", image);
    let with_berth = docker_scenarios(&docker, "berth", image);
    let mut differences = Vec::new();
    for ((name_r, runc), (name_b, berth)) in with_runc.iter().zip(&with_berth) {
        if runc != berth {
            differences.push(format!("{name_b}: {berth:?}\n   {name_r}: {runc:?}"));
        }
    }
    let log = std::fs::read_to_string(docker.dir.join("dockerd.log")).unwrap_or_default();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("level=error")).collect();
    assert!(
        differences.is_empty(),
        "{} of {} scenarios differ:\n{}\n\ndockerd errors:\n{}",
        differences.len(),
        with_berth.len(),
        differences.join("\n"),
        errors.join("\n")
    );
    // The scenarios did what they should (with both runtimes).
    let get = |name: &str| {
        with_berth
            .iter()
            .find(|(n, _)| n == &format!("berth: {name}"))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("run --rm output"), (Some(0), "hello\n".into()));
    assert_eq!(get("exit code").0, Some(3));
    assert_eq!(get("-i stdin"), (Some(0), "typed in\n".into()));
    assert_eq!(get("--memory seen inside"), (Some(0), "33554432\n".into()));
    assert_eq!(get("-d state").1, "running 0");
    assert_eq!(get("exec exit code").0, Some(4));
    assert_eq!(get("exec output"), (Some(0), "sleep\n".into()));
    assert_eq!(get("exec -it"), (Some(5), "on a terminal".into()));
    assert_eq!(get("top"), (Some(0), "true".into()));
    assert_eq!(get("update seen inside"), (Some(0), "67108864\n".into()));
    assert_eq!(get("paused state").1, "paused 0");
    assert_eq!(get("restarted state").1, "running 0");
    assert_eq!(get("stopped by KILL").1, "exited 137");
    assert_eq!(get("stopped by TERM").1, "exited 0");
    assert_eq!(get("run -it"), (Some(6), "on a terminal".into()));
}
