//! `berth`: the command line of the runtime, shaped like runc's so that
//! podman, containerd's runc shim and people who type `runc` can use it.
//! Parses arguments, calls `berth_runtime`, maps errors to exit status 1
//! (and to `--log`, where engines read them).

use std::path::PathBuf;
use std::process::ExitCode;

use berth_runtime::container::{self, CreateOptions};
use berth_runtime::log;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
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

#[derive(Args, Clone)]
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

#[derive(Args, Clone)]
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
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Engines read errors from --log: find it by hand, clap failed.
            if e.use_stderr() {
                log_usage_error(&e.to_string());
            }
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Some(path) = &cli.log {
        if let Err(e) = log::init(path, cli.log_format == "json", cli.debug) {
            eprintln!("berth: cannot open log file {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Library errors already name their cause: print the top only.
            // With --log the error goes to the log only, as runc does: engines
            // read it there (and some also show stderr, which would repeat it).
            let message = format!("{e}");
            log::write(log::Level::Error, &message);
            ExitCode::from(1)
        }
    }
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

fn create_options(args: &CreateArgs, foreground: bool) -> CreateOptions {
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
    }
}

fn dispatch(cli: &Cli) -> anyhow::Result<u8> {
    if cli.version {
        println!(
            "berth version {}\nspec: {}",
            env!("CARGO_PKG_VERSION"),
            berth_runtime::OCI_VERSION
        );
        return Ok(0);
    }
    if cli.systemd_cgroup {
        // Engines on systemd hosts pass it; berth places containers through
        // cgroupfs itself (systemd-managed cgroups come with the cgroups work).
        log::debug("--systemd-cgroup: managing cgroups through cgroupfs");
    }
    let root = &cli.root;
    let Some(command) = &cli.command else {
        anyhow::bail!("no command given (see berth --help)");
    };
    match command {
        Command::Create(args) => {
            container::create(root, &create_options(args, false))?;
        }
        Command::Start { id } => container::start(root, id)?,
        Command::State { id } => println!("{}", container::state_json(root, id)?),
        Command::Kill { all, id, signal } => {
            container::kill(root, id, container::parse_signal(signal)?, *all)?
        }
        Command::Delete { force, id } => container::delete(root, id, *force)?,
        Command::Run {
            create,
            detach,
            keep,
        } => {
            let code = container::run(root, &create_options(create, !detach), *detach, *keep)?;
            return Ok(code.clamp(0, 255) as u8);
        }
        Command::List { format, quiet } => print_list(root, format, *quiet)?,
        Command::Spec { bundle } => {
            berth_runtime::defaults::write_spec(bundle, cli.rootless.as_deref() == Some("true"))?
        }
        Command::Features => println!("{}", berth_runtime::defaults::features_json()),
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
            println!("{}", entry.id);
        }
        return Ok(());
    }
    match format {
        "json" => println!("{}", serde_json::to_string(&entries)?),
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
                println!("{}", line.join("   ").trim_end());
            }
        }
        other => anyhow::bail!("invalid format option {other:?}: use table or json"),
    }
    Ok(())
}
