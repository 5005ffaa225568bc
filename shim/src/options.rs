//! Runtime options: which OCI runtime the shim runs and how.
//!
//! containerd hands them over as a protobuf `Any`, on `start`'s stdin and in
//! `Create`. Two types are understood: runc's own `containerd.runc.v1.Options`
//! (binary_name, root, systemd_cgroup, no_pivot_root, no_new_keyring), and
//! `runtimeoptions.v1.Options`, whose `config_path` names a TOML file with
//! the same keys in CRI's spelling (`BinaryName = "runc"`): that is what
//! `ctr run --runtime-config-path` sends to runtimes other than runc's shim.
//! Any other type is ignored, as containerd's runc shim does.

use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci;

/// Where the resolved options are kept in the bundle, for `delete`.
const FILE: &str = "berth-shim.json";

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("cannot decode runtime options {type_url}: {source}")]
    Decode {
        type_url: String,
        source: protobuf::Error,
    },
    #[error("cannot read runtime config {path}: {source}")]
    Config {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("runtime config {path} line {line}: {text:?} is not `Key = value`")]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("cannot write {path}: {source}")]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the shim needs to know to run the OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The runtime binary, a path or a name looked up on PATH.
    pub binary: String,
    /// The runtime's `--root`.
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
}

impl Options {
    /// berth with its state under `/run/berth-shim/<namespace>`, one root per
    /// namespace as containerd's runc shim keeps `/run/containerd/runc/<ns>`.
    pub fn defaults(namespace: &str) -> Options {
        Options {
            binary: "berth".into(),
            root: Path::new("/run/berth-shim").join(namespace),
            systemd_cgroup: false,
            no_pivot_root: false,
            no_new_keyring: false,
        }
    }

