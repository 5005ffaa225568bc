//! `commit`, `import`, `diff`, `wait` and `rename`: a container's changes
//! (or a root filesystem tar) as an image, its changes as a list, its exit
//! status once it has one, and its name.

use anyhow::{Context, Result};
use berth_proto::v1 as pb;

use crate::cli::{CommitArgs, DiffArgs, ImportArgs, RenameArgs, WaitArgs};
use crate::client::{rpc, Daemon};
use crate::exit::Coded;

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

/// `import FILE|- [NAME]`: prints the new image's ID, as docker does.
pub async fn import(d: &Daemon, args: &ImportArgs) -> Result<i32> {
    use std::io::IsTerminal;
    let input: Box<dyn std::io::Read + Send> = if args.file == "-" {
        if std::io::stdin().is_terminal() {
            anyhow::bail!("no tar on stdin: give a FILE or redirect a tar to stdin");
        }
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("cannot open {}", args.file))?,
        )
    };
    let options = pb::ImportRootfsOptions {
        name: args.name.clone().unwrap_or_default(),
        changes: args.change.clone(),
        message: args.message.clone().unwrap_or_default(),
    };
    let (stream, reader) =
        crate::images::send_chunks(input, move |first, data| pb::ImportRootfsRequest {
            options: first.then(|| options.clone()),
            data,
        });
    let result = d.builds().import(stream).await;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the tar reader panicked"))?
        .context("cannot read the tar")?;
    let id = result
        .map_err(rpc)
        .context("cannot import")?
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

/// Renames a container; a refusal exits 1, as docker's does.
pub async fn rename(d: &Daemon, args: &RenameArgs) -> Result<i32> {
    d.containers()
        .rename(pb::RenameContainerRequest {
            id: args.container.clone(),
            name: args.name.clone(),
        })
        .await
        .map_err(|status| Coded {
            code: 1,
            error: rpc(status).context(format!("cannot rename {}", args.container)),
        })?;
    Ok(0)
}
