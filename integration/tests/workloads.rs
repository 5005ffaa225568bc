//! berth-imaged, part 2, end to end: containers created from images the
//! daemon pulled from a real `docker-registry` (or imported), run through
//! the real `containerd-shim-berth-v2` and `berth`, as containerd would run
//! them: output in the log stream, exit codes, exec, pause/resume, stats,
//! a daemon killed while containers run, restart policies, named volumes,
//! and bad input. Every test force-deletes its containers when it ends.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_integration::imaged::*;
use berth_integration::{target_dir, unique};
use berth_proto::v1 as pb;
use tonic::transport::Channel;

/// The applets the tests run.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "true", "sleep", "id", "seq", "head", "tr", "date",
];

/// The daemon, set up to run containers with this workspace's shim and
/// runtime, and clients for its services.
struct Env {
    daemon: Daemon,
    runtime_root: PathBuf,
}

impl Env {
    fn start() -> Env {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Env {
        let runtime_root = std::env::temp_dir().join(unique("berth-wl-runtime"));
        let shim = target_dir().join("containerd-shim-berth-v2");
        let berth = target_dir().join("berth");
        let mut args = Vec::new();
        if !extra.contains(&"--shim") {
            args.extend(["--shim".to_string(), shim.display().to_string()]);
        }
        args.extend([
            "--runtime".to_string(),
            berth.display().to_string(),
            "--runtime-root".to_string(),
            runtime_root.display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Env {
            daemon: Daemon::start_with(&refs),
            runtime_root,
        }
    }

    fn ch(&self) -> Channel {
        self.daemon.channel()
    }

    fn containers(&self) -> pb::containers_client::ContainersClient<Channel> {
        pb::containers_client::ContainersClient::new(self.ch())
    }

    fn tasks(&self) -> pb::tasks_client::TasksClient<Channel> {
        pb::tasks_client::TasksClient::new(self.ch())
    }

    fn volumes(&self) -> pb::volumes_client::VolumesClient<Channel> {
        pb::volumes_client::VolumesClient::new(self.ch())
    }

    /// Imports the busybox image under `name`.
    fn busybox(&self, name: &str) {
        let layout = busybox_layout("wl-busybox", APPLETS, name);
        self.daemon
            .import(&layout.archive(), None)
            .unwrap_or_else(|e| panic!("import: {e}\n{}", self.daemon.log()));
    }

    fn create(
        &self,
        name: &str,
        config: pb::ContainerConfig,
    ) -> Result<pb::Container, tonic::Status> {
        let mut c = self.containers();
        self.daemon.block_on(async move {
            c.create(pb::CreateContainerRequest {
                name: name.to_string(),
                config: Some(config),
                labels: Default::default(),
            })
            .await
            .map(|r| r.into_inner())
        })
    }

    fn start_task(&self, id: &str) -> Result<u32, tonic::Status> {
        let mut t = self.tasks();
        self.daemon.block_on(async move {
            t.start(pb::StartTaskRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })
            .await
            .map(|r| r.into_inner().pid)
        })
    }

    fn wait(&self, id: &str) -> u32 {
        let mut t = self.tasks();
        self.daemon.block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(30),
                t.wait(pb::WaitTaskRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                }),
            )
            .await
            .expect("wait timed out")
            .expect("wait")
            .into_inner()
            .exit_status
        })
    }

    fn get(&self, id: &str) -> Result<pb::Container, tonic::Status> {
        let mut c = self.containers();
        self.daemon.block_on(async move {
            c.get(pb::GetContainerRequest { id: id.to_string() })
                .await
                .map(|r| r.into_inner())
        })
    }

    fn status(&self, id: &str) -> pb::container::Status {
        pb::container::Status::try_from(self.get(id).expect("get").status)
            .unwrap_or(pb::container::Status::Unspecified)
    }

    fn logs(&self, id: &str) -> Vec<pb::LogEntry> {
        let mut t = self.tasks();
        self.daemon.block_on(async move {
            let mut stream = t
                .logs(pb::LogsRequest {
                    container_id: id.to_string(),
                    follow: false,
                    tail: 0,
                })
                .await
                .expect("logs")
                .into_inner();
            let mut out = Vec::new();
            while let Some(entry) = stream.message().await.expect("log entry") {
                out.push(entry);
            }
            out
        })
    }

    fn log_text(&self, id: &str, stream: pb::StdioStream) -> String {
        self.logs(id)
            .iter()
            .filter(|e| e.stream == stream as i32)
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect()
    }

    /// Exec + Attach + Start of an exec; its output and exit status.
    fn exec(&self, id: &str, args: &[&str]) -> Result<(String, u32), tonic::Status> {
        let mut t = self.tasks();
        let id = id.to_string();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.daemon.block_on(async move {
            let exec_id = t
                .exec(pb::ExecProcessRequest {
                    container_id: id.clone(),
                    args,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .exec_id;
            let first = pb::AttachInput {
                container_id: id.clone(),
                exec_id: exec_id.clone(),
                ..Default::default()
            };
            let mut output = t
                .attach(tokio_stream::iter(vec![first]))
                .await?
                .into_inner();
            t.start(pb::StartTaskRequest {
                container_id: id.clone(),
                exec_id: exec_id.clone(),
            })
            .await?;
            let mut text = String::new();
            let mut status = None;
            while let Some(m) = tokio::time::timeout(Duration::from_secs(20), output.message())
                .await
                .expect("attach timed out")?
            {
                if m.exited {
                    status = Some(m.exit_status);
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&m.data));
            }
            Ok((text, status.unwrap_or(255)))
        })
    }

    fn kill(&self, id: &str, signal: u32) -> Result<(), tonic::Status> {
        let mut t = self.tasks();
        self.daemon.block_on(async move {
            t.kill(pb::KillTaskRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: false,
            })
            .await
            .map(drop)
        })
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), tonic::Status> {
        let mut c = self.containers();
        self.daemon.block_on(async move {
            c.delete(pb::DeleteContainerRequest {
                id: id.to_string(),
                force,
                volumes: true,
            })
            .await
            .map(drop)
        })
    }

    fn until(&self, what: &str, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}\n{}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Containers first (through the daemon, which stops their shims).
        let mut c = self.containers();
        let ids: Vec<String> = self
            .daemon
            .block_on(async move { c.list(pb::ListContainersRequest { all: true }).await })
            .map(|r| {
                r.into_inner()
                    .containers
                    .into_iter()
                    .map(|c| c.id)
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            let _ = self.delete(&id, true);
        }
        let _ = std::fs::remove_dir_all(&self.runtime_root);
    }
}

