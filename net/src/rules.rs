//! A network's own iptables rules, made once per network rather than once
//! per container: outbound NAT for its subnet and forwarding to and from
//! its bridge (replies, and connections to its published ports), as docker
//! keeps them, so they hold under a FORWARD policy of DROP too. The `bridge` plugin's `ipMasq` and the
//! `firewall` plugin would add (and remove) a chain of rules for every
//! container, each an iptables process under the xtables lock: the most
//! expensive part of joining a network.
//!
//! Every rule carries the comment `berth:NETWORK`, is added only when
//! `iptables -C` does not find it (so `ensure` is idempotent, at every
//! daemon start too), and is deleted by `remove`.

use std::process::Command;

use crate::network::Network;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run iptables (install it): {0}")]
    Spawn(std::io::Error),
    #[error("iptables {args}: {output}")]
    Failed { args: String, output: String },
}

/// (table, chain, rule) of a network.
fn rules(network: &Network) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let subnet = network.subnet.to_string();
    let bridge = network.bridge.clone();
    let comment = format!("berth:{}", network.name);
    let tagged = |mut rule: Vec<String>| {
        rule.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            comment.clone(),
        ]);
        rule
    };
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    vec![
        (
            "nat",
            "POSTROUTING",
            tagged(words(&format!("-s {subnet} ! -d {subnet} -j MASQUERADE"))),
        ),
        (
            "filter",
            "FORWARD",
            tagged(words(&format!(
                "-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            ))),
        ),
        // Published ports: connections the portmap rules DNATed to it.
        (
            "filter",
            "FORWARD",
            tagged(words(&format!(
                "-o {bridge} -m conntrack --ctstate DNAT -j ACCEPT"
            ))),
        ),
        (
            "filter",
            "FORWARD",
            tagged(words(&format!("-i {bridge} -j ACCEPT"))),
        ),
    ]
}

fn iptables(args: &[String]) -> Result<std::process::Output, Error> {
    Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(Error::Spawn)
}

/// Makes the network's rules if they are not there.
pub fn ensure(network: &Network) -> Result<(), Error> {
    for (table, chain, rule) in rules(network) {
        let mut check = vec!["-t".to_string(), table.into(), "-C".into(), chain.into()];
        check.extend(rule.iter().cloned());
        if iptables(&check)?.status.success() {
            continue;
        }
        let mut add = vec!["-t".to_string(), table.into(), "-A".into(), chain.into()];
        add.extend(rule);
        let out = iptables(&add)?;
        if !out.status.success() {
            return Err(Error::Failed {
                args: add.join(" "),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Deletes the network's rules (every copy); missing ones are fine.
pub fn remove(network: &Network) {
    for (table, chain, rule) in rules(network) {
        let mut delete = vec!["-t".to_string(), table.into(), "-D".into(), chain.into()];
        delete.extend(rule);
        while iptables(&delete).is_ok_and(|out| out.status.success()) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_names_its_network_and_stays_on_its_subnet_and_bridge() {
        let net = Network::new("web", &"ab".repeat(32), "10.90.0.0/24".parse().unwrap());
        let all = rules(&net);
        assert_eq!(all.len(), 4);
        for (_, _, rule) in &all {
            assert!(rule.ends_with(&["--comment".to_string(), "berth:web".to_string()]));
        }
        assert_eq!(
            all[0].2[..6].join(" "),
            "-s 10.90.0.0/24 ! -d 10.90.0.0/24 -j"
        );
        assert!(all[3]
            .2
            .join(" ")
            .starts_with("-i br-abababababab -j ACCEPT"));
    }
}
