//! Kubernetes' door: the CRI v1 `RuntimeService` and `ImageService` (the
//! `k8s-cri` crate's protos), served on a unix socket of their own
//! (default `/run/berth/cri.sock`, 0600) beside berth's API.
//!
//! Where to start reading: [`sandbox`] (a pod: its namespaces and its
//! network), then [`container`] (a CRI container: an image, a bundle from
//! [`spec`], a task of its own [`crate::tasks::Tasks`]), [`logs`] (the CRI
//! log format), [`images`] (pulls through mirrors, the CRI's view of the
//! image store), [`userns`] (pods in a user namespace of their own, their
//! id-mapped root filesystems), [`stats`] and [`service`] (the RPCs,
//! mapping requests onto those).
//!
//! Sharing and separation. The CRI shares the daemon's content store,
//! snapshots and images (a pulled layer is stored once), its shim binary and
//! events socket, and its networks (the `bridge` network and its address
//! leases). Pods and CRI containers live in a namespace of their own, as
//! containerd's CRI plugin lives in `k8s.io`: their records are in a
//! database of their own (`<root>/cri/meta.redb`), their bundles under
//! `<root>/cri/`, their namespace pins in `cri-netns/` beside the daemon's,
//! their shims run with the namespace `k8s.io`, and a [`crate::tasks::Tasks`]
//! of their own drives them. So `berthctl ps` never lists a CRI container,
//! CRI's `ListContainers` never lists a berthctl one, and neither side's
//! start-up recovery touches the other's.

pub mod container;
pub mod images;
pub mod logs;
pub mod sandbox;
pub mod service;
pub mod spec;
pub mod stats;
pub mod streaming;
pub mod userns;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::images::Images;
use crate::metadata::Db;
use crate::networks::Networks;
use crate::tasks::Tasks;

/// The shim namespace of CRI containers (containerd's CRI plugin uses the same).
pub const NAMESPACE: &str = "k8s.io";
/// The runtime handler RunPodSandbox accepts (besides the empty default).
pub const RUNTIME_HANDLER: &str = "berth";

/// Errors of the CRI, each mapped to the gRPC code kubelet expects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let message = e.to_string();
        match e {
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::Invalid(_) => tonic::Status::invalid_argument(message),
            Error::Precondition(_) => tonic::Status::failed_precondition(message),
            Error::Exists(_) => tonic::Status::already_exists(message),
            Error::Unsupported(_) => tonic::Status::unimplemented(message),
            Error::Timeout(_) => tonic::Status::deadline_exceeded(message),
            Error::Failed(_) => tonic::Status::internal(message),
        }
    }
}

impl From<crate::tasks::Error> for Error {
    fn from(e: crate::tasks::Error) -> Error {
        use crate::tasks::Error as T;
        match e {
            T::Containers(crate::containers::Error::NotFound(id)) => Error::NotFound(id),
            T::Invalid(m) => Error::Invalid(m),
            T::NotRunning(_) | T::Running(_) | T::Paused(_) | T::Starting(_) => {
                Error::Precondition(e.to_string())
            }
            other => Error::Failed(other.to_string()),
        }
    }
}

impl From<crate::containers::Error> for Error {
    fn from(e: crate::containers::Error) -> Error {
        match e {
            crate::containers::Error::NotFound(id) => Error::NotFound(id),
            crate::containers::Error::ImageNotFound(image) => {
                Error::NotFound(format!("image {image}"))
            }
            other => Error::Failed(other.to_string()),
        }
    }
}

macro_rules! failed_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Failed(e.to_string())
            }
        }
    )*};
}
failed_from!(
    crate::metadata::Error,
    crate::networks::Error,
    crate::snapshots::Error,
    crate::bundle::Error
);

