//! `berth`: the command line of the runtime, shaped like runc's so that
//! podman, containerd's runc shim and people who type `runc` can use it.
//! Parses arguments, calls `berth_runtime`, maps errors to exit status 1
//! (and to `--log`, where engines read them). Its entry point is in
//! `entry.rs`: std's own start-up is left out.

// The test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]

use std::path::PathBuf;

use berth_runtime::container::{self, CreateOptions};
use berth_runtime::log;
use clap::{Args, Parser, Subcommand};

#[cfg(not(test))]
mod entry;
mod fast_args;

#[derive(Parser, Debug, PartialEq)]
#[command(
    name = "berth",
    about = "berth: a runc-compatible OCI runtime",
    disable_version_flag = true
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/berth")]
    root: PathBuf,
    /// Log file (errors are written there as well as to stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility; cgroups are managed through cgroupfs.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility (true, false or auto).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone, Debug, PartialEq)]
struct CreateArgs {
    /// Path to the bundle (default: the current directory).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    id: String,
}

#[derive(Args, Clone, Debug, PartialEq)]
struct ExecArgs {
    /// A JSON file with the process (the OCI `process` object).
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(short, long)]
    tty: bool,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<String>,
    /// KEY=VALUE, may repeat.
    #[arg(short, long)]
    env: Vec<String>,
    /// UID[:GID].
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// A capability to add, may repeat.
    #[arg(short, long)]
    cap: Vec<String>,
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Allow exec in a paused container (the process starts frozen).
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    /// Run in a sub-cgroup of the container's: PATH, or
    /// CONTROLLER[,CONTROLLER]:PATH (may repeat).
    #[arg(long)]
    cgroup: Vec<String>,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args, Clone, Debug, PartialEq)]
struct UpdateArgs {
    /// A JSON file with `linux.resources` (`-` for stdin).
    #[arg(short, long)]
    resources: Option<String>,
    /// Bytes (k, m, g suffixes) or -1 for unlimited.
    #[arg(long, allow_negative_numbers = true)]
    memory: Option<String>,
    #[arg(long = "memory-reservation", allow_negative_numbers = true)]
    memory_reservation: Option<String>,
    #[arg(long = "memory-swap", allow_negative_numbers = true)]
    memory_swap: Option<String>,
    #[arg(long = "cpu-share")]
    cpu_share: Option<u64>,
    #[arg(long = "cpu-quota", allow_negative_numbers = true)]
    cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    #[arg(long = "cpu-rt-runtime", allow_negative_numbers = true)]
    cpu_rt_runtime: Option<i64>,
    #[arg(long = "cpu-rt-period")]
    cpu_rt_period: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    #[arg(long = "cpu-idle", allow_negative_numbers = true)]
    cpu_idle: Option<i64>,
    #[arg(long = "pids-limit", allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    id: String,
}

/// `5s`, `500ms`, `1m` (Go's duration syntax, as runc's flag takes it).
fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let bad = || anyhow::anyhow!("invalid --interval {text:?}: use e.g. 5s or 500ms");
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// `64m`, `1g`, `1024`, or `-1`: bytes, as runc's flags take them.
fn parse_bytes(text: &str) -> anyhow::Result<i64> {
    let lower = text.trim().to_ascii_lowercase();
    if lower == "-1" {
        return Ok(-1);
    }
    let (number, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let scale: i64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => anyhow::bail!("invalid size {text:?}: use bytes or a k/m/g/t suffix"),
    };
    let value: i64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {text:?}: use bytes or a k/m/g/t suffix"))?;
    value
        .checked_mul(scale)
        .ok_or_else(|| anyhow::anyhow!("size {text:?} is too large"))
}

