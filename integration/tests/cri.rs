//! CRI v1 end to end: a Rust CRI client (`k8s-cri`'s tonic clients) drives
//! the real `berth-imaged` over its CRI socket through the categories of
//! Kubernetes' CRI validation: runtime info, image management, pod and
//! container lifecycle and status, security context checked from inside the
//! container, logs, ExecSync, idempotence, OOMKilled, hostPort. Tests that
//! make pods run the daemon in a network namespace of their own (as
//! networks.rs does), with their images loaded through `berthctl load`;
//! image tests pull from a real `docker-registry` on 127.0.0.1. Everything
//! is removed, failing or not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_integration::imaged::*;
use berth_integration::netns::Netns;
use berth_integration::{
    alive, kube, missing_prerequisite, mounts_under, shims_started_for, target_dir, text,
    tools_installed, unique,
};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::security_profile::ProfileType;
use serde_json::json;
use std::process::Command;
use tonic::transport::Channel;

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "grep", "hostname", "sleep", "touch", "httpd", "true", "head",
    "tail", "mount", "mkdir", "ls", "tr", "stat", "tty", "stty", "test", "wc", "seq",
];

fn can_run_cri() -> bool {
    if !can_run_images() {
        return false;
    }
    tools_installed(&[
        (
            "the CNI plugins (containernetworking-plugins)",
            "/usr/lib/cni/bridge",
        ),
        ("ip (iproute2)", "/usr/bin/ip"),
        ("curl", "/usr/bin/curl"),
        ("unshare (util-linux)", "/usr/bin/unshare"),
    ])
}

/// Whether Debian's python3-kubernetes (the WebSocket client) is there.
fn python_client_installed() -> bool {
    let probe = std::process::Command::new(berth_integration::kube::PYTHON)
        .args(["-c", "import kubernetes.stream.ws_client"])
        .output();
    probe.is_ok_and(|o| o.status.success())
        || missing_prerequisite("python3-kubernetes (Debian) for the WebSocket client")
}

/// Whether the Go SPDY client can be built (Debian's Go and spdystream).
fn spdy_client_installed() -> bool {
    tools_installed(&[
        ("go (golang-go)", "/usr/bin/go"),
        (
            "spdystream (golang-github-docker-spdystream-dev)",
            "/usr/share/gocode/src/github.com/docker/spdystream/connection.go",
        ),
    ])
}

/// A daemon (in a namespace of its own when `netns`), its CRI clients,
/// and a temporary directory for logs and mounts. Pods left by a failing
/// test are removed when dropped.
struct Cri {
    daemon: Daemon,
    _netns: Option<Netns>,
    runtime_root: PathBuf,
    dir: TempDir,
}

impl Cri {
    fn start(netns: Option<Netns>, extra: &[&str]) -> Cri {
        let runtime_root = std::env::temp_dir().join(unique("berth-cri-runtime"));
        let shim = target_dir().join("containerd-shim-berth-v2");
        let berth = target_dir().join("berth");
        let mut args = vec![
            "--shim".to_string(),
            shim.display().to_string(),
            "--runtime".to_string(),
            berth.display().to_string(),
            "--runtime-root".to_string(),
            runtime_root.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let daemon = Daemon::start_in(netns.as_ref().map(|n| n.path.as_path()), &refs);
        let dir = std::env::temp_dir().join(unique("berth-cri")).join("t");
        std::fs::create_dir_all(&dir).expect("temp dir");
        Cri {
            daemon,
            _netns: netns,
            runtime_root,
            dir: TempDir(dir),
        }
    }

    /// A daemon in a namespace of its own with `busybox:cri` loaded.
    fn with_pods() -> Cri {
        let cri = Cri::start(Some(Netns::new()), &[]);
        let layout = busybox_layout(&unique("cri-busybox"), APPLETS, "busybox:cri");
        let out = run_ctl(&cri.daemon.socket, &["load"], &layout_archive(layout));
        assert!(out.status.success(), "load: {}", text(&out));
        cri
    }

    fn socket(&self) -> PathBuf {
        self.daemon.socket.with_file_name("cri.sock")
    }

    fn channel(&self) -> Channel {
        self.daemon
            .block_on(berth_proto::connect(self.socket()))
            .expect("connect to the CRI socket")
    }

    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel())
    }

    fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel())
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.daemon.block_on(f)
    }

    fn netns(&self) -> &Netns {
        self._netns.as_ref().expect("a daemon in a namespace")
    }

    /// RunPodSandbox of `config`; must succeed.
    fn run_pod(&self, config: cri::PodSandboxConfig) -> String {
        let mut rt = self.runtime();
        self.block_on(rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        }))
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.daemon.log()))
        .into_inner()
        .pod_sandbox_id
    }

    /// CreateContainer then StartContainer; must succeed.
    fn run_container(
        &self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> String {
        let id = self.create_container(pod, pod_config, config);
        let mut rt = self.runtime();
        self.block_on(rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        }))
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.daemon.log()));
        id
    }

    fn create_container(
        &self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> String {
        let mut rt = self.runtime();
        self.block_on(rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        }))
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.daemon.log()))
        .into_inner()
        .container_id
    }

    fn pod_status(&self, id: &str) -> cri::PodSandboxStatus {
        let mut rt = self.runtime();
        self.block_on(rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        }))
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("status")
    }

    fn status(&self, id: &str) -> cri::ContainerStatus {
        let mut rt = self.runtime();
        self.block_on(rt.container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        }))
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("a status")
    }

    /// Waits until the container has exited; its status.
    fn exited(&self, id: &str) -> cri::ContainerStatus {
        for _ in 0..300 {
            let status = self.status(id);
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("container {id} never exited\n{}", self.daemon.log());
    }

    fn exec(&self, id: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
        let mut rt = self.runtime();
        self.block_on(rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        }))
        .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}\n{}", self.daemon.log()))
        .into_inner()
    }

    /// ExecSync that must exit 0; its stdout.
    fn exec_ok(&self, id: &str, cmd: &[&str]) -> String {
        let r = self.exec(id, cmd);
        assert_eq!(
            r.exit_code,
            0,
            "{cmd:?}: {} {}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    /// The URL Exec hands out for `request`; must succeed.
    fn exec_url(&self, request: cri::ExecRequest) -> String {
        let mut rt = self.runtime();
        self.block_on(rt.exec(request))
            .unwrap_or_else(|e| panic!("Exec: {e}\n{}", self.daemon.log()))
            .into_inner()
            .url
    }

    /// A tty session at `url` driven by the Go SPDY client (in the
    /// daemon's namespace), resized to 100x40, with `stdin` typed when
    /// given; must succeed. Its output and its error stream's Status.
    fn spdy_tty(&self, url: &str, stdin: Option<&[u8]>) -> (String, serde_json::Value) {
        let status = self.dir.0.join(unique("status"));
        let mut args = vec!["exec", url, "-stdout", "-tty", "-resize", "100x40"];
        args.extend(["-status", status.to_str().expect("utf8")]);
        if stdin.is_some() {
            args.push("-stdin");
        }
        let out = kube::spdy_in(Some(&self.netns().path), &args, stdin.unwrap_or_default());
        assert!(out.status.success(), "{}", text(&out));
        let status = std::fs::read(&status).expect("status");
        let status = serde_json::from_slice(&status).expect("status json");
        (String::from_utf8_lossy(&out.stdout).into_owned(), status)
    }

    /// A pod named `name` with a container sleeping in it: the pod, its
    /// config and the container.
    fn idle_pod(&self, name: &str) -> (String, cri::PodSandboxConfig, String) {
        let config = pod_config(name, &self.dir.0.join("logs"));
        let pod = self.run_pod(config.clone());
        let id = self.run_container(&pod, &config, container_config("idle", &["sleep", "300"]));
        (pod, config, id)
    }

    fn remove_pod(&self, id: &str) {
        let mut rt = self.runtime();
        self.block_on(rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        }))
        .expect("StopPodSandbox");
        self.block_on(rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        }))
        .expect("RemovePodSandbox");
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        if self.socket().exists() {
            let mut rt = self.runtime();
            let pods = self
                .block_on(rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }))
                .map(|r| r.into_inner().items)
                .unwrap_or_default();
            for pod in pods {
                let removed = self.block_on(rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                }));
                if let Err(e) = removed {
                    eprintln!("cleanup: pod {}: {e}", pod.id);
                }
            }
            // berthctl's containers too (a test that failed half-way).
            let ps = run_ctl(&self.daemon.socket, &["ps", "-a", "-q"], b"");
            for id in String::from_utf8_lossy(&ps.stdout).split_whitespace() {
                let _ = run_ctl(&self.daemon.socket, &["rm", "-f", id], b"");
            }
        }
        self.daemon.stop();
        // Whatever is still mounted under the daemon's directories (pins,
        // root filesystems) goes with it.
        // (By path: another test's daemon root may begin with this one's
        // name, and its mounts are not ours.)
        let mounted = mounts_under(&self.daemon.root);
        for target in mounted.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(target).status();
        }
        let _ = std::fs::remove_dir_all(&self.runtime_root);
    }
}

