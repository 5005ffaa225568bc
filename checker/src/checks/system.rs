//! `hostname`, `domainname` and `linux.sysctl`.

use crate::config::Config;
use crate::procfs;
use crate::sys;
use crate::tap::Report;

pub fn check(config: &Config, report: &mut Report) {
    check_uts(config, report);
    for (key, value) in &config.linux.sysctl {
        check_sysctl(key, value, report);
    }
}

/// An empty name in the config is not set by runc, so it is not checked.
fn check_uts(config: &Config, report: &mut Report) {
    let hostname = config.hostname.as_deref().filter(|h| !h.is_empty());
    let domainname = config.domainname.as_deref().filter(|d| !d.is_empty());
    if hostname.is_none() && domainname.is_none() {
        return;
    }
    let uname = sys::uname();
    if let Some(want) = hostname {
        let got = uname
            .as_ref()
            .map(|u| u.nodename.clone())
            .map_err(Clone::clone);
        report.compare_read(format!("hostname is {want}"), got, want.to_owned());
    }
    if let Some(want) = domainname {
        let got = uname
            .as_ref()
            .map(|u| u.domainname.clone())
            .map_err(Clone::clone);
        report.compare_read(format!("domainname is {want}"), got, want.to_owned());
    }
}

/// The kernel may print a value with other whitespace than it was written
/// with (`ip_local_port_range` reads back tab-separated).
fn check_sysctl(key: &str, value: &str, report: &mut Report) {
    let path = sysctl_path(key);
    let got = procfs::read_trimmed(&path).map(|text| normalize_space(&text));
    report.compare_read(
        format!("sysctl {key} is {value}"),
        got,
        normalize_space(value),
    );
}

/// runc writes `net.ipv4.ip_forward` to `/proc/sys/net/ipv4/ip_forward`.
pub fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

fn normalize_space(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_become_proc_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(sysctl_path("kernel.shmmax"), "/proc/sys/kernel/shmmax");
    }

    #[test]
    fn sysctl_values_compare_whitespace_insensitively() {
        assert_eq!(
            normalize_space("1024\t65000\n"),
            normalize_space("1024 65000")
        );
    }
}
