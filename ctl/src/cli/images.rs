//! The flags of the image commands: `build`, `pull`, `push`, `images`,
//! `image` (rm, ls, save, load, mount, …), `tag`, `history`, `import`,
//! and the registry's `login`, `logout` and `search`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::FormatArg;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildProgress {
    Plain,
    Tty,
    Auto,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: NAME[:TAG] or its ID.
    pub source: String,
    /// The new name: [REGISTRY/]NAME[:TAG].
    pub target: String,
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