fn layout_archive(layout: Layout) -> Vec<u8> {
    layout.archive()
}

fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: unique("uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secured(context: cri::LinuxContainerSecurityContext) -> cri::LinuxContainerConfig {
    cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(context),
    }
}

fn limited_to(resources: cri::LinuxContainerResources) -> cri::LinuxContainerConfig {
    cri::LinuxContainerConfig {
        resources: Some(resources),
        security_context: None,
    }
}

fn profile(kind: ProfileType) -> cri::SecurityProfile {
    cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: String::new(),
    }
}

fn container_config(name: &str, args: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: "busybox:cri".into(),
            ..Default::default()
        }),
        command: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: [("container".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

#[test]
fn version_status_and_runtime_config_on_a_private_socket() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::start(None, &[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cri.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CRI socket is root's alone");
    let mut rt = cri.runtime();
    let version = cri
        .block_on(rt.version(cri::VersionRequest::default()))
        .expect("Version")
        .into_inner();
    assert_eq!(version.runtime_name, "berth");
    assert_eq!(version.runtime_api_version, "v1");
    let status = cri
        .block_on(rt.status(cri::StatusRequest { verbose: false }))
        .expect("Status")
        .into_inner();
    let conditions = status.status.expect("conditions").conditions;
    let ready = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .expect("RuntimeReady");
    assert!(ready.status);
    assert!(conditions
        .iter()
        .any(|c| c.r#type == "NetworkReady" && c.status));
    let handler = &status.runtime_handlers[0];
    let features = handler.features.expect("features");
    assert!(features.recursive_read_only_mounts && features.user_namespaces);
    let config = cri
        .block_on(rt.runtime_config(cri::RuntimeConfigRequest {}))
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(
        config.linux.expect("linux").cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
}

#[test]
fn images_pull_by_tag_and_digest_list_status_and_remove() {
    if !can_run_cri() {
        return;
    }
    let registry = Registry::start();
    let layout = busybox_layout(&unique("cri-pull"), APPLETS, "1");
    registry.push(&layout, "1", "cri/busybox", None);
    // A sandbox image the daemon is told to keep: reported pinned.
    let pause = busybox_layout(&unique("cri-pause"), &["sh", "sleep"], "3.9");
    registry.push(&pause, "3.9", "cri/pause", None);
    let pause_tag = format!("{}/cri/pause:3.9", registry.host());
    let cri = Cri::start(None, &["--pinned-image", &pause_tag]);
    let mut images = cri.images();
    let tag = format!("{}/cri/busybox:1", registry.host());
    let pull = |reference: &str| {
        let mut images = cri.images();
        cri.block_on(images.pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: reference.to_string(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        }))
    };
    let id = pull(&tag)
        .unwrap_or_else(|e| panic!("pull: {e}\n{}", cri.daemon.log()))
        .into_inner()
        .image_ref;
    assert!(id.starts_with("sha256:"), "{id}");
    let status = |spec: &str| {
        let mut images = cri.images();
        cri.block_on(images.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: spec.to_string(),
                ..Default::default()
            }),
            verbose: false,
        }))
        .expect("ImageStatus")
        .into_inner()
        .image
    };
    let image = status(&tag).expect("the pulled image");
    assert_eq!(image.id, id);
    assert_eq!(image.repo_tags, vec![tag.clone()]);
    assert_eq!(image.repo_digests.len(), 1);
    let digest_ref = image.repo_digests[0].clone();
    assert!(
        digest_ref.starts_with(&format!("{}/cri/busybox@sha256:", registry.host())),
        "{digest_ref}"
    );
    assert!(image.size > 0);
    assert_eq!(image.uid.map(|u| u.value), Some(0));
    // By digest: the same image, and the same id.
    let by_digest = pull(&digest_ref)
        .expect("pull by digest")
        .into_inner()
        .image_ref;
    assert_eq!(by_digest, id);
    assert_eq!(status(&digest_ref).map(|i| i.id), Some(id.clone()));
    assert_eq!(status(&id).map(|i| i.id), Some(id.clone()));
    let listed = cri
        .block_on(images.list_images(cri::ListImagesRequest { filter: None }))
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(listed
        .iter()
        .any(|i| i.id == id && i.repo_tags.contains(&tag) && !i.pinned));
    let pause_id = pull(&pause_tag).expect("pull pause").into_inner().image_ref;
    assert_ne!(pause_id, id);
    assert_eq!(status(&pause_tag).map(|i| i.pinned), Some(true));
    assert_eq!(status(&tag).map(|i| i.pinned), Some(false));
    let fs = cri
        .block_on(images.image_fs_info(cri::ImageFsInfoRequest {}))
        .expect("ImageFsInfo")
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.expect("bytes").value > 0);
    // An unknown image: no status, and a pull error that names it.
    assert!(status("127.0.0.1:1/none:1").is_none());
    let err = pull(&format!("{}/cri/none:1", registry.host())).expect_err("unknown image");
    assert!(err.message().contains("cri/none"), "{}", err.message());
    // Removed by id: every name goes; removing again is no error.
    for _ in 0..2 {
        cri.block_on(images.remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: id.clone(),
                ..Default::default()
            }),
        }))
        .expect("RemoveImage");
    }
    assert!(status(&tag).is_none());
    assert!(status(&digest_ref).is_none());
}

#[test]
fn images_pull_through_a_registry_mirror_with_the_requests_credentials() {
    if !can_run_cri() {
        return;
    }
    let registry = Registry::with_auth("kube", "secret");
    let layout = busybox_layout(&unique("cri-mirror"), APPLETS, "3.9");
    registry.push(&layout, "3.9", "pause", Some(("kube", "secret")));
    let mirror = format!("registry.k8s.io={}", registry.host());
    let cri = Cri::start(None, &["--registry-mirror", &mirror]);
    let mut images = cri.images();
    let request = |auth: Option<cri::AuthConfig>| cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: "registry.k8s.io/pause:3.9".into(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    };
    let refused = cri.block_on(images.pull_image(request(None)));
    assert!(refused.is_err(), "a pull without credentials must fail");
    let id = cri
        .block_on(images.pull_image(request(Some(cri::AuthConfig {
            username: "kube".into(),
            password: "secret".into(),
            ..Default::default()
        }))))
        .unwrap_or_else(|e| panic!("pull through the mirror: {e}\n{}", cri.daemon.log()))
        .into_inner()
        .image_ref;
    let image = cri
        .block_on(images.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "registry.k8s.io/pause:3.9".into(),
                ..Default::default()
            }),
            verbose: false,
        }))
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("the image under the name it was asked by");
    assert_eq!(image.id, id);
    assert_eq!(
        image.repo_tags,
        vec!["registry.k8s.io/pause:3.9".to_string()]
    );
    // The mirror's own name is not left behind.
    let names = run_ctl(
        &cri.daemon.socket,
        &["images", "--format", "{{.Repository}}"],
        b"",
    );
    let listing = String::from_utf8_lossy(&names.stdout);
    assert!(!listing.contains(&registry.host()), "{listing}");
}

