//! containerd-shim-berth-v2 under Debian's real containerd 1.6 and `ctr`.
//!
//! Each test starts a private containerd: its own root, state, sockets and
//! config, inside a private mount namespace with its own tmpfs `/run` (the
//! shims put their sockets in `/run/containerd/s`). A holder process keeps
//! that namespace alive across containerd restarts, and every `ctr` runs in
//! it through `nsenter`. The image is a busybox-static rootfs written as an
//! OCI layout by hand and `ctr images import`ed. The same scenarios run with
//! the shim driving berth and driving runc (through
//! `ctr run --runtime-config-path` with `BinaryName = "runc"`).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_integration::*;

const IMAGE: &str = "docker.io/library/berth-it-busybox:1";
const RUNTIME: &str = "io.containerd.berth.v2";
const NS: &str = "berth-it";

fn shim_bin() -> PathBuf {
    target_dir().join("containerd-shim-berth-v2")
}

fn have_containerd() -> bool {
    let found = Command::new("containerd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    found || missing_prerequisite("containerd is not installed (scripts/setup.sh installs it)")
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

/// Writes `bytes` as a blob of the OCI layout at `dir`; returns (digest, size).
fn blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let tmp = dir.join("blob.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    let digest = sha256(&tmp);
    std::fs::rename(&tmp, dir.join("blobs/sha256").join(&digest)).unwrap();
    (digest, bytes.len())
}

/// An OCI image archive of a busybox-static rootfs, tagged [`IMAGE`].
fn build_image(dir: &Path) -> PathBuf {
    let rootfs = dir.join("image-rootfs");
    for sub in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("copy busybox (apt install busybox-static)");
    for applet in [
        "sh", "true", "echo", "cat", "sleep", "ps", "kill", "id", "head", "tail", "stty", "tty",
        "ls", "grep",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let layout = dir.join("image-layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let layer = dir.join("layer.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar the rootfs");
    let (layer_digest, layer_size) = blob(&layout, &std::fs::read(&layer).unwrap());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let (config_digest, config_size) = blob(&layout, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = blob(&layout, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{manifest_digest}"), "size": manifest_size,
                       "annotations": {"io.containerd.image.name": IMAGE,
                                       "org.opencontainers.image.ref.name": "1"}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = dir.join("image.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar the layout");
    archive
}

/// A private containerd; tears down its tasks, itself and its namespace when dropped.
struct Containerd {
    dir: PathBuf,
    holder: Helper,
    daemon: Option<Child>,
}

impl Containerd {
    fn start() -> Containerd {
        assert!(
            shim_bin().exists() && berth_bin().exists(),
            "build the binaries first: cargo build --workspace"
        );
        let dir = std::env::temp_dir().join(unique("berth-it-containerd"));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(shim_bin(), bin.join("containerd-shim-berth-v2")).unwrap();
        std::os::unix::fs::symlink(berth_bin(), bin.join("berth")).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"/run/containerd\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"/run/containerd/containerd.sock\"\n\
                 [ttrpc]\n  address = \"/run/containerd/containerd.sock.ttrpc\"\n",
                dir.join("root").display()
            ),
        )
        .unwrap();
        // The holder owns the mount namespace with the private /run.
        let holder = Helper::spawn(
            "unshare",
            &[
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /run && exec sleep 100000",
            ],
        );
        let mut containerd = Containerd {
            dir,
            holder,
            daemon: None,
        };
        wait_for("the private /run", Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{}/mounts", containerd.holder.pid()))
                .is_ok_and(|m| m.lines().any(|l| l.starts_with("tmpfs /run ")))
        });
        containerd.spawn_daemon();
        let archive = build_image(&containerd.dir);
        let out = containerd.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert!(out.status.success(), "import: {}", text(&out));
        containerd
    }

    fn spawn_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg("-t")
            .arg(self.holder.pid().to_string())
            .arg("-m")
            .arg("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .env("PATH", self.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd");
        self.daemon = Some(child);
        wait_for("containerd", Duration::from_secs(20), || {
            self.ctr(&["version"]).status.success()
        });
    }

    /// containerd's PATH: our shim and berth first.
    fn path(&self) -> String {
        format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.dir.join("bin").display()
        )
    }

    /// Stops containerd (SIGTERM); its shims and containers stay.
    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.holder.pid().to_string())
            .arg("-m")
            .args([
                "ctr",
                "--address",
                "/run/containerd/containerd.sock",
                "-n",
                NS,
            ])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs `ctr args` and collects its output (through files: a detached
    /// container must not hold the test's pipes).
    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_input(args, None)
    }

    fn ctr_input(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let base = self.dir.join(unique("ctr"));
        let stdout = base.with_extension("stdout");
        let stderr = base.with_extension("stderr");
        let mut command = self.command(args);
        command
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().expect("ctr");
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(input).unwrap();
        }
        let status = child.wait().unwrap();
        let output = Output {
            status,
            stdout: std::fs::read(&stdout).unwrap_or_default(),
            stderr: std::fs::read(&stderr).unwrap_or_default(),
        };
        let _ = std::fs::remove_file(&stdout);
        let _ = std::fs::remove_file(&stderr);
        output
    }

    /// `ctr events` into a file until the returned recorder is dropped.
    fn record_events(&self) -> Recorder {
        let path = self.dir.join(unique("events"));
        let mut command = self.command(&["events"]);
        command
            .stdout(std::fs::File::create(&path).unwrap())
            .stderr(Stdio::null());
        let recorder = Recorder {
            child: command.spawn().expect("ctr events"),
            path,
        };
        // Subscribed once an event of ours shows up: label the namespace
        // until its /namespaces/update arrives.
        wait_for("ctr events to subscribe", Duration::from_secs(20), || {
            let label = format!("berth-it-probe={}", unique("p"));
            let _ = self.ctr(&["namespaces", "label", NS, &label]);
            std::thread::sleep(Duration::from_millis(100));
            recorder
                .events()
                .iter()
                .any(|(topic, _)| topic == "/namespaces/update")
        });
        recorder
    }

    /// A path as seen inside the private mount namespace.
    fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.holder.pid()))
    }

    fn mounts(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mounts", self.holder.pid())).unwrap_or_default()
    }

    /// `ctr task ls` as (id, pid, status).
    fn tasks(&self) -> Vec<(String, String, String)> {
        let out = self.ctr(&["task", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.into(), f.next()?.into(), f.next()?.into()))
            })
            .collect()
    }

    fn task_status(&self, id: &str) -> Option<String> {
        self.tasks()
            .into_iter()
            .find(|(t, _, _)| t == id)
            .map(|(_, _, s)| s)
    }

    fn wait_status(&self, id: &str, status: &str) {
        wait_for(
            &format!("task {id} {status}"),
            Duration::from_secs(10),
            || self.task_status(id).as_deref() == Some(status),
        );
    }

    /// A runtime config for `--runtime-config-path`: the shim drives `binary`.
    fn runtime_config(&self, binary: &str) -> PathBuf {
        let path = self
            .dir
            .join(format!("runtime-{}.toml", binary.replace('/', "_")));
        std::fs::write(&path, format!("BinaryName = \"{binary}\"\n")).unwrap();
        path
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            for (id, _, _) in self.tasks() {
                let _ = self.ctr(&["task", "kill", "-s", "KILL", &id]);
                let _ = self.ctr(&["task", "delete", "--force", &id]);
            }
            let out = self.ctr(&["containers", "ls", "-q"]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["containers", "rm", id]);
            }
        }
        self.stop_daemon();
        if std::env::var_os("BERTH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

struct Recorder {
    child: Child,
    path: PathBuf,
}

impl Recorder {
    /// (topic, event JSON) of every event so far.
    fn events(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                // TIMESTAMP-DATE TIME +0000 UTC NAMESPACE TOPIC JSON
                let mut fields = line.splitn(7, ' ');
                let topic = fields.nth(5)?;
                Some((topic.to_string(), fields.next().unwrap_or("").to_string()))
            })
            .collect()
    }

    /// The task topics about container `id`, in order.
    fn topics_of(&self, id: &str) -> Vec<String> {
        let needle = format!("\"container_id\":\"{id}\"");
        self.events()
            .into_iter()
            .filter(|(topic, json)| topic.starts_with("/tasks/") && json.contains(&needle))
            .map(|(topic, _)| topic)
            .collect()
    }

    fn wait_topic(&self, id: &str, topic: &str) {
        wait_for(
            &format!("{topic} for {id}"),
            Duration::from_secs(10),
            || self.topics_of(id).iter().any(|t| t == topic),
        );
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Which OCI runtime the shim drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driven {
    Berth,
    Runc,
}

/// `ctr run` flags choosing our shim and the runtime it drives.
fn runtime_flags(containerd: &Containerd, driven: Driven) -> Vec<String> {
    let mut flags = vec!["--runtime".to_string(), RUNTIME.to_string()];
    if driven == Driven::Runc {
        flags.push("--runtime-config-path".into());
        flags.push(containerd.runtime_config("runc").display().to_string());
    }
    flags
}

fn run_args<'a>(flags: &'a [String], before: &[&'a str], after: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run"];
    args.extend_from_slice(before);
    args.extend(flags.iter().map(String::as_str));
    args.extend_from_slice(after);
    args
}

/// The pid of the shim started for container `id`.
fn shim_pid(id: &str) -> Option<i32> {
    shims_started_for(id).first().copied()
}

fn run_rm_output_and_exit_codes(driven: Driven) {
    let containerd = Containerd::start();
    let flags = runtime_flags(&containerd, driven);
    let events = containerd.record_events();

    let id = unique("rm");
    let out = containerd.ctr(&run_args(&flags, &["--rm"], &[IMAGE, &id, "echo", "hi"]));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    events.wait_topic(&id, "/tasks/delete");
    assert_eq!(
        events.topics_of(&id),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "events in containerd's order"
    );

    let id = unique("code");
    let out = containerd.ctr(&run_args(
        &flags,
        &["--rm"],
        &[IMAGE, &id, "sh", "-c", "exit 3"],
    ));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // stdin reaches the container and its end reaches it too.
    let id = unique("stdin");
    let out = containerd.ctr_input(
        &run_args(&flags, &["--rm"], &[IMAGE, &id, "cat"]),
        Some(b"typed in\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "typed in\n");

    // stdout to a file through a file:// log URI.
    let id = unique("file");
    let log = containerd.dir.join("out.log");
    let uri = format!("file://{}", log.display());
    let out = containerd.ctr(&run_args(
        &flags,
        &["--rm", "--log-uri", &uri],
        &[IMAGE, &id, "echo", "to a file"],
    ));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "to a file\n"
    );

    assert!(
        !containerd
            .mounts()
            .contains("io.containerd.runtime.v2.task"),
        "rootfs mounts left behind:\n{}",
        containerd.mounts()
    );
}

#[test]
fn run_rm_output_and_exit_codes_berth() {
    if can_run() && have_containerd() {
        run_rm_output_and_exit_codes(Driven::Berth);
    }
}

#[test]
fn run_rm_output_and_exit_codes_runc() {
    if can_run() && have_containerd() {
        run_rm_output_and_exit_codes(Driven::Runc);
    }
}

fn detached_exec_ps_pause_metrics_kill(driven: Driven) {
    let containerd = Containerd::start();
    let flags = runtime_flags(&containerd, driven);
    let events = containerd.record_events();
    let id = unique("detached");
    let out = containerd.ctr(&run_args(&flags, &["-d"], &[IMAGE, &id, "sleep", "1000"]));
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "RUNNING");

    let out = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo in; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in\n");
    // Killed by a signal (an exec'd process is not the namespace's init,
    // which ignores its own SIGKILL): 128 + 9.
    let out = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "sig",
        &id,
        "sh",
        "-c",
        "kill -9 $$",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    let out = containerd.ctr_input(
        &["task", "exec", "--exec-id", "e2", &id, "cat"],
        Some(b"to exec\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to exec\n");

    let out = containerd.ctr(&["task", "ps", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let init_pid = containerd
        .tasks()
        .into_iter()
        .find(|(t, _, _)| *t == id)
        .map(|(_, p, _)| p)
        .expect("task listed");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&init_pid),
        "{}",
        text(&out)
    );

    let out = containerd.ctr(&["task", "pause", &id]);
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "PAUSED");
    let out = containerd.ctr(&["task", "resume", &id]);
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "RUNNING");

    // The shim drives the runtime it was told to.
    let bundle = containerd.inside(&format!(
        "/run/containerd/io.containerd.runtime.v2.task/{NS}/{id}"
    ));
    let options = std::fs::read_to_string(bundle.join("berth-shim.json")).unwrap();
    let binary = if driven == Driven::Runc {
        "\"runc\""
    } else {
        "\"berth\""
    };
    assert!(
        options.contains(&format!("\"binary\":{binary}")),
        "{options}"
    );

    // ctr 1.6 has no `task update`: Update goes straight to the shim's
    // socket (from the bundle's address file), as containerd would send it.
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    let socket = containerd.inside(address.trim_start_matches("unix://"));
    let mut client =
        berth_shim::wire::Client::connect(socket.to_str().unwrap(), Duration::from_secs(10))
            .unwrap();
    let mut update = berth_shim::protos::shim::shim::UpdateTaskRequest::new();
    update.id = id.clone();
    let mut resources = berth_shim::protos::protobuf::well_known_types::any::Any::new();
    resources.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    resources.value = br#"{"memory":{"limit":67108864}}"#.to_vec();
    update.resources = Some(resources).into();
    use berth_shim::protos::protobuf::Message;
    client
        .call(
            "containerd.task.v2.Task",
            "Update",
            update.write_to_bytes().unwrap(),
            &[("containerd-namespace-ttrpc", NS)],
        )
        .unwrap();
    drop(client);

    let out = containerd.ctr(&["task", "metrics", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");
    assert!(metrics.contains("pids.current"), "{metrics}");
    let limit = metrics
        .lines()
        .find(|l| l.starts_with("memory.limit_in_bytes"))
        .unwrap_or("");
    assert!(
        limit.contains("67108864"),
        "Update's limit in the metrics:\n{metrics}"
    );

    let out = containerd.ctr(&["task", "kill", "--all", "-s", "KILL", &id]);
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "STOPPED");
    let out = containerd.ctr(&["task", "delete", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("137"),
        "{}",
        text(&out)
    );
    events.wait_topic(&id, "/tasks/delete");
    let topics = events.topics_of(&id);
    let position = |t: &str| topics.iter().position(|x| x == t).unwrap_or(usize::MAX);
    for topic in [
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
    ] {
        assert!(
            position(topic) < topics.len(),
            "{topic} missing from {topics:?}"
        );
    }
    assert!(
        position("/tasks/create") < position("/tasks/start"),
        "{topics:?}"
    );
    assert_eq!(
        topics.last().map(String::as_str),
        Some("/tasks/delete"),
        "{topics:?}"
    );
    let out = containerd.ctr(&["containers", "rm", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!alive(&init_pid), "container init {init_pid} left running");
}

#[test]
fn detached_exec_ps_pause_metrics_kill_berth() {
    if can_run() && have_containerd() {
        detached_exec_ps_pause_metrics_kill(Driven::Berth);
    }
}

#[test]
fn detached_exec_ps_pause_metrics_kill_runc() {
    if can_run() && have_containerd() {
        detached_exec_ps_pause_metrics_kill(Driven::Runc);
    }
}

fn shim_sigkill_cleans_up(driven: Driven) {
    let containerd = Containerd::start();
    let flags = runtime_flags(&containerd, driven);
    let id = unique("sigkill");
    let out = containerd.ctr(&run_args(&flags, &["-d"], &[IMAGE, &id, "sleep", "1000"]));
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "RUNNING");
    let init_pid = containerd
        .tasks()
        .into_iter()
        .find(|(t, _, _)| *t == id)
        .map(|(_, p, _)| p)
        .expect("task listed");
    let bundle = containerd.inside(&format!(
        "/run/containerd/io.containerd.runtime.v2.task/{NS}/{id}"
    ));
    let shim: i32 = std::fs::read_to_string(bundle.join("shim.pid"))
        .expect("the shim's pid file")
        .parse()
        .expect("a pid");
    assert_eq!(shim_pid(&id), Some(shim), "shim.pid names the shim");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "containerd to drop the task",
        Duration::from_secs(15),
        || containerd.task_status(&id).is_none(),
    );
    wait_for("the container to be gone", Duration::from_secs(10), || {
        !alive(&init_pid)
    });
    wait_for(
        "containerd to remove the bundle",
        Duration::from_secs(10),
        || !bundle.exists(),
    );
    assert!(
        !containerd.mounts().contains(&id),
        "mounts left:\n{}",
        containerd.mounts()
    );
    let out = containerd.ctr(&["containers", "rm", &id]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn shim_sigkill_cleans_up_berth() {
    if can_run() && have_containerd() {
        shim_sigkill_cleans_up(Driven::Berth);
    }
}

#[test]
fn shim_sigkill_cleans_up_runc() {
    if can_run() && have_containerd() {
        shim_sigkill_cleans_up(Driven::Runc);
    }
}

fn containerd_restart_keeps_container(driven: Driven) {
    let mut containerd = Containerd::start();
    let flags = runtime_flags(&containerd, driven);
    let id = unique("restart");
    let out = containerd.ctr(&run_args(&flags, &["-d"], &[IMAGE, &id, "sleep", "1000"]));
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "RUNNING");
    // A second container dies while containerd is away: its shim keeps the
    // exit (and retries the event) for the daemon that comes back.
    let dies = unique("dies");
    let out = containerd.ctr(&run_args(&flags, &["-d"], &[IMAGE, &dies, "sleep", "1000"]));
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&dies, "RUNNING");
    let dies_pid: i32 = containerd
        .tasks()
        .into_iter()
        .find(|(t, _, _)| *t == dies)
        .and_then(|(_, p, _)| p.parse().ok())
        .expect("task listed");
    containerd.stop_daemon();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dies_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the container to die", Duration::from_secs(10), || {
        !alive(&dies_pid.to_string())
    });
    containerd.spawn_daemon();
    containerd.wait_status(&id, "RUNNING");
    containerd.wait_status(&dies, "STOPPED");
    let out = containerd.ctr(&["task", "delete", &dies]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("137"),
        "{}",
        text(&out)
    );
    let out = containerd.ctr(&["containers", "rm", &dies]);
    assert!(out.status.success(), "{}", text(&out));

    let out = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        &id,
        "echo",
        "still here",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    let events = containerd.record_events();
    let out = containerd.ctr(&["task", "kill", "-s", "KILL", &id]);
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "STOPPED");
    // The shim found the restarted daemon's events endpoint again.
    events.wait_topic(&id, "/tasks/exit");
    let out = containerd.ctr(&["task", "delete", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = containerd.ctr(&["containers", "rm", &id]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn containerd_restart_keeps_container_berth() {
    if can_run() && have_containerd() {
        containerd_restart_keeps_container(Driven::Berth);
    }
}

#[test]
fn containerd_restart_keeps_container_runc() {
    if can_run() && have_containerd() {
        containerd_restart_keeps_container(Driven::Runc);
    }
}

#[test]
fn terminal_and_oom_berth() {
    if can_run() && have_containerd() {
        terminal_and_oom(Driven::Berth);
    }
}

/// `ctr run --rm -t IMAGE ID sh -c SCRIPT` on a terminal of its own
/// (`script`), in the private containerd's mount namespace, after `setup`
/// (shell words run on that terminal first).
fn ctr_run_on_a_terminal(
    containerd: &Containerd,
    flags: &[String],
    setup: &str,
    id: &str,
    script: &str,
) -> std::process::Output {
    let mut line = vec![
        setup.to_string(),
        "nsenter".into(),
        "-t".into(),
        containerd.holder.pid().to_string(),
        "-m".into(),
        "ctr".into(),
        "-n".into(),
        NS.into(),
    ];
    line.extend(
        run_args(flags, &["--rm", "-t"], &[IMAGE, id, "sh", "-c", script])
            .iter()
            .map(|s| s.to_string()),
    );
    Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils)")
}

/// A process's last output to its terminal reaches the client before its
/// exit does: `ctr run -t` stops copying at the exit, so the shim tells
/// the exit only once the terminal's copy has passed on what the terminal
/// held and `ctr` has read it from the fifo (without that wait, about one
/// run in ten of this test's binary lost the tail under load). Several
/// runs, each ending in a burst of output.
#[test]
fn a_terminals_last_output_arrives_before_its_exit_berth() {
    if !(can_run() && have_containerd()) {
        return;
    }
    let containerd = Containerd::start();
    let flags = runtime_flags(&containerd, Driven::Berth);
    for round in 0..5 {
        let id = unique("tty-last");
        let script = "'seq 1 3000; echo last-line-$((40+2)); exit 3'";
        let out = ctr_run_on_a_terminal(&containerd, &flags, "", &id, script);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "round {round}: {}", text(&out));
        let has_line = |want: &str| stdout.lines().any(|l| l.trim_end_matches('\r') == want);
        assert!(has_line("3000"), "round {round}: {}", text(&out));
        assert!(
            stdout.contains("last-line-42"),
            "round {round}: {}",
            text(&out)
        );
    }
}

#[test]
fn terminal_and_oom_runc() {
    if can_run() && have_containerd() {
        terminal_and_oom(Driven::Runc);
    }
}

fn terminal_and_oom(driven: Driven) {
    let containerd = Containerd::start();
    let flags = runtime_flags(&containerd, driven);

    // `ctr run -t` on a terminal of its own (script), sized 30x100 first:
    // ctr passes the size on with ResizePty, after Start (hence the sleep).
    let id = unique("tty");
    let script = "'tty; sleep 1; stty size; exit 4'";
    let out = ctr_run_on_a_terminal(&containerd, &flags, "stty rows 30 cols 100;", &id, script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(stdout.contains("/dev/pts/0"), "{}", text(&out));
    assert!(stdout.contains("30 100"), "{}", text(&out));

    // `ctr task exec -t` into a detached container, on a terminal too.
    let id = unique("exec-tty");
    let out = containerd.ctr(&run_args(&flags, &["-d"], &[IMAGE, &id, "sleep", "1000"]));
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "RUNNING");
    let line = format!(
        "stty rows 20 cols 60; nsenter -t {} -m ctr -n {NS} task exec -t --exec-id t {id} \
         sh -c 'tty; sleep 1; stty size; exit 6'",
        containerd.holder.pid()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(stdout.contains("/dev/pts/"), "{}", text(&out));
    assert!(stdout.contains("20 60"), "{}", text(&out));
    let out = containerd.ctr(&["task", "kill", "-s", "KILL", &id]);
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "STOPPED");

    // A memory-limited container that outgrows its limit: /tasks/oom.
    let events = containerd.record_events();
    let id = unique("oom");
    let out = containerd.ctr(&run_args(
        &flags,
        &["--rm", "--memory-limit", "33554432"],
        &[IMAGE, &id, "sh", "-c", "head -c 500000000 /dev/zero | tail"],
    ));
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    events.wait_topic(&id, "/tasks/oom");
}

#[test]
fn bad_input_gets_precise_errors() {
    if !(can_run() && have_containerd()) {
        return;
    }
    let containerd = Containerd::start();
    let flags = runtime_flags(&containerd, Driven::Berth);
    let id = unique("bad");
    let out = containerd.ctr(&run_args(&flags, &["-d"], &[IMAGE, &id, "sleep", "1000"]));
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&id, "RUNNING");

    // An exec id the shim never saw.
    let out = containerd.ctr(&["task", "kill", "--exec-id", "nosuch", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exec \"nosuch\" not found"),
        "{}",
        text(&out)
    );
    // A program that does not exist: the runtime's own words.
    let out = containerd.ctr(&["task", "exec", "--exec-id", "x", &id, "/nonexistent"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("berth exec failed"),
        "{}",
        text(&out)
    );

    // Checkpoint is not supported: containerd passes the shim's words on.
    let out = containerd.ctr(&["task", "checkpoint", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checkpoint is not supported"),
        "{}",
        text(&out)
    );

    // Kill to a process that exited.
    let quick = unique("quick");
    let out = containerd.ctr(&run_args(&flags, &["-d"], &[IMAGE, &quick, "true"]));
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&quick, "STOPPED");
    let out = containerd.ctr(&["task", "kill", &quick]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("process already finished"),
        "{}",
        text(&out)
    );
    let out = containerd.ctr(&["task", "delete", &quick]);
    assert!(out.status.success(), "{}", text(&out));

    // A runtime that fails `create`: its error, and nothing left behind.
    let failing = containerd.dir.join("bin/failing-runtime");
    std::fs::write(
        &failing,
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --log ] && log=$2; shift; done\n\
         echo '{\"level\":\"error\",\"msg\":\"refusing on purpose\"}' >> \"$log\"\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = containerd.runtime_config(failing.to_str().unwrap());
    let broken = unique("broken");
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        config.to_str().unwrap(),
        IMAGE,
        &broken,
        "true",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("create failed: refusing on purpose"),
        "{}",
        text(&out)
    );
    wait_for("the failed shim to go", Duration::from_secs(10), || {
        shim_pid(&broken).is_none()
    });
    assert!(
        !containerd.mounts().contains(&broken),
        "mounts left:\n{}",
        containerd.mounts()
    );
}