fn update_resources(args: &UpdateArgs) -> anyhow::Result<berth_runtime::spec::Resources> {
    use berth_runtime::spec::{Cpu, Memory, Pids, Resources};
    let schema = berth_runtime::spec::go_schema();
    let mut resources: Resources = match args.resources.as_deref() {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                .map_err(|e| anyhow::anyhow!("cannot read resources from stdin: {e}"))?;
            schema
                .from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("invalid resources on stdin: {e}"))?
        }
        Some(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?;
            schema
                .from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("invalid resources in {path}: {e}"))?
        }
        None => Resources::default(),
    }
    .without_go_zero_values();
    let bytes = |v: &Option<String>| v.as_deref().map(parse_bytes).transpose();
    let memory = Memory {
        limit: bytes(&args.memory)?,
        reservation: bytes(&args.memory_reservation)?,
        swap: bytes(&args.memory_swap)?,
        ..Default::default()
    };
    if memory.limit.is_some() || memory.reservation.is_some() || memory.swap.is_some() {
        let m = resources.memory.get_or_insert_with(Default::default);
        m.limit = memory.limit.or(m.limit);
        m.reservation = memory.reservation.or(m.reservation);
        m.swap = memory.swap.or(m.swap);
    }
    let cpu = Cpu {
        shares: args.cpu_share,
        quota: args.cpu_quota,
        period: args.cpu_period,
        realtime_runtime: args.cpu_rt_runtime,
        realtime_period: args.cpu_rt_period,
        cpus: args.cpuset_cpus.clone(),
        mems: args.cpuset_mems.clone(),
        idle: args.cpu_idle,
    };
    if cpu.shares.is_some()
        || cpu.quota.is_some()
        || cpu.period.is_some()
        || cpu.realtime_runtime.is_some()
        || cpu.realtime_period.is_some()
        || cpu.cpus.is_some()
        || cpu.mems.is_some()
        || cpu.idle.is_some()
    {
        let c = resources.cpu.get_or_insert_with(Default::default);
        c.shares = cpu.shares.or(c.shares);
        c.quota = cpu.quota.or(c.quota);
        c.period = cpu.period.or(c.period);
        c.realtime_runtime = cpu.realtime_runtime.or(c.realtime_runtime);
        c.realtime_period = cpu.realtime_period.or(c.realtime_period);
        c.cpus = cpu.cpus.or(c.cpus.take());
        c.mems = cpu.mems.or(c.mems.take());
        c.idle = cpu.idle.or(c.idle);
    }
    if let Some(weight) = args.blkio_weight {
        resources
            .block_io
            .get_or_insert_with(Default::default)
            .weight = Some(weight);
    }
    if let Some(limit) = args.pids_limit {
        resources.pids = Some(Pids { limit });
    }
    Ok(resources)
}

fn print_ps(
    root: &std::path::Path,
    id: &str,
    format: &str,
    ps_args: &[String],
) -> anyhow::Result<()> {
    let pids = container::pids(root, id)?;
    match format {
        // runc prints Go's nil slice for a container without processes.
        "json" if pids.is_empty() => out("null")?,
        "json" => out(serde_json::to_string(&pids)?)?,
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let listing = std::process::Command::new("ps")
                .args(&args)
                .output()
                .map_err(|e| anyhow::anyhow!("cannot run ps: {e}"))?;
            if !listing.status.success() {
                anyhow::bail!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&listing.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&listing.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let column = header
                .split_whitespace()
                .position(|c| c == "PID")
                .ok_or_else(|| anyhow::anyhow!("ps output has no PID column"))?;
            out(header)?;
            for line in lines {
                let pid = line
                    .split_whitespace()
                    .nth(column)
                    .and_then(|p| p.parse::<i32>().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    out(line)?;
                }
            }
        }
        other => anyhow::bail!("invalid format option {other:?}: use table or json"),
    }
    Ok(())
}