#[test]
fn pod_and_container_lifecycle_status_logs_and_filters() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let logs = cri.dir.0.join("logs");
    let mut config = pod_config("web", &logs);
    config.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.0.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    config.annotations = [("note".to_string(), "kept".to_string())].into();
    let pod = cri.run_pod(config.clone());
    let mut rt = cri.runtime();
    let status = cri.pod_status(&pod);
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(
        status.annotations.get("note").map(String::as_str),
        Some("kept")
    );
    let ip = status.network.expect("network").ip;
    assert!(!ip.is_empty(), "the pod has an address on the bridge");

    let c = cri.run_container(
        &pod,
        &config,
        container_config(
            "main",
            &[
                "sh",
                "-c",
                "echo out; echo err >&2; hostname; cat /etc/resolv.conf; printf partial",
            ],
        ),
    );
    let status = cri.exited(&c);
    assert_eq!(status.exit_code, 0);
    assert_eq!(status.reason, "Completed");
    assert!(status.started_at >= status.created_at && status.finished_at >= status.started_at);
    assert_eq!(status.log_path, logs.join("main.log").display().to_string());
    // The CRI log: TIMESTAMP STREAM TAG TEXT, every line.
    let log = wait_for_log(&logs.join("main.log"), "partial");
    let lines: Vec<&str> = log.lines().collect();
    for line in &lines {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert!(
            fields[0].ends_with('Z') && fields[0].contains('T'),
            "{line}"
        );
        assert!(matches!(fields[1], "stdout" | "stderr"), "{line}");
        assert!(matches!(fields[2], "F" | "P"), "{line}");
    }
    assert!(lines.iter().any(|l| l.ends_with(" stdout F out")), "{log}");
    assert!(lines.iter().any(|l| l.ends_with(" stderr F err")), "{log}");
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F web")),
        "hostname: {log}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("nameserver 10.0.0.10")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("search default.svc.cluster.local")),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("options ndots:5")),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F partial")),
        "{log}"
    );

    // A second, running container; the filters of ListContainers.
    let sleeper = cri.run_container(
        &pod,
        &config,
        container_config("sleeper", &["sleep", "300"]),
    );
    let list = |filter: cri::ContainerFilter| {
        let mut rt = cri.runtime();
        cri.block_on(rt.list_containers(cri::ListContainersRequest {
            filter: Some(filter),
        }))
        .expect("ListContainers")
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect::<Vec<_>>()
    };
    let running = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    assert_eq!(list(running), vec![sleeper.clone()]);
    let by_label = cri::ContainerFilter {
        label_selector: [("container".to_string(), "main".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(list(by_label), vec![c.clone()]);
    let by_pod = cri::ContainerFilter {
        pod_sandbox_id: pod[..12].to_string(),
        ..Default::default()
    };
    assert_eq!(list(by_pod).len(), 2);
    // A name is reserved within its pod.
    let again = cri.block_on(rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container_config("main", &["true"])),
        sandbox_config: Some(config.clone()),
    }));
    assert_eq!(
        again.expect_err("a reserved name").code(),
        tonic::Code::AlreadyExists
    );
    // The pod's namespaces are shared: the sleeper sees the pod's name.
    assert_eq!(cri.exec_ok(&sleeper, &["hostname"]).trim(), "web");

    // berthctl and CRI never see each other's containers.
    let ps = run_ctl(&cri.daemon.socket, &["ps", "-a", "-q", "--no-trunc"], b"");
    assert!(ps.status.success(), "{}", text(&ps));
    let listed = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !listed.contains(&c) && !listed.contains(&sleeper),
        "{listed}"
    );
    let out = run_ctl(
        &cri.daemon.socket,
        &["create", "--name", "plain", "busybox:cri", "true"],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(list(cri::ContainerFilter::default()).len(), 2);

    // Stop: the sleeper goes; the pod filter by label and state.
    cri.block_on(rt.stop_container(cri::StopContainerRequest {
        container_id: sleeper.clone(),
        timeout: 1,
    }))
    .expect("StopContainer");
    let stopped = cri.status(&sleeper);
    assert_eq!(stopped.state, cri::ContainerState::ContainerExited as i32);
    // sleep, its namespace's init, ignores SIGTERM: SIGKILL after the timeout.
    assert_eq!(stopped.reason, "Error");
    assert_eq!(stopped.exit_code, 137);
    let pods = cri
        .block_on(rt.list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
        }))
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    cri.remove_pod(&pod);
    assert!(list(cri::ContainerFilter::default()).is_empty());
    // Idempotence: stopping and removing what is gone succeeds.
    cri.remove_pod(&pod);
    cri.block_on(rt.stop_container(cri::StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    }))
    .expect("stop an unknown container");
    cri.block_on(rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    }))
    .expect("remove an unknown container");
    // The berthctl container is still there.
    let out = run_ctl(&cri.daemon.socket, &["rm", "plain"], b"");
    assert!(out.status.success(), "{}", text(&out));
}

/// The log once it holds `last`.
fn wait_for_log(path: &Path, last: &str) -> String {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(last) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} never held {last:?}: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

#[test]
fn security_context_fields_are_seen_from_inside() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let config = pod_config("secure", &cri.dir.0.join("logs"));
    let pod = cri.run_pod(config.clone());
    let mut container = container_config("locked", &["sleep", "300"]);
    container.linux = Some(secured(cri::LinuxContainerSecurityContext {
        run_as_user: Some(cri::Int64Value { value: 1000 }),
        run_as_group: Some(cri::Int64Value { value: 2000 }),
        supplemental_groups: vec![3000],
        readonly_rootfs: true,
        no_new_privs: true,
        capabilities: Some(cri::Capability {
            drop_capabilities: vec!["ALL".into()],
            add_capabilities: vec!["NET_RAW".into()],
            ..Default::default()
        }),
        masked_paths: vec!["/etc/hostname".into()],
        readonly_paths: vec!["/tmp".into()],
        seccomp: Some(profile(ProfileType::Unconfined)),
        ..Default::default()
    }));
    let id = cri.run_container(&pod, &config, container);
    assert_eq!(cri.exec_ok(&id, &["id", "-u"]).trim(), "1000");
    assert_eq!(cri.exec_ok(&id, &["id", "-g"]).trim(), "2000");
    let groups = cri.exec_ok(&id, &["id", "-G"]);
    assert!(groups.split_whitespace().any(|g| g == "3000"), "{groups}");
    let status = cri.exec_ok(&id, &["cat", "/proc/self/status"]);
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    // CAP_NET_RAW alone: bit 13.
    assert_eq!(field("CapBnd:"), "0000000000002000");
    assert_eq!(field("Seccomp:"), "0", "unconfined");
    let write_root = cri.exec(&id, &["touch", "/file"]);
    assert_ne!(write_root.exit_code, 0, "the root is read-only");
    let write_tmp = cri.exec(&id, &["touch", "/tmp/file"]);
    assert_ne!(write_tmp.exit_code, 0, "/tmp is a read-only path");
    assert_eq!(cri.exec_ok(&id, &["cat", "/etc/hostname"]), "", "masked");
    let user = cri.status(&id).user.and_then(|u| u.linux).expect("user");
    assert_eq!((user.uid, user.gid), (1000, 2000));

    // RuntimeDefault seccomp: the container runs filtered.
    let mut filtered = container_config("filtered", &["sleep", "300"]);
    filtered.linux = Some(secured(cri::LinuxContainerSecurityContext {
        seccomp: Some(profile(ProfileType::RuntimeDefault)),
        ..Default::default()
    }));
    let id = cri.run_container(&pod, &config, filtered);
    let status = cri.exec_ok(&id, &["cat", "/proc/self/status"]);
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    // A privileged container needs a privileged pod.
    let mut privileged = container_config("privileged", &["true"]);
    privileged.linux = Some(secured(cri::LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    }));
    let mut rt = cri.runtime();
    let refused = cri.block_on(rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(privileged),
        sandbox_config: Some(config.clone()),
    }));
    let err = refused.expect_err("privileged in an unprivileged pod");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    cri.remove_pod(&pod);
}