fn busybox_config(image: &str, args: &[&str]) -> pb::ContainerConfig {
    pb::ContainerConfig {
        image: image.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Everything a deleted container could leave: its bundle, a mount under
/// it, its snapshot, its cgroups, a process.
fn assert_nothing_left(env: &Env, container: &pb::Container) {
    assert!(!Path::new(&container.bundle).exists(), "bundle left behind");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&container.id),
        "a mount of {} is left",
        container.id
    );
    let mut s = env.daemon.snapshots();
    let snapshots = env
        .daemon
        .block_on(async move { s.list(pb::ListSnapshotsRequest::default()).await })
        .unwrap()
        .into_inner();
    assert!(
        !format!("{snapshots:?}").contains(&container.id),
        "snapshot left behind"
    );
    for hierarchy in ["memory", "pids", "cpu", "unified", ""] {
        let dir = Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join("berth-imaged")
            .join(&container.id);
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let environ = std::fs::read(entry.path().join("cgroup")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&environ).contains(&container.id),
            "process {:?} left in the container's cgroup",
            entry.file_name()
        );
    }
}

#[test]
fn a_pulled_image_runs_through_the_shim_with_its_output_in_the_log() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let layout = busybox_layout("wl-pull", APPLETS, "1");
    registry.push(&layout, "1", "busybox", None);
    let env = Env::start();
    let reference = format!("{}/busybox:1", registry.host());
    env.daemon.pull(&reference);
    let c = env
        .create(
            "hello",
            busybox_config(
                &reference,
                &["sh", "-c", "echo hello; echo oops >&2; exit 3"],
            ),
        )
        .unwrap_or_else(|e| panic!("create: {e}\n{}", env.daemon.log()));
    assert_eq!(c.name, "hello");
    env.start_task(&c.id)
        .unwrap_or_else(|e| panic!("start: {e}\n{}", env.daemon.log()));
    assert_eq!(env.wait(&c.id), 3);
    assert_eq!(env.log_text(&c.id, pb::StdioStream::Stdout), "hello\n");
    assert_eq!(env.log_text(&c.id, pb::StdioStream::Stderr), "oops\n");
    assert_eq!(env.status(&c.id), pb::container::Status::Stopped);
    // The name is taken; the error says by whom.
    let err = env
        .create("hello", busybox_config(&reference, &["true"]))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains(&c.id), "{err}");
    // Run again: same container, new task.
    env.start_task("hello").unwrap();
    assert_eq!(env.wait("hello"), 3);
    env.delete(&c.id, false).unwrap();
    assert_nothing_left(&env, &c);
}

