//! The command line containerd uses, Go `flag` style:
//! `SHIM -namespace NS -address A -publish-binary B -id ID [-bundle DIR] [-debug] start|delete`.
//!
//! - `start` (cwd = bundle, `TTRPC_ADDRESS` set, runtime options as an
//!   `Any` on stdin): binds the socket, writes `./address`, forks the server
//!   into its own session with stdio on /dev/null as a child subreaper,
//!   prints `unix://SOCKET` and exits. containerd reads stdout until it
//!   closes, so the server must not hold it.
//! - `delete`: the cleanup after a shim went away: `RUNTIME delete --force`,
//!   unmount the rootfs, print a `DeleteResponse`. Idempotent.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};

use crate::events::Publisher;
use crate::mount;
use crate::options::Options;
use crate::runtime::Runtime;
use crate::server::{self, Server};
use crate::task::Task;

/// Where shims' sockets live, as containerd's own shims put them.
const SOCKET_DIR: &str = "/run/containerd/s";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("flag -{0} needs a value")]
    MissingValue(String),
    #[error("unknown flag -{0}")]
    UnknownFlag(String),
    #[error("-{0} is required")]
    Required(&'static str),
    #[error("unknown action {0:?} (start or delete)")]
    Action(String),
}

/// The flags containerd passes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub namespace: String,
    pub address: String,
    pub publish_binary: String,
    pub id: String,
    pub bundle: String,
    pub debug: bool,
    pub version: bool,
    pub action: String,
}

pub fn parse(args: &[String]) -> Result<Flags, CliError> {
    let mut flags = Flags::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            flags.action = arg.clone();
            break;
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        if matches!(name, "debug" | "v") {
            let on = inline.as_deref() != Some("false");
            if name == "debug" {
                flags.debug = on;
            } else {
                flags.version = on;
            }
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .cloned()
                .ok_or_else(|| CliError::MissingValue(name.to_string()))?,
        };
        match name {
            "namespace" => flags.namespace = value,
            "address" => flags.address = value,
            "publish-binary" => flags.publish_binary = value,
            "id" => flags.id = value,
            "bundle" => flags.bundle = value,
            // Accepted for compatibility with containerd's shims; unused.
            "socket" | "runtime-root" | "criu" | "systemd-cgroup" => {}
            _ => return Err(CliError::UnknownFlag(name.to_string())),
        }
    }
    Ok(flags)
}

pub fn main(args: &[String]) -> anyhow::Result<i32> {
    let flags = parse(args)?;
    if flags.version {
        println!("containerd-shim-berth-v2 version {}", crate::VERSION);
        return Ok(0);
    }
    if flags.namespace.is_empty() {
        return Err(CliError::Required("namespace").into());
    }
    if flags.id.is_empty() {
        return Err(CliError::Required("id").into());
    }
    match flags.action.as_str() {
        "start" => start(&flags),
        "delete" => delete(&flags),
        other => Err(CliError::Action(other.to_string()).into()),
    }
}

/// A short, stable socket name for this container (sun_path holds 108 bytes).
pub fn socket_path(flags: &Flags) -> PathBuf {
    // FNV-1a: stable across builds, no extra dependency.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{}/{}/{}", flags.address, flags.namespace, flags.id).bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Path::new(SOCKET_DIR).join(format!("berth-{hash:016x}"))
}