#[test]
fn exec_sync_reports_exit_codes_and_times_out() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let config = pod_config("exec", &cri.dir.0.join("logs"));
    let pod = cri.run_pod(config.clone());
    let id = cri.run_container(&pod, &config, container_config("target", &["sleep", "300"]));
    let r = cri.exec(&id, &["sh", "-c", "echo to-out; echo to-err >&2; exit 7"]);
    assert_eq!(r.exit_code, 7);
    assert_eq!(r.stdout, b"to-out\n");
    assert_eq!(r.stderr, b"to-err\n");
    let mut rt = cri.runtime();
    let timed_out = cri.block_on(rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["sleep".into(), "60".into()],
        timeout: 1,
    }));
    let err = timed_out.expect_err("a timeout");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err}");
    // The container is unharmed.
    assert_eq!(cri.exec_ok(&id, &["echo", "still"]), "still\n");
    cri.remove_pod(&pod);
}

/// Exec and PortForward hand out URLs of the daemon's streaming server,
/// which an independent client (python3-kubernetes' WebSocket client) then
/// drives into the real container and the pod's network namespace; a URL
/// for a container that is not running is refused up front.
#[test]
fn exec_and_port_forward_urls_reach_the_container_with_an_independent_client() {
    if !can_run_cri() || !python_client_installed() {
        return;
    }
    let cri = Cri::with_pods();
    let netns = cri._netns.as_ref().expect("a namespace").path.clone();
    let config = pod_config("stream", &cri.dir.0.join("logs"));
    let pod = cri.run_pod(config.clone());
    let marker = unique("page");
    let serve =
        format!("mkdir /www && echo {marker} > /www/index.html && exec httpd -f -p 8080 -h /www");
    let id = cri.run_container(
        &pod,
        &config,
        container_config("web", &["sh", "-c", &serve]),
    );
    let mut rt = cri.runtime();

    let url = cri.exec_url(cri::ExecRequest {
        container_id: id.clone(),
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "hostname; echo oops >&2; exit 4".into(),
        ],
        stdout: true,
        stderr: true,
        ..Default::default()
    });
    let result = kube::python_in(Some(&netns), "exec", &url, json!({}));
    assert_eq!(result["stdout"], "stream\n", "{result}");
    assert_eq!(result["stderr"], "oops\n", "{result}");
    assert_eq!(result["returncode"], 4, "{result}");

    // The page the container serves, through the pod's namespace.
    let fetched = (0..50).find_map(|_| {
        let url = cri
            .block_on(rt.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![8080],
            }))
            .expect("PortForward")
            .into_inner()
            .url;
        let result = kube::python_in(Some(&netns), "portforward", &url, json!({"port": 8080}));
        let page = result["data"].as_str().unwrap_or_default().to_string();
        if page.contains(&marker) {
            return Some(page);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        None
    });
    assert!(
        fetched.is_some(),
        "the page never came through the port forward"
    );

    let stopped = cri.run_container(&pod, &config, container_config("done", &["true"]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let refused = cri.block_on(rt.exec(cri::ExecRequest {
        container_id: stopped,
        cmd: vec!["true".into()],
        stdout: true,
        ..Default::default()
    }));
    let err = refused.expect_err("no URL for a container that has exited");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    cri.remove_pod(&pod);
}

#[test]
fn reopen_container_log_starts_a_new_file() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let logs = cri.dir.0.join("logs");
    let config = pod_config("logs", &logs);
    let pod = cri.run_pod(config.clone());
    let mut stdin_reader = container_config(
        "talker",
        &["sh", "-c", "while read line; do echo \"got $line\"; done"],
    );
    stdin_reader.stdin = true;
    let id = cri.run_container(&pod, &config, stdin_reader);
    let path = logs.join("talker.log");
    // Output through ExecSync writing to the init's stdout.
    cri.exec_ok(&id, &["sh", "-c", "echo one > /proc/1/fd/1"]);
    wait_for_log(&path, "one");
    let rotated = logs.join("talker.log.1");
    std::fs::rename(&path, &rotated).expect("rotate");
    let mut rt = cri.runtime();
    cri.block_on(rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    }))
    .expect("ReopenContainerLog");
    cri.exec_ok(&id, &["sh", "-c", "echo two > /proc/1/fd/1"]);
    let fresh = wait_for_log(&path, "two");
    assert!(!fresh.contains(" one"), "{fresh}");
    let old = std::fs::read_to_string(&rotated).expect("rotated log");
    assert!(
        old.contains(" stdout F one") && !old.contains("two"),
        "{old}"
    );
    // A stopped container's log cannot be reopened.
    cri.block_on(rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    }))
    .expect("stop");
    let err = cri
        .block_on(rt.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        }))
        .expect_err("not running");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    cri.remove_pod(&pod);
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let config = pod_config("oom", &cri.dir.0.join("logs"));
    let pod = cri.run_pod(config.clone());
    let mut hog = container_config(
        "hog",
        &["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"],
    );
    hog.linux = Some(limited_to(cri::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    }));
    let id = cri.run_container(&pod, &config, hog);
    let status = cri.exited(&id);
    assert_eq!(
        status.reason,
        "OOMKilled",
        "{status:?}\n{}",
        cri.daemon.log()
    );
    assert_eq!(status.exit_code, 137);
    assert_eq!(
        status
            .resources
            .and_then(|r| r.linux)
            .map(|l| l.memory_limit_in_bytes),
        Some(16 << 20)
    );
    cri.remove_pod(&pod);
}

