//! `berth-imaged`: parses flags and the config file, opens the stores under
//! the root, and serves berth's gRPC API on the unix socket until SIGTERM or
//! SIGINT. See the library (`berth_imaged`) for everything else.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use berth_imaged::{
    build, config::Config, containers, content, cri, events, grpc, images, metadata, networks,
    private, registry, shim, snapshots, streaming, tasks, volumes,
};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "berth-imaged",
    version,
    about = "berth's image and container daemon"
)]
struct Args {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Root of content, snapshots and metadata [default: /var/lib/berth].
    #[arg(long)]
    root: Option<PathBuf>,
    /// The gRPC unix socket [default: /run/berth/berth.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// A registry (host[:port]) to reach over plain http; repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    /// Registry credentials in docker's config.json format.
    #[arg(long)]
    registry_config: Option<PathBuf>,
    /// The shim binary [default: containerd-shim-berth-v2 on PATH].
    #[arg(long)]
    shim: Option<String>,
    /// The OCI runtime the shim drives [default: berth on PATH].
    #[arg(long)]
    runtime: Option<String>,
    /// The runtime's state root [default: /run/berth-imaged/runtime].
    #[arg(long)]
    runtime_root: Option<PathBuf>,
    /// What ends with the machine, best on a tmpfs: the bundles of
    /// containers removed at their exit; one root's only (a daemon with
    /// another --root needs its own) [default: /run/berth-imaged].
    #[arg(long)]
    state: Option<PathBuf>,
    /// The network of containers that name none [default: bridge].
    #[arg(long)]
    default_network: Option<String>,
    /// The bridge network's subnet when it is first made [default: the
    /// first of 172.17-31.0.0/16, 192.168.N.0/20 clear of the host's routes].
    #[arg(long)]
    bridge_subnet: Option<String>,
    /// Directory of the CNI plugins [default: /usr/lib/cni].
    #[arg(long)]
    cni_path: Option<PathBuf>,
    /// Seconds to wait for a registry to accept a connection.
    #[arg(long)]
    registry_connect_timeout: Option<u64>,
    /// Seconds a registry may send nothing mid-response before a pull fails.
    #[arg(long)]
    registry_read_timeout: Option<u64>,
    /// Seconds between sweeps of blobs no image uses (0: never).
    #[arg(long)]
    gc_interval: Option<u64>,
    /// The CRI v1 socket [default: cri.sock beside --socket].
    #[arg(long)]
    cri_socket: Option<PathBuf>,
    /// A registry mirror for CRI pulls, `REGISTRY=MIRROR` (e.g.
    /// `registry.k8s.io=127.0.0.1:5000`); repeatable.
    #[arg(long = "registry-mirror")]
    registry_mirror: Vec<String>,
    /// An image CRI reports pinned (kept from kubelet's image garbage
    /// collection), e.g. the sandbox image; repeatable.
    #[arg(long = "pinned-image")]
    pinned_image: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(root) = args.root {
        config.root = root;
    }
    if let Some(socket) = args.socket {
        config.socket = socket;
    }
    config.insecure_registries.extend(args.insecure_registry);
    if args.registry_config.is_some() {
        config.registry_config = args.registry_config;
    }
    if let Some(shim) = args.shim {
        config.shim = shim;
    }
    if let Some(runtime) = args.runtime {
        config.runtime = runtime;
    }
    if let Some(root) = args.runtime_root {
        config.runtime_root = root;
    }
    if let Some(state) = args.state {
        config.state = state;
    }
    if let Some(network) = args.default_network {
        config.default_network = network;
    }
    if args.bridge_subnet.is_some() {
        config.bridge_subnet = args.bridge_subnet;
    }
    if let Some(path) = args.cni_path {
        config.cni_path = path;
    }
    if let Some(secs) = args.registry_connect_timeout {
        config.registry_connect_timeout = secs;
    }
    if let Some(secs) = args.registry_read_timeout {
        config.registry_read_timeout = secs;
    }
    if let Some(secs) = args.gc_interval {
        config.gc_interval = secs;
    }
    if args.cri_socket.is_some() {
        config.cri_socket = args.cri_socket;
    }
    config.pinned_images.extend(args.pinned_image);
    for mirror in &args.registry_mirror {
        let (registry, to) = mirror
            .split_once('=')
            .with_context(|| format!("--registry-mirror {mirror:?}: use REGISTRY=MIRROR"))?;
        config
            .registry_mirrors
            .entry(registry.to_string())
            .or_default()
            .push(to.to_string());
    }
    // glibc gives each thread that allocates its own arena, and keeps what
    // it frees there; a pull runs on several blocking threads. One arena
    // keeps the idle daemon small (the hot loops reuse their buffers, so
    // the allocator is not contended). MALLOC_ARENA_MAX, if set, wins.
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt changes allocator tuning before any thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
    // Unpack sets every mode it writes explicitly (fchmod); everything
    // else the daemon makes (sockets, bundles, logs) must not be writable
    // by other users, whatever umask the daemon was started with.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o022) };

