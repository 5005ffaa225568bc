//! Container commands: `create`, `run`, `start`, `ps`, `exec`, `logs`,
//! `stop`, `kill`, `rm`, `pause`, `unpause`, `stats`.
//!
//! `run` is `create`, then (unless `-d`) `Attach` before `Tasks.Start` so
//! no output is missed, then the stream until the exit, whose status
//! becomes berthctl's; `--rm` removes the container afterwards whatever
//! happened.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::v1 as pb;
use serde_json::json;

use crate::attach::{self, Ended, Target};
use crate::cli::{
    AttachArgs, ContainerArgs, ExecArgs, Format, KillArgs, LogsArgs, PsArgs, RmArgs, RunArgs,
    StartArgs, StatsArgs, StopArgs,
};
use crate::client::{rpc, Daemon};
use crate::exit::Coded;
use crate::{flags, output};

/// The daemon's `ContainerConfig` from docker's flags.
pub fn config(a: &ContainerArgs) -> Result<pb::ContainerConfig> {
    let mut env = Vec::new();
    for file in &a.env_files {
        env.extend(flags::env_file(file)?);
    }
    env.extend(flags::env(&a.env)?);
    let mounts = a
        .volumes
        .iter()
        .map(|v| flags::mount(v))
        .collect::<Result<Vec<_>, _>>()?;
    let resources = pb::Resources {
        memory: a
            .memory
            .as_deref()
            .map(flags::memory)
            .transpose()?
            .unwrap_or(0),
        nano_cpus: a.cpus.as_deref().map(flags::cpus).transpose()?.unwrap_or(0),
        pids_limit: a
            .pids_limit
            .as_deref()
            .map(flags::pids_limit)
            .transpose()?
            .unwrap_or(0),
    };
    let (entrypoint, entrypoint_set) = match &a.entrypoint {
        None => (Vec::new(), false),
        Some(e) if e.is_empty() => (Vec::new(), true),
        Some(e) => (vec![e.clone()], true),
    };
    Ok(pb::ContainerConfig {
        image: a.image.clone(),
        entrypoint,
        entrypoint_set,
        args: a.command.clone(),
        env,
        working_dir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        tty: a.tty,
        stdin_open: a.interactive,
        mounts,
        volumes_from: a.volumes_from.clone(),
        resources: Some(resources),
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        seccomp_profile: flags::seccomp(&a.security_opt)?,
        network: a
            .network
            .as_deref()
            .map(flags::network)
            .transpose()?
            .unwrap_or_default(),
        restart: a.restart.as_deref().map(flags::restart).transpose()?,
        runtime: a.runtime.clone().unwrap_or_default(),
        auto_remove: false,
        transient: false,
        ports: a
            .publish
            .iter()
            .map(|p| flags::publish(p))
            .collect::<Result<_, _>>()?,
        publish_all: a.publish_all,
        extra_hosts: a
            .add_hosts
            .iter()
            .map(|h| flags::add_host(h))
            .collect::<Result<_, _>>()?,
        dns: a.dns.clone(),
        network_aliases: a.network_aliases.clone(),
        ip: a.ip.clone().unwrap_or_default(),
        more_networks: Vec::new(),
    })
}

/// `auto_remove`: the daemon removes it at its exit (run -d --rm);
/// `transient`: it is removed at its exit too, and before its attached
/// client hears of it (run --rm).
fn create_request(
    a: &ContainerArgs,
    auto_remove: bool,
    transient: bool,
) -> Result<pb::CreateContainerRequest> {
    let config = pb::ContainerConfig {
        auto_remove,
        transient,
        ..config(a)?
    };
    Ok(pb::CreateContainerRequest {
        name: a.name.clone().unwrap_or_default(),
        config: Some(config),
        labels: flags::labels(&a.labels)?,
    })
}

async fn create_container(
    d: &Daemon,
    request: pb::CreateContainerRequest,
) -> Result<pb::Container> {
    let c = d
        .containers()
        .create(request)
        .await
        .map_err(rpc)
        .context("cannot create the container")?
        .into_inner();
    Ok(c)
}

pub async fn create(d: &Daemon, a: &ContainerArgs) -> Result<i32> {
    let c = create_container(d, create_request(a, false, false)?).await?;
    println!("{}", c.id);
    Ok(0)
}

/// docker's exit codes for a process that could not be started: 127 when
/// the command does not exist, 126 when it cannot be run, else 125.
pub(crate) fn start_failed(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}").to_ascii_lowercase();
    let code = if text.contains("no such file")
        || text.contains("not found in")
        || text.contains("executable file not found")
        || text.contains("command not found")
    {
        127
    } else if text.contains("permission denied") || text.contains("is a directory") {
        126
    } else {
        125
    };
    Coded { code, error: e }.into()
}