#[test]
fn host_port_reaches_the_pod_from_the_namespace_host_side() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let mut config = pod_config("published", &cri.dir.0.join("logs"));
    config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 18080,
        host_ip: String::new(),
    }];
    let pod = cri.run_pod(config.clone());
    let mut server = container_config("httpd", &["sh", "-c", "mkdir -p /tmp/www && echo hello from a pod > /tmp/www/index.html && httpd -f -p 80 -h /tmp/www"]);
    server.envs = vec![cri::KeyValue {
        key: "GREETING".into(),
        value: "hi".into(),
    }];
    let id = cri.run_container(&pod, &config, server);
    assert_eq!(cri.exec_ok(&id, &["sh", "-c", "echo $GREETING"]), "hi\n");
    let mut last = String::new();
    let mut page = None;
    for _ in 0..50 {
        match cri.netns().curl("http://127.0.0.1:18080/") {
            Ok(text) => {
                page = Some(text);
                break;
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let page =
        page.unwrap_or_else(|| panic!("hostPort never answered: {last}\n{}", cri.daemon.log()));
    assert_eq!(page, "hello from a pod\n");
    cri.remove_pod(&pod);
    assert!(
        cri.netns().curl("http://127.0.0.1:18080/").is_err(),
        "the port goes with the pod"
    );
}

#[test]
fn a_pod_shares_its_pid_namespace_when_asked_and_the_host_network_when_asked() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    // PID mode POD (crictl's default): the containers share one namespace,
    // whose init is the pod's holder.
    let mut config = pod_config("shared", &cri.dir.0.join("logs"));
    config.linux = None;
    let pod = cri.run_pod(config.clone());
    let first = cri.run_container(&pod, &config, container_config("first", &["sleep", "301"]));
    let second = cri.run_container(&pod, &config, container_config("second", &["sleep", "302"]));
    assert_eq!(
        cri.exec_ok(&second, &["cat", "/proc/1/cmdline"]),
        "sleep\0infinity\0"
    );
    let seen = cri.exec_ok(
        &second,
        &["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
    );
    assert!(
        seen.contains("sleep 301"),
        "the first container's process: {seen}"
    );
    assert!(!cri.exec_ok(&first, &["ls", "/proc"]).is_empty());
    cri.remove_pod(&pod);

    // The host's network (the daemon's namespace here): no address of its
    // own, and the host's name.
    let mut host = pod_config("on-host", &cri.dir.0.join("logs"));
    host.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                pid: cri::NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = cri.run_pod(host.clone());
    let status = cri.pod_status(&pod);
    assert_eq!(status.network.expect("network").ip, "");
    let id = cri.run_container(&pod, &host, container_config("h", &["sleep", "300"]));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(cri.exec_ok(&id, &["hostname"]).trim(), hostname.trim());
    let links = cri.exec_ok(&id, &["cat", "/proc/net/dev"]);
    assert!(!links.contains("eth0"), "no pod interface: {links}");
    cri.remove_pod(&pod);
}

#[test]
fn resources_are_updated_live_and_stats_are_reported() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let config = pod_config("limits", &cri.dir.0.join("logs"));
    let pod = cri.run_pod(config.clone());
    let mut limited = container_config("limited", &["sleep", "300"]);
    limited.linux = Some(limited_to(cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    }));
    let id = cri.run_container(&pod, &config, limited);
    let limit_file = PathBuf::from("/sys/fs/cgroup/memory/k8s.io")
        .join(&id)
        .join("memory.limit_in_bytes");
    let read_limit = || {
        std::fs::read_to_string(&limit_file)
            .unwrap_or_else(|e| panic!("{}: {e}", limit_file.display()))
            .trim()
            .to_string()
    };
    assert_eq!(read_limit(), (64u64 << 20).to_string());
    let mut rt = cri.runtime();
    cri.block_on(
        rt.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                ..Default::default()
            }),
            windows: None,
            annotations: Default::default(),
        }),
    )
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", cri.daemon.log()));
    assert_eq!(read_limit(), (96u64 << 20).to_string());
    let reported = cri
        .status(&id)
        .resources
        .and_then(|r| r.linux)
        .expect("resources");
    assert_eq!(reported.memory_limit_in_bytes, 96 << 20);
    let stats = cri
        .block_on(rt.container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        }))
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .expect("memory");
    assert!(memory.value > 0, "{memory:?}");
    assert_eq!(stats.attributes.expect("attributes").id, id);
    let all = cri
        .block_on(rt.list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        }))
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);
    let pod_stats = cri
        .block_on(rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .expect("linux stats");
    assert_eq!(pod_stats.containers.len(), 1);
    let pod_memory = pod_stats.memory.and_then(|m| m.working_set_bytes);
    assert!(pod_memory.expect("memory").value > 0);
    // `sleep` alone, then with a second process beside it.
    let processes = |stats: &cri::LinuxPodSandboxStats| {
        stats
            .process
            .as_ref()
            .and_then(|p| p.process_count.as_ref())
            .map(|c| c.value)
    };
    assert_eq!(processes(&pod_stats), Some(1));
    cri.exec_ok(&id, &["sh", "-c", "sleep 300 >/dev/null 2>&1 &"]);
    // The pod's own interface counts the traffic the host side sends it.
    let ip = cri.pod_status(&pod).network.expect("network").ip;
    let before = pod_stats.network.and_then(|n| n.default_interface);
    let before = before.expect("eth0 before");
    assert_eq!(before.name, "eth0");
    for _ in 0..3 {
        // No one listens on port 1: a SYN in, a RST out (curl's 7).
        let url = format!("http://{ip}:1/");
        let refused = cri.netns().run("curl", &["-s", "--max-time", "5", &url]);
        assert_eq!(refused.status.code(), Some(7), "{}", text(&refused));
    }
    let pod_stats = cri
        .block_on(rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .expect("linux stats");
    assert_eq!(processes(&pod_stats), Some(2));
    let after = pod_stats.network.and_then(|n| n.default_interface);
    let after = after.expect("eth0 after");
    let bytes = |v: Option<cri::UInt64Value>| v.map_or(0, |v| v.value);
    // Three SYNs in, three RSTs out: 40 bytes of IP and TCP each at least.
    assert!(
        bytes(after.rx_bytes) >= bytes(before.rx_bytes) + 3 * 40,
        "{after:?}"
    );
    assert!(
        bytes(after.tx_bytes) >= bytes(before.tx_bytes) + 3 * 40,
        "{after:?}"
    );

    // CPU rates come from the sample of the call before: a busy loop
    // uses more than `sleep`, and the pod's rate is their sum.
    let busy = cri.run_container(
        &pod,
        &config,
        container_config("busy", &["sh", "-c", "while :; do :; done"]),
    );
    let sample = || {
        cri.block_on(
            cri.runtime()
                .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                    pod_sandbox_id: pod.clone(),
                }),
        )
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .expect("linux stats")
    };
    sample();
    std::thread::sleep(Duration::from_secs(1));
    let stats = sample();
    let rate_of = |cpu: Option<&cri::CpuUsage>| {
        cpu.and_then(|c| c.usage_nano_cores.as_ref())
            .map(|r| r.value)
            .expect("a rate")
    };
    let container_rate = |id: &str| {
        let c = stats
            .containers
            .iter()
            .find(|c| c.attributes.as_ref().is_some_and(|a| a.id == id))
            .expect("the container's stats");
        rate_of(c.cpu.as_ref())
    };
    let (busy_rate, idle_rate) = (container_rate(&busy), container_rate(&id));
    assert!(busy_rate > 10_000_000, "{busy_rate}");
    assert!(idle_rate < busy_rate, "{idle_rate} {busy_rate}");
    assert_eq!(rate_of(stats.cpu.as_ref()), busy_rate + idle_rate);
    cri.remove_pod(&pod);
}

#[test]
fn container_events_follow_the_lifecycle_in_order() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let config = pod_config("events", &cri.dir.0.join("logs"));
    let pod = cri.run_pod(config.clone());
    let mut rt = cri.runtime();
    let mut events = cri
        .block_on(rt.get_container_events(cri::GetEventsRequest {}))
        .expect("GetContainerEvents")
        .into_inner();
    let id = cri.run_container(&pod, &config, container_config("brief", &["true"]));
    use cri::ContainerEventType as E;
    let mut next = || {
        let event = cri
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), events.message()).await
            })
            .expect("an event in time")
            .expect("the stream")
            .expect("an event");
        assert_eq!(event.container_id, id);
        assert_eq!(
            event.pod_sandbox_status.map(|p| p.id).as_deref(),
            Some(pod.as_str())
        );
        E::try_from(event.container_event_type).expect("a known type")
    };
    let mut seen = vec![next(), next(), next()];
    let mut rt = cri.runtime();
    cri.block_on(rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    }))
    .expect("RemoveContainer");
    seen.push(next());
    assert_eq!(
        seen,
        vec![
            E::ContainerCreatedEvent,
            E::ContainerStartedEvent,
            E::ContainerStoppedEvent,
            E::ContainerDeletedEvent
        ]
    );
    cri.remove_pod(&pod);
}