#[test]
fn exec_pause_resume_stats_and_kill_of_a_running_container() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.busybox("busybox:exec");
    let mut config = busybox_config("busybox:exec", &["sleep", "60"]);
    config.user = "nobody".into();
    let c = env.create("sleeper", config).unwrap();
    env.start_task(&c.id).unwrap();
    assert_eq!(env.status(&c.id), pb::container::Status::Running);
    // The image's user, resolved through its passwd file.
    let (out, status) = env.exec(&c.id, &["id", "-u"]).unwrap();
    assert_eq!((out.trim(), status), ("65534", 0));
    let (out, status) = env
        .exec(&c.id, &["sh", "-c", "echo to-err >&2; exit 4"])
        .unwrap();
    assert_eq!((out.as_str(), status), ("to-err\n", 4));

    let mut t = env.tasks();
    let id = c.id.clone();
    let pids = env
        .daemon
        .block_on(async move { t.pids(pb::PidsRequest { container_id: id }).await })
        .unwrap()
        .into_inner()
        .pids;
    assert!(!pids.is_empty());

    let mut t = env.tasks();
    let id = c.id.clone();
    env.daemon
        .block_on(async move { t.pause(pb::PauseTaskRequest { container_id: id }).await })
        .unwrap();
    assert_eq!(env.status(&c.id), pb::container::Status::Paused);
    let err = env.exec(&c.id, &["true"]).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let mut t = env.tasks();
    let id = c.id.clone();
    env.daemon
        .block_on(async move { t.resume(pb::ResumeTaskRequest { container_id: id }).await })
        .unwrap();
    assert_eq!(env.status(&c.id), pb::container::Status::Running);

    let mut t = env.tasks();
    let id = c.id.clone();
    let stats = env
        .daemon
        .block_on(async move { t.stats(pb::StatsRequest { container_id: id }).await })
        .unwrap()
        .into_inner();
    assert!(stats.memory_usage > 0, "{stats:?}");
    assert!(stats.pids >= 1, "{stats:?}");

    // New limits for the running container reach its cgroup.
    let mut cc = env.containers();
    let id = c.id.clone();
    env.daemon
        .block_on(async move {
            cc.update(pb::UpdateContainerRequest {
                id,
                resources: Some(pb::Resources {
                    memory: 32 << 20,
                    nano_cpus: 0,
                    pids_limit: 50,
                }),
                ..Default::default()
            })
            .await
        })
        .unwrap_or_else(|e| panic!("update: {e}\n{}", env.daemon.log()));
    let cgroup = |controller: &str, file: &str| {
        let v1 = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("berth-imaged")
            .join(&c.id)
            .join(file);
        std::fs::read_to_string(v1)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(
            cgroup("memory", "memory.limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(cgroup("pids", "pids.max"), "50");
    }
    // A running container is not deleted without force.
    let err = env.delete(&c.id, false).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    env.kill(&c.id, 9).unwrap();
    assert_eq!(env.wait(&c.id), 137);
    // Exec into a stopped container: a precise status.
    let err = env.exec(&c.id, &["true"]).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    env.delete(&c.id, false).unwrap();
    assert_nothing_left(&env, &c);
}

#[test]
fn containers_outlive_a_daemon_killed_with_sigkill() {
    if !can_run_images() {
        return;
    }
    let mut env = Env::start();
    env.busybox("busybox:survive");
    let c = env
        .create(
            "survivor",
            busybox_config(
                "busybox:survive",
                &[
                    "sh",
                    "-c",
                    "trap 'echo bye; exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
                ],
            ),
        )
        .unwrap();
    env.start_task(&c.id).unwrap();
    env.until("a tick in the log", || {
        env.log_text(&c.id, pb::StdioStream::Stdout)
            .contains("tick 2")
    });
    env.daemon.restart();
    assert_eq!(env.status(&c.id), pb::container::Status::Running);
    let before = env.log_text(&c.id, pb::StdioStream::Stdout).lines().count();
    env.until("new ticks after the restart", || {
        env.log_text(&c.id, pb::StdioStream::Stdout).lines().count() > before + 2
    });
    let (out, status) = env.exec(&c.id, &["echo", "still here"]).unwrap();
    assert_eq!((out.as_str(), status), ("still here\n", 0));
    let mut t = env.tasks();
    let id = c.id.clone();
    let stopped = env
        .daemon
        .block_on(async move {
            t.stop(pb::StopTaskRequest {
                container_id: id,
                timeout: 2,
            })
            .await
        })
        .unwrap()
        .into_inner();
    // The stop signal reached the container's own handler (pid 1 has no
    // default action for SIGTERM).
    assert_eq!(stopped.exit_status, 0);
    assert!(env
        .log_text(&c.id, pb::StdioStream::Stdout)
        .ends_with("bye\n"));
    assert_eq!(env.status(&c.id), pb::container::Status::Stopped);
    env.delete(&c.id, false).unwrap();
    assert_nothing_left(&env, &c);
}

#[test]
fn restart_policies_restart_failures_up_to_their_limit_and_always_survives_a_daemon_restart() {
    if !can_run_images() {
        return;
    }
    let mut env = Env::start();
    env.busybox("busybox:restart");
    let mut config = busybox_config("busybox:restart", &["sh", "-c", "echo run; exit 1"]);
    config.restart = Some(pb::RestartPolicy {
        kind: pb::restart_policy::Kind::OnFailure as i32,
        max_retries: 2,
    });
    let failing = env.create("failing", config).unwrap();
    env.start_task(&failing.id).unwrap();
    env.until("two restarts", || {
        let c = env.get(&failing.id).unwrap();
        c.restart_count == 2 && c.status == pb::container::Status::Stopped as i32
    });
    // Three runs in all, then it stays stopped.
    std::thread::sleep(Duration::from_millis(1500));
    let c = env.get(&failing.id).unwrap();
    assert_eq!((c.restart_count, c.exit_status), (2, 1));
    assert_eq!(
        env.log_text(&failing.id, pb::StdioStream::Stdout),
        "run\nrun\nrun\n"
    );

    let mut config = busybox_config("busybox:restart", &["sleep", "60"]);
    config.restart = Some(pb::RestartPolicy {
        kind: pb::restart_policy::Kind::Always as i32,
        max_retries: 0,
    });
    let always = env.create("always", config).unwrap();
    env.start_task(&always.id).unwrap();
    // Killed from inside (not by a client): restarted.
    let pid = env.get(&always.id).unwrap().pid;
    // SAFETY: kill of the container's init, by pid.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    env.until("a restart after the kill", || {
        let c = env.get(&always.id).unwrap();
        c.restart_count == 1 && c.status == pb::container::Status::Running as i32
    });
    env.daemon.restart();
    assert_eq!(env.status(&always.id), pb::container::Status::Running);
    // Stopped by a client: not restarted...
    env.kill(&always.id, 9).unwrap();
    assert_eq!(env.wait(&always.id), 137);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.status(&always.id), pb::container::Status::Stopped);
    // ...until the daemon starts again (docker's `always`).
    env.daemon.restart();
    env.until("`always` running again after the daemon's restart", || {
        env.status(&always.id) == pb::container::Status::Running
    });
    env.kill(&always.id, 9).unwrap();
    assert_eq!(env.wait(&always.id), 137);
}