    // Two workers: the daemon's work is I/O and unpacking, which runs on
    // tokio's blocking threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run(config));
    // An unpack still running on a blocking thread is abandoned: its
    // staging snapshot is removed at the next start.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Resolves on SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Root's alone, and a store made by an older daemon is tightened.
    private::tighten_store(&config.root)
        .with_context(|| format!("cannot create or restrict root {}", config.root.display()))?;
    let db = Arc::new(metadata::Db::open(&config.root.join("meta.redb"))?);
    let content = content::Store::open(config.root.join("content"))?;
    let snapshots = snapshots::Snapshotter::open(config.root.join("snapshots"), db.clone())?;
    let mut options = registry::Options::new(
        config.insecure_registries.clone(),
        config.registry_timeouts(),
    );
    if let Some(path) = &config.registry_config {
        options.watch_docker_config(path)?;
    }
    let images = Arc::new(images::Images {
        db: db.clone(),
        content,
        snapshots,
        registry: Arc::new(options),
        gc_lock: Default::default(),
    });
    images
        .recover()
        .context("cannot recover from an interrupted run")?;
    if config.gc_interval > 0 {
        images.spawn_sweeper(std::time::Duration::from_secs(config.gc_interval));
    }
    let volumes = volumes::Volumes::open(config.root.join("volumes"), db.clone())?;
    let default_seccomp = std::fs::read(&config.seccomp_profile)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .map(Arc::new);
    if default_seccomp.is_none() {
        eprintln!(
            "berth-imaged: no default seccomp profile at {}: containers must ask for one (or for unconfined)",
            config.seccomp_profile.display()
        );
    }
    let bridge_subnet = config
        .bridge_subnet
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--bridge-subnet")?;
    let networks = Arc::new(
        networks::Networks::open(
            db.clone(),
            &config.net_state(),
            &config.cni_path,
            &config.default_network,
            bridge_subnet,
        )
        .context("cannot open the networks")?,
    );
    networks
        .mode("")
        .with_context(|| format!("default network {:?}", config.default_network))?;
    // Made root's alone; the state directory itself is left as it is when
    // it exists (it may be shared, as /run is), but serves one root.
    let ending_bundles = containers::claim_ending_bundles(&config.state, &config.root)
        .with_context(|| format!("cannot use the state directory {}", config.state.display()))?;
    let containers = containers::Containers {
        networks: networks.clone(),
        db: db.clone(),
        images: images.clone(),
        volumes: volumes.clone(),
        bundles: config.root.join("bundles"),
        ending_bundles,
        default_seccomp: default_seccomp.clone(),
    };
    containers
        .reconcile()
        .context("cannot reconcile the containers' records and directories")?;
    let hub = events::Hub::new();
    let events_socket = config.events_socket();
    if let Some(dir) = events_socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _events_server = events::serve(&events_socket, hub.clone()).await?;
    owner_only(&events_socket)?;
    let launcher = shim::Launcher {
        binary: config.shim.clone(),
        runtime: config.runtime.clone(),
        runtime_root: config.runtime_root.clone(),
        namespace: "berth".into(),
        grpc_address: config.socket.clone(),
        events_address: events_socket.clone(),
        start_at_create: true,
        spare: None,
    };
    let cri = cri::open(cri::Shared {
        config: &config,
        images: images.clone(),
        volumes: volumes.clone(),
        hub: hub.clone(),
        networks: &networks,
        launcher: &launcher,
        default_seccomp,
    })
    .await?;
    // The daemon's own containers take a spare shim (the CRI's group by pod).
    // Its start writes the runtime options and its address there, once per
    // container: in the state directory (a tmpfs, as /run is), not the root,
    // where on a disk mounted with `discard` truncating those files waited
    // for the device's TRIM (12 ms seen here).
    let spare_dir = config.state.join("spare-shim");
    let spare = shim::Spare::new(spare_dir.clone())
        .with_context(|| format!("cannot create {}", spare_dir.display()))?;
    let launcher = shim::Launcher {
        spare: Some(spare),
        ..launcher
    };
    let tasks = Arc::new(tasks::Tasks::new(
        containers,
        hub.clone(),
        launcher,
        config.max_log_size,
    ));
    tasks.spawn_oom_watch();
    if let Err(e) = tasks.recover().await {
        eprintln!("berth-imaged: recovering containers: {e}");
    }
    images
        .remove_unrecorded_snapshots()
        .context("cannot recover from an interrupted run")?;
    tasks.launcher.refill_spare();

