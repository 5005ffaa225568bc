//! Pod sandboxes: the namespaces a pod's containers share, and its network.
//!
//! Pinned namespaces, not a pause process. A pod's network, IPC and UTS
//! namespaces are made by a short-lived thread of the daemon that unshares
//! them, sets the pod's host name, and bind-mounts each onto a file (the
//! network one through the networks module, as `ip netns add` pins them);
//! the thread then ends and the namespaces live as long as their pins. Every
//! container of the pod joins them by path. This is what `berth-net`
//! already does for containers' networks, it costs no process, no image
//! and no memory per pod (containerd keeps a `pause` process, a shim of 13
//! MB and a pause image for each), and the plugins configure the network
//! before any container exists. What a pin cannot hold is a PID namespace:
//! one without a living init accepts no new process. A pod that shares its
//! PID namespace (PID mode POD: crictl's default, kubelet's with
//! `shareProcessNamespace`) gets the one process it needs, util-linux's
//! `unshare --fork --pid --kill-child sleep infinity`: `sleep` is the
//! namespace's init, containers join `/proc/<unshare>/ns/pid_for_children`,
//! and killing `unshare` ends the init and with it every process of the pod.
//!
//! On disk: `<root>/cri/pods/<id>/` holds `hostname`, `hosts` and
//! `resolv.conf` (bound into each container) and `ns/{ipc,uts}` (the pins).

use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use super::{Cri, Error, Result};
use crate::metadata::Table;

/// What the CRI keeps of one pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    /// `PodSandboxConfig`, protobuf-encoded.
    pub config: Vec<u8>,
    pub runtime_handler: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub ready: bool,
    pub dir: PathBuf,
    /// Its address on the pod network ("" with the host's network).
    pub ip: String,
    /// The `unshare` process holding the pod's PID namespace (0: none).
    #[serde(default)]
    pub pid_holder: u32,
}

impl PodRecord {
    pub fn config(&self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig::decode(self.config.as_slice()).unwrap_or_default()
    }

    pub fn metadata(&self) -> cri::PodSandboxMetadata {
        self.config().metadata.unwrap_or_default()
    }

    pub fn options(&self) -> cri::NamespaceOption {
        namespace_options(&self.config())
    }

    pub fn host_network(&self) -> bool {
        self.options().network == cri::NamespaceMode::Node as i32
    }

    /// The pinned IPC namespace (none with the host's).
    pub fn ipc_pin(&self) -> Option<PathBuf> {
        (self.options().ipc != cri::NamespaceMode::Node as i32).then(|| self.dir.join("ns/ipc"))
    }

    /// The pinned UTS namespace (none with the host's network, whose pods
    /// have the host's name, as kubelet expects).
    pub fn uts_pin(&self) -> Option<PathBuf> {
        (!self.host_network()).then(|| self.dir.join("ns/uts"))
    }

    /// The pod's PID namespace, when its containers share one.
    pub fn pid_namespace(&self) -> Option<PathBuf> {
        (self.pid_holder != 0)
            .then(|| PathBuf::from(format!("/proc/{}/ns/pid_for_children", self.pid_holder)))
    }

    pub fn netns(&self, cri: &Cri) -> Option<PathBuf> {
        (!self.host_network()).then(|| cri.networks.netns_path(&self.id))
    }

    pub fn state(&self) -> cri::PodSandboxState {
        if self.ready {
            cri::PodSandboxState::SandboxReady
        } else {
            cri::PodSandboxState::SandboxNotready
        }
    }

    pub fn cgroup_parent(&self) -> String {
        self.config()
            .linux
            .map(|l| l.cgroup_parent)
            .unwrap_or_default()
    }

    pub fn hostname(&self) -> String {
        let config = self.config();
        if self.host_network() || config.hostname.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default()
        } else {
            config.hostname
        }
    }
}