#[test]
fn an_auto_remove_container_that_ends_while_the_daemon_is_down_is_removed_at_its_restart() {
    if !can_run_images() {
        return;
    }
    let mut env = Env::start();
    env.busybox("busybox:gone");
    let mut config = busybox_config("busybox:gone", &["sleep", "1"]);
    config.auto_remove = true;
    config.mounts = vec![pb::ContainerMount {
        kind: pb::container_mount::Kind::Volume as i32,
        source: String::new(),
        destination: "/data".into(),
        read_only: false,
    }];
    let c = env.create("gone", config).unwrap();
    env.start_task(&c.id).unwrap();
    let pid = env.get(&c.id).unwrap().pid;
    env.daemon.kill9();
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "sleep 1 never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    env.daemon.spawn();
    let err = env.get(&c.id).map(|c| c.status).unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert_nothing_left(&env, &c);
    let mut v = env.volumes();
    let volumes = env
        .daemon
        .block_on(async move { v.list(pb::ListVolumesRequest {}).await })
        .unwrap()
        .into_inner()
        .volumes;
    assert!(volumes.is_empty(), "anonymous volume left: {volumes:?}");
}

#[test]
fn a_named_volume_keeps_its_data_and_is_not_removed_while_in_use() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.busybox("busybox:vol");
    let volume = unique("vol");
    let mount = pb::ContainerMount {
        kind: pb::container_mount::Kind::Volume as i32,
        source: volume.clone(),
        destination: "/data".into(),
        read_only: false,
    };
    let mut config = busybox_config(
        "busybox:vol",
        &["sh", "-c", "cat /data/seed.txt; echo kept > /data/mine.txt"],
    );
    config.mounts = vec![mount.clone()];
    let first = env.create("vol-writer", config).unwrap();
    env.start_task(&first.id).unwrap();
    assert_eq!(env.wait(&first.id), 0);
    // Seeded from the image's /data on first use.
    assert_eq!(
        env.log_text(&first.id, pb::StdioStream::Stdout),
        "from the image\n"
    );
    let mut v = env.volumes();
    let name = volume.clone();
    let err = env
        .daemon
        .block_on(async move { v.remove(pb::RemoveVolumeRequest { name }).await })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains(&first.id), "{err}");
    env.delete(&first.id, false).unwrap();

    let mut config = busybox_config("busybox:vol", &["cat", "/data/mine.txt"]);
    config.mounts = vec![mount];
    let second = env.create("vol-reader", config).unwrap();
    env.start_task(&second.id).unwrap();
    assert_eq!(env.wait(&second.id), 0);
    assert_eq!(env.log_text(&second.id, pb::StdioStream::Stdout), "kept\n");
    env.delete(&second.id, false).unwrap();
    let mut v = env.volumes();
    let name = volume.clone();
    env.daemon
        .block_on(async move { v.remove(pb::RemoveVolumeRequest { name }).await })
        .unwrap();

    // A bind mount, read-only.
    let host = std::env::temp_dir().join(unique("bind"));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "host file\n").unwrap();
    let mut config = busybox_config(
        "busybox:vol",
        &["sh", "-c", "cat /host/f; echo x > /host/g"],
    );
    config.mounts = vec![pb::ContainerMount {
        kind: pb::container_mount::Kind::Bind as i32,
        source: host.display().to_string(),
        destination: "/host".into(),
        read_only: true,
    }];
    let bind = env.create("binder", config).unwrap();
    env.start_task(&bind.id).unwrap();
    assert_ne!(env.wait(&bind.id), 0, "a read-only bind was writable");
    assert_eq!(
        env.log_text(&bind.id, pb::StdioStream::Stdout),
        "host file\n"
    );
    assert!(!host.join("g").exists());
    let _ = std::fs::remove_dir_all(&host);
}

