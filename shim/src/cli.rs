//! The command line containerd uses, Go `flag` style:
//! `SHIM -namespace NS -address A -publish-binary B -id ID [-bundle DIR] [-debug] start|delete`.
//!
//! - `start` (cwd = bundle, `TTRPC_ADDRESS` set, runtime options as an
//!   `Any` on stdin): binds the socket, writes `./address`, forks the server
//!   into its own session with stdio on /dev/null as a child subreaper,
//!   prints `unix://SOCKET` and exits. containerd reads stdout until it
//!   closes, so the server must not hold it. The socket is named after the
//!   container's group: its pod (the spec's `io.kubernetes.cri.sandbox-id`
//!   annotation, which containerd's CRI and berth-imaged's set), else the
//!   container itself. When a shim already serves the group, `start`
//!   announces the container to it (berth's own `Join`, which keeps it from
//!   leaving before the container's Create) and only writes and prints that
//!   shim's address: the one shim serves the whole pod, as containerd's
//!   runc shim does. A shim on its way out refuses, and `start` runs a new
//!   one once the old has freed the socket's path.
//! - `delete`: the cleanup after a shim went away: `RUNTIME delete --force`,
//!   unmount the rootfs, print a `DeleteResponse`. Idempotent.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use containerd_shim_protos::api::{ConnectRequest, DeleteResponse};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use ttrpc::proto::Code;

use crate::events::Publisher;
use crate::mount;
use crate::options::Options;
use crate::runtime::Runtime;
use crate::server::{self, Server};
use crate::task::Tasks;
use crate::wire::{Client, WireError};

/// Where shims' sockets live, as containerd's own shims put them.
const SOCKET_DIR: &str = "/run/containerd/s";
/// The annotation that puts a pod's containers under one shim; containerd's
/// CRI sets it on every container of a pod (and the runc shim groups by it).
pub const GROUP_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

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

/// The group a container's shim serves: its pod's id from the bundle's
/// `config.json` annotations, or the container's own id.
pub fn group(bundle: &Path, id: &str) -> anyhow::Result<String> {
    let path = bundle.join("config.json");
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        // A bundle without a spec (a shim driven by hand) groups by its id;
        // Create then says what is missing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(id.to_string()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // Most specs name no group: they are not parsed (a spec with a
    // seccomp profile is tens of kilobytes) on every container's start.
    let named = GROUP_ANNOTATION.as_bytes();
    if !text.windows(named.len()).any(|w| w == named) {
        return Ok(id.to_string());
    }
    let spec: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(match spec["annotations"][GROUP_ANNOTATION].as_str() {
        Some(group) if !group.is_empty() => group.to_string(),
        _ => id.to_string(),
    })
}

/// A short, stable socket name for a group's shim (sun_path holds 108
/// bytes), from containerd's address, the namespace and the group.
pub fn socket_path(flags: &Flags, group: &str) -> PathBuf {
    // FNV-1a: stable across builds, no extra dependency.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{}/{}/{}", flags.address, flags.namespace, group).bytes() {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Path::new(SOCKET_DIR).join(format!("berth-{hash:016x}"))
}

