//! The flags of the container commands: `run`/`create` (docker's
//! container settings), `start`, `exec`, `ps`, `logs`, `stop`, `kill`,
//! `rm`, `stats`, and the ones that read or change a container's files
//! (`cp`, `export`, `diff`, `commit`).

use std::path::PathBuf;

use clap::Args;

use super::FormatArg;

/// What `create` and `run` share: docker's container settings.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// A name for the container; default: a random one.
    #[arg(long)]
    pub name: Option<String>,
    /// KEY=VALUE, or KEY to pass this shell's value; repeatable.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// A file of KEY=VALUE lines; repeatable.
    #[arg(long = "env-file")]
    pub env_files: Vec<PathBuf>,
    /// SRC:DST[:ro]; an absolute SRC is a host path, else a named volume.
    #[arg(long = "volume", short = 'v')]
    pub volumes: Vec<String>,
    /// Mount the volumes and binds of another container: NAME[:ro|:rw].
    #[arg(long = "volumes-from")]
    pub volumes_from: Vec<String>,
    /// The working directory inside the container.
    #[arg(long = "workdir", short = 'w')]
    pub workdir: Option<String>,
    /// user[:group], names or ids.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The container's host name (docker's -h).
    #[arg(long, short = 'h')]
    pub hostname: Option<String>,
    /// Print help (-h is the host name, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Replace the image's entrypoint ("" clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Keep stdin open and forward it.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// A terminal for the container.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// A memory limit: bytes or a number with b, k, m, g (e.g. 64m).
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    /// CPUs the container may use, e.g. 1.5.
    #[arg(long)]
    pub cpus: Option<String>,
    /// At most this many processes.
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<String>,
    /// A read-only root filesystem.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Capabilities to add (e.g. NET_ADMIN, ALL); repeatable.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Capabilities to drop; repeatable.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Every capability, every device, no seccomp.
    #[arg(long)]
    pub privileged: bool,
    /// seccomp=FILE (a profile in JSON) or seccomp=unconfined.
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// bridge (the default), a network's name, none (loopback only), host,
    /// or container:NAME|ID (share its network).
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Publish a port: [[IP:]HOST:]CTR[/tcp|udp] (no HOST: a random one).
    #[arg(long = "publish", short = 'p')]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on a random host port.
    #[arg(long = "publish-all", short = 'P')]
    pub publish_all: bool,
    /// NAME:IP, a line of /etc/hosts; repeatable.
    #[arg(long = "add-host")]
    pub add_hosts: Vec<String>,
    /// A name server for /etc/resolv.conf; repeatable.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Its IPv4 address on a user-defined network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Another name the container has on a user network; repeatable.
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_aliases: Vec<String>,
    /// no, on-failure[:N], always or unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// KEY=VALUE; repeatable.
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// The shim's runtime type (default io.containerd.berth.v2).
    #[arg(long)]
    pub runtime: Option<String>,
    /// The image.
    pub image: String,
    /// The command and its arguments (replace the image's cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Start in the background and print the id.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub container: ContainerArgs,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub container: ContainerArgs,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the output and exit with the container's status.
    #[arg(long, short = 'a')]
    pub attach: bool,
    /// Forward stdin (with --attach).
    #[arg(long, short = 'i')]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Stopped and created containers too.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Only the ids.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Full ids and commands.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Start it in the background.
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long, short = 'i')]
    pub interactive: bool,
    #[arg(long, short = 't')]
    pub tty: bool,
    /// KEY=VALUE; repeatable.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    #[arg(long = "workdir", short = 'w')]
    pub workdir: Option<String>,
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container stops.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines ("all": everything).
    #[arg(long, short = 'n', default_value = "all")]
    pub tail: String,
    /// Each line with its time (RFC 3339).
    #[arg(long, short = 't')]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL.
    #[arg(long = "time", short = 't', default_value_t = 10)]
    pub time: u32,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// A signal name (KILL, SIGTERM) or number.
    #[arg(long, short = 's', default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Remove the containers' anonymous volumes too.
    #[arg(long, short = 'v')]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdsArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print once instead of refreshing every second.
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Default: every running container.
    pub containers: Vec<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    pub container: String,
    /// [REGISTRY/]NAME[:TAG] for the new image.
    pub name: Option<String>,
    /// A commit message (the history entry's comment).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// The author ("Name <email>").
    #[arg(long, short = 'a')]
    pub author: Option<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Keep the files' owners (uid/gid); else they are root's in the container.
    #[arg(long, short = 'a')]
    pub archive: bool,
    /// Copy what a source symlink points to, not the link.
    #[arg(long, short = 'L')]
    pub follow_link: bool,
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Keys that detach, leaving the container running.
    #[arg(long, default_value = "ctrl-p,ctrl-q")]
    pub detach_keys: String,
    /// Do not attach stdin.
    #[arg(long)]
    pub no_stdin: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    pub container: String,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub container: String,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub container: String,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    pub container: String,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    pub container: String,
    /// PORT[/PROTO]: only where this port is published.
    pub port: Option<String>,
}