/// Host mounts a test makes, unmounted (recursively, lazily) when dropped.
struct HostMounts(Vec<PathBuf>);

impl HostMounts {
    fn mount(&mut self, args: &[&str], target: &Path) {
        std::fs::create_dir_all(target).expect("mount point");
        let out = Command::new("mount")
            .args(args)
            .arg(target)
            .output()
            .expect("mount");
        assert!(out.status.success(), "mount {args:?}: {}", text(&out));
        self.0.push(target.to_path_buf());
    }
}

impl Drop for HostMounts {
    fn drop(&mut self) {
        for target in self.0.iter().rev() {
            let _ = Command::new("umount")
                .arg("-R")
                .arg("-l")
                .arg(target)
                .status();
        }
    }
}

fn is_mount_point(path: &Path) -> bool {
    let wanted = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
}

#[test]
fn mounts_propagate_both_ways_and_recursive_read_only_covers_submounts() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let shared = cri.dir.0.join("shared");
    let ro = cri.dir.0.join("ro");
    let mut mounts = HostMounts(Vec::new());
    // A shared mount, as kubelet's pod volume directories are.
    let source = shared.display().to_string();
    mounts.mount(&["--bind", &source], &shared);
    let out = Command::new("mount")
        .args(["--make-shared", &source])
        .output()
        .expect("mount");
    assert!(out.status.success(), "{}", text(&out));
    mounts.mount(&["-t", "tmpfs", "tmpfs"], &ro.join("sub"));

    let mut config = pod_config("mounts", &cri.dir.0.join("logs"));
    if let Some(context) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        context.privileged = true;
    }
    let pod = cri.run_pod(config.clone());
    let mut container = container_config("mounter", &["sleep", "300"]);
    let mount = |host: &Path, path: &str| cri::Mount {
        container_path: path.into(),
        host_path: host.display().to_string(),
        ..Default::default()
    };
    container.mounts = vec![
        cri::Mount {
            propagation: cri::MountPropagation::PropagationBidirectional as i32,
            ..mount(&shared, "/shared")
        },
        cri::Mount {
            readonly: true,
            recursive_read_only: true,
            ..mount(&ro, "/rro")
        },
        cri::Mount {
            readonly: true,
            ..mount(&ro, "/ro")
        },
    ];
    container.linux = Some(secured(cri::LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    }));
    let id = cri.run_container(&pod, &config, container);
    // Container → host.
    cri.exec_ok(
        &id,
        &[
            "sh",
            "-c",
            "mkdir -p /shared/inner && mount -t tmpfs tmpfs /shared/inner",
        ],
    );
    assert!(
        is_mount_point(&shared.join("inner")),
        "a mount made in a Bidirectional volume appears on the host"
    );
    mounts.0.push(shared.join("inner"));
    // Host → container.
    mounts.mount(&["-t", "tmpfs", "tmpfs"], &shared.join("outer"));
    std::fs::write(shared.join("outer/file"), "from the host\n").expect("write");
    assert_eq!(
        cri.exec_ok(&id, &["cat", "/shared/outer/file"]),
        "from the host\n"
    );
    // Read-only: the mount itself; recursive: its submounts too.
    assert_ne!(cri.exec(&id, &["touch", "/ro/file"]).exit_code, 0);
    assert_eq!(cri.exec(&id, &["touch", "/ro/sub/file"]).exit_code, 0);
    assert_ne!(cri.exec(&id, &["touch", "/rro/sub/other"]).exit_code, 0);
    // rro on a writable mount is refused.
    let mut bad = container_config("bad", &["true"]);
    bad.mounts = vec![cri::Mount {
        recursive_read_only: true,
        ..mount(&ro, "/bad")
    }];
    let mut rt = cri.runtime();
    let err = cri
        .block_on(rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(bad),
            sandbox_config: Some(config.clone()),
        }))
        .expect_err("rro on a writable mount");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    cri.remove_pod(&pod);
}

#[test]
fn pods_and_containers_survive_a_daemon_killed_with_sigkill() {
    if !can_run_cri() {
        return;
    }
    let mut cri = Cri::with_pods();
    let logs = cri.dir.0.join("logs");
    let mut config = pod_config("lasting", &logs);
    config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 18081,
        host_ip: String::new(),
    }];
    let pod = cri.run_pod(config.clone());
    let server = container_config(
        "httpd",
        &["sh", "-c", "mkdir -p /tmp/www && echo still here > /tmp/www/index.html && httpd -f -p 80 -h /tmp/www"],
    );
    let id = cri.run_container(&pod, &config, server);
    cri.daemon.restart();
    assert_eq!(
        cri.status(&id).state,
        cri::ContainerState::ContainerRunning as i32,
        "{}",
        cri.daemon.log()
    );
    assert_eq!(
        cri.pod_status(&pod).state,
        cri::PodSandboxState::SandboxReady as i32
    );
    // Its network and host port are still there; exec and logs still work.
    let mut page = Err(String::new());
    for _ in 0..50 {
        page = cri.netns().curl("http://127.0.0.1:18081/");
        if page.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(page.expect("the page after the restart"), "still here\n");
    cri.exec_ok(&id, &["sh", "-c", "echo after the restart > /proc/1/fd/1"]);
    wait_for_log(&logs.join("httpd.log"), "after the restart");
    cri.remove_pod(&pod);
    let mut rt = cri.runtime();
    let left = cri
        .block_on(rt.list_containers(cri::ListContainersRequest { filter: None }))
        .expect("ListContainers")
        .into_inner()
        .containers;
    assert!(left.is_empty());
}

#[test]
fn devices_localhost_seccomp_and_strict_supplemental_groups() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let config = pod_config("devices", &cri.dir.0.join("logs"));
    let pod = cri.run_pod(config.clone());
    // An OCI seccomp profile on the host that refuses mkdir.
    let profile_path = cri.dir.0.join("no-mkdir.json");
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    });
    std::fs::write(&profile_path, profile.to_string()).expect("profile");
    // A character device no driver answers (1:42), outside the devices
    // every container may use: only this request allows it.
    let node = cri.dir.0.join("fake-device");
    let out = Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "42"])
        .output()
        .expect("mknod");
    assert!(out.status.success(), "{}", text(&out));
    let mut container = container_config("device", &["sleep", "300"]);
    container.devices = vec![cri::Device {
        container_path: "/dev/fake".into(),
        host_path: node.display().to_string(),
        permissions: "r".into(),
    }];
    container.linux = Some(secured(cri::LinuxContainerSecurityContext {
        run_as_user: Some(cri::Int64Value { value: 0 }),
        supplemental_groups: vec![4000],
        supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
        seccomp: Some(cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: profile_path.display().to_string(),
        }),
        ..Default::default()
    }));
    let id = cri.run_container(&pod, &config, container);
    let listing = cri.exec_ok(&id, &["ls", "-l", "/dev/fake"]);
    assert!(
        listing.starts_with('c') && listing.contains("1,  42"),
        "{listing}"
    );
    let allowed = PathBuf::from("/sys/fs/cgroup/devices/k8s.io")
        .join(&id)
        .join("devices.list");
    let allowed = std::fs::read_to_string(&allowed).expect("the device cgroup");
    assert!(allowed.lines().any(|l| l == "c 1:42 r"), "{allowed}");
    let mkdir = cri.exec(&id, &["mkdir", "/tmp/refused"]);
    assert_ne!(mkdir.exit_code, 0, "the Localhost profile refuses mkdir");
    cri.exec_ok(&id, &["touch", "/tmp/allowed"]);
    // Strict: the supplemental groups alone, none from the image's /etc/group.
    assert_eq!(cri.exec_ok(&id, &["id", "-G"]).trim(), "0 4000");
    // A device that is not one is refused.
    let mut bad = container_config("bad-device", &["true"]);
    bad.devices = vec![cri::Device {
        container_path: "/dev/x".into(),
        host_path: "/etc/hostname".into(),
        permissions: "rw".into(),
    }];
    let mut rt = cri.runtime();
    let err = cri
        .block_on(rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(bad),
            sandbox_config: Some(config.clone()),
        }))
        .expect_err("not a device");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    cri.remove_pod(&pod);
}