/// How long `start` keeps trying to bind the group's socket or join the
/// shim behind it (a leaving shim frees the path within milliseconds).
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Announces container `id` to the shim listening on `path`
/// ([`crate::task::Tasks::join`]), so it stays for the container's Create.
/// An error says why it did not: most often the shim is leaving (it
/// refused, or its socket went meanwhile), or it died.
fn join(path: &Path, id: &str) -> Result<(), WireError> {
    let mut client = Client::connect(&path.display().to_string(), JOIN_PATIENCE)?;
    let mut request = ConnectRequest::new();
    request.id = id.to_string();
    let payload = request.write_to_bytes().unwrap_or_default();
    match client.call(server::GROUP_SERVICE, "Join", payload, &[]) {
        // A shim from before `Join` serves the group as it always did.
        Ok(_)
        | Err(WireError::Status {
            code: Code::UNIMPLEMENTED,
            ..
        }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Binds the group's socket at `path`, or finds a shim listening there
/// (`None`). Every start binds under a lock on the socket directory: a
/// socket that refuses a connection meanwhile is then a dead shim's, not
/// one another start has bound and not listened on yet, and of two starts
/// that find it, one alone removes it and binds. A spare's start (`locked`
/// false) takes no lock: nobody else binds its path, its id being unique,
/// and berth-imaged starts it at the idle priority, where holding the lock
/// every other start waits for would make them wait on idle time.
fn bind_or_find(path: &Path, locked: bool) -> anyhow::Result<Option<UnixListener>> {
    let dir =
        std::fs::File::open(SOCKET_DIR).with_context(|| format!("cannot open {SOCKET_DIR}"))?;
    // SAFETY: flock on a descriptor we own; the lock goes with it.
    if locked && unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot lock {SOCKET_DIR}"));
    }
    // A second round binds once a dead shim's socket or a leaving shim's
    // is gone; a third finds what else took the path.
    for _ in 0..3 {
        match UnixListener::bind(path) {
            Ok(listener) => return Ok(Some(listener)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen on {}", path.display()))
            }
        }
        match UnixStream::connect(path) {
            // Nobody answers: a socket left by a shim that died goes.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove the dead shim's {}", path.display()))?;
            }
            // A leaving shim removed it just now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn start(flags: &Flags) -> anyhow::Result<i32> {
    let bundle = std::env::current_dir().context("cannot find the bundle (working directory)")?;
    let mut options = Options::defaults(&flags.namespace);
    let mut input = Vec::new();
    // Read to the end before the server is forked: berth-imaged puts a
    // spare's `start` at the idle priority right after its exec and only
    // then writes this input, so the server inherits that policy.
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .read_to_end(&mut input)
            .context("cannot read runtime options from stdin")?;
    }
    options.apply_encoded(&input)?;
    options.save(&bundle)?;

    let group = group(&bundle, &flags.id)?;
    let path = socket_path(flags, &group);
    let spare = is_set(crate::task::SPARE_ENV);
    let address = format!("unix://{}", path.display());
    let write_address = || {
        crate::write_private(&bundle.join("address"), &address)
            .with_context(|| format!("cannot write {}/address", bundle.display()))
    };
    // Whoever can connect controls the container: root only, as containerd's shims.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(SOCKET_DIR)
        .with_context(|| format!("cannot create {SOCKET_DIR}"))?;
    // Binding first, as containerd's shims do: of two starts of one pod at
    // once, exactly one binds and the other finds it listening.
    let patience = std::time::Instant::now() + JOIN_PATIENCE;
    let listener = loop {
        if let Some(listener) = bind_or_find(&path, !(spare && group == flags.id))? {
            break listener;
        }
        if group == flags.id {
            bail!(
                "a shim already serves {} for task {}",
                path.display(),
                flags.id
            );
        }
        let refused = match join(&path, &flags.id) {
            Ok(()) => {
                // The pod's shim serves this container too.
                write_address()?;
                println!("{address}");
                return Ok(0);
            }
            Err(err) => err,
        };
        if std::time::Instant::now() > patience {
            bail!(
                "cannot start or join the pod's shim at {}: {refused}",
                path.display()
            );
        }
        // A leaving shim unlinks its socket as it decides to go, and a
        // dead one's goes in the next bind: the path is free in a moment.
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    write_address()?;

    // SAFETY: `start` has started no thread, so the child may run anything.
    match unsafe { nix::unistd::fork() }.context("cannot fork the shim server")? {
        nix::unistd::ForkResult::Parent { .. } => {
            println!("{address}");
            Ok(0)
        }
        nix::unistd::ForkResult::Child => {
            let code = match serve(flags, &bundle, listener, path) {
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
    // The server outlives this bundle when it serves a pod: it holds no
    // directory of any one container (each runtime call runs in its own).
    let _ = std::env::set_current_dir("/");
    crate::memory::one_arena();
    let signals = server::sigchld_fd()?;
    let events = Publisher::start(
        std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        flags.namespace.clone(),
    )?;
    let tasks = Tasks::new(&flags.namespace, events)
        .start_at_create(is_set(crate::task::START_AT_CREATE_ENV))
        .spare(is_set(crate::task::SPARE_ENV));
    Server::new(listener, path, signals, tasks, flags.debug).run()?;
    Ok(())
}

/// Whether environment variable `name` is `1`.
fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
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
    if let Err(err) = runtime.delete(&flags.id) {
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
        assert_ne!(socket_path(&a, "a"), socket_path(&b, "b"));
        assert_eq!(socket_path(&a, "pod"), socket_path(&b, "pod"));
        assert!(socket_path(&a, "a").as_os_str().len() < 60);
    }

    #[test]
    fn a_pods_containers_group_by_the_sandbox_id() {
        let dir = std::env::temp_dir().join(format!("berth-shim-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // No spec (a shim driven by hand): the container is its own group.
        assert_eq!(group(&dir, "c1").unwrap(), "c1");
        let spec = dir.join("config.json");
        std::fs::write(&spec, r#"{"annotations":{"other":"x"}}"#).unwrap();
        assert_eq!(group(&dir, "c1").unwrap(), "c1");
        std::fs::write(
            &spec,
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(group(&dir, "c1").unwrap(), "pod1");
        // Read only when it names the annotation; a broken spec that does
        // is refused here, one that does not at Create (by the runtime).
        std::fs::write(&spec, r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"#).unwrap();
        let err = group(&dir, "c1").unwrap_err().to_string();
        assert!(err.ends_with("is not valid JSON"), "{err}");
        std::fs::write(&spec, "{not json").unwrap();
        assert_eq!(group(&dir, "c1").unwrap(), "c1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