/// The pod's namespace options (all POD, network POD, when it gives none).
pub fn namespace_options(config: &cri::PodSandboxConfig) -> cri::NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// `name_namespace_uid_attempt`: one pod per name at a time.
fn full_name(m: &cri::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// The pod `id` names (in full or by a unique prefix), if any.
pub fn get(cri: &Cri, id: &str) -> Result<Option<PodRecord>> {
    if let Some(pod) = cri.db.get::<PodRecord>(Table::PodSandboxes, id)? {
        return Ok(Some(pod));
    }
    let all = list(cri)?;
    Ok(super::resolve_prefix(id, all.iter().map(|p| &p.id))
        .and_then(|full| all.into_iter().find(|p| p.id == full)))
}

pub fn list(cri: &Cri) -> Result<Vec<PodRecord>> {
    let mut all: Vec<PodRecord> = cri
        .db
        .list::<PodRecord>(Table::PodSandboxes)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    Ok(all)
}

/// RunPodSandbox: the pod's files, namespaces and network, then its record.
/// On any failure nothing is left.
pub async fn run(cri: &Cri, config: cri::PodSandboxConfig, handler: &str) -> Result<String> {
    if !handler.is_empty() && handler != super::RUNTIME_HANDLER {
        return Err(Error::Invalid(format!(
            "runtime handler {handler:?} is not configured: use \"\" or {:?}",
            super::RUNTIME_HANDLER
        )));
    }
    let metadata = config
        .metadata
        .clone()
        .ok_or_else(|| Error::Invalid("the pod sandbox config has no metadata".into()))?;
    if metadata.name.is_empty() || metadata.namespace.is_empty() {
        return Err(Error::Invalid(
            "the pod sandbox metadata needs a name and a namespace".into(),
        ));
    }
    // A pod's PID namespace is pinned in the host's user namespace: a
    // container in the pod's own could not mount its /proc.
    if super::userns::of_pod(&config)?.is_some()
        && namespace_options(&config).pid == cri::NamespaceMode::Pod as i32
    {
        return Err(Error::Invalid(
            "a pod in a user namespace of its own cannot share one PID namespace \
             (use PID mode CONTAINER)"
                .into(),
        ));
    }
    let ports = port_mappings(&config.port_mappings)?;
    let id = crate::volumes::random_hex(32);
    let dir = cri.dir.join("pods").join(&id);
    let record = PodRecord {
        id: id.clone(),
        config: config.encode_to_vec(),
        runtime_handler: handler.to_string(),
        created_at: super::now_nanos(),
        ready: true,
        dir: dir.clone(),
        ip: String::new(),
        pid_holder: 0,
    };
    crate::private::create_dir(&dir)
        .and_then(|()| crate::private::create_dir(&dir.join("ns")))
        .map_err(|e| Error::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let made = make(cri, record, &config, ports).await;
    match made {
        Ok(record) => {
            let name = full_name(&metadata);
            let stored = cri.db.write(|txn| {
                for (_, other) in txn.list::<PodRecord>(Table::PodSandboxes)? {
                    if full_name(&other.metadata()) == name {
                        return Err(Error::Exists(format!(
                            "the pod sandbox name {name:?} is reserved for {}",
                            other.id
                        )));
                    }
                }
                txn.put(Table::PodSandboxes, &record.id, &record)?;
                Ok(())
            });
            if let Err(e) = stored {
                teardown(cri, &record).await;
                let _ = std::fs::remove_dir_all(&record.dir);
                return Err(e);
            }
            Ok(id)
        }
        Err((record, e)) => {
            teardown(cri, &record).await;
            let _ = std::fs::remove_dir_all(&record.dir);
            Err(e)
        }
    }
}

/// The pod's files, pins and network; on failure the record to undo.
async fn make(
    cri: &Cri,
    mut record: PodRecord,
    config: &cri::PodSandboxConfig,
    ports: Vec<berth_net::ports::PortMapping>,
) -> std::result::Result<PodRecord, (PodRecord, Error)> {
    let hostname = record.hostname();
    if let Err(e) = write_etc(&record, config, &hostname) {
        return Err((record, e));
    }
    let pins = (record.ipc_pin(), record.uts_pin());
    let name = hostname.clone();
    let pinned = tokio::task::spawn_blocking(move || pin_namespaces(pins.0, pins.1, &name))
        .await
        .map_err(|e| Error::Failed(e.to_string()))
        .and_then(|r| r);
    if let Err(e) = pinned {
        return Err((record, e));
    }
    if namespace_options(config).pid == cri::NamespaceMode::Pod as i32 {
        match hold_pid_namespace(cri) {
            Ok(pid) => record.pid_holder = pid,
            Err(e) => return Err((record, e)),
        }
    }
    if !record.host_network() {
        let networks = cri.networks.clone();
        let id = record.id.clone();
        let connected = tokio::task::spawn_blocking(move || {
            networks.connect(&id, berth_net::network::DEFAULT, ports, None)
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()));
        match connected {
            Ok(Ok(attachment)) => record.ip = attachment.attachment.address,
            Ok(Err(e)) => return Err((record, Error::Failed(format!("pod network: {e}")))),
            Err(e) => return Err((record, e)),
        }
    }
    Ok(record)
}

/// `hostPort` mappings (a port with no host port is only documentation).
fn port_mappings(ports: &[cri::PortMapping]) -> Result<Vec<berth_net::ports::PortMapping>> {
    let mut out = Vec::new();
    for p in ports.iter().filter(|p| p.host_port > 0) {
        let protocol = match cri::Protocol::try_from(p.protocol) {
            Ok(cri::Protocol::Tcp) => "tcp",
            Ok(cri::Protocol::Udp) => "udp",
            _ => {
                return Err(Error::Unsupported(format!(
                    "port {}: only TCP and UDP ports can be mapped",
                    p.container_port
                )))
            }
        };
        let port = |n: i32, what: &str| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::Invalid(format!("invalid {what} {n}")))
        };
        out.push(berth_net::ports::PortMapping {
            host_ip: p.host_ip.clone(),
            host_port: port(p.host_port, "hostPort")?,
            container_port: port(p.container_port, "containerPort")?,
            protocol: protocol.to_string(),
        });
    }
    Ok(out)
}

