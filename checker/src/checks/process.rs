//! `process`: user and groups, umask, capabilities, rlimits,
//! noNewPrivileges, oomScoreAdj, cwd and env.

use std::collections::BTreeSet;

use crate::capabilities::{self, Sets};
use crate::config::Config;
use crate::paths;
use crate::procfs::{self, Status};
use crate::sys;
use crate::tap::Report;

pub fn check(config: &Config, report: &mut Report) {
    check_ids(config, report);
    check_groups(config, report);
    let status = Status::read();
    check_umask(config, &status, report);
    check_capabilities(config, &status, report);
    check_no_new_privileges(config, &status, report);
    check_rlimits(config, report);
    check_oom_score_adj(config, report);
    check_cwd(config, report);
    check_env(config, report);
}

fn check_ids(config: &Config, report: &mut Report) {
    let user = &config.process.user;
    let ids = sys::ids();
    report.compare(
        format!("uid and euid are {}", user.uid),
        format!("uid {} euid {}", ids.uid, ids.euid),
        format!("uid {0} euid {0}", user.uid),
    );
    report.compare(
        format!("gid and egid are {}", user.gid),
        format!("gid {} egid {}", ids.gid, ids.egid),
        format!("gid {0} egid {0}", user.gid),
    );
}

/// The supplementary groups are exactly `additionalGids` (runc passes the
/// user as `uid:gid`, so no group comes from the image's /etc/group).
fn check_groups(config: &Config, report: &mut Report) {
    let Some(configured) = &config.process.user.additional_gids else {
        return;
    };
    let want = GidSet(configured.iter().copied().collect());
    let got = sys::groups().map(|gids| GidSet(gids.into_iter().collect()));
    report.compare_read(
        format!("supplementary groups are {want}"),
        got,
        GidSet(want.0.clone()),
    );
}

#[derive(Debug, PartialEq, Eq)]
struct GidSet(BTreeSet<u32>);

impl std::fmt::Display for GidSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gids: Vec<String> = self.0.iter().map(u32::to_string).collect();
        write!(f, "[{}]", gids.join(","))
    }
}

/// runc sets umask 0022 when the config gives none.
fn check_umask(config: &Config, status: &Result<Status, String>, report: &mut Report) {
    let want = config.process.user.umask.unwrap_or(0o022);
    let got = field(status, "Umask").and_then(|text| {
        u32::from_str_radix(text, 8).map_err(|_| format!("Umask {text:?} is not octal"))
    });
    report.compare_read(
        format!("umask is {want:04o}"),
        got.map(|m| format!("{m:04o}")),
        format!("{want:04o}"),
    );
}

fn field<'a>(status: &'a Result<Status, String>, name: &str) -> Result<&'a str, String> {
    status.as_ref().map_err(Clone::clone)?.field(name)
}

/// Compares each set with what the configured sets become across the
/// runtime's execve of this checker (see [`capabilities::after_exec`]).
fn check_capabilities(config: &Config, status: &Result<Status, String>, report: &mut Report) {
    let names = &config.process.capabilities;
    let last_cap = procfs::cap_last_cap();
    let configured = Sets {
        bounding: capabilities::mask(&names.bounding, last_cap),
        effective: capabilities::mask(&names.effective, last_cap),
        permitted: capabilities::mask(&names.permitted, last_cap),
        inheritable: capabilities::mask(&names.inheritable, last_cap),
        ambient: capabilities::mask(&names.ambient, last_cap),
    };
    let user = &config.process.user;
    let want = capabilities::after_exec(configured, user.uid, config.process.no_new_privileges);
    let rows = [
        ("CapBnd", "bounding", want.bounding),
        ("CapInh", "inheritable", want.inheritable),
        ("CapPrm", "permitted", want.permitted),
        ("CapEff", "effective", want.effective),
        ("CapAmb", "ambient", want.ambient),
    ];
    for (status_name, set, want) in rows {
        let description = format!("{status_name} is the {set} set the config gives");
        match field(status, status_name).and_then(capabilities::parse_hex) {
            Ok(got) if got == want => report.pass(description),
            Ok(got) => report.fail(
                description,
                capabilities::describe_difference(got, want),
                format!("{want:#018x}"),
            ),
            Err(e) => report.fail(description, e, format!("{want:#018x}")),
        }
    }
}

fn check_no_new_privileges(config: &Config, status: &Result<Status, String>, report: &mut Report) {
    let want = if config.process.no_new_privileges {
        "1"
    } else {
        "0"
    };
    report.compare_read(
        format!("NoNewPrivs is {want}"),
        field(status, "NoNewPrivs"),
        want,
    );
}

fn check_rlimits(config: &Config, report: &mut Report) {
    for rlimit in &config.process.rlimits {
        let description = format!(
            "{} is soft {} hard {}",
            rlimit.kind, rlimit.soft, rlimit.hard
        );
        let Some(resource) = sys::rlimit_resource(&rlimit.kind) else {
            report.skip(description, "not a resource this checker knows");
            continue;
        };
        let got = sys::getrlimit(resource).map(|(soft, hard)| format!("soft {soft} hard {hard}"));
        report.compare_read(
            description,
            got,
            format!("soft {} hard {}", rlimit.soft, rlimit.hard),
        );
    }
}

fn check_oom_score_adj(config: &Config, report: &mut Report) {
    let Some(want) = config.process.oom_score_adj else {
        return;
    };
    let path = "/proc/self/oom_score_adj";
    let got = procfs::read_trimmed(path)
        .and_then(|text| text.parse::<i64>().map_err(|_| format!("{path}: {text:?}")));
    report.compare_read(format!("oom_score_adj is {want}"), got, want);
}

/// getcwd(3) gives the path with symlinks resolved, so the configured cwd
/// is resolved too before comparing.
fn check_cwd(config: &Config, report: &mut Report) {
    let cwd = &config.process.cwd;
    if cwd.is_empty() {
        return;
    }
    let want = paths::resolve(cwd);
    let got = std::env::current_dir()
        .map(|dir| dir.to_string_lossy().into_owned())
        .map_err(|e| format!("getcwd: {e}"));
    report.compare_read(format!("cwd is {}", paths::clean(cwd)), got, want);
}

/// Every `KEY=VALUE` of the config is in the environment exactly. The
/// environment may hold more (runc adds HOME when it is missing).
fn check_env(config: &Config, report: &mut Report) {
    let environment: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    for entry in &config.process.env {
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        let description = format!("env has {entry}");
        if environment.iter().any(|(k, v)| k == key && v == value) {
            report.pass(description);
            continue;
        }
        let values: Vec<&str> = environment
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        let got = if values.is_empty() {
            format!("no {key}")
        } else {
            format!("{key}={}", values.join(" and "))
        };
        report.fail(description, got, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gid_sets_ignore_order_and_duplicates() {
        let a = GidSet([10, 5, 5].into_iter().collect());
        let b = GidSet([5, 10].into_iter().collect());
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "[5,10]");
    }
}