#[test]
fn bad_requests_get_precise_statuses_and_leave_nothing() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.busybox("busybox:bad");
    let err = env
        .create("x", busybox_config("nosuch:image", &["true"]))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("pull"), "{err}");
    let err = env
        .create("bad name!", busybox_config("busybox:bad", &["true"]))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut config = busybox_config("busybox:bad", &["true"]);
    config.user = "nosuchuser".into();
    let err = env.create("nouser", config).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("nosuchuser"), "{err}");

    let c = env
        .create("twice", busybox_config("busybox:bad", &["sleep", "60"]))
        .unwrap();
    env.start_task(&c.id).unwrap();
    let err = env.start_task(&c.id).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("already running"), "{err}");
    env.delete(&c.id, true).unwrap();
    assert_nothing_left(&env, &c);

    // A daemon whose shim is not on PATH.
    drop(env);
    let env = Env::start_with(&["--shim", "containerd-shim-nosuch-v2"]);
    env.busybox("busybox:noshim");
    let c = env
        .create("noshim", busybox_config("busybox:noshim", &["true"]))
        .unwrap();
    let err = env.start_task(&c.id).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("containerd-shim-nosuch-v2"), "{err}");
    assert_eq!(env.status(&c.id), pb::container::Status::Created);
    env.delete(&c.id, false).unwrap();
    assert_nothing_left(&env, &c);
}

