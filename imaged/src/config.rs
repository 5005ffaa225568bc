//! The daemon's configuration: a TOML file (`--config`), overridden by flags.
//!
//! ```toml
//! root = "/var/lib/berth"            # content, snapshots, meta.redb
//! state = "/run/berth-imaged"        # what ends with the machine (a tmpfs)
//! socket = "/run/berth/berth.sock"   # the gRPC socket
//! insecure_registries = ["registry.lan:5000"]   # plain http (loopback always is)
//! registry_config = "/root/.docker/config.json" # credentials, docker's format
//! registry_connect_timeout = 30      # seconds to connect to a registry
//! registry_read_timeout = 60         # seconds a registry may stay silent mid-response
//! gc_interval = 600                  # seconds between sweeps of unused blobs (0: never)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

pub const DEFAULT_ROOT: &str = "/var/lib/berth";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_root")]
    pub root: PathBuf,
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    #[serde(default)]
    pub registry_config: Option<PathBuf>,
    /// The shim binary (a name on PATH or a path).
    #[serde(default = "default_shim")]
    pub shim: String,
    /// The OCI runtime the shim drives.
    #[serde(default = "default_runtime")]
    pub runtime: String,
    /// The runtime's state root (its `--root`).
    #[serde(default = "default_runtime_root")]
    pub runtime_root: PathBuf,
    /// What ends with the machine, best on a tmpfs (as /run is on most
    /// hosts): the bundles of containers removed at their exit
    /// (`bundles/`), made and removed with every `run --rm`. It serves
    /// one root (`root` names it): a daemon with another root needs its own.
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// The ttrpc socket shims publish events to; default: beside `socket`.
    #[serde(default)]
    pub events_socket: Option<PathBuf>,
    /// The engines' default seccomp profile (containers-common's format).
    #[serde(default = "default_seccomp")]
    pub seccomp_profile: PathBuf,
    /// Rotate a container's log past this many bytes.
    #[serde(default = "default_max_log")]
    pub max_log_size: u64,
    /// The network of containers that name none: "bridge" (docker's
    /// default), "none", "host" or a network's name.
    #[serde(default = "default_network")]
    pub default_network: String,
    /// The subnet of the `bridge` network when it is first made; default:
    /// the first of docker's pools clear of the host's routes.
    #[serde(default)]
    pub bridge_subnet: Option<String>,
    /// Where the CNI plugins are (Debian's containernetworking-plugins).
    #[serde(default = "default_cni_path")]
    pub cni_path: PathBuf,
    /// Pinned network namespaces and address leases; default: `net/`
    /// beside the socket (they end with the machine, as /run does).
    #[serde(default)]
    pub net_state: Option<PathBuf>,
    /// Seconds to wait for a registry to accept a connection.
    #[serde(default = "default_connect_timeout")]
    pub registry_connect_timeout: u64,
    /// Seconds a registry may send nothing in the middle of a response
    /// before the pull fails (and can be resumed).
    #[serde(default = "default_read_timeout")]
    pub registry_read_timeout: u64,
    /// Seconds between sweeps that remove blobs no image uses (left by
    /// failed pulls); 0 turns them off.
    #[serde(default = "default_gc_interval")]
    pub gc_interval: u64,
    /// The CRI v1 socket (kubelet, crictl); default: `cri.sock` beside
    /// `socket` (`/run/berth/cri.sock`).
    #[serde(default)]
    pub cri_socket: Option<PathBuf>,
    /// Registry mirrors for CRI pulls: a registry host (`registry.k8s.io`)
    /// → the hosts to pull its images from instead, tried in order; the
    /// image keeps the name it was asked by.
    #[serde(default)]
    pub registry_mirrors: std::collections::BTreeMap<String, Vec<String>>,
    /// Images CRI reports `pinned` (kubelet never garbage-collects them):
    /// the cluster's sandbox image (`registry.k8s.io/pause:3.9`) and any
    /// other to keep; by name, `repo@digest` or id.
    #[serde(default)]
    pub pinned_images: Vec<String>,
}

fn default_connect_timeout() -> u64 {
    crate::registry::Timeouts::default().connect.as_secs()
}