    let listener = listen(&config.socket)?;
    eprintln!(
        "berth-imaged: serving on {} (root {})",
        config.socket.display(),
        config.root.display()
    );
    // Archives an import was receiving when the daemon stopped.
    let tmp = config.root.join("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    private::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let service = grpc::images::Service { images, tmp };
    let builds = build::service::Service(Arc::new(build::Builds {
        images: service.images.clone(),
        tasks: tasks.clone(),
        dir: config.root.join("builds"),
    }));
    let workloads = grpc::workloads::Workloads {
        tasks,
        volumes,
        hub,
    };
    let cri_socket = config.cri_socket();
    let cri_listener = listen(&cri_socket)?;
    let (cri_stop_tx, cri_stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Exec, Attach and PortForward answer with URLs on this loopback port.
    let streaming = streaming::StreamingServer::start(
        streaming::StreamingConfig::default(),
        Arc::new(cri::streaming::Backend(cri.clone())),
    )
    .await
    .context("cannot start the CRI streaming server")?;
    let mut cri_server = tokio::spawn(cri::service::serve(
        cri,
        Arc::new(streaming),
        cri_listener,
        async {
            let _ = cri_stop_rx.await;
        },
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(grpc::serve(service, workloads, builds, listener, async {
        let _ = stop_rx.await;
    }));
    tokio::select! {
        result = &mut server => {
            result.context("the gRPC server failed")??;
        }
        result = &mut cri_server => {
            result.context("the CRI server failed")??;
        }
        _ = termination() => {
            let _ = stop_tx.send(());
            let _ = cri_stop_tx.send(());
            // Graceful: in-flight calls may finish, but a client that keeps
            // an idle connection open must not hold the daemon up.
            match tokio::time::timeout(std::time::Duration::from_secs(3), &mut server).await {
                Ok(result) => result.context("the gRPC server failed")??,
                Err(_) => server.abort(),
            }
        }
    }
    if tokio::time::timeout(std::time::Duration::from_secs(1), &mut cri_server)
        .await
        .is_err()
    {
        cri_server.abort();
    }
    let _ = std::fs::remove_file(&config.socket);
    let _ = std::fs::remove_file(&cri_socket);
    let _ = std::fs::remove_file(&events_socket);
    // `run --rm` containers' commits are unsynced: a clean stop keeps them.
    if let Err(e) = db.sync() {
        eprintln!("berth-imaged: {e}");
    }
    eprintln!("berth-imaged: stopped");
    Ok(())
}

/// Listens on a unix socket only root may use: whoever can talk to it can
/// run anything as root. A socket left by a daemon that died is removed
/// first (it cannot be bound again).
fn listen(socket: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", socket.display()))
        }
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    owner_only(socket)?;
    Ok(listener)
}

/// chmod 0600: a daemon socket is a root shell for whoever can connect.
fn owner_only(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))
}