/// The CRI runtime: pods and containers over the daemon's stores.
pub struct Cri {
    pub images: Arc<Images>,
    /// The CRI's own database (pods, containers, their attachments).
    pub db: Arc<Db>,
    /// The tasks of CRI containers (their own records, shim namespace `k8s.io`).
    pub tasks: Arc<Tasks>,
    /// The daemon's networks, seen through the CRI's database and pins.
    pub networks: Arc<Networks>,
    /// `<root>/cri`: `pods/<id>` and `containers/<id>` (bundles).
    pub dir: PathBuf,
    /// Registry host → mirrors to pull its images from.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Images reported pinned (config `pinned_images`, `--pinned-image`).
    pub pinned: Vec<String>,
    /// The log writers of running containers, for ReopenContainerLog.
    log_writers: Mutex<HashMap<String, logs::Reopen>>,
    /// Pods and containers being created or removed: one call at a time
    /// per pod, so a container is never made in a pod being torn down.
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The processes holding pods' PID namespaces, by pid (reaped at stop).
    holders: Mutex<HashMap<u32, std::process::Child>>,
    /// Each container's last CPU sample (nanosecond time, usage), from
    /// which the next stats call derives `usage_nano_cores`.
    pub cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    /// Container events for GetContainerEvents subscribers.
    pub events: tokio::sync::broadcast::Sender<k8s_cri::v1::ContainerEventResponse>,
}

impl Cri {
    pub fn new(
        images: Arc<Images>,
        db: Arc<Db>,
        tasks: Arc<Tasks>,
        networks: Arc<Networks>,
        dir: PathBuf,
        mirrors: BTreeMap<String, Vec<String>>,
    ) -> Cri {
        Cri {
            images,
            db,
            tasks,
            networks,
            dir,
            mirrors,
            pinned: Vec::new(),
            log_writers: Mutex::default(),
            pod_locks: Mutex::default(),
            holders: Mutex::default(),
            cpu_samples: Mutex::default(),
            events: tokio::sync::broadcast::channel(256).0,
        }
    }

    /// The lock of one pod (made on first use).
    fn pod_lock(&self, pod: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.pod_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(pod.to_string()).or_default().clone()
    }

    fn forget_pod_lock(&self, pod: &str) {
        let mut locks = self.pod_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(pod);
    }
}

/// What the CRI shares with the rest of the daemon.
pub struct Shared<'a> {
    pub config: &'a crate::config::Config,
    pub images: Arc<Images>,
    pub volumes: crate::volumes::Volumes,
    pub hub: crate::events::Hub,
    /// The daemon's networks (the `bridge` network's record is read there).
    pub networks: &'a Networks,
    /// How the daemon starts shims; CRI's run in the namespace `k8s.io`.
    pub launcher: &'a crate::shim::Launcher,
    pub default_seccomp: Option<Arc<serde_json::Value>>,
}

/// A CRI container's bundle log in berth's own format is only kept small:
/// kubelet reads the CRI log.
const BUNDLE_LOG_SIZE: u64 = 1 << 20;

