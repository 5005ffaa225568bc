//! Bundles: the `config.json` a container runs with, generated from its
//! image's config and the client's `docker run` settings, with docker's
//! safe defaults (every namespace but user, the usual mounts, masked and
//! read-only paths, docker's default capabilities, podman's default seccomp
//! profile resolved for those capabilities).
//!
//! The image's `/etc/passwd` and `/etc/group` are read from its layers,
//! topmost first, each opened inside its layer directory
//! (`RESOLVE_IN_ROOT`): a hostile image cannot point them at host files.
//!
//! The parts: [`runtime_spec`] builds the spec as a typed value
//! ([`berth_oci::spec::Spec`], what the runtime reads it with, checked as the
//! runtime checks it) and writes it as JSON ([`spec`]); [`users`] resolves
//! the user in the image; [`etc`] writes the network files the spec mounts.

use std::path::{Path, PathBuf};

use berth_proto::v1 as pb;
use serde_json::Value;

mod etc;
mod runtime_spec;
mod users;

pub use etc::{write_etc_files, write_hosts, EtcNetwork};
pub use runtime_spec::{build, limit_resources, resources, spec};
pub use users::{read_image_file, resolve_user};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unable to find user {0}: no matching entries in the image's passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in the image's group file")]
    NoGroup(String),
    #[error("the image has no command to run: give one (or an entrypoint)")]
    NoCommand,
    #[error("invalid environment entry {0:?}: use KEY=VALUE")]
    Env(String),
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    // docker's words.
    #[error("range of CPUs is from 0.01 to {available}.00, as there are only {available} CPUs available (asked for {asked})")]
    TooManyCpus { asked: f64, available: usize },
    #[error("seccomp profile: {0}")]
    Seccomp(String),
    #[error("capability {0:?} is not one the kernel knows")]
    Capability(String),
    #[error("the container's spec is not one the runtime accepts: {0}")]
    Spec(String),
}

type Result<T> = std::result::Result<T, Error>;

/// What an image gives a container to run by default: berth's subset of
/// the image config's `config` object (user, environment, entrypoint and
/// command, working directory, stop signal, exposed ports), not an OCI
/// document of its own (that is [`berth_oci::image::Config`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunDefaults {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    /// `ExposedPorts`: (port, "tcp" | "udp").
    pub exposed_ports: Vec<(u16, String)>,
}

impl RunDefaults {
    /// From the image config blob (the whole JSON document, read as Go
    /// writes it: `null` lists are empty).
    pub fn from_blob(blob: &Value) -> RunDefaults {
        let config = serde_json::to_vec(blob)
            .ok()
            .and_then(|bytes| berth_oci::image::parse_run_config(&bytes).ok())
            .unwrap_or_default();
        RunDefaults::from_config(&config)
    }

    /// From the `config` object of an image configuration.
    pub fn from_config(config: &berth_oci::image::Config) -> RunDefaults {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
        let mut exposed_ports: Vec<(u16, String)> = list(config.exposed_ports())
            .iter()
            .filter_map(|key| {
                let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
                Some((port.parse().ok()?, protocol.to_string()))
            })
            .collect();
        // oci-spec keeps them in a hash map: the order a listing shows is ours.
        exposed_ports.sort();
        RunDefaults {
            user: text(config.user()),
            env: list(config.env()),
            entrypoint: list(config.entrypoint()),
            cmd: list(config.cmd()),
            working_dir: text(config.working_dir()),
            stop_signal: text(config.stop_signal()),
            exposed_ports,
        }
    }
}

/// A mount with its host source resolved (volumes to their directories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    pub kind: pb::container_mount::Kind,
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

pub use berth_oci::kernel_names::DOCKER_DEFAULT_CAPABILITIES as DOCKER_CAPS;