#[derive(Subcommand, Debug, PartialEq)]
enum Command {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start the process of a created container.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal to a container's init (or, with --all, all its processes).
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container; wait for it unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// List containers.
    #[command(alias = "ps-all")]
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a default config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Print the features this runtime supports, as JSON.
    Features,
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List the processes of a container (`-- PS-OPTIONS` go to ps).
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Change the resource limits of a running container.
    Update(UpdateArgs),
    /// Resource statistics (--stats) or a stream of them and OOM events.
    Events {
        #[arg(long)]
        stats: bool,
        /// Between stats records, e.g. 5s, 500ms.
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
}

/// The exit status of the command `main` runs (see `entry`).
#[cfg_attr(test, allow(dead_code))]
fn berth_main() -> u8 {
    berth_runtime::heap::keep();
    berth_runtime::trace::init();
    berth_runtime::trace::step("main");
    if let Some(handover) = berth_runtime::sealed_init::handed_over() {
        berth_runtime::sealed_init::resume(handover);
    }
    // The vectors engines send take the short way; clap reads (and judges)
    // every other.
    let parsed = fast_args::parse(std::env::args_os()).map_or_else(Cli::try_parse, Ok);
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // Engines read errors from --log: find it by hand, clap failed.
            if e.use_stderr() {
                log_usage_error(&e.to_string());
            }
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    berth_runtime::trace::step("arguments parsed");
    if let Some(path) = &cli.log {
        if let Err(e) = log::init(path, cli.log_format == "json", cli.debug) {
            eprintln!("berth: cannot open log file {}: {e}", path.display());
            return 1;
        }
    } else if cli.debug {
        log::init_stderr(cli.log_format == "json", true);
    }
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) if stdout_closed(&e) => die_of_sigpipe(),
        Err(e) => {
            // Library errors already name their cause: print the top only.
            // With --log the error goes to the log only, as runc does: engines
            // read it there (and some also show stderr, which would repeat it).
            let message = format!("{e}");
            log::write(log::Level::Error, &message);
            1
        }
    }
}

/// Prints one line on stdout; a reader that went away (`berth state ID |
/// head -c 10`) is an error [`stdout_closed`] recognises, not a panic.
fn out(text: impl std::fmt::Display) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush())
}

/// Whether `e` is stdout's reader having gone away.
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().or_else(|| {
            match cause.downcast_ref::<berth_runtime::events::EventsError>() {
                Some(berth_runtime::events::EventsError::Output(io)) => Some(io),
                _ => None,
            }
        });
        io.is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Ends as runc (Go) does when stdout's reader is gone: killed by SIGPIPE,
/// quietly; berth ignores SIGPIPE (see `entry`), so restore it first.
fn die_of_sigpipe() -> u8 {
    // SAFETY: resetting one disposition and raising it on ourselves.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    141
}

fn log_usage_error(message: &str) {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}="))
                .map(String::from)
                .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    if let Some(path) = value("--log") {
        let json = value("--log-format").as_deref() == Some("json");
        if log::init(std::path::Path::new(&path), json, false).is_ok() {
            let first = message.lines().next().unwrap_or(message);
            log::write(log::Level::Error, first.trim_start_matches("error: "));
        }
    }
}

fn create_options(
    args: &CreateArgs,
    foreground: bool,
    loaded: Option<std::sync::Arc<container::Loaded>>,
) -> CreateOptions {
    CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.clone(),
        console_socket: args.console_socket.clone(),
        console_fd: None,
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        preserve_fds: args.preserve_fds,
        foreground,
        loaded,
    }
}

