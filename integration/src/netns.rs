//! Network namespaces a test makes (`ip netns add`) to run a daemon in, so
//! that the bridges, veths and NAT rules it makes live there and the
//! machine's own network is never touched.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::{text, unique};

/// A network namespace of the test's (`ip netns add`), with loopback up;
/// deleted when dropped.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    // Making one changes the machine: not something to call a default.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Netns {
        let name = unique("berth-it-net");
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip netns add");
        assert!(out.status.success(), "ip netns add: {}", text(&out));
        let ns = Netns {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS`, which must succeed; its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("ip");
        assert!(out.status.success(), "ip {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `program ARGS` inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path.display()))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// The page at `url`, fetched from the namespace's host side.
    pub fn curl(&self, url: &str) -> Result<String, String> {
        let out = self.run("curl", &["-s", "-S", "-m", "5", url]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(text(&out))
        }
    }

    /// Host-side interfaces whose name starts with `prefix`.
    pub fn links(&self, prefix: &str) -> Vec<String> {
        self.ip(&["-br", "link"])
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// The NAT rules the portmap and bridge plugins keep per container.
    pub fn container_rules(&self) -> usize {
        let out = self.run("iptables", &["-t", "nat", "-S"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                // portmap's per-container DNAT chains, and any rule for
                // one container's address.
                l.starts_with("-A CNI-DN-") || l.contains("/32 ")
            })
            .count()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}
