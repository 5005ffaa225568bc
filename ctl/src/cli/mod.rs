//! The command line: every command and flag `berthctl` takes, as clap
//! derives it. Values that need more than clap's parsing (sizes, mounts,
//! restart policies) stay strings here and are checked in [`crate::flags`],
//! so a bad value gets a message that names the flag.
//!
//! Start at [`Command`], the list of commands; each one's flags are a
//! struct beside it, or in [`containers`] and [`images`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod containers;
pub mod images;

pub use containers::*;
pub use images::*;

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

/// A command's flags, built only when that command is the one given
/// (clap's `Command::defer`): `berthctl ps` need not build `run`'s and
/// `create`'s hundred-odd flags, nor `berthctl run` those of `create`, on
/// every start. Help, completion scripts and errors build them as before.
#[derive(Debug)]
pub struct Lazy<T>(pub T);

impl<T> std::ops::Deref for Lazy<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: clap::FromArgMatches> clap::FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Lazy)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(augmented::<T>)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(augmented_for_update::<T>)
    }

    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

/// `T`'s flags on `cmd`, which keeps its own words: built this late, the
/// doc of `T` (or of a struct it flattens) would replace the command's.
fn augmented<T: Args>(cmd: clap::Command) -> clap::Command {
    let words = Words::of(&cmd);
    words.put_back(T::augment_args(cmd))
}

fn augmented_for_update<T: Args>(cmd: clap::Command) -> clap::Command {
    let words = Words::of(&cmd);
    words.put_back(T::augment_args_for_update(cmd))
}

/// A command's `about` and `long_about`.
struct Words(
    Option<clap::builder::StyledStr>,
    Option<clap::builder::StyledStr>,
);

impl Words {
    fn of(cmd: &clap::Command) -> Words {
        Words(cmd.get_about().cloned(), cmd.get_long_about().cloned())
    }

    fn put_back(self, mut cmd: clap::Command) -> clap::Command {
        if let Some(about) = self.0 {
            cmd = cmd.about(about);
        }
        if let Some(long_about) = self.1 {
            cmd = cmd.long_about(long_about);
        }
        cmd
    }
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
    Build(Lazy<BuildArgs>),
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
    Run(Lazy<RunArgs>),
    /// Create a container without starting it.
    #[command(disable_help_flag = true)]
    Create(Lazy<CreateArgs>),
    /// Start created or stopped containers.
    Start(StartArgs),
    /// List containers.
    Ps(PsArgs),
    /// Run a command in a running container.
    Exec(Lazy<ExecArgs>),
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
    fn deferred_commands_keep_their_own_words_and_flags() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let unbuilt = cli.find_subcommand("create").expect("create");
        assert_eq!(
            unbuilt.get_arguments().count(),
            0,
            "create's flags made up front"
        );
        cli.build();
        for (name, about, flag) in [
            ("run", "Create a container from an image and start it", "rm"),
            ("create", "Create a container without starting it", "memory"),
            ("exec", "Run a command in a running container", "detach"),
            (
                "build",
                "Build an image from a Dockerfile and a context directory",
                "tags",
            ),
        ] {
            let command = cli.find_subcommand(name).expect(name);
            let words = command.get_about().map(|a| a.to_string());
            assert_eq!(words.as_deref(), Some(about), "{name}'s about");
            assert!(
                command.get_arguments().any(|a| a.get_id() == flag),
                "{name} lost --{flag}"
            );
        }
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