fn dispatch(cli: &Cli) -> anyhow::Result<u8> {
    if cli.version {
        // runc's first lines, which go-runc parses: `NAME version V`,
        // `commit: C`, `spec: S`.
        out(format_args!(
            "berth version {}\ncommit: {}\nspec: {}",
            env!("CARGO_PKG_VERSION"),
            env!("BERTH_COMMIT"),
            berth_runtime::OCI_VERSION
        ))?;
        return Ok(0);
    }
    if cli.systemd_cgroup {
        let creates = matches!(cli.command, Some(Command::Create(_) | Command::Run { .. }));
        if creates && !std::path::Path::new("/run/systemd/system").exists() {
            anyhow::bail!(
                "--systemd-cgroup is not supported yet on a host without systemd: \
                 berth places containers through cgroupfs (drop the flag, or use podman's \
                 --cgroup-manager cgroupfs)"
            );
        }
        // Engines on systemd hosts pass it; berth still places containers
        // through cgroupfs itself.
        log::debug("--systemd-cgroup: managing cgroups through cgroupfs");
    }
    let root = &cli.root;
    let Some(command) = &cli.command else {
        anyhow::bail!("no command given (see berth --help)");
    };
    log::debug(&format!(
        "berth {} ({}): {:?} with root {}",
        env!("CARGO_PKG_VERSION"),
        env!("BERTH_COMMIT"),
        std::env::args().skip(1).collect::<Vec<_>>(),
        root.display()
    ));
    // CVE-2019-5736: `exec` always runs from a sealed binary; `create` and
    // `run` only where the container could reach this process (otherwise
    // the init seals itself, see `sealed_init`).
    let loaded = match command {
        Command::Create(args) | Command::Run { create: args, .. } => {
            container::Loaded::read(&args.bundle)
                .ok()
                .map(std::sync::Arc::new)
        }
        _ => None,
    };
    berth_runtime::trace::step("config read");
    let seal = match command {
        Command::Create(_) | Command::Run { .. } => loaded
            .as_ref()
            .is_none_or(|loaded| loaded.runtime_needs_seal()),
        Command::Exec(_) => true,
        _ => false,
    };
    if seal {
        berth_runtime::sealed_exe::ensure()?;
    }
    match command {
        Command::Create(args) => {
            container::create(root, &create_options(args, false, loaded))?;
        }
        Command::Start { id } => container::start(root, id)?,
        Command::State { id } => out(container::state_json(root, id)?)?,
        Command::Kill { all, id, signal } => {
            container::kill(root, id, container::parse_signal(signal)?, *all)?
        }
        Command::Delete { force, id } => container::delete(root, id, *force)?,
        Command::Run {
            create,
            detach,
            keep,
        } => {
            let options = create_options(create, !detach, loaded);
            let code = container::run(root, &options, *detach, *keep)?;
            return Ok(code.clamp(0, 255) as u8);
        }
        Command::List { format, quiet } => print_list(root, format, *quiet)?,
        Command::Spec { bundle } => {
            berth_oci::defaults::write_spec(bundle, cli.rootless.as_deref() == Some("true"))?
        }
        Command::Features => out(berth_oci::defaults::features_json())?,
        Command::Pause { id } => container::pause(root, id)?,
        Command::Resume { id } => container::resume(root, id)?,
        Command::Ps {
            format,
            id,
            ps_args,
        } => print_ps(root, id, format, ps_args)?,
        Command::Events {
            stats,
            interval,
            id,
        } => berth_runtime::events::events(root, id, *stats, parse_duration(interval)?)?,
        Command::Update(args) => container::update(root, &args.id, &update_resources(args)?)?,
        Command::Exec(args) => {
            let options = berth_runtime::exec::ExecOptions {
                id: args.id.clone(),
                process_file: args.process.clone(),
                args: args.command.clone(),
                env: args.env.clone(),
                cwd: args.cwd.clone(),
                user: args.user.clone(),
                additional_gids: args.additional_gids.clone(),
                caps: args.cap.clone(),
                no_new_privs: args.no_new_privs,
                tty: args.tty,
                console_socket: args.console_socket.clone(),
                detach: args.detach,
                pid_file: args.pid_file.clone(),
                preserve_fds: args.preserve_fds,
                ignore_paused: args.ignore_paused,
                sub_cgroups: args.cgroup.clone(),
            };
            // As runc: a failure of exec itself is "exec failed: …" with
            // status 255, apart from any status of the process.
            return match berth_runtime::exec::exec(root, &options) {
                Ok(code) => Ok(code.clamp(0, 255) as u8),
                Err(e) => {
                    let message = format!("exec failed: {e}");
                    log::write(log::Level::Error, &message);
                    Ok(255)
                }
            };
        }
    }
    Ok(0)
}

fn print_list(root: &std::path::Path, format: &str, quiet: bool) -> anyhow::Result<()> {
    let entries = container::list(root);
    if quiet {
        for entry in &entries {
            out(&entry.id)?;
        }
        return Ok(());
    }
    match format {
        "json" => out(serde_json::to_string(&entries)?)?,
        "table" => {
            let rows: Vec<[String; 6]> = std::iter::once(
                ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from),
            )
            .chain(entries.iter().map(|e| {
                [
                    e.id.clone(),
                    e.pid.to_string(),
                    e.status.to_string(),
                    e.bundle.display().to_string(),
                    e.created.clone(),
                    e.owner.clone(),
                ]
            }))
            .collect();
            let mut widths = [0usize; 6];
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            for row in rows {
                let line: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(cell, w)| format!("{cell:<w$}"))
                    .collect();
                out(line.join("   ").trim_end())?;
            }
        }
        other => anyhow::bail!("invalid format option {other:?}: use table or json"),
    }
    Ok(())
}