/// A pod's containers share one shim, as containerd groups them by
/// `io.kubernetes.cri.sandbox-id`: the first container's start runs it, the
/// second is served by it as itself, a restarted daemon finds both through
/// it, and it goes with the pod.
#[test]
fn a_pods_containers_share_one_shim() {
    if !can_run_cri() {
        return;
    }
    let mut cri = Cri::with_pods();
    let config = pod_config("one-shim", &cri.dir.0.join("logs"));
    let pod = cri.run_pod(config.clone());
    let first = cri.run_container(&pod, &config, container_config("first", &["sleep", "300"]));
    let second = cri.run_container(&pod, &config, container_config("second", &["sleep", "300"]));
    let shims = shims_started_for(&first);
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
    assert!(
        shims_started_for(&second).is_empty(),
        "a second shim for the pod"
    );
    assert_eq!(cri.exec_ok(&first, &["echo", "first"]), "first\n");
    assert_eq!(cri.exec(&second, &["sh", "-c", "exit 6"]).exit_code, 6);
    // A daemon killed and back finds both containers through the one shim.
    cri.daemon.restart();
    for id in [&first, &second] {
        assert_eq!(
            cri.status(id).state,
            cri::ContainerState::ContainerRunning as i32,
            "{}",
            cri.daemon.log()
        );
    }
    assert_eq!(cri.exec_ok(&second, &["echo", "second"]), "second\n");
    assert_eq!(shims_started_for(&first), shims);
    cri.remove_pod(&pod);
    let shim = shims[0].to_string();
    for _ in 0..200 {
        if !alive(&shim) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(&shim), "the pod's shim outlived the pod");
}

/// The uid the host sees for the process whose command line is `marker`
/// (`/proc/PID/status`, real uid).
fn host_uid_of(marker: &str) -> Option<String> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").trim() != marker {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        return line.split_whitespace().nth(1).map(String::from);
    }
    None
}

fn mapping(host: u32) -> Vec<cri::IdMapping> {
    vec![cri::IdMapping {
        host_id: host,
        container_id: 0,
        length: 65536,
    }]
}

fn userns_options(host: u32) -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: mapping(host),
            gids: mapping(host),
        }),
        ..Default::default()
    }
}

/// A pod in a user namespace of its own (mode POD, 0 -> 200000): inside,
/// uid_map shows the mapping and the process is root, while the host sees
/// uid 200000; the image's files (root's on disk) are root's inside through
/// the id-mapped lower layers, and what root writes in its root filesystem
/// is stored as 200000 in its own upper layer; a volume with the pod's
/// mappings shows the host's owners as they are and what root writes there
/// is root's on the host, the same volume without them shows nobody.
#[test]
fn a_pod_user_namespace_maps_ids_and_id_mapped_volumes_show_the_hosts_owners() {
    if !can_run_cri() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let cri = Cri::with_pods();
    let volume = cri.dir.0.join("volume");
    std::fs::create_dir_all(&volume).expect("volume");
    std::fs::write(volume.join("owned-by-root"), b"r").expect("write");
    std::fs::write(volume.join("owned-by-1000"), b"u").expect("write");
    std::os::unix::fs::chown(volume.join("owned-by-1000"), Some(1000), Some(1000)).expect("chown");

    let mut config = pod_config("userns", &cri.dir.0.join("logs"));
    let context = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .expect("security context");
    context.namespace_options = Some(userns_options(200000));
    let pod = cri.run_pod(config.clone());
    let marker = format!("sleep {}", 100000 + std::process::id());
    let mut container = container_config("mapped", &["sh", "-c", &format!("exec {marker}")]);
    container.linux = Some(secured(cri::LinuxContainerSecurityContext {
        namespace_options: Some(userns_options(200000)),
        ..Default::default()
    }));
    let bind = |path: &str, mapped: bool| cri::Mount {
        container_path: path.into(),
        host_path: volume.display().to_string(),
        uid_mappings: if mapped { mapping(200000) } else { Vec::new() },
        gid_mappings: if mapped { mapping(200000) } else { Vec::new() },
        ..Default::default()
    };
    container.mounts = vec![bind("/mapped", true), bind("/plain", false)];
    let id = cri.run_container(&pod, &config, container);

    let map = cri.exec_ok(&id, &["cat", "/proc/self/uid_map"]);
    let map: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(map, ["0", "200000", "65536"]);
    assert_eq!(cri.exec_ok(&id, &["id", "-u"]).trim(), "0");
    let mut host_uid = None;
    for _ in 0..100 {
        host_uid = host_uid_of(&marker);
        if host_uid.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(host_uid.as_deref(), Some("200000"), "the host's view");

    let owners = cri.exec_ok(
        &id,
        &[
            "stat",
            "-c",
            "%n %u %g",
            "/bin/busybox",
            "/mapped/owned-by-root",
            "/mapped/owned-by-1000",
            "/plain/owned-by-root",
        ],
    );
    assert_eq!(
        owners,
        "/bin/busybox 0 0\n/mapped/owned-by-root 0 0\n/mapped/owned-by-1000 1000 1000\n\
         /plain/owned-by-root 65534 65534\n"
    );
    let name = unique("written-in-root");
    cri.exec_ok(&id, &["touch", &format!("/{name}"), "/mapped/made-inside"]);
    let made = std::fs::metadata(volume.join("made-inside")).expect("made inside");
    assert_eq!(
        (made.uid(), made.gid()),
        (0, 0),
        "root inside is root on disk"
    );
    let plain = cri.exec(&id, &["touch", "/plain/made-plain"]);
    assert_ne!(plain.exit_code, 0, "an unmapped volume is not root's");
    // The upper layer on disk: the file written in the root filesystem,
    // with the host's id of the container's root.
    let found = Command::new("find")
        .args([
            cri.daemon.root.to_str().expect("utf8"),
            "-name",
            &name,
            "-printf",
            "%u %p\n",
        ])
        .output()
        .expect("find");
    let found = String::from_utf8_lossy(&found.stdout).into_owned();
    assert!(
        found
            .lines()
            .any(|l| l.starts_with("200000 ") && l.contains("/fs/")),
        "{found}"
    );

    // What cannot be: one PID namespace for a pod in a user namespace, and
    // modes CRI does not allow.
    let mut rt = cri.runtime();
    let mut shared_pid = config.clone();
    let mut container_mode = config.clone();
    for (pod_config, pid, mode) in [
        (
            &mut shared_pid,
            cri::NamespaceMode::Pod,
            cri::NamespaceMode::Pod,
        ),
        (
            &mut container_mode,
            cri::NamespaceMode::Container,
            cri::NamespaceMode::Container,
        ),
    ] {
        pod_config.metadata.as_mut().expect("metadata").name = unique("refused");
        let mut options = userns_options(300000);
        options.pid = pid as i32;
        options.userns_options.as_mut().expect("userns").mode = mode as i32;
        pod_config
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .expect("security context")
            .namespace_options = Some(options);
        let refused = cri.block_on(rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        }));
        let err = refused.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    }
    cri.remove_pod(&pod);
    let pods = cri
        .block_on(rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }))
        .expect("list")
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
}