/// A shim this test started by hand: on the way out (even failing) its
/// container is killed and deleted and the shim shut down, or killed.
struct ShimGuard {
    socket: PathBuf,
    id: String,
}

impl Drop for ShimGuard {
    fn drop(&mut self) {
        use berth_shim::protos::protobuf::Message;
        use berth_shim::protos::shim::shim::{DeleteRequest, KillRequest, ShutdownRequest};
        const TASK: &str = "containerd.task.v2.Task";
        if let Ok(mut client) = berth_shim::wire::Client::connect(
            self.socket.to_str().unwrap_or(""),
            Duration::from_secs(5),
        ) {
            let mut kill = KillRequest::new();
            kill.id = self.id.clone();
            kill.signal = 9;
            kill.all = true;
            let _ = client.call(TASK, "Kill", kill.write_to_bytes().unwrap_or_default(), &[]);
            std::thread::sleep(Duration::from_millis(200));
            let mut delete = DeleteRequest::new();
            delete.id = self.id.clone();
            let _ = client.call(
                TASK,
                "Delete",
                delete.write_to_bytes().unwrap_or_default(),
                &[],
            );
            let mut shutdown = ShutdownRequest::new();
            shutdown.id = self.id.clone();
            shutdown.now = true;
            let _ = client.call(
                TASK,
                "Shutdown",
                shutdown.write_to_bytes().unwrap_or_default(),
                &[],
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        if let Some(pid) = shim_pid(&self.id) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The shim driven directly over ttrpc (no containerd), in the private
/// namespace: Create on a bundle without `config.json` must say so; Create
/// with a stdout fifo that nobody ever opens must not hang, and the process
/// runs; an exec that fails to start answers its parked Wait; Kill, Wait,
/// Delete (twice), Checkpoint; Shutdown ends the shim and leaves nothing behind.
#[test]
fn shim_driven_directly_bad_bundle_and_unopened_fifo() {
    if !(can_run() && have_containerd()) {
        return;
    }
    use berth_shim::protos::protobuf::Message;
    use berth_shim::protos::shim::shim::{
        CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest,
        KillRequest, ShutdownRequest, StartRequest, WaitRequest, WaitResponse,
    };
    const TASK: &str = "containerd.task.v2.Task";
    let containerd = Containerd::start();
    let mut bundle = Bundle::new("shim-direct");
    let id = unique("direct");
    let address = shim_start(&containerd, &bundle.dir, &id);
    assert!(
        address.starts_with("unix:///run/containerd/s/"),
        "{address}"
    );
    let written = std::fs::read_to_string(bundle.dir.join("address")).unwrap();
    assert_eq!(written, address);
    let socket = containerd.inside(address.trim_start_matches("unix://"));
    let _guard = ShimGuard {
        socket: socket.clone(),
        id: id.clone(),
    };
    // Whoever can connect controls the container: root only.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let mut client =
        berth_shim::wire::Client::connect(socket.to_str().unwrap(), Duration::from_secs(10))
            .unwrap();

    let mut create = CreateTaskRequest::new();
    create.id = id.clone();
    create.bundle = bundle.dir.display().to_string();
    let err = client
        .call(TASK, "Create", create.write_to_bytes().unwrap(), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no config.json"), "{err}");
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");

    bundle.args(&[
        "sh",
        "-c",
        "trap 'exit 7' TERM; echo into a fifo nobody reads; while :; do sleep 0.1; done",
    ]);
    bundle.write();
    let fifo = bundle.dir.join("stdout.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    create.stdout = fifo.display().to_string();
    let reply = client
        .call(TASK, "Create", create.write_to_bytes().unwrap(), &[])
        .unwrap();
    let pid = CreateTaskResponse::parse_from_bytes(&reply).unwrap().pid;
    assert!(pid > 0);
    // Once Create is answered, `shim.pid` names the shim: tools find the
    // shim serving a task by it, and berth-imaged sends no Start after.
    let written = std::fs::read_to_string(bundle.dir.join("shim.pid")).unwrap_or_default();
    assert_eq!(
        written.trim().parse::<i32>().ok(),
        shim_pid(&id),
        "shim.pid once Create was answered"
    );
    let mut start = StartRequest::new();
    start.id = id.clone();
    client
        .call(TASK, "Start", start.write_to_bytes().unwrap(), &[])
        .unwrap();

    // An exec whose Start fails while its Wait is parked (containerd waits
    // before it starts): the Wait hears 255 and the error is the runtime's.
    let mut exec = ExecProcessRequest::new();
    exec.id = id.clone();
    exec.exec_id = "bad".into();
    let mut spec = berth_shim::protos::protobuf::well_known_types::any::Any::new();
    spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    spec.value =
        br#"{"args":["/nonexistent"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0}}"#
            .to_vec();
    exec.spec = Some(spec).into();
    client
        .call(TASK, "Exec", exec.write_to_bytes().unwrap(), &[])
        .unwrap();
    let waiter = {
        let socket = socket.clone();
        let mut wait = WaitRequest::new();
        wait.id = id.clone();
        wait.exec_id = "bad".into();
        std::thread::spawn(move || {
            let mut client = berth_shim::wire::Client::connect(
                socket.to_str().unwrap(),
                Duration::from_secs(10),
            )
            .unwrap();
            let reply = client.call(TASK, "Wait", wait.write_to_bytes().unwrap(), &[]);
            WaitResponse::parse_from_bytes(&reply.unwrap())
                .unwrap()
                .exit_status
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut start_exec = StartRequest::new();
    start_exec.id = id.clone();
    start_exec.exec_id = "bad".into();
    let err = client
        .call(TASK, "Start", start_exec.write_to_bytes().unwrap(), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("berth exec failed"), "{err}");
    assert_eq!(waiter.join().unwrap(), 255);

    // SIGTERM, which the container traps into `exit 7`.
    let mut kill = KillRequest::new();
    kill.id = id.clone();
    kill.signal = 15;
    client
        .call(TASK, "Kill", kill.write_to_bytes().unwrap(), &[])
        .unwrap();
    let mut wait = WaitRequest::new();
    wait.id = id.clone();
    let reply = client
        .call(TASK, "Wait", wait.write_to_bytes().unwrap(), &[])
        .unwrap();
    assert_eq!(
        WaitResponse::parse_from_bytes(&reply).unwrap().exit_status,
        7
    );
    let mut delete = DeleteRequest::new();
    delete.id = id.clone();
    let reply = client
        .call(TASK, "Delete", delete.write_to_bytes().unwrap(), &[])
        .unwrap();
    assert_eq!(
        DeleteResponse::parse_from_bytes(&reply)
            .unwrap()
            .exit_status,
        7
    );
    // Deleted twice: the task is gone.
    let err = client
        .call(TASK, "Delete", delete.write_to_bytes().unwrap(), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("NOT_FOUND"), "{err}");
    let err = client
        .call(TASK, "Checkpoint", Vec::new(), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("UNIMPLEMENTED"), "{err}");

    let mut shutdown = ShutdownRequest::new();
    shutdown.id = id.clone();
    client
        .call(TASK, "Shutdown", shutdown.write_to_bytes().unwrap(), &[])
        .unwrap();
    wait_for("the shim to exit", Duration::from_secs(10), || {
        shim_pid(&id).is_none()
    });
    assert!(!socket.exists(), "socket {} left behind", socket.display());
    assert!(
        !alive(&pid.to_string()),
        "container process {pid} left behind"
    );

    // `delete` after the fact is idempotent and answers a DeleteResponse.
    for _ in 0..2 {
        let bundle_dir = bundle.dir.to_str().unwrap();
        let out = shim_command(&containerd, Path::new("/"))
            .args(["-id", &id, "-bundle", bundle_dir, "delete"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let response = DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
        assert_eq!(response.exit_status, 137);
    }
}

/// berth beside the shim makes an init in a fork of the shim. Where berth
/// would first re-execute itself sealed, the container still runs as
/// berth's command line would run it: one sharing the host's pid namespace
/// (the fork executes berth's command line, which seals itself), and one
/// whose seccomp profile keeps its init from ending in the launcher (the
/// init re-executes `/proc/self/exe`, which is the shim's binary there, and
/// the shim's `main` resumes it). A failing create reports berth's error.
#[test]
fn inits_made_in_the_shims_fork_seal_themselves_as_berths_command_line_would() {
    if !(can_run() && have_containerd()) {
        return;
    }
    use berth_shim::protos::protobuf::Message;
    use berth_shim::protos::shim::shim::{
        CreateTaskRequest, DeleteRequest, ShutdownRequest, StartRequest, WaitRequest, WaitResponse,
    };
    const TASK: &str = "containerd.task.v2.Task";
    let containerd = Containerd::start();
    let host_pid = |config: &mut serde_json::Value| {
        let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "pid");
    };
    let relaunched = |config: &mut serde_json::Value| {
        config["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["fcntl"], "action": "SCMP_ACT_LOG"}],
        });
    };
    let broken = |config: &mut serde_json::Value| {
        config["process"]["cwd"] = "relative".into();
    };
    type Tweak<'a> = &'a dyn Fn(&mut serde_json::Value);
    let cases: [(&str, Tweak); 3] = [
        ("host-pid", &host_pid),
        ("relaunched", &relaunched),
        ("broken", &broken),
    ];
    for (case, tweak) in cases {
        let mut bundle = Bundle::new(&format!("shim-fork-{case}"));
        bundle.args(&["sh", "-c", "echo ran $0", case]);
        tweak(&mut bundle.config);
        bundle.write();
        let output = bundle.dir.join("output");
        let id = unique(case);
        let address = shim_start(&containerd, &bundle.dir, &id);
        let socket = containerd.inside(address.trim_start_matches("unix://"));
        let _guard = ShimGuard {
            socket: socket.clone(),
            id: id.clone(),
        };
        let mut client =
            berth_shim::wire::Client::connect(socket.to_str().unwrap(), Duration::from_secs(10))
                .unwrap();
        let mut create = CreateTaskRequest::new();
        create.id = id.clone();
        create.bundle = bundle.dir.display().to_string();
        create.stdout = format!("file://{}", output.display());
        create.stderr = create.stdout.clone();
        let created = client.call(TASK, "Create", create.write_to_bytes().unwrap(), &[]);
        if case == "broken" {
            let err = created.unwrap_err().to_string();
            assert!(err.contains("berth create failed"), "{err}");
            assert!(err.contains("cwd"), "{err}");
        } else {
            created.unwrap_or_else(|e| panic!("{case}: {e}"));
            let mut start = StartRequest::new();
            start.id = id.clone();
            client
                .call(TASK, "Start", start.write_to_bytes().unwrap(), &[])
                .unwrap();
            let mut wait = WaitRequest::new();
            wait.id = id.clone();
            let reply = client
                .call(TASK, "Wait", wait.write_to_bytes().unwrap(), &[])
                .unwrap();
            let status = WaitResponse::parse_from_bytes(&reply).unwrap().exit_status;
            let text = std::fs::read_to_string(&output).unwrap_or_default();
            assert_eq!(
                (status, text.as_str()),
                (0, format!("ran {case}\n").as_str())
            );
            let mut delete = DeleteRequest::new();
            delete.id = id.clone();
            client
                .call(TASK, "Delete", delete.write_to_bytes().unwrap(), &[])
                .unwrap();
        }
        let mut shutdown = ShutdownRequest::new();
        shutdown.id = id.clone();
        let _ = client.call(TASK, "Shutdown", shutdown.write_to_bytes().unwrap(), &[]);
        wait_for("the shim to exit", Duration::from_secs(10), || {
            shim_pid(&id).is_none()
        });
    }
}

/// `n` bundles named after `name` whose containers run `sleep 1000` in pod
/// `pod` (containerd's CRI annotation).
fn pod_bundles(name: &str, pod: &str, n: usize) -> Vec<Bundle> {
    (0..n)
        .map(|_| {
            let mut bundle = Bundle::new(name);
            bundle.args(&["sleep", "1000"]);
            bundle.config["annotations"] =
                serde_json::json!({ "io.kubernetes.cri.sandbox-id": pod });
            bundle.write();
            bundle
        })
        .collect()
}

/// The shim's command line as containerd starts it, in the private mount
/// namespace with `dir` as working directory; the caller adds `-id` and the
/// verb.
fn shim_command(containerd: &Containerd, dir: &Path) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg("-t")
        .arg(containerd.holder.pid().to_string())
        .arg("-m")
        // Entering a mount namespace resets the working directory: set it again.
        .arg(format!("--wd={}", dir.display()))
        .arg(shim_bin())
        .args([
            "-namespace",
            NS,
            "-address",
            "/nonexistent",
            "-publish-binary",
            "/bin/true",
        ])
        .env("PATH", containerd.path())
        .stdin(Stdio::null());
    command
}

/// `containerd-shim-berth-v2 … -id ID start` in the private namespace, in
/// `bundle` as containerd runs it; must succeed; returns the address it
/// printed.
fn shim_start(containerd: &Containerd, bundle: &Path, id: &str) -> String {
    let out = shim_command(containerd, bundle)
        .args(["-id", id, "start"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A pod's next container never gets the address of a shim on its way out
/// (a race CI once lost: the daemon tore down the pod's only container
/// while it started the next). A `start` that finds the pod's shim
/// announces its container; a Shutdown for the last container that comes
/// before the announced one's Create leaves the shim serving, and the
/// container then runs in it. The Shutdown that ends the shim removes its
/// socket before it answers, so a `start` right after runs a new shim.
#[test]
fn a_pods_shim_stays_for_the_container_a_start_announced() {
    if !(can_run() && have_containerd()) {
        return;
    }
    use berth_shim::protos::protobuf::Message;
    use berth_shim::protos::shim::shim::{
        ConnectRequest, ConnectResponse, CreateTaskRequest, ShutdownRequest, StartRequest,
    };
    const TASK: &str = "containerd.task.v2.Task";
    let containerd = Containerd::start();
    let pod = unique("pod");
    let ids = [unique("first"), unique("joiner"), unique("after")];
    let bundles = pod_bundles("shim-join", &pod, ids.len());
    let shim_of = |socket: &Path, id: &str| {
        let mut client =
            berth_shim::wire::Client::connect(socket.to_str().unwrap(), Duration::from_secs(10))
                .unwrap();
        let mut connect = ConnectRequest::new();
        connect.id = id.to_string();
        let reply = client
            .call(TASK, "Connect", connect.write_to_bytes().unwrap(), &[])
            .unwrap();
        (
            client,
            ConnectResponse::parse_from_bytes(&reply).unwrap().shim_pid,
        )
    };
    let shutdown = |client: &mut berth_shim::wire::Client, id: &str| {
        let mut shutdown = ShutdownRequest::new();
        shutdown.id = id.to_string();
        shutdown.now = true;
        client
            .call(TASK, "Shutdown", shutdown.write_to_bytes().unwrap(), &[])
            .unwrap();
    };

    let address = shim_start(&containerd, &bundles[0].dir, &ids[0]);
    let socket = containerd.inside(address.trim_start_matches("unix://"));
    let _first = ShimGuard {
        socket: socket.clone(),
        id: ids[0].clone(),
    };
    let (mut client, shim) = shim_of(&socket, &ids[0]);
    // The joiner's start finds the pod's shim and announces the joiner.
    assert_eq!(shim_start(&containerd, &bundles[1].dir, &ids[1]), address);
    let _joiner = ShimGuard {
        socket: socket.clone(),
        id: ids[1].clone(),
    };
    // The first container's teardown ends before the joiner's Create: the
    // shim stays, socket and all, and serves the joiner.
    shutdown(&mut client, &ids[0]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(&shim.to_string()),
        "the shim left an announced container"
    );
    assert!(socket.exists(), "the shim's socket went");
    let mut create = CreateTaskRequest::new();
    create.id = ids[1].clone();
    create.bundle = bundles[1].dir.display().to_string();
    client
        .call(TASK, "Create", create.write_to_bytes().unwrap(), &[])
        .unwrap();
    let mut start = StartRequest::new();
    start.id = ids[1].clone();
    client
        .call(TASK, "Start", start.write_to_bytes().unwrap(), &[])
        .unwrap();
    assert_eq!(shim_of(&socket, &ids[1]).1, shim);

    // The shim's last Shutdown: once answered, the socket is gone, and the
    // next start runs a shim of its own.
    let mut kill = berth_shim::protos::shim::shim::KillRequest::new();
    kill.id = ids[1].clone();
    kill.signal = 9;
    client
        .call(TASK, "Kill", kill.write_to_bytes().unwrap(), &[])
        .unwrap();
    let mut wait = berth_shim::protos::shim::shim::WaitRequest::new();
    wait.id = ids[1].clone();
    client
        .call(TASK, "Wait", wait.write_to_bytes().unwrap(), &[])
        .unwrap();
    let mut delete = berth_shim::protos::shim::shim::DeleteRequest::new();
    delete.id = ids[1].clone();
    client
        .call(TASK, "Delete", delete.write_to_bytes().unwrap(), &[])
        .unwrap();
    shutdown(&mut client, &ids[1]);
    assert!(
        !socket.exists(),
        "the socket outlived the Shutdown's answer"
    );
    assert_eq!(shim_start(&containerd, &bundles[2].dir, &ids[2]), address);
    let _after = ShimGuard {
        socket: socket.clone(),
        id: ids[2].clone(),
    };
    let (mut client, next) = shim_of(&socket, &ids[2]);
    assert_ne!(
        next, shim,
        "a start after the Shutdown joined the leaving shim"
    );
    wait_for("the pod's old shim to end", Duration::from_secs(10), || {
        !alive(&shim.to_string())
    });
    shutdown(&mut client, &ids[2]);
    wait_for("the new shim to end", Duration::from_secs(10), || {
        !alive(&next.to_string())
    });
    assert!(!socket.exists(), "socket {} left behind", socket.display());
}

/// The shim servers of containers `ids` (a server is a fork of its
/// `start`, with the same command line).
fn shims_of(ids: &[String]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.to_string();
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let ours = args
                .windows(2)
                .any(|w| w[0] == b"-id" && ids.iter().any(|id| w[1] == id.as_bytes()));
            (ours && alive(&pid)).then_some(pid)
        })
        .collect()
}

/// Starts of one pod's containers at once, over the socket a killed shim
/// left: exactly one removes it and runs the pod's shim, and every other
/// start joins that one (none removes the socket the winner bound and runs
/// a second shim, which nobody could reach and which would never go).
#[test]
fn concurrent_starts_over_a_dead_shims_socket_run_one_shim() {
    if !(can_run() && have_containerd()) {
        return;
    }
    use berth_shim::protos::protobuf::Message;
    use berth_shim::protos::shim::shim::{ConnectRequest, ConnectResponse};
    let containerd = Containerd::start();
    let pod = unique("pod");
    let ids: Vec<String> = (0..8).map(|i| unique(&format!("racer{i}"))).collect();
    let bundles = pod_bundles("shim-race", &pod, ids.len());
    let shim_pid = |socket: &Path| {
        let mut client =
            berth_shim::wire::Client::connect(socket.to_str().unwrap(), Duration::from_secs(10))
                .unwrap();
        let reply = client
            .call(
                "containerd.task.v2.Task",
                "Connect",
                ConnectRequest::new().write_to_bytes().unwrap(),
                &[],
            )
            .unwrap();
        ConnectResponse::parse_from_bytes(&reply).unwrap().shim_pid
    };

    // The pod's first shim dies with SIGKILL: its socket stays, and
    // nobody listens on it.
    let address = shim_start(&containerd, &bundles[0].dir, &ids[0]);
    let socket = containerd.inside(address.trim_start_matches("unix://"));
    let dead = shim_pid(&socket).to_string();
    assert!(Command::new("kill")
        .args(["-9", &dead])
        .status()
        .unwrap()
        .success());
    wait_for("the killed shim to end", Duration::from_secs(10), || {
        !alive(&dead)
    });
    assert!(socket.exists(), "the killed shim's socket went");

    let addresses: Vec<String> = std::thread::scope(|scope| {
        let starts: Vec<_> = (1..ids.len())
            .map(|i| {
                let (containerd, bundle, id) = (&containerd, &bundles[i].dir, &ids[i]);
                scope.spawn(move || shim_start(containerd, bundle, id))
            })
            .collect();
        starts.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let servers = shims_of(&ids[1..]);
    // The shim waits for the announced containers' Creates: it goes with
    // SIGKILL, and its socket by hand.
    for pid in &servers {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    let _ = std::fs::remove_file(&socket);
    assert!(
        addresses.iter().all(|a| *a == address),
        "{addresses:?} are not all {address}"
    );
    assert_eq!(servers.len(), 1, "the pod's shims: {servers:?}");
}

/// The bundle containerd made for container `id`.
fn bundle_of(containerd: &Containerd, id: &str) -> PathBuf {
    containerd.inside(&format!(
        "/run/containerd/io.containerd.runtime.v2.task/{NS}/{id}"
    ))
}

/// The pid in container `id`'s `shim.pid`.
fn shim_pid_file(containerd: &Containerd, id: &str) -> i32 {
    std::fs::read_to_string(bundle_of(containerd, id).join("shim.pid"))
        .expect("the shim's pid file")
        .trim()
        .parse()
        .expect("a pid")
}

fn address_of(containerd: &Containerd, id: &str) -> String {
    std::fs::read_to_string(bundle_of(containerd, id).join("address")).expect("the address file")
}

/// `ctr task exec` in `id`: (exit code, stdout).
fn exec_in(containerd: &Containerd, id: &str, exec_id: &str, script: &str) -> (i32, String) {
    let out = containerd.ctr(&["task", "exec", "--exec-id", exec_id, id, "sh", "-c", script]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// containerd's grouping: containers whose specs carry the same
/// `io.kubernetes.cri.sandbox-id` share one shim process, which serves each
/// of them (exec, kill, wait, delete), is found again by a restarted
/// containerd, outlives the deletion of all but the last, and ends with it;
/// containers without it get a shim each.
fn pod_shares_one_shim(driven: Driven) {
    let mut containerd = Containerd::start();
    let flags = runtime_flags(&containerd, driven);
    let pod = unique("pod");
    let annotation = format!("io.kubernetes.cri.sandbox-id={pod}");
    let (first, second) = (unique("pod-a"), unique("pod-b"));
    // Both at once, as a CRI client may start a pod's containers: one
    // `start` runs the shim, the other finds it.
    std::thread::scope(|scope| {
        let runs = [&first, &second].map(|id| {
            let args = run_args(
                &flags,
                &["-d", "--annotation", &annotation],
                &[IMAGE, id, "sleep", "1000"],
            );
            let containerd = &containerd;
            scope.spawn(move || containerd.ctr(&args))
        });
        for run in runs {
            let out = run.join().expect("ctr run");
            assert!(out.status.success(), "{}", text(&out));
        }
    });
    for id in [&first, &second] {
        containerd.wait_status(id, "RUNNING");
    }
    let solo = unique("solo");
    let out = containerd.ctr(&run_args(&flags, &["-d"], &[IMAGE, &solo, "sleep", "1000"]));
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&solo, "RUNNING");

    // One shim for the pod: one address, one process (started for one of
    // them; the other's `start` only handed its address on).
    let shim = shim_pid_file(&containerd, &first);
    assert_eq!(
        address_of(&containerd, &first),
        address_of(&containerd, &second)
    );
    assert_eq!(shim_pid_file(&containerd, &second), shim);
    let mut shims = shims_started_for(&first);
    shims.extend(shims_started_for(&second));
    assert_eq!(shims, [shim], "one shim process for the pod");
    // A container outside the pod has a shim of its own.
    assert_ne!(
        address_of(&containerd, &solo),
        address_of(&containerd, &first)
    );
    let solo_shim = shim_pid_file(&containerd, &solo);
    assert_ne!(solo_shim, shim);
    assert_eq!(shim_pid(&solo), Some(solo_shim));

    // Each container is served as itself: output and exit codes.
    assert_eq!(
        exec_in(&containerd, &first, "e1", "echo first; exit 3"),
        (3, "first\n".to_string())
    );
    assert_eq!(
        exec_in(&containerd, &second, "e1", "echo second; exit 4"),
        (4, "second\n".to_string())
    );
    // containerd restarted finds both through the one shim.
    containerd.stop_daemon();
    containerd.spawn_daemon();
    for id in [&first, &second] {
        containerd.wait_status(id, "RUNNING");
    }
    assert_eq!(
        exec_in(&containerd, &second, "e2", "echo again"),
        (0, "again\n".to_string())
    );
    // A short-lived member of the pod: its Wait, Delete and Shutdown go
    // through the shared shim, which stays for the others.
    let brief = unique("pod-c");
    let out = containerd.ctr(&run_args(
        &flags,
        &["--rm", "--annotation", &annotation],
        &[IMAGE, &brief, "sh", "-c", "echo brief; exit 5"],
    ));
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "brief\n");
    assert!(
        alive(&shim.to_string()),
        "the pod's shim ended with one container"
    );

    // Killing and deleting one leaves the other running under the same shim.
    let out = containerd.ctr(&["task", "kill", "-s", "KILL", &second]);
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&second, "STOPPED");
    assert_eq!(containerd.task_status(&first).as_deref(), Some("RUNNING"));
    let out = containerd.ctr(&["task", "delete", &second]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("137"),
        "{}",
        text(&out)
    );
    let out = containerd.ctr(&["containers", "rm", &second]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        alive(&shim.to_string()),
        "the pod's shim ended with one container"
    );
    assert_eq!(containerd.task_status(&first).as_deref(), Some("RUNNING"));
    assert_eq!(
        exec_in(&containerd, &first, "e2", "echo still here"),
        (0, "still here\n".to_string())
    );

    // The last container's deletion ends the shim and its socket.
    let socket = containerd.inside(address_of(&containerd, &first).trim_start_matches("unix://"));
    let out = containerd.ctr(&["task", "kill", "-s", "KILL", &first]);
    assert!(out.status.success(), "{}", text(&out));
    containerd.wait_status(&first, "STOPPED");
    let out = containerd.ctr(&["task", "delete", &first]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the pod's shim to end", Duration::from_secs(10), || {
        !alive(&shim.to_string())
    });
    assert!(!socket.exists(), "socket {} left behind", socket.display());
    let out = containerd.ctr(&["containers", "rm", &first]);
    assert!(out.status.success(), "{}", text(&out));
    // The other shim is untouched.
    assert!(alive(&solo_shim.to_string()));
    assert_eq!(containerd.task_status(&solo).as_deref(), Some("RUNNING"));
}

#[test]
fn pod_shares_one_shim_berth() {
    if can_run() && have_containerd() {
        pod_shares_one_shim(Driven::Berth);
    }
}

#[test]
fn pod_shares_one_shim_runc() {
    if can_run() && have_containerd() {
        pod_shares_one_shim(Driven::Runc);
    }
}