async fn start_task(d: &Daemon, id: &str, exec_id: &str) -> Result<()> {
    d.tasks()
        .start(pb::StartTaskRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("cannot start {}", output::short_id(id)))
        .map_err(start_failed)?;
    Ok(())
}

async fn remove(d: &Daemon, id: &str, force: bool, volumes: bool) -> Result<()> {
    d.containers()
        .delete(pb::DeleteContainerRequest {
            id: id.to_string(),
            force,
            volumes,
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("cannot remove {id}"))?;
    Ok(())
}

pub async fn run(d: &Daemon, a: &RunArgs) -> Result<i32> {
    let restarts = a.container.restart.as_deref().is_some_and(|r| r != "no");
    if a.rm && restarts {
        bail!("conflicting options: --rm and --restart (a container that restarts is never done)");
    }
    if a.detach {
        // Nobody waits here for the exit: the daemon removes it.
        let c = create_container(d, create_request(&a.container, a.rm, false)?).await?;
        start_task(d, &c.id, "").await?;
        println!("{}", c.id);
        return Ok(0);
    }
    let target = Target {
        container: String::new(),
        exec_id: String::new(),
        tty: a.container.tty,
        stdin: a.container.interactive,
        running: false,
        detach_keys: None,
    };
    // Created, attached and started in one call.
    let request = create_request(&a.container, false, a.rm)?;
    let attached = attach::run(d, request, target).await?;
    let id = attached.container().to_string();
    let result = attached.stream(d).await;
    // The daemon removes a `run --rm` container at its exit, before it
    // tells (and one detached from when it exits, as docker's auto-remove);
    // this client removes it only when that did not happen: the stream
    // broke, or the daemon could not.
    let removed = matches!(
        result,
        Ok(Ended::Exited { removed: true, .. } | Ended::Detached)
    );
    if a.rm && !removed {
        // As docker's --rm: the anonymous volumes go with the container.
        if let Err(e) = remove(d, &id, true, true).await {
            eprintln!("berthctl: {e:#}");
        }
    }
    result.map(|ended| ended.status() as i32)
}

/// Attaches to a created container's init and has the daemon start it.
async fn attached_run(d: &Daemon, c: &pb::Container, tty: bool, stdin: bool) -> Result<Ended> {
    let target = Target {
        container: c.id.clone(),
        exec_id: String::new(),
        tty,
        stdin,
        running: false,
        detach_keys: None,
    };
    attach::attach(d, target).await?.stream(d).await
}

pub async fn start(d: &Daemon, a: &StartArgs) -> Result<i32> {
    if a.attach {
        let [one] = a.containers.as_slice() else {
            bail!("start --attach takes one container");
        };
        let c = get(d, one).await?;
        let config = c.config.clone().unwrap_or_default();
        let ended = attached_run(d, &c, config.tty, a.interactive && config.stdin_open).await?;
        return Ok(ended.status() as i32);
    }
    let mut failed = false;
    for name in &a.containers {
        match start_task(d, name, "").await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berthctl: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `attach`: this terminal to a running container's stdio, until it exits
/// (its status) or the detach keys are typed (1, the container runs on).
pub async fn attach(d: &Daemon, a: &AttachArgs) -> Result<i32> {
    let detach_keys = attach::parse_detach_keys(&a.detach_keys)?;
    let c = get(d, &a.container).await?;
    if c.status != pb::container::Status::Running as i32 {
        return Err(Coded {
            code: 1,
            error: anyhow!("You cannot attach to a stopped container, start it first"),
        }
        .into());
    }
    let config = c.config.clone().unwrap_or_default();
    let stdin = config.stdin_open && !a.no_stdin;
    if config.tty && stdin && !std::io::stdin().is_terminal() {
        // A terminal's input to a terminal process: docker refuses a pipe.
        return Err(Coded {
            code: 1,
            error: anyhow!("the input device is not a TTY"),
        }
        .into());
    }
    let target = Target {
        container: c.id.clone(),
        exec_id: String::new(),
        tty: config.tty,
        stdin,
        running: true,
        detach_keys: Some(detach_keys),
    };
    let ended = attach::attach(d, target).await?.stream(d).await?;
    Ok(ended.status() as i32)
}

pub async fn get(d: &Daemon, name: &str) -> Result<pb::Container> {
    Ok(d.containers()
        .get(pb::GetContainerRequest {
            id: name.to_string(),
        })
        .await
        .map_err(rpc)?
        .into_inner())
}

fn command_of(c: &pb::Container) -> String {
    if !c.command.is_empty() {
        return c.command.join(" ");
    }
    let spec: serde_json::Value = serde_json::from_slice(&c.spec).unwrap_or_default();
    let args: Vec<String> = spec["process"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if args.is_empty() {
        let config = c.config.clone().unwrap_or_default();
        return config.args.join(" ");
    }
    args.join(" ")
}

fn status_text(c: &pb::Container) -> String {
    use pb::container::Status;
    match Status::try_from(c.status).unwrap_or(Status::Unspecified) {
        Status::Running => format!(
            "Up {}",
            output::duration(output::since(c.started_at.as_ref()))
        ),
        Status::Paused => format!(
            "Up {} (Paused)",
            output::duration(output::since(c.started_at.as_ref()))
        ),
        Status::Stopped => format!(
            "Exited ({}) {}",
            c.exit_status,
            output::ago(c.finished_at.as_ref())
        ),
        Status::Restarting => format!("Restarting ({})", c.exit_status),
        Status::Created => "Created".to_string(),
        Status::Unspecified => "Unknown".to_string(),
    }
}

pub async fn ps(d: &Daemon, a: &PsArgs) -> Result<i32> {
    let containers = d
        .containers()
        .list(pb::ListContainersRequest { all: a.all })
        .await
        .map_err(rpc)?
        .into_inner()
        .containers;
    if a.format.format == Format::Json {
        output::print_json(&serde_json::Value::Array(
            containers.iter().map(output::container).collect(),
        ));
        return Ok(0);
    }
    if a.quiet {
        for c in &containers {
            println!(
                "{}",
                if a.no_trunc {
                    &c.id
                } else {
                    output::short_id(&c.id)
                }
            );
        }
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            let mut command = command_of(c);
            if !a.no_trunc && command.chars().count() > 20 {
                command = command.chars().take(19).collect::<String>() + "…";
            }
            vec![
                if a.no_trunc {
                    c.id.clone()
                } else {
                    output::short_id(&c.id).to_string()
                },
                c.config
                    .as_ref()
                    .map(|c| c.image.clone())
                    .unwrap_or_default(),
                format!("\"{command}\""),
                output::ago(c.created.as_ref()),
                status_text(c),
                c.name.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "NAMES",
        ],
        &rows,
    );
    Ok(0)
}

pub async fn exec(d: &Daemon, a: &ExecArgs) -> Result<i32> {
    let c = get(d, &a.container).await?;
    let exec_id = d
        .tasks()
        .exec(pb::ExecProcessRequest {
            container_id: c.id.clone(),
            exec_id: String::new(),
            args: a.command.clone(),
            env: flags::env(&a.env)?,
            working_dir: a.workdir.clone().unwrap_or_default(),
            user: a.user.clone().unwrap_or_default(),
            tty: a.tty,
            stdin_open: a.interactive,
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("cannot exec in {}", a.container))?
        .into_inner()
        .exec_id;
    if a.detach {
        start_task(d, &c.id, &exec_id).await?;
        return Ok(0);
    }
    let target = Target {
        container: c.id.clone(),
        exec_id: exec_id.clone(),
        tty: a.tty,
        stdin: a.interactive,
        running: false,
        detach_keys: None,
    };
    let ended = attach::attach(d, target).await?.stream(d).await?;
    Ok(ended.status() as i32)
}

pub async fn logs(d: &Daemon, a: &LogsArgs) -> Result<i32> {
    use std::io::Write;
    let c = get(d, &a.container).await?;
    let mut stream = d
        .tasks()
        .logs(pb::LogsRequest {
            container_id: c.id.clone(),
            follow: a.follow,
            tail: flags::tail(&a.tail)?,
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("cannot read the logs of {}", a.container))?
        .into_inner();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(entry) = stream.message().await.map_err(rpc)? {
        let out: &mut dyn Write = if entry.stream == pb::StdioStream::Stderr as i32 {
            &mut stderr
        } else {
            &mut stdout
        };
        let written = if a.timestamps {
            let time = entry
                .time
                .as_ref()
                .map(|t| output::rfc3339_text(t.seconds, t.nanos))
                .unwrap_or_default();
            write!(out, "{time} ").and_then(|_| out.write_all(&entry.data))
        } else {
            out.write_all(&entry.data)
        };
        if written.and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    Ok(0)
}

/// Runs `each` on every name; prints the name on success (as docker does)
/// and the error otherwise; exit 1 if any failed.
async fn for_each<F, Fut>(names: &[String], mut each: F) -> Result<i32>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut failed = false;
    for name in names {
        match each(name.clone()).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berthctl: {e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

pub async fn stop(d: &Daemon, a: &StopArgs) -> Result<i32> {
    for_each(&a.containers, |name| async move {
        d.tasks()
            .stop(pb::StopTaskRequest {
                container_id: name.clone(),
                timeout: a.time,
            })
            .await
            .map_err(rpc)
            .with_context(|| format!("cannot stop {name}"))?;
        Ok(())
    })
    .await
}

pub async fn kill(d: &Daemon, a: &KillArgs) -> Result<i32> {
    let signal = flags::signal(&a.signal)?;
    for_each(&a.containers, |name| async move {
        d.tasks()
            .kill(pb::KillTaskRequest {
                container_id: name.clone(),
                exec_id: String::new(),
                signal,
                all: false,
            })
            .await
            .map_err(rpc)
            .with_context(|| format!("cannot kill {name}"))?;
        Ok(())
    })
    .await
}

pub async fn rm(d: &Daemon, a: &RmArgs) -> Result<i32> {
    for_each(&a.containers, |name| async move {
        remove(d, &name, a.force, a.volumes).await.map_err(|e| {
            if format!("{e:#}").contains("running") && !a.force {
                e.context("stop it first, or use rm -f")
            } else {
                e
            }
        })
    })
    .await
}

pub async fn pause(d: &Daemon, names: &[String], resume: bool) -> Result<i32> {
    for_each(names, |name| async move {
        let result = if resume {
            d.tasks()
                .resume(pb::ResumeTaskRequest {
                    container_id: name.clone(),
                })
                .await
                .map(drop)
        } else {
            d.tasks()
                .pause(pb::PauseTaskRequest {
                    container_id: name.clone(),
                })
                .await
                .map(drop)
        };
        let verb = if resume { "unpause" } else { "pause" };
        result
            .map_err(rpc)
            .with_context(|| format!("cannot {verb} {name}"))
    })
    .await
}

struct Sample {
    container: pb::Container,
    stats: pb::StatsResponse,
}

async fn sample(d: &Daemon, names: &[String]) -> Result<Vec<Sample>> {
    let containers = if names.is_empty() {
        d.containers()
            .list(pb::ListContainersRequest { all: false })
            .await
            .map_err(rpc)?
            .into_inner()
            .containers
    } else {
        let mut all = Vec::new();
        for name in names {
            all.push(get(d, name).await?);
        }
        all
    };
    let mut out = Vec::new();
    for c in containers {
        match d
            .tasks()
            .stats(pb::StatsRequest {
                container_id: c.id.clone(),
            })
            .await
        {
            Ok(s) => out.push(Sample {
                container: c,
                stats: s.into_inner(),
            }),
            // Stopped in between, or not running: named ones are an error.
            Err(e) if !names.is_empty() => {
                return Err(rpc(e)).with_context(|| format!("cannot read the stats of {}", c.name))
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

fn nanos(t: Option<&prost_types::Timestamp>) -> f64 {
    t.map_or(0.0, |t| t.seconds as f64 * 1e9 + f64::from(t.nanos))
}

pub async fn stats(d: &Daemon, a: &StatsArgs) -> Result<i32> {
    let mut before = sample(d, &a.containers).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(if a.no_stream { 500 } else { 1000 })).await;
        let after = sample(d, &a.containers).await?;
        let mut rows = Vec::new();
        let mut docs = Vec::new();
        for s in &after {
            let prev = before.iter().find(|b| b.container.id == s.container.id);
            let cpu = prev.map_or(0.0, |p| {
                let dt = nanos(s.stats.read_at.as_ref()) - nanos(p.stats.read_at.as_ref());
                let du = s.stats.cpu_usage_ns.saturating_sub(p.stats.cpu_usage_ns) as f64;
                if dt > 0.0 {
                    du / dt * 100.0
                } else {
                    0.0
                }
            });
            let st = &s.stats;
            let mem_pct = if st.memory_limit > 0 {
                st.memory_usage as f64 / st.memory_limit as f64 * 100.0
            } else {
                0.0
            };
            docs.push(json!({
                "id": s.container.id, "name": s.container.name, "cpuPercent": cpu,
                "memoryUsage": st.memory_usage, "memoryLimit": st.memory_limit,
                "pids": st.pids, "pidsLimit": st.pids_limit,
            }));
            rows.push(vec![
                output::short_id(&s.container.id).to_string(),
                s.container.name.clone(),
                format!("{cpu:.2}%"),
                format!(
                    "{} / {}",
                    output::binary_size(st.memory_usage),
                    if st.memory_limit > 0 {
                        output::binary_size(st.memory_limit)
                    } else {
                        "unlimited".into()
                    }
                ),
                if st.memory_limit > 0 {
                    format!("{mem_pct:.2}%")
                } else {
                    "--".into()
                },
                st.pids.to_string(),
            ]);
        }
        if a.format.format == Format::Json {
            output::print_json(&serde_json::Value::Array(docs));
        } else {
            if !a.no_stream && std::io::stdout().is_terminal() {
                // Clear the screen and home the cursor: a refreshing table.
                print!("\x1b[2J\x1b[H");
            }
            output::table(
                &[
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "PIDS",
                ],
                &rows,
            );
        }
        if a.no_stream {
            return Ok(0);
        }
        before = after;
    }
}