#[test]
fn attach_follow_and_events_see_a_running_container() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.busybox("busybox:attach");
    // An interactive container: it reads what the client types.
    let mut config = busybox_config(
        "busybox:attach",
        &[
            "sh",
            "-c",
            "read line; echo got $line; read more; echo then $more",
        ],
    );
    config.stdin_open = true;
    let c = env.create("interactive", config).unwrap();

    let mut events_client = pb::events_client::EventsClient::new(env.ch());
    let mut events = env
        .daemon
        .block_on(async move {
            events_client
                .subscribe(pb::SubscribeRequest {
                    topics: vec!["/tasks/".into()],
                })
                .await
        })
        .unwrap()
        .into_inner();

    let mut t = env.tasks();
    let id = c.id.clone();
    let (out, status) = env.daemon.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(pb::AttachInput {
            container_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut output = t
            .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        t.start(pb::StartTaskRequest {
            container_id: id.clone(),
            exec_id: String::new(),
        })
        .await
        .unwrap();
        for line in ["hello\n", "world\n"] {
            tx.send(pb::AttachInput {
                stdin: line.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let mut text = String::new();
        let mut status = None;
        while let Some(m) = tokio::time::timeout(Duration::from_secs(20), output.message())
            .await
            .expect("attach timed out")
            .unwrap()
        {
            if m.exited {
                status = Some(m.exit_status);
                break;
            }
            text.push_str(&String::from_utf8_lossy(&m.data));
        }
        (text, status)
    });
    assert_eq!(out, "got hello\nthen world\n");
    assert_eq!(status, Some(0));

    // The shim's events reached the subscriber, in order.
    let topics: Vec<String> = env.daemon.block_on(async move {
        let mut topics = Vec::new();
        while let Ok(Some(Ok(e))) =
            tokio::time::timeout(Duration::from_secs(5), futures_next(&mut events)).await
        {
            topics.push(e.topic.clone());
            if e.topic == "/tasks/delete" {
                break;
            }
        }
        topics
    });
    let position = |t: &str| topics.iter().position(|x| x == t);
    assert!(
        position("/tasks/create") < position("/tasks/start")
            && position("/tasks/start") < position("/tasks/exit")
            && position("/tasks/exit").is_some(),
        "{topics:?}"
    );

    // logs -f of a running container streams new lines and ends with it.
    let ticker = env
        .create(
            "ticker",
            busybox_config(
                "busybox:attach",
                &[
                    "sh",
                    "-c",
                    "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done",
                ],
            ),
        )
        .unwrap();
    env.start_task(&ticker.id).unwrap();
    let mut t = env.tasks();
    let id = ticker.id.clone();
    let followed: String = env.daemon.block_on(async move {
        let mut stream = t
            .logs(pb::LogsRequest {
                container_id: id,
                follow: true,
                tail: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let mut text = String::new();
        while let Some(entry) = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("follow did not end with the container")
            .unwrap()
        {
            text.push_str(&String::from_utf8_lossy(&entry.data));
        }
        text
    });
    assert_eq!(followed, "line 1\nline 2\nline 3\nline 4\nline 5\n");
}

async fn futures_next<S>(stream: &mut S) -> Option<S::Item>
where
    S: futures_core::Stream + Unpin,
{
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

#[test]
fn hostile_requests_and_images_cannot_reach_the_host_or_hang_the_daemon() {
    if !can_run_images() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start();
    env.busybox("busybox:hostile");
    // Only root may talk to the daemon or read what it keeps.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.daemon.socket), 0o600);
    let c = env
        .create("modes", busybox_config("busybox:hostile", &["sleep", "60"]))
        .unwrap();
    assert_eq!(mode(Path::new(&c.bundle).parent().unwrap()), 0o700);
    assert_eq!(mode(&Path::new(&c.bundle).join("config.json")), 0o600);
    let mut config = busybox_config("busybox:hostile", &["sleep", "60"]);
    config.stdin_open = true;
    let c = env.create("deaf", config).unwrap();
    env.start_task(&c.id).unwrap();

    // An exec id is a file name in the bundle: no path may ride in it.
    let mut t = env.tasks();
    let id = c.id.clone();
    let err = env
        .daemon
        .block_on(async move {
            t.exec(pb::ExecProcessRequest {
                container_id: id,
                exec_id: "../../../../tmp/x".into(),
                args: vec!["true".into()],
                ..Default::default()
            })
            .await
        })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // 1 MiB typed into a process that never reads: the writer waits, the
    // daemon does not.
    let mut t = env.tasks();
    let id = c.id.clone();
    env.daemon.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tx.send(pb::AttachInput {
            container_id: id,
            ..Default::default()
        })
        .await
        .unwrap();
        let _output = t
            .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        for _ in 0..16 {
            let _ = tx
                .send(pb::AttachInput {
                    stdin: vec![b'x'; 64 * 1024],
                    ..Default::default()
                })
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(tx);
    });
    let start = Instant::now();
    assert_eq!(env.status(&c.id), pb::container::Status::Running);
    assert!(start.elapsed() < Duration::from_secs(5), "the daemon hung");
    let (out, status) = env.exec(&c.id, &["echo", "alive"]).unwrap();
    assert_eq!((out.as_str(), status), ("alive\n", 0));
    env.kill(&c.id, 9).unwrap();
    assert_eq!(env.wait(&c.id), 137);
    // Attaching to a stopped container is refused, not a wait for ever.
    let mut t = env.tasks();
    let id = c.id.clone();
    let err = env
        .daemon
        .block_on(async move {
            t.attach(tokio_stream::iter(vec![pb::AttachInput {
                container_id: id,
                ..Default::default()
            }]))
            .await
        })
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");

    // An image whose /etc/passwd is a fifo (a device, a huge file): the
    // user lookup neither blocks nor reads it.
    let mut layout = Layout::new("wl-fifo");
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut t = LayerTar::new();
    t.dir("bin/", 0o755)
        .file("bin/busybox", 0o755, &busybox)
        .symlink("bin/sh", "busybox")
        .dir("etc/", 0o755)
        .fifo("etc/passwd")
        .char_dev("etc/group", 1, 5);
    let image = layout.image(&[(t.finish(), Compression::Gzip)], ("amd64", ""));
    layout.tag("fifo:1", &image);
    env.daemon.import(&layout.archive(), None).unwrap();
    let mut config = busybox_config("fifo:1", &["true"]);
    config.user = "app".into();
    let start = Instant::now();
    let err = env.create("fifo-user", config).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the lookup blocked"
    );
}

/// Issue 12 (5): containers whose process ended while the daemon was down
/// stayed stopped whatever their restart policy said.
#[test]
fn restart_policies_apply_to_exits_during_the_daemons_downtime() {
    if !can_run_images() {
        return;
    }
    use pb::restart_policy::Kind;
    let mut env = Env::start();
    env.busybox("busybox:downtime");
    let mut started = Vec::new();
    for (name, kind, max_retries) in [
        ("always", Kind::Always, 0),
        ("unless", Kind::UnlessStopped, 0),
        ("onfail", Kind::OnFailure, 3),
        ("never", Kind::No, 0),
    ] {
        let mut config = busybox_config("busybox:downtime", &["sleep", "600"]);
        config.restart = Some(pb::RestartPolicy {
            kind: kind as i32,
            max_retries,
        });
        let c = env.create(name, config).unwrap();
        env.start_task(&c.id).unwrap();
        let pid = env.get(&c.id).unwrap().pid;
        started.push((name, c, pid));
    }
    env.daemon.kill9();
    for (_, _, pid) in &started {
        // SAFETY: kill of a container's init, by pid, while nobody watches.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    for (name, _, pid) in &started {
        let start = Instant::now();
        while Path::new(&format!("/proc/{pid}/stat")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} never ended"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    env.daemon.spawn();
    for (name, c, pid) in &started {
        if *name == "never" {
            continue;
        }
        env.until(
            &format!("{name} running again after the daemon's start"),
            || {
                let now = env.get(&c.id).unwrap();
                now.status == pb::container::Status::Running as i32 && now.pid != *pid
            },
        );
        assert_eq!(env.get(&c.id).unwrap().restart_count, 1, "{name}");
    }
    let (_, never, _) = &started[3];
    let never = env.get(&never.id).unwrap();
    assert_eq!(never.status, pb::container::Status::Stopped as i32);
    assert_eq!(never.exit_status, 137);
    for (_, c, _) in &started[..3] {
        env.kill(&c.id, 9).unwrap();
        assert_eq!(env.wait(&c.id), 137);
    }
}

/// Runs the bundle berth-imaged generated for `c` under Debian's runc, as
/// it stands (config.json and the mounted rootfs), and returns the exit
/// status of its process. runc's state goes under `state`; the container is
/// deleted whatever happens.
fn run_under_runc(state: &Path, c: &pb::Container) -> std::process::Output {
    let id = format!("runc-{}", &c.id[..12]);
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle", &c.bundle, &id])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run runc");
    let _ = std::process::Command::new("runc")
        .arg("--root")
        .arg(state)
        .args(["delete", "--force", &id])
        .output();
    out
}

/// Every kind of `config.json` berth-imaged writes (plain with the default
/// seccomp profile, privileged, with limits, with volumes and binds and
/// tmpfs, with a custom seccomp profile, joined to another container's
/// network namespace) is accepted by runc as well as by berth, and both run
/// the process to the same end.
#[test]
fn every_kind_of_generated_spec_runs_under_berth_and_under_runc() {
    if !can_run_images() {
        return;
    }
    if std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_err()
        && berth_integration::missing_prerequisite("runc (apt-get install runc)")
    {
        return;
    }
    let env = Env::start();
    env.busybox("spec-kinds");
    let image = "spec-kinds";
    let state = TempDir(std::env::temp_dir().join(unique("berth-wl-runc")));
    let host_dir = TempDir(std::env::temp_dir().join(unique("berth-wl-bind")));
    std::fs::create_dir_all(&host_dir.0).unwrap();
    std::fs::write(host_dir.0.join("marker"), "bound\n").unwrap();

    // The "network" kind joins a running container's namespace.
    let holder = env
        .create("spec-holder", busybox_config(image, &["sleep", "60"]))
        .unwrap_or_else(|e| panic!("create: {e}\n{}", env.daemon.log()));
    env.start_task(&holder.id).unwrap();

    // Each case's process exits 7 only if what its settings ask for holds
    // inside the container.
    let check = |script: &str| {
        vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("{script} && exit 7; exit 1"),
        ]
    };
    let mount =
        |kind: pb::container_mount::Kind, source: &str, destination: &str, read_only: bool| {
            pb::ContainerMount {
                kind: kind as i32,
                source: source.to_string(),
                destination: destination.to_string(),
                read_only,
            }
        };
    let cases: Vec<(&str, pb::ContainerConfig)> = vec![
        (
            "plain",
            pb::ContainerConfig {
                args: check("grep -q '^Seccomp:.*2' /proc/self/status && test \"$(id -u)\" = 0"),
                ..busybox_config(image, &[])
            },
        ),
        (
            "privileged",
            pb::ContainerConfig {
                args: check("grep -q '^CapEff:.*[1-9a-f]' /proc/self/status && grep -q '^Seccomp:.*0' /proc/self/status"),
                privileged: true,
                ..busybox_config(image, &[])
            },
        ),
        (
            "limits",
            pb::ContainerConfig {
                args: check("true"),
                resources: Some(pb::Resources {
                    memory: 64 << 20,
                    nano_cpus: 500_000_000,
                    pids_limit: 50,
                }),
                read_only: true,
                cap_drop: vec!["NET_RAW".into()],
                ..busybox_config(image, &[])
            },
        ),
        (
            "volumes",
            pb::ContainerConfig {
                args: check("grep -q bound /host/marker && ! touch /host/new 2>/dev/null && touch /data/x /scratch/y"),
                mounts: vec![
                    mount(pb::container_mount::Kind::Bind, &host_dir.0.display().to_string(), "/host", true),
                    mount(pb::container_mount::Kind::Volume, "spec-kinds-data", "/data", false),
                    mount(pb::container_mount::Kind::Tmpfs, "", "/scratch", false),
                ],
                ..busybox_config(image, &[])
            },
        ),
        (
            "seccomp",
            pb::ContainerConfig {
                args: check("! mkdir /tmp/denied 2>/dev/null"),
                seccomp_profile: r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":null}]}"#.into(),
                ..busybox_config(image, &[])
            },
        ),
        (
            "network",
            pb::ContainerConfig {
                args: check("true"),
                network: format!("container:{}", holder.id),
                ..busybox_config(image, &[])
            },
        ),
    ];
    let mut created = Vec::new();
    for (kind, config) in cases {
        let c = env
            .create(&format!("spec-{kind}"), config)
            .unwrap_or_else(|e| panic!("{kind}: create: {e}\n{}", env.daemon.log()));
        created.push(c.id.clone());
        let spec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(Path::new(&c.bundle).join("config.json")).unwrap(),
        )
        .unwrap();
        let runc = run_under_runc(&state.0, &c);
        assert_eq!(
            runc.status.code(),
            Some(7),
            "{kind}: runc refused or ran differently: {}\n{}",
            String::from_utf8_lossy(&runc.stderr),
            serde_json::to_string_pretty(&spec).unwrap()
        );
        env.start_task(&c.id)
            .unwrap_or_else(|e| panic!("{kind}: berth: {e}\n{}", env.daemon.log()));
        assert_eq!(env.wait(&c.id), 7, "{kind}: berth ran differently");
    }
    for id in created.iter().chain([&holder.id]) {
        env.delete(id, true).unwrap();
    }
}