fn start(flags: &Flags) -> anyhow::Result<i32> {
    let bundle = std::env::current_dir().context("cannot find the bundle (working directory)")?;
    let mut options = Options::defaults(&flags.namespace);
    let mut input = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .read_to_end(&mut input)
            .context("cannot read runtime options from stdin")?;
    }
    options.apply_encoded(&input)?;
    options.save(&bundle)?;

    let path = socket_path(flags);
    // Whoever can connect controls the container: root only, as containerd's shims.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(SOCKET_DIR)
        .with_context(|| format!("cannot create {SOCKET_DIR}"))?;
    if UnixStream::connect(&path).is_ok() {
        bail!(
            "a shim already serves {} for task {}",
            path.display(),
            flags.id
        );
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    let address = format!("unix://{}", path.display());
    std::fs::write(bundle.join("address"), &address)
        .with_context(|| format!("cannot write {}/address", bundle.display()))?;

    // SAFETY: `start` has started no thread, so the child may run anything.
    match unsafe { nix::unistd::fork() }.context("cannot fork the shim server")? {
        nix::unistd::ForkResult::Parent { .. } => {
            println!("{address}");
            Ok(0)
        }
        nix::unistd::ForkResult::Child => {
            let code = match serve(flags, &bundle, options, listener, path) {
                Ok(()) => 0,
                Err(err) => {
                    crate::log(format_args!("{err:#}"));
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

fn serve(
    flags: &Flags,
    bundle: &Path,
    options: Options,
    listener: UnixListener,
    path: PathBuf,
) -> anyhow::Result<()> {
    nix::unistd::setsid().context("setsid")?;
    nix::sys::prctl::set_child_subreaper(true).context("cannot become a child subreaper")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("/dev/null")?;
    for fd in 0..3 {
        nix::unistd::dup2(null.as_raw_fd(), fd).context("cannot detach stdio")?;
    }
    // containerd reads the bundle's `log` fifo into its own log; without a
    // reader (another caller) the log stays /dev/null.
    if let Ok(log) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
    {
        let _ = nix::unistd::dup2(log.as_raw_fd(), 2);
    }
    if flags.debug {
        crate::log(format_args!(
            "serving task {} of namespace {} on {}",
            flags.id,
            flags.namespace,
            path.display()
        ));
    }
    // As containerd's own shims do: tools (and tests) find the shim by it.
    let _ = std::fs::write(bundle.join("shim.pid"), std::process::id().to_string());
    let signals = server::sigchld_fd()?;
    let events = Publisher::start(
        std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        flags.namespace.clone(),
    )?;
    let task = Task::new(&flags.namespace, &flags.id, bundle, options, events);
    Server::new(listener, path, signals, task, flags.debug).run()?;
    Ok(())
}

fn delete(flags: &Flags) -> anyhow::Result<i32> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("cannot find the bundle (working directory)")?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let options = Options::load(&bundle, &flags.namespace);
    let runtime = Runtime::new(options, &bundle);
    let pid = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    if let Err(err) = runtime.output(&["delete", "--force", &flags.id], None) {
        // Already gone is what a second delete finds.
        if !err.to_string().contains("does not exist") {
            crate::log(&err);
        }
    }
    mount::unmount_all(&bundle.join("rootfs"));
    let mut response = DeleteResponse::new();
    response.pid = pid;
    response.exit_status = 128 + libc::SIGKILL as u32;
    response.exited_at = MessageField::some(Timestamp::now());
    std::io::stdout()
        .write_all(&response.write_to_bytes()?)
        .context("cannot write the DeleteResponse")?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn containerds_flags_parse_in_both_spellings() {
        let flags = parse(&strings(&[
            "-namespace",
            "default",
            "-address",
            "/run/c.sock",
            "--publish-binary=/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ]))
        .unwrap();
        assert_eq!(flags.namespace, "default");
        assert_eq!(flags.address, "/run/c.sock");
        assert_eq!(flags.publish_binary, "/usr/bin/containerd");
        assert_eq!(
            (flags.id.as_str(), flags.debug, flags.action.as_str()),
            ("c1", true, "start")
        );
        assert!(matches!(
            parse(&strings(&["-id"])),
            Err(CliError::MissingValue(_))
        ));
        assert!(matches!(
            parse(&strings(&["-nope", "x"])),
            Err(CliError::UnknownFlag(_))
        ));
    }

    #[test]
    fn socket_paths_are_short_and_distinct() {
        let a = parse(&strings(&["-namespace", "n", "-id", "a", "start"])).unwrap();
        let b = parse(&strings(&["-namespace", "n", "-id", "b", "start"])).unwrap();
        assert_ne!(socket_path(&a), socket_path(&b));
        assert!(socket_path(&a).as_os_str().len() < 60);
    }
}
