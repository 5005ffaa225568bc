//! One CNI plugin run, by the CNI 1.0 contract: the command and the
//! container in the environment (`CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH`), the network's config on stdin,
//! and on stdout a result (ADD) or an error object whose `msg` and
//! `details` are the plugin's own words, shown to the user as they are.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version of the spec berth speaks (Debian's plugins speak it too).
pub const VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CNI plugin {plugin} not found in {path} (install containernetworking-plugins)")]
    NotFound { plugin: String, path: PathBuf },
    #[error("CNI plugin {plugin}: cannot run it: {source}")]
    Spawn {
        plugin: String,
        source: std::io::Error,
    },
    /// The plugin's own error object.
    #[error("CNI plugin {plugin} failed ({command}): {msg}{}", details_suffix(.details))]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} ({command}) exited with {status}: {output}")]
    Failed {
        plugin: String,
        command: &'static str,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("CNI plugin {plugin} ({command}) printed a result berth cannot read: {detail}")]
    Result {
        plugin: String,
        command: &'static str,
        detail: String,
    },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}

/// What a plugin is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Check,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
        }
    }
}

/// The container side of a run.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub container_id: &'a str,
    /// The pinned namespace; DEL may name one that is gone.
    pub netns: &'a Path,
    pub ifname: &'a str,
}

/// An ADD's result (the parts berth reads; the rest is kept in `raw` to
/// be handed to the next plugin and to DEL as `prevResult`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip)]
    pub raw: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR: `10.88.0.2/16`.
    pub address: String,
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub interface: Option<usize>,
}

impl Outcome {
    fn parse(plugin: &str, command: &'static str, stdout: &[u8]) -> Result<Outcome, Error> {
        let raw: Value = serde_json::from_slice(stdout).map_err(|e| Error::Result {
            plugin: plugin.to_string(),
            command,
            detail: e.to_string(),
        })?;
        let mut outcome: Outcome =
            serde_json::from_value(raw.clone()).map_err(|e| Error::Result {
                plugin: plugin.to_string(),
                command,
                detail: e.to_string(),
            })?;
        outcome.raw = raw;
        Ok(outcome)
    }

    /// The container's address on `ifname` (without the prefix length)
    /// and its gateway.
    pub fn address_of(&self, ifname: &str) -> Option<(String, String)> {
        self.ips.iter().find_map(|ip| {
            let on = ip
                .interface
                .and_then(|i| self.interfaces.get(i))
                .is_none_or(|i| i.name == ifname);
            on.then(|| {
                let address = ip.address.split('/').next().unwrap_or_default();
                (address.to_string(), ip.gateway.clone())
            })
        })
    }
}

#[derive(Deserialize)]
struct PluginError {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Runs the plugin `config["type"]` from `plugin_dir` with `config` (a
/// plugin's config, already holding `cniVersion`, `name`, and for chained
/// plugins `prevResult`). ADD returns its result; DEL and CHECK an empty
/// one.
pub fn run(
    plugin_dir: &Path,
    command: Verb,
    target: &Target,
    config: &Value,
) -> Result<Outcome, Error> {
    let plugin = config["type"].as_str().unwrap_or_default().to_string();
    let binary = plugin_dir.join(&plugin);
    if plugin.is_empty() || plugin.contains('/') || !binary.is_file() {
        return Err(Error::NotFound {
            plugin,
            path: plugin_dir.to_path_buf(),
        });
    }
    let mut child = Command::new(&binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command.name())
        .env("CNI_CONTAINERID", target.container_id)
        .env("CNI_NETNS", target.netns)
        .env("CNI_IFNAME", target.ifname)
        .env("CNI_PATH", plugin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            plugin: plugin.clone(),
            source,
        })?;
    let input = serde_json::to_vec(config).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading gives EPIPE here; its own
        // output says why.
        let _ = stdin.write_all(&input);
    }
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        plugin: plugin.clone(),
        source,
    })?;
    if !out.status.success() {
        if let Ok(e) = serde_json::from_slice::<PluginError>(&out.stdout) {
            if !e.msg.is_empty() {
                return Err(Error::Plugin {
                    plugin,
                    command: command.name(),
                    code: e.code,
                    msg: e.msg,
                    details: e.details,
                });
            }
        }
        let mut output = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            output.push_str(&format!(" {}", stderr.trim()));
        }
        return Err(Error::Failed {
            plugin,
            command: command.name(),
            status: out.status,
            output,
        });
    }
    match command {
        Verb::Add => Outcome::parse(&plugin, command.name(), &out.stdout),
        Verb::Del | Verb::Check => Ok(Outcome::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_names_the_containers_address_on_its_interface() {
        let result = br#"{"cniVersion":"1.0.0","interfaces":[{"name":"berth0","mac":"aa"},
            {"name":"veth1","mac":"bb"},{"name":"eth0","mac":"cc","sandbox":"/run/x"}],
            "ips":[{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":2}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
        let outcome = Outcome::parse("bridge", "ADD", result).unwrap();
        assert_eq!(
            outcome.address_of("eth0"),
            Some(("10.88.0.5".into(), "10.88.0.1".into()))
        );
        assert_eq!(outcome.address_of("eth1"), None);
        assert_eq!(outcome.raw["routes"][0]["dst"], "0.0.0.0/0");
    }

    #[test]
    fn a_plugins_error_is_shown_in_its_own_words() {
        let e = Error::Plugin {
            plugin: "portmap".into(),
            command: "ADD",
            code: 999,
            msg: "failed to open port".into(),
            details: "address in use".into(),
        };
        assert_eq!(
            e.to_string(),
            "CNI plugin portmap failed (ADD): failed to open port: address in use"
        );
    }
}