    /// Applies an encoded `Any` (as on `start`'s stdin); empty input changes nothing.
    pub fn apply_encoded(&mut self, bytes: &[u8]) -> Result<(), OptionsError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let any = Any::parse_from_bytes(bytes).map_err(|source| OptionsError::Decode {
            type_url: "google.protobuf.Any".into(),
            source,
        })?;
        self.apply(&any)
    }

    /// Applies the options an `Any` carries, if its type is one we know.
    pub fn apply(&mut self, any: &Any) -> Result<(), OptionsError> {
        let type_url = any.type_url.trim_start_matches("type.googleapis.com/");
        let decode_error = |source| OptionsError::Decode {
            type_url: type_url.to_string(),
            source,
        };
        match type_url {
            "containerd.runc.v1.Options" => {
                let o = oci::Options::parse_from_bytes(&any.value).map_err(decode_error)?;
                if !o.binary_name.is_empty() {
                    self.binary = o.binary_name;
                }
                if !o.root.is_empty() {
                    self.root = PathBuf::from(o.root);
                }
                self.systemd_cgroup = o.systemd_cgroup;
                self.no_pivot_root = o.no_pivot_root;
                self.no_new_keyring = o.no_new_keyring;
            }
            "runtimeoptions.v1.Options" => {
                let path = config_path(&any.value).map_err(decode_error)?;
                if !path.is_empty() {
                    self.apply_config_file(Path::new(&path))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies a CRI-style TOML runtime config (flat `Key = value` lines).
    pub fn apply_config_file(&mut self, path: &Path) -> Result<(), OptionsError> {
        let text = std::fs::read_to_string(path).map_err(|source| OptionsError::Config {
            path: path.to_path_buf(),
            source,
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(OptionsError::Syntax {
                    path: path.to_path_buf(),
                    line: n + 1,
                    text: line.to_string(),
                });
            };
            let value = value.trim().trim_matches('"').to_string();
            let yes = value == "true";
            match key.trim() {
                "BinaryName" | "binary_name" => self.binary = value,
                "Root" | "root" => self.root = PathBuf::from(value),
                "SystemdCgroup" | "systemd_cgroup" => self.systemd_cgroup = yes,
                "NoPivotRoot" | "no_pivot_root" => self.no_pivot_root = yes,
                "NoNewKeyring" | "no_new_keyring" => self.no_new_keyring = yes,
                _ => {}
            }
        }
        Ok(())
    }

    /// Records the options in the bundle, where `delete` finds them after
    /// the server is gone.
    pub fn save(&self, bundle: &Path) -> Result<(), OptionsError> {
        let path = bundle.join(FILE);
        let json = serde_json::json!({
            "binary": self.binary,
            "root": self.root,
            "systemd_cgroup": self.systemd_cgroup,
            "no_pivot_root": self.no_pivot_root,
            "no_new_keyring": self.no_new_keyring,
        });
        crate::write_private(&path, json.to_string())
            .map_err(|source| OptionsError::Save { path, source })
    }

    /// The options `save` recorded, or the defaults.
    pub fn load(bundle: &Path, namespace: &str) -> Options {
        let mut options = Options::defaults(namespace);
        let Ok(text) = std::fs::read(bundle.join(FILE)) else {
            return options;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&text) else {
            return options;
        };
        if let Some(binary) = json["binary"].as_str() {
            options.binary = binary.to_string();
        }
        if let Some(root) = json["root"].as_str() {
            options.root = PathBuf::from(root);
        }
        options.systemd_cgroup = json["systemd_cgroup"].as_bool().unwrap_or(false);
        options.no_pivot_root = json["no_pivot_root"].as_bool().unwrap_or(false);
        options.no_new_keyring = json["no_new_keyring"].as_bool().unwrap_or(false);
        options
    }
}

/// Field 2 (`config_path`) of `runtimeoptions.v1.Options`, a type
/// containerd-shim-protos does not carry.
fn config_path(bytes: &[u8]) -> Result<String, protobuf::Error> {
    let mut input = protobuf::CodedInputStream::from_bytes(bytes);
    let mut path = String::new();
    while let Some(tag) = input.read_raw_tag_or_eof()? {
        if tag == (2 << 3 | 2) {
            path = input.read_string()?;
        } else {
            let wire_type = protobuf::rt::WireType::new(tag & 7).ok_or_else(|| {
                protobuf::Error::from(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("wire type {} of field {}", tag & 7, tag >> 3),
                ))
            })?;
            input.skip_field(wire_type)?;
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        let mut any = Any::new();
        any.type_url = type_url.into();
        any.value = value;
        any
    }

    #[test]
    fn runc_options_set_binary_root_and_flags() {
        let mut o = oci::Options::new();
        o.binary_name = "runc".into();
        o.root = "/run/x".into();
        o.systemd_cgroup = true;
        o.no_pivot_root = true;
        let mut options = Options::defaults("default");
        let encoded = any("containerd.runc.v1.Options", o.write_to_bytes().unwrap());
        options
            .apply_encoded(&encoded.write_to_bytes().unwrap())
            .unwrap();
        assert_eq!(options.binary, "runc");
        assert_eq!(options.root, PathBuf::from("/run/x"));
        assert!(options.systemd_cgroup && options.no_pivot_root && !options.no_new_keyring);
    }

    #[test]
    fn unknown_types_and_empty_input_change_nothing() {
        let mut options = Options::defaults("ns");
        options.apply_encoded(b"").unwrap();
        options.apply(&any("example.Other", vec![1, 2, 3])).unwrap();
        assert_eq!(options, Options::defaults("ns"));
        assert_eq!(options.root, PathBuf::from("/run/berth-shim/ns"));
    }

    #[test]
    fn runtime_config_path_reads_cri_style_toml() {
        let dir = std::env::temp_dir().join(format!("berth-shim-opt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("runtime.toml");
        std::fs::write(
            &file,
            "# runc through berth's shim\nBinaryName = \"runc\"\nSystemdCgroup = false\n",
        )
        .unwrap();
        // runtimeoptions.v1.Options{type_url = 1, config_path = 2}
        let path = file.to_str().unwrap().as_bytes();
        let mut value = vec![0x0a, 1, b'x', 0x12, path.len() as u8];
        value.extend_from_slice(path);
        let mut options = Options::defaults("ns");
        options
            .apply(&any("runtimeoptions.v1.Options", value))
            .unwrap();
        assert_eq!(options.binary, "runc");
        std::fs::write(&file, "BinaryName\n").unwrap();
        let err = options.apply_config_file(&file).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        // Field 1 with wire type 7, which protobuf does not have.
        let err = options
            .apply(&any("runtimeoptions.v1.Options", vec![0x0f]))
            .unwrap_err();
        assert!(
            err.to_string().contains("runtimeoptions.v1.Options"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
