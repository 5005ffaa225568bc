//! The command line: every command and flag `berthctl` takes, as clap
//! derives it. Values that need more than clap's parsing (sizes, mounts,
//! restart policies) stay strings here and are checked in [`crate::flags`],
//! so a bad value gets a message that names the flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "berthctl",
    version,
    about = "Run containers with berth: the commands a docker user knows, over berth-imaged's gRPC API",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// The daemon's unix socket.
    #[arg(long, global = true, env = "BERTH_ADDRESS", default_value = berth_proto::DEFAULT_SOCKET)]
    pub address: PathBuf,
    /// Accepted for compatibility with ctr/nerdctl; berth-imaged has one namespace.
    #[arg(long, global = true, default_value = "default")]
    pub namespace: String,
    #[command(subcommand)]
    pub command: Command,
}

/// How data is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Columns for a person.
    #[default]
    Table,
    /// One JSON document (a list for listings), for scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and a context directory.
    Build(BuildArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Make a container's changes a new image.
    Commit(CommitArgs),
    /// A container's changes to its image's files (A added, C changed, D deleted).
    Diff(DiffArgs),
    /// Wait for containers to exit; print their exit statuses.
    Wait(WaitArgs),
    /// Copy files between a container and the host: cp CONTAINER:SRC DEST|-, cp SRC|- CONTAINER:DEST.
    Cp(CpArgs),
    /// A container's filesystem as a tar (to stdout, or -o FILE).
    Export(ExportArgs),
    /// A root filesystem tar (FILE or - for stdin) as a one-layer image.
    Import(ImportArgs),
    /// Give a container a new name: rename CONTAINER NEW_NAME.
    Rename(RenameArgs),
    /// Attach this terminal to a running container's stdio.
    Attach(AttachArgs),
    /// The processes of a running container.
    Top(TopArgs),
    /// The steps an image was built from, newest first.
    History(HistoryArgs),
    /// Upload an image to its registry.
    Push(PushArgs),
    /// Save a registry's credentials (checked first) in docker's config.json.
    Login(LoginArgs),
    /// Remove a registry's credentials from docker's config.json.
    Logout(LogoutArgs),
    /// Find repositories in a registry's catalog: search REGISTRY/TERM.
    Search(SearchArgs),
    /// Fetch an image from a registry.
    Pull(PullArgs),
    /// List images.
    Images(ImagesArgs),
    /// Manage images (ls, rm, mount, unmount, inspect).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Remove images.
    Rmi(RmiArgs),
    /// Write images as an OCI archive (tar) to a file or stdout.
    Save(SaveArgs),
    /// Load images from an OCI or `docker save` archive (a file or stdin).
    Load(LoadArgs),
    /// Manage named volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// The published ports of a container, or where one of its ports is.
    Port(PortArgs),
    /// Print containers or images as JSON.
    Inspect(InspectArgs),
    /// Create a container from an image and start it.
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Create a container without starting it.
    #[command(disable_help_flag = true)]
    Create(CreateArgs),
    /// Start created or stopped containers.
    Start(StartArgs),
    /// List containers.
    Ps(PsArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Print a container's output.
    Logs(LogsArgs),
    /// Stop containers: the stop signal, then SIGKILL after a timeout.
    Stop(StopArgs),
    /// Send a signal to containers.
    Kill(KillArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Freeze every process of containers.
    Pause(IdsArgs),
    /// Thaw paused containers.
    Unpause(IdsArgs),
    /// CPU, memory and pids of running containers.
    Stats(StatsArgs),
    /// Stream the daemon's events.
    Events(EventsArgs),
    /// Versions of berthctl and of the daemon.
    Version(FormatArg),
    /// What the daemon holds and how it is reached.
    Info(FormatArg),
    /// Print a shell completion script (bash, zsh, fish, …).
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name the image NAME[:TAG]; repeatable.
    #[arg(long = "tag", short = 't')]
    pub tags: Vec<String>,
    /// The Dockerfile [default: CONTEXT/Dockerfile].
    #[arg(long = "file", short = 'f')]
    pub file: Option<PathBuf>,
    /// A build argument KEY=VALUE (KEY alone: from the environment); repeatable.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step: no cache read or written.
    #[arg(long)]
    pub no_cache: bool,
    /// A label KEY=VALUE for the image; repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Output: plain lines, or tty (the same lines, for a terminal).
    #[arg(long, value_enum, default_value_t = BuildProgress::Plain)]
    pub progress: BuildProgress,
    /// Only the image ID on stdout.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The context directory: the files COPY and ADD can read.
    pub context: PathBuf,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: NAME[:TAG] or its ID.
    pub source: String,
    /// The new name: [REGISTRY/]NAME[:TAG].
    pub target: String,
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
pub struct ImportArgs {
    /// A Dockerfile instruction for the config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable.
    #[arg(long, short = 'c')]
    pub change: Vec<String>,
    /// The history entry's comment.
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// The tar (plain, gzip or zstd), or - for stdin.
    pub file: String,
    /// [REGISTRY/]NAME[:TAG] for the image.
    pub name: Option<String>,
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
pub struct HistoryArgs {
    pub image: String,
    /// Whole IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// [REGISTRY/]NAME[:TAG]
    pub image: String,
    /// The directory of config.json [default: $DOCKER_CONFIG or ~/.docker].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Only the final line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// host[:port] (docker.io for Docker Hub).
    pub registry: String,
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// The password (visible to other users in the process list: prefer --password-stdin).
    #[arg(long, short = 'p')]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// The directory of config.json [default: $DOCKER_CONFIG or ~/.docker].
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// REGISTRY/TERM: repositories of REGISTRY whose names contain TERM.
    pub term: String,
    /// At most this many results.
    #[arg(long, default_value_t = 25)]
    pub limit: u32,
    /// The directory of config.json [default: $DOCKER_CONFIG or ~/.docker].
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    pub registry: String,
    /// The directory of config.json [default: $DOCKER_CONFIG or ~/.docker].
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildProgress {
    Plain,
    Tty,
    Auto,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// A reference: [registry/]repository[:tag|@digest].
    pub image: String,
    /// os/arch[/variant]; default: the daemon's platform.
    #[arg(long)]
    pub platform: Option<String>,
    /// Only the image's digest on stdout, no progress.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The directory of config.json, whose `login` credentials are used
    /// [default: $DOCKER_CONFIG or ~/.docker].
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Only the names.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove images.
    Rm(RmiArgs),
    /// Mount an image's root filesystem read-only on the host.
    Mount(MountArgs),
    /// Unmount what `image mount` mounted, and drop its view.
    Unmount(UnmountArgs),
    /// Print images as JSON.
    Inspect(NamesArgs),
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of stdin.
    #[arg(long, short = 'i')]
    pub input: Option<PathBuf>,
    /// The name for an archive whose image carries none.
    #[arg(long)]
    pub name: Option<String>,
    /// Only the names loaded.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    pub image: String,
    /// Where to mount; default: a new directory under /tmp, printed.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name if none is given).
    Create(VolumeCreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Print volumes as JSON.
    Inspect(NamesArgs),
    /// Remove volumes no container uses.
    #[command(alias = "remove")]
    Rm(NamesArgs),
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network: a bridge with its own subnet.
    Create(NetworkCreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Print networks as JSON.
    Inspect(NamesArgs),
    /// Remove networks no container uses.
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Connect a container to a network (now if it runs, and at each start).
    Connect(NetworkConnectArgs),
    /// Disconnect a container from a network it was connected to.
    Disconnect(NetworkDisconnectArgs),
}

#[derive(Debug, Args)]
pub struct NetworkConnectArgs {
    pub network: String,
    pub container: String,
    /// Another name the container has on this network; repeatable.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Its IPv4 address on this network.
    #[arg(long)]
    pub ip: Option<String>,
}

#[derive(Debug, Args)]
pub struct NetworkDisconnectArgs {
    pub network: String,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    pub name: String,
    /// IPv4 CIDR, e.g. 10.90.0.0/24; default: a free one.
    #[arg(long)]
    pub subnet: Option<String>,
    /// bridge (the only driver).
    #[arg(long, short = 'd', default_value = "bridge")]
    pub driver: String,
    /// KEY=VALUE; repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    pub container: String,
    /// PORT[/PROTO]: only where this port is published.
    pub port: Option<String>,
}

#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    pub name: Option<String>,
    /// KEY=VALUE; repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VolumeLsArgs {
    /// Only the names.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Container ids, names, id prefixes, or image names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Look only at containers or only at images.
    #[arg(long = "type", value_enum)]
    pub kind: Option<InspectKind>,
    /// A Go template over each object, e.g. '{{.State.Pid}}'.
    #[arg(long, short = 'f')]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InspectKind {
    Container,
    Image,
}

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
pub struct EventsArgs {
    /// Topic prefixes (e.g. /tasks/exit); repeatable; default: all.
    #[arg(long = "filter")]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("berthctl").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn everything_after_the_image_belongs_to_the_command() {
        let Command::Run(run) = parse(&[
            "run", "--rm", "-it", "-e", "A=1", "busybox", "ls", "-la", "--rm",
        ])
        .command
        else {
            panic!("not run");
        };
        assert!(run.rm && run.container.tty && run.container.interactive);
        assert_eq!(run.container.image, "busybox");
        assert_eq!(run.container.command, ["ls", "-la", "--rm"]);
        assert_eq!(run.container.env, ["A=1"]);
        let Command::Exec(exec) = parse(&["exec", "-it", "web", "sh", "-c", "echo -n x"]).command
        else {
            panic!("not exec");
        };
        assert_eq!((exec.container.as_str(), exec.command.len()), ("web", 3));
    }

    #[test]
    fn global_flags_go_anywhere_and_logs_keeps_its_short_flags() {
        let cli = parse(&["ps", "--address", "/tmp/s.sock", "-a"]);
        assert_eq!(cli.address, PathBuf::from("/tmp/s.sock"));
        let Command::Logs(logs) = parse(&["logs", "-f", "-n", "5", "web"]).command else {
            panic!("not logs");
        };
        assert!(logs.follow);
        assert_eq!(logs.tail, "5");
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