/// Opens the CRI's database, networks and tasks under `<root>/cri`, and
/// picks up what an earlier run of the daemon left running.
pub async fn open(shared: Shared<'_>) -> anyhow::Result<Arc<Cri>> {
    use anyhow::Context as _;
    let config = shared.config;
    let dir = config.root.join("cri");
    for d in [dir.clone(), dir.join("pods"), dir.join("containers")] {
        crate::private::create_dir(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let db = Arc::new(Db::open(&dir.join("meta.redb"))?);
    // Pods join the daemon's own bridge network: its record (bridge device,
    // subnet) is copied in, so both sides plug into one bridge and share
    // one pool of address leases.
    let bridge = shared
        .networks
        .get(berth_net::network::DEFAULT)
        .context("the bridge network")?;
    db.write(|txn| {
        txn.put(crate::metadata::Table::Networks, &bridge.name, &bridge)?;
        Ok::<_, crate::metadata::Error>(())
    })?;
    let state = config.net_state();
    let networks = Arc::new(
        Networks::open_with_pins(
            db.clone(),
            state.join("cri-netns"),
            &state,
            &config.cni_path,
            berth_net::network::DEFAULT,
            None,
        )
        .context("cannot open the CRI's networks")?,
    );
    let containers = crate::containers::Containers {
        db: db.clone(),
        images: shared.images.clone(),
        volumes: shared.volumes,
        bundles: dir.join("containers"),
        // kubelet's containers are never removed at their exit.
        ending_bundles: dir.join("containers"),
        default_seccomp: shared.default_seccomp,
        networks: networks.clone(),
    };
    containers
        .reconcile()
        .context("cannot reconcile the CRI containers' records and directories")?;
    let launcher = crate::shim::Launcher {
        namespace: NAMESPACE.into(),
        // kubelet creates and starts in two calls, with its own work between.
        start_at_create: false,
        // A pod's containers share one shim, named after the pod.
        spare: None,
        ..shared.launcher.clone()
    };
    let mut tasks = Tasks::new(containers, shared.hub, launcher, BUNDLE_LOG_SIZE);
    // Kubelet reads containers' output from the CRI log: none may be lost.
    tasks.init_output_waits = true;
    let tasks = Arc::new(tasks);
    tasks.spawn_oom_watch();
    let mut cri = Cri::new(
        shared.images,
        db,
        tasks,
        networks,
        dir,
        config.registry_mirrors.clone(),
    );
    cri.pinned = config.pinned_images.clone();
    let cri = Arc::new(cri);
    if let Err(e) = recover(&cri).await {
        eprintln!("berth-imaged: cri: recovering pods and containers: {e}");
    }
    Ok(cri)
}

/// After a daemon restart: the shims of CRI containers are found again
/// (their output resumes into their CRI logs, their exits are watched),
/// ready pods keep their networks (their host ports held again), and what
/// belonged to pods that are gone is taken down.
async fn recover(cri: &Arc<Cri>) -> Result<()> {
    let ready: std::collections::HashSet<String> = sandbox::list(cri)?
        .into_iter()
        .filter(|p| p.ready)
        .map(|p| p.id)
        .collect();
    cri.tasks
        .recover_keeping(ready)
        .await
        .map_err(|e| Error::Failed(e.to_string()))?;
    for record in container::list_records(cri)? {
        if cri.tasks.is_running(&record.id) {
            container::follow(cri, &record)?;
        }
    }
    Ok(())
}

impl Cri {
    /// Where the image layers and containers' writable layers are.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir
            .parent()
            .map(|root| root.join("snapshots"))
            .unwrap_or_default()
    }
}

/// Nanoseconds since the epoch, as CRI's timestamps are.
pub fn now_nanos() -> i64 {
    crate::clock::now_nanos() as i64
}

/// Whether `labels` has every pair of `selector` (CRI's label filters).
pub fn matches_labels(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// An id given in full or as a unique prefix (crictl passes prefixes).
pub fn resolve_prefix<'a>(wanted: &str, ids: impl Iterator<Item = &'a String>) -> Option<String> {
    let mut found = ids.filter(|id| !wanted.is_empty() && id.starts_with(wanted));
    match (found.next(), found.next()) {
        (Some(one), None) => Some(one.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_need_every_pair() {
        let labels = std::collections::HashMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]);
        let mut selector = std::collections::HashMap::new();
        assert!(matches_labels(&labels, &selector));
        selector.insert("app".to_string(), "web".to_string());
        assert!(matches_labels(&labels, &selector));
        selector.insert("tier".to_string(), "back".to_string());
        assert!(!matches_labels(&labels, &selector));
    }

    #[test]
    fn prefixes_resolve_only_when_unique() {
        let ids = ["abc1".to_string(), "abc2".to_string(), "def".to_string()];
        assert_eq!(resolve_prefix("d", ids.iter()), Some("def".to_string()));
        assert_eq!(resolve_prefix("abc", ids.iter()), None);
        assert_eq!(resolve_prefix("", ids.iter()), None);
        assert_eq!(resolve_prefix("x", ids.iter()), None);
    }
}
