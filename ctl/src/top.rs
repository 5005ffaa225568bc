//! `berthctl top CONTAINER`: the container's processes (the daemon's
//! `Tasks.Pids`), each described from `/proc` of this host, where the
//! daemon's containers run (its socket is a local one).

use anyhow::Result;
use berth_proto::v1 as pb;

use crate::cli::TopArgs;
use crate::client::{rpc, Daemon};

/// uid, ppid and command line of a host pid, or `None` once it has exited.
fn describe(pid: u32) -> Option<(String, String, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("?")
            .to_string()
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut cmd = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if cmd.is_empty() {
        cmd = format!("[{}]", field("Name:"));
    }
    Some((field("Uid:"), field("PPid:"), cmd))
}

pub async fn top(d: &Daemon, args: &TopArgs) -> Result<i32> {
    let pids = d
        .tasks()
        .pids(pb::PidsRequest {
            container_id: args.container.clone(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .pids;
    println!("{:<8}{:<10}{:<10}CMD", "UID", "PID", "PPID");
    for pid in pids {
        if let Some((uid, ppid, cmd)) = describe(pid) {
            println!("{uid:<8}{pid:<10}{ppid:<10}{cmd}");
        }
    }
    Ok(0)
}