/// Waits for a 40x100 terminal, then tells what it sees.
const TTY_SCRIPT: &str =
    "while [ \"$(stty size 2>/dev/null)\" != '40 100' ]; do sleep 0.05; done; \
     test -t 0 && echo stdin-is-a-tty; echo size $(stty size); tty; exit 3";

/// Exec with a tty and attach to a container with a tty and stdin, through
/// the URLs the CRI hands out, into a real pod, driven by python3-kubernetes'
/// WebSocket client: the process has a terminal, follows the resize the
/// client sends, and its exit code arrives on the error stream.
#[test]
fn exec_and_attach_with_a_tty_follow_resizes_in_a_real_pod() {
    if !can_run_cri() || !python_client_installed() || !spdy_client_installed() {
        return;
    }
    let cri = Cri::with_pods();
    let netns = cri.netns().path.clone();
    let (pod, config, id) = cri.idle_pod("tty");
    let resize = json!({"Width": 100, "Height": 40});

    let url = cri.exec_url(cri::ExecRequest {
        container_id: id.clone(),
        cmd: vec!["sh".into(), "-c".into(), TTY_SCRIPT.into()],
        tty: true,
        stdin: true,
        stdout: true,
        ..Default::default()
    });
    let result = kube::python_in(Some(&netns), "exec", &url, json!({"resize": resize}));
    // A terminal turns \n into \r\n.
    let stdout = result["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.starts_with("stdin-is-a-tty\r\nsize 40 100\r\n/dev/pts/"),
        "{result}"
    );
    assert_eq!(result["returncode"], 3, "{result}");
    // The same over SPDY (crictl's and kubelet's protocol), with moby's
    // spdystream: the exit code in the error stream as kubelet's Status.
    let url = cri.exec_url(cri::ExecRequest {
        container_id: id.clone(),
        cmd: vec!["sh".into(), "-c".into(), TTY_SCRIPT.into()],
        tty: true,
        stdout: true,
        ..Default::default()
    });
    let (out, status) = cri.spdy_tty(&url, None);
    assert!(out.contains("size 40 100\r\n/dev/pts/"), "{out:?}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");

    // The container's own terminal, attached to: over WebSocket, then over
    // SPDY to a second such container.
    let interactive = |name: &str| {
        let mut config_of = container_config(
            name,
            &[
                "sh",
                "-c",
                "while [ \"$(stty size 2>/dev/null)\" != '40 100' ]; do sleep 0.05; done; \
                 read line; echo attached:$line $(stty size); test -t 1 && echo tty-out; exit 5",
            ],
        );
        config_of.tty = true;
        config_of.stdin = true;
        let id = cri.run_container(&pod, &config, config_of);
        let url = cri
            .block_on(cri.runtime().attach(cri::AttachRequest {
                container_id: id.clone(),
                tty: true,
                stdin: true,
                stdout: true,
                ..Default::default()
            }))
            .expect("Attach")
            .into_inner()
            .url;
        (id, url)
    };
    let (attached, url) = interactive("interactive");
    let result = kube::python_in(
        Some(&netns),
        "exec",
        &url,
        json!({"resize": resize, "stdin": "typed\n"}),
    );
    let stdout = result["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.contains("attached:typed 40 100\r\ntty-out\r\n"),
        "{result}"
    );
    assert_eq!(result["returncode"], 5, "{result}");
    assert_eq!(cri.exited(&attached).exit_code, 5);

    let (attached, url) = interactive("interactive-spdy");
    let (out, status) = cri.spdy_tty(&url, Some(b"spdy\n"));
    assert!(
        out.contains("attached:spdy 40 100\r\ntty-out\r\n"),
        "{out:?}"
    );
    assert_eq!(status["details"]["causes"][0]["message"], "5", "{status}");
    assert_eq!(cri.exited(&attached).exit_code, 5);
    cri.remove_pod(&pod);
}

/// Over 10 MiB through an exec's stdout over SPDY, from a real pod to
/// moby's spdystream (which, like kubelet's and client-go's SPDY, keeps no
/// flow-control window and sends no WINDOW_UPDATE): every line arrives, in
/// order, and the error stream says Success.
#[test]
fn more_than_ten_mebibytes_of_exec_output_arrive_whole_over_spdy() {
    if !can_run_cri() || !spdy_client_installed() {
        return;
    }
    let cri = Cri::with_pods();
    let netns = cri.netns().path.clone();
    let (pod, _, id) = cri.idle_pod("bulk");
    let lines = 1_500_000;
    let url = cri.exec_url(cri::ExecRequest {
        container_id: id,
        cmd: vec!["seq".into(), "1".into(), lines.to_string()],
        stdout: true,
        ..Default::default()
    });
    let status = cri.dir.0.join("status");
    let out = kube::spdy_in(
        Some(&netns),
        &[
            "exec",
            &url,
            "-stdout",
            "-status",
            status.to_str().expect("utf8"),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out));
    let expected: String = (1..=lines).map(|i| format!("{i}\n")).collect();
    assert!(expected.len() > 10 << 20);
    assert_eq!(out.stdout.len(), expected.len(), "bytes received");
    assert!(out.stdout == expected.as_bytes(), "the output differs");
    let status = std::fs::read(&status).expect("status");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&status).expect("json"),
        json!({"metadata": {}, "status": "Success"})
    );
    cri.remove_pod(&pod);
}

/// A client that stops reading while an exec writes far more than any
/// buffer holds still gets every byte: the process waits for its reader
/// (before, the output broadcast dropped what the session had not taken
/// and the status still said Success: 5.9 MB of 100 MB arrived).
#[test]
fn a_slow_client_gets_all_of_an_execs_output() {
    if !can_run_cri() || !spdy_client_installed() {
        return;
    }
    use std::io::Read;
    let cri = Cri::with_pods();
    let netns = cri.netns().path.clone();
    let (pod, _, id) = cri.idle_pod("slow");
    let size: usize = 100_000_000;
    let url = cri.exec_url(cri::ExecRequest {
        container_id: id,
        cmd: ["head", "-c", &size.to_string(), "/dev/zero"]
            .map(String::from)
            .to_vec(),
        stdout: true,
        ..Default::default()
    });
    let status = cri.dir.0.join("slow-status");
    let mut client = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["timeout", "-k5", "120"])
        .arg(kube::spdyclient())
        .args(["exec", &url, "-stdout", "-status"])
        .arg(&status)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spdy client");
    // Not a word read for a while: the process runs ahead of the client.
    std::thread::sleep(Duration::from_secs(5));
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut stdout = client.stdout.take().expect("stdout");
    loop {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    let exit = client.wait().expect("client");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status).unwrap_or_default()).unwrap_or_default();
    assert!(exit.success(), "client {exit}");
    assert_eq!(received, size, "bytes received");
    assert_eq!(status, json!({"metadata": {}, "status": "Success"}));
    cri.remove_pod(&pod);
}

/// A burst of output (2,000,000 lines, ~15 MB) reaches the CRI log whole,
/// in order.
#[test]
fn a_burst_of_output_reaches_the_cri_log_whole() {
    if !can_run_cri() {
        return;
    }
    let cri = Cri::with_pods();
    let config = pod_config("burst", &cri.dir.0.join("logs"));
    let pod = cri.run_pod(config.clone());
    let lines = 2_000_000;
    let id = cri.run_container(
        &pod,
        &config,
        container_config("burst", &["seq", "1", &lines.to_string()]),
    );
    cri.exited(&id);
    let path = cri.dir.0.join("logs").join("burst.log");
    let text = wait_for_log(&path, &format!(" stdout F {lines}\n"));
    let numbers: Vec<u64> = text
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(numbers.len(), lines, "lines in the CRI log");
    assert!(numbers.iter().zip(1..).all(|(n, i)| *n == i), "in order");
    cri.remove_pod(&pod);
}
