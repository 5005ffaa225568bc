//! berth under a real engine: podman 4.3 (through conmon) with
//! `--runtime berth`, as a podman user would switch from runc.

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
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = self
            .command(&["import", "-", name])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of the rootfs");
        assert!(out.status.success(), "import: {}", text(&out));
    }
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