/// `hostname`, `hosts` and `resolv.conf` of the pod (DNS config as asked,
/// else the host's servers; the host's files with the host's network).
fn write_etc(record: &PodRecord, config: &cri::PodSandboxConfig, hostname: &str) -> Result<()> {
    let fail =
        |e: std::io::Error| Error::Failed(format!("pod files in {}: {e}", record.dir.display()));
    let etc = if record.host_network() {
        crate::bundle::EtcNetwork::Host
    } else {
        crate::bundle::EtcNetwork::Network { dns: &[] }
    };
    crate::bundle::write_etc_files(&record.dir, hostname, etc, &[]).map_err(fail)?;
    if let Some(dns) = &config.dns_config {
        let mut text = String::new();
        for server in &dns.servers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !dns.searches.is_empty() {
            text.push_str(&format!("search {}\n", dns.searches.join(" ")));
        }
        if !dns.options.is_empty() {
            text.push_str(&format!("options {}\n", dns.options.join(" ")));
        }
        std::fs::write(record.dir.join("resolv.conf"), text).map_err(fail)?;
    }
    Ok(())
}

/// Makes new IPC and UTS namespaces (those with a pin path) in a thread
/// of their own, names the UTS one, and pins each by a bind mount.
fn pin_namespaces(ipc: Option<PathBuf>, uts: Option<PathBuf>, hostname: &str) -> Result<()> {
    use nix::sched::CloneFlags;
    let mut flags = CloneFlags::empty();
    for (pin, flag) in [
        (&ipc, CloneFlags::CLONE_NEWIPC),
        (&uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if let Some(path) = pin {
            std::fs::File::create(path)
                .map_err(|e| Error::Failed(format!("cannot create {}: {e}", path.display())))?;
            flags |= flag;
        }
    }
    if flags.is_empty() {
        return Ok(());
    }
    let hostname = hostname.to_string();
    // unshare changes only the calling thread's IPC and UTS namespaces:
    // the daemon's other threads never leave the host's.
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(flags)?;
        if uts.is_some() {
            nix::unistd::sethostname(&hostname)?;
        }
        for (pin, kind) in [(&ipc, "ipc"), (&uts, "uts")] {
            if let Some(path) = pin {
                nix::mount::mount(
                    Some(format!("/proc/thread-self/ns/{kind}").as_str()),
                    path,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )?;
            }
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the pinning thread panicked")))
    .map_err(|e| Error::Failed(format!("cannot make the pod's IPC/UTS namespaces: {e}")))
}

/// Starts the process that holds a pod's PID namespace (see the module's
/// doc); its pid. It is reaped when the pod stops.
fn hold_pid_namespace(cri: &Cri) -> Result<u32> {
    let child = std::process::Command::new("unshare")
        .args(["--fork", "--pid", "--kill-child", "sleep", "infinity"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::Failed(format!(
                "cannot start unshare (util-linux) to hold the pod's PID namespace: {e}"
            ))
        })?;
    let pid = child.id();
    // The namespace exists once the init is forked: until then
    // pid_for_children names the host's.
    let own = std::fs::read_link("/proc/self/ns/pid").ok();
    for _ in 0..200 {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let namespace = std::fs::read_link(format!("/proc/{pid}/ns/pid_for_children")).ok();
        if !children.trim().is_empty() && namespace.is_some() && namespace != own {
            cri.holders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pid, child);
            return Ok(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    Err(Error::Failed(
        "the pod's PID namespace holder did not start".into(),
    ))
}

/// Ends a PID namespace holder (and so every process in the namespace).
fn release_pid_namespace(cri: &Cri, pid: u32) {
    let child = cri
        .holders
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid);
    match child {
        Some(mut child) => {
            let _ = child.kill();
            let _ = child.wait();
        }
        None => {
            // Started by an earlier run of the daemon: not our child to
            // reap, but still ours to end if it is still `unshare`.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "unshare" {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn unpin(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Takes the pod's network down and unpins its namespaces; what is not
/// there is fine.
async fn teardown(cri: &Cri, record: &PodRecord) {
    if record.pid_holder != 0 {
        release_pid_namespace(cri, record.pid_holder);
    }
    let networks = cri.networks.clone();
    let record = record.clone();
    let done = tokio::task::spawn_blocking(move || {
        let disconnected = networks.disconnect(&record.id);
        for pin in [record.dir.join("ns/ipc"), record.dir.join("ns/uts")] {
            unpin(&pin);
        }
        disconnected
    })
    .await;
    if let Ok(Err(e)) = done {
        eprintln!("berth-imaged: cri: pod network teardown: {e}");
    }
}

/// StopPodSandbox: its containers killed, its network and namespaces gone;
/// an unknown pod is no error.
pub async fn stop(cri: &Cri, id: &str) -> Result<()> {
    let Some(pod) = get(cri, id)? else {
        return Ok(());
    };
    let lock = cri.pod_lock(&pod.id);
    let _held = lock.lock().await;
    for container in super::container::of_pod(cri, &pod.id)? {
        super::container::stop(cri, &container.id, 0).await?;
    }
    teardown(cri, &pod).await;
    cri.db.write(|txn| {
        if let Some(mut record) = txn.get::<PodRecord>(Table::PodSandboxes, &pod.id)? {
            record.ready = false;
            record.pid_holder = 0;
            txn.put(Table::PodSandboxes, &pod.id, &record)?;
        }
        Ok::<_, Error>(())
    })
}

/// RemovePodSandbox: stopped first, then its containers, files and
/// record; an unknown pod is no error.
pub async fn remove(cri: &Cri, id: &str) -> Result<()> {
    let Some(pod) = get(cri, id)? else {
        return Ok(());
    };
    stop(cri, &pod.id).await?;
    let lock = cri.pod_lock(&pod.id);
    let _held = lock.lock().await;
    for container in super::container::of_pod(cri, &pod.id)? {
        super::container::remove(cri, &container.id).await?;
    }
    let dir = pod.dir.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    cri.db.write(|txn| {
        txn.delete(Table::PodSandboxes, &pod.id)?;
        Ok::<_, Error>(())
    })?;
    cri.forget_pod_lock(&pod.id);
    Ok(())
}

pub fn status(cri: &Cri, pod: &PodRecord) -> cri::PodSandboxStatus {
    let config = pod.config();
    let _ = cri;
    cri::PodSandboxStatus {
        id: pod.id.clone(),
        metadata: config.metadata.clone(),
        state: pod.state() as i32,
        created_at: pod.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: pod.ip.clone(),
            additional_ips: Vec::new(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(pod.options()),
            }),
        }),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        runtime_handler: pod.runtime_handler.clone(),
    }
}

/// ListPodSandbox with its filter (id or prefix, state, labels).
pub fn filtered(cri: &Cri, filter: Option<&cri::PodSandboxFilter>) -> Result<Vec<cri::PodSandbox>> {
    let mut out = Vec::new();
    for pod in list(cri)? {
        let config = pod.config();
        if let Some(f) = filter {
            if !f.id.is_empty() && !pod.id.starts_with(&f.id) {
                continue;
            }
            if f.state
                .as_ref()
                .is_some_and(|s| s.state != pod.state() as i32)
            {
                continue;
            }
            if !super::matches_labels(&config.labels, &f.label_selector) {
                continue;
            }
        }
        out.push(cri::PodSandbox {
            id: pod.id.clone(),
            metadata: config.metadata,
            state: pod.state() as i32,
            created_at: pod.created_at,
            labels: config.labels,
            annotations: config.annotations,
            runtime_handler: pod.runtime_handler.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_ports_are_mapped_and_sctp_is_refused() {
        let tcp = cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        };
        let documentation = cri::PortMapping {
            host_port: 0,
            ..tcp.clone()
        };
        let mapped = port_mappings(&[tcp.clone(), documentation]).unwrap();
        assert_eq!(mapped.len(), 1);
        assert_eq!((mapped[0].host_port, mapped[0].container_port), (8080, 80));
        assert_eq!(mapped[0].protocol, "tcp");
        let sctp = cri::PortMapping {
            protocol: cri::Protocol::Sctp as i32,
            ..tcp.clone()
        };
        assert!(matches!(port_mappings(&[sctp]), Err(Error::Unsupported(_))));
        let bad = cri::PortMapping {
            container_port: 70000,
            ..tcp
        };
        assert!(matches!(port_mappings(&[bad]), Err(Error::Invalid(_))));
    }

    #[test]
    fn pods_without_namespace_options_share_everything_but_pid() {
        let record = PodRecord {
            id: "p".into(),
            config: cri::PodSandboxConfig::default().encode_to_vec(),
            runtime_handler: String::new(),
            created_at: 0,
            ready: true,
            dir: PathBuf::from("/pods/p"),
            ip: String::new(),
            pid_holder: 0,
        };
        assert!(!record.host_network());
        assert_eq!(record.ipc_pin(), Some(PathBuf::from("/pods/p/ns/ipc")));
        assert_eq!(record.uts_pin(), Some(PathBuf::from("/pods/p/ns/uts")));
    }
}