fn default_read_timeout() -> u64 {
    crate::registry::Timeouts::default().read.as_secs()
}

fn default_gc_interval() -> u64 {
    600
}

fn default_shim() -> String {
    "containerd-shim-berth-v2".into()
}

fn default_runtime() -> String {
    "berth".into()
}

fn default_runtime_root() -> PathBuf {
    PathBuf::from("/run/berth-imaged/runtime")
}

fn default_state() -> PathBuf {
    PathBuf::from("/run/berth-imaged")
}

pub const DEFAULT_SECCOMP: &str =
    "/usr/share/gocode/src/github.com/containers/common/pkg/seccomp/seccomp.json";

fn default_seccomp() -> PathBuf {
    PathBuf::from(DEFAULT_SECCOMP)
}

fn default_max_log() -> u64 {
    crate::logs::DEFAULT_MAX_LOG
}

fn default_network() -> String {
    "bridge".into()
}

fn default_cni_path() -> PathBuf {
    PathBuf::from("/usr/lib/cni")
}

fn default_root() -> PathBuf {
    PathBuf::from(DEFAULT_ROOT)
}

fn default_socket() -> PathBuf {
    // /run/berth is also the runtime's state root (one directory per
    // container id); a socket file cannot collide with a container, whose
    // ids the runtime keeps as directories.
    PathBuf::from(berth_proto::DEFAULT_SOCKET)
}

impl Default for Config {
    fn default() -> Config {
        Config {
            root: default_root(),
            socket: default_socket(),
            insecure_registries: Vec::new(),
            registry_config: None,
            shim: default_shim(),
            runtime: default_runtime(),
            runtime_root: default_runtime_root(),
            state: default_state(),
            events_socket: None,
            seccomp_profile: default_seccomp(),
            max_log_size: default_max_log(),
            default_network: default_network(),
            bridge_subnet: None,
            cni_path: default_cni_path(),
            net_state: None,
            registry_connect_timeout: default_connect_timeout(),
            registry_read_timeout: default_read_timeout(),
            gc_interval: default_gc_interval(),
            cri_socket: None,
            registry_mirrors: Default::default(),
            pinned_images: Vec::new(),
        }
    }
}

impl Config {
    /// The events socket: configured, or `berth-events.sock` beside the gRPC socket.
    pub fn events_socket(&self) -> PathBuf {
        self.events_socket.clone().unwrap_or_else(|| {
            self.socket
                .parent()
                .unwrap_or(Path::new("/run/berth"))
                .join("berth-events.sock")
        })
    }

    /// The CRI socket: configured, or `cri.sock` beside the gRPC socket.
    pub fn cri_socket(&self) -> PathBuf {
        self.cri_socket.clone().unwrap_or_else(|| {
            self.socket
                .parent()
                .unwrap_or(Path::new("/run/berth"))
                .join("cri.sock")
        })
    }

    /// The network state directory: configured, or `net/` beside the socket.
    pub fn net_state(&self) -> PathBuf {
        self.net_state.clone().unwrap_or_else(|| {
            self.socket
                .parent()
                .unwrap_or(Path::new("/run/berth"))
                .join("net")
        })
    }

    /// The registry timeouts; a zero is taken as one second (no timeout
    /// would let one silent registry hold a pull for ever).
    pub fn registry_timeouts(&self) -> crate::registry::Timeouts {
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        crate::registry::Timeouts {
            connect: secs(self.registry_connect_timeout),
            read: secs(self.registry_read_timeout),
        }
    }

    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| Error::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_fields_and_defaults() {
        let c: Config = toml::from_str("root = \"/x\"\ninsecure_registries = [\"a:1\"]").unwrap();
        assert_eq!(c.root, PathBuf::from("/x"));
        assert_eq!(c.socket, PathBuf::from("/run/berth/berth.sock"));
        assert_eq!(c.insecure_registries, vec!["a:1".to_string()]);
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        assert_eq!(c.registry_timeouts(), crate::registry::Timeouts::default());
        let c: Config = toml::from_str("registry_read_timeout = 5\ngc_interval = 0").unwrap();
        assert_eq!(c.registry_timeouts().read.as_secs(), 5);
        assert_eq!(c.gc_interval, 0);
    }
}