/// Everything a spec is made from.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub id: &'a str,
    pub settings: &'a pb::ContainerConfig,
    pub image: &'a RunDefaults,
    /// The image's layer directories, topmost first.
    pub layers: &'a [PathBuf],
    pub mounts: &'a [ResolvedMount],
    /// The engines' default seccomp profile (containers-common's format).
    pub default_seccomp: Option<&'a std::sync::Arc<Value>>,
    /// Files the daemon writes for the container (hosts, hostname, resolv.conf).
    pub bundle: &'a Path,
    /// The network namespace to join (a pinned one, or another
    /// container's); `None`: a new one, or the host's with `host_network`.
    pub netns: Option<&'a Path>,
    pub host_network: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(files: &[(&str, &str)]) -> tempdir::TempDir {
        let dir = tempdir::TempDir::new();
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        dir
    }

    mod tempdir {
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new() -> TempDir {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let dir = std::env::temp_dir()
                    .join(format!("berth-bundle-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                TempDir(dir)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\napp:x:1000:\naudio:x:29:app\nvideo:x:44:app,www\n";

    #[test]
    fn users_resolve_through_the_image_files() {
        let base = layer(&[("etc/passwd", PASSWD), ("etc/group", GROUP)]);
        let layers = vec![base.path().to_path_buf()];
        assert_eq!(resolve_user("", &layers).unwrap(), (0, 0, vec![]));
        assert_eq!(
            resolve_user("app", &layers).unwrap(),
            (1000, 1000, vec![29, 44])
        );
        assert_eq!(
            resolve_user("www:video", &layers).unwrap(),
            (33, 44, vec![])
        );
        assert_eq!(
            resolve_user("1000", &layers).unwrap(),
            (1000, 1000, vec![29, 44])
        );
        assert_eq!(resolve_user("4242", &layers).unwrap(), (4242, 0, vec![]));
        assert_eq!(resolve_user("4242:7", &layers).unwrap(), (4242, 7, vec![]));
        assert!(matches!(
            resolve_user("nobody", &layers),
            Err(Error::NoUser(_))
        ));
        assert!(matches!(
            resolve_user("app:nogroup", &layers),
            Err(Error::NoGroup(_))
        ));
    }

    #[test]
    fn upper_layers_win_and_whiteouts_hide() {
        let base = layer(&[("etc/passwd", PASSWD)]);
        let top = layer(&[(
            "etc/passwd",
            "root:x:0:0::/:/bin/sh\nnew:x:5:6::/:/bin/sh\n",
        )]);
        let layers = vec![top.path().to_path_buf(), base.path().to_path_buf()];
        assert_eq!(resolve_user("new", &layers).unwrap(), (5, 6, vec![]));
        assert!(resolve_user("app", &layers).is_err());
        let gone = layer(&[("etc/.wh.passwd", "")]);
        let layers = vec![gone.path().to_path_buf(), base.path().to_path_buf()];
        assert!(read_image_file(&layers, "etc/passwd").is_none());
    }

    #[test]
    fn a_symlinked_passwd_cannot_reach_the_host() {
        let evil = layer(&[]);
        std::fs::create_dir_all(evil.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", evil.path().join("etc/passwd")).unwrap();
        // Resolved inside the layer: /etc/shadow of the layer, which is absent.
        assert!(read_image_file(&[evil.path().to_path_buf()], "etc/passwd").is_none());
    }

    fn settings() -> pb::ContainerConfig {
        pb::ContainerConfig {
            image: "busybox".into(),
            seccomp_profile: "unconfined".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_spec_follows_the_image_and_the_overrides() {
        let base = layer(&[("etc/passwd", PASSWD), ("etc/group", GROUP)]);
        let layers = vec![base.path().to_path_buf()];
        let image = RunDefaults {
            user: "app".into(),
            env: vec!["PATH=/image/bin".into(), "A=1".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            working_dir: "/work".into(),
            stop_signal: String::new(),
            exposed_ports: Vec::new(),
        };
        let mut s = settings();
        s.env = vec!["A=2".into(), "B=3".into()];
        s.resources = Some(pb::Resources {
            memory: 64 << 20,
            nano_cpus: 1_500_000_000,
            pids_limit: 100,
        });
        s.cap_drop = vec!["net_raw".into()];
        s.cap_add = vec!["SYS_PTRACE".into()];
        let inputs = Inputs {
            id: "0123456789abcdef",
            settings: &s,
            image: &image,
            layers: &layers,
            mounts: &[],
            default_seccomp: None,
            bundle: base.path(),
            netns: None,
            host_network: false,
        };
        let generated = spec(&inputs).unwrap();
        let p = &generated["process"];
        assert_eq!(p["args"], json!(["/entry", "default"]));
        assert_eq!(
            p["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [29, 44]})
        );
        assert_eq!(p["cwd"], "/work");
        assert_eq!(
            p["env"],
            json!(["PATH=/image/bin", "HOSTNAME=0123456789ab", "A=2", "B=3"])
        );
        let caps: Vec<&str> = p["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(caps.contains(&"CAP_SYS_PTRACE") && !caps.contains(&"CAP_NET_RAW"));
        assert_eq!(generated["hostname"], "0123456789ab");
        let r = &generated["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["cpu"], json!({"quota": 150000, "period": 100000}));
        assert_eq!(r["pids"]["limit"], 100);
        assert!(generated["linux"].get("seccomp").is_none());

        // Arguments replace cmd; an entrypoint override drops the image's cmd.
        let mut s = settings();
        s.args = vec!["echo".into(), "hi".into()];
        let spec2 = spec(&Inputs {
            settings: &s,
            ..inputs
        })
        .unwrap();
        assert_eq!(spec2["process"]["args"], json!(["/entry", "echo", "hi"]));
        let mut s = settings();
        s.entrypoint_set = true;
        s.entrypoint = vec!["/bin/sh".into()];
        let spec3 = spec(&Inputs {
            settings: &s,
            ..inputs
        })
        .unwrap();
        assert_eq!(spec3["process"]["args"], json!(["/bin/sh"]));
    }

    #[test]
    fn bad_settings_are_refused() {
        let base = layer(&[("etc/passwd", PASSWD)]);
        let layers = vec![base.path().to_path_buf()];
        let image = RunDefaults {
            cmd: vec!["sh".into()],
            ..Default::default()
        };
        let check = |s: pb::ContainerConfig| {
            spec(&Inputs {
                id: "x",
                settings: &s,
                image: &image,
                layers: &layers,
                mounts: &[],
                default_seccomp: None,
                bundle: base.path(),
                netns: None,
                host_network: false,
            })
        };
        let mut s = settings();
        s.env = vec!["NOEQUALS".into()];
        assert!(matches!(check(s), Err(Error::Env(_))));
        let mut s = settings();
        s.cap_add = vec!["CAP_MAKE_COFFEE".into()];
        assert!(matches!(check(s), Err(Error::Capability(_))));
        let mut s = settings();
        s.resources = Some(pb::Resources {
            memory: 1024,
            ..Default::default()
        });
        assert!(matches!(check(s), Err(Error::Invalid { .. })));
        // Seccomp by default needs a profile: never silently unconfined.
        let mut s = settings();
        s.seccomp_profile = String::new();
        assert!(matches!(check(s), Err(Error::Seccomp(_))));
        let empty = RunDefaults::default();
        let s = settings();
        assert!(matches!(
            spec(&Inputs {
                id: "x",
                settings: &s,
                image: &empty,
                layers: &layers,
                mounts: &[],
                default_seccomp: None,
                bundle: base.path(),
                netns: None,
                host_network: false,
            }),
            Err(Error::NoCommand)
        ));
    }
}
