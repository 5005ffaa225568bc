//! `commit`, `diff` and `wait`: a container's changes as an image or a
//! list, and its exit status once it has one.

use anyhow::{Context, Result};
use berth_proto::v1 as pb;

use crate::cli::{CommitArgs, DiffArgs, WaitArgs};
use crate::client::{rpc, Daemon};

pub async fn commit(d: &Daemon, args: &CommitArgs) -> Result<i32> {
    let id = d
        .builds()
        .commit(pb::CommitRequest {
            container: args.container.clone(),
            name: args.name.clone().unwrap_or_default(),
            message: args.message.clone().unwrap_or_default(),
            author: args.author.clone().unwrap_or_default(),
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("cannot commit {}", args.container))?
        .into_inner()
        .image_id;
    println!("{id}");
    Ok(0)
}

pub async fn diff(d: &Daemon, args: &DiffArgs) -> Result<i32> {
    let changes = d
        .builds()
        .diff(pb::DiffRequest {
            container: args.container.clone(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .changes;
    for c in changes {
        println!("{} {}", c.kind, c.path);
    }
    Ok(0)
}

/// Prints each container's exit status once it has exited.
pub async fn wait(d: &Daemon, args: &WaitArgs) -> Result<i32> {
    let mut failed = false;
    for container in &args.containers {
        match d
            .tasks()
            .wait(pb::WaitTaskRequest {
                container_id: container.clone(),
                exec_id: String::new(),
            })
            .await
        {
            Ok(r) => println!("{}", r.into_inner().exit_status),
            Err(status) => {
                eprintln!("berthctl: cannot wait for {container}: {:#}", rpc(status));
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}
