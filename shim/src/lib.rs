//! containerd-shim-berth-v2: a containerd shim v2 that drives berth (or runc).
//!
//! containerd (or `berth-imaged`) starts a shim for a container as
//! `containerd-shim-berth-v2 -namespace NS -address A -publish-binary B -id ID start`
//! in the bundle directory. That short-lived `start` forks the long-lived
//! server (new session, stdio on /dev/null, child subreaper), writes the
//! socket address to `./address`, prints it and exits. The socket is named
//! after the container's group: a Kubernetes pod (the spec's
//! `io.kubernetes.cri.sandbox-id`) has one shim for all its containers, as
//! containerd's runc shim groups them; any other container is a group of
//! one. When the group's shim already runs, `start` hands its address on
//! instead of starting another. The server answers
//! `containerd.task.v2.Task` over ttrpc, runs the OCI runtime (`berth` by
//! default; `runc` through the runtime options) for each verb, owns the
//! containers' stdio, reaps every process and forwards `/tasks/*` events to
//! `TTRPC_ADDRESS`. `delete` is the cleanup containerd runs after a shim
//! went away.
//!
//! The server is one thread: a `poll` loop over the listening socket, the
//! ttrpc connections, a signalfd for SIGCHLD and the OOM eventfds
//! ([`server`]). A `Wait` is parked until its process exits instead of
//! holding a thread. Events go out on one more thread ([`events`]) so that a
//! daemon that is away (restarting) never stalls the loop. Copies only
//! happen for terminals and stdin; a container's stdout and stderr are the
//! daemon's fifos themselves ([`stdio`]).
//!
//! Where to start reading:
//! - [`cli`]: the `start` and `delete` subcommands, as containerd calls them;
//! - [`server`]: the loop, and which RPC goes where;
//! - [`task`]: every Task RPC, the containers served and their processes,
//!   and the event order;
//! - [`runtime`]: how the OCI runtime is invoked and its errors reported
//!   ([`berth_fork`]: berth's create in a fork of the shim);
//! - [`memory`]: what an idle shim gives back after each burst of RPCs;
//! - [`wire`]: the ttrpc framing (server side and the small events client).

pub mod berth_fork;
pub mod cli;
pub mod console;
pub mod events;
pub mod memory;
pub mod mount;
pub mod oom;
pub mod options;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod stdio;
pub mod task;
pub mod wire;

/// The containerd protocol types the shim speaks, for clients and tests.
pub use containerd_shim_protos as protos;

/// Writes one line to the shim's log: stderr, which the server points at
/// the bundle's `log` fifo that containerd copies into its own log. A log
/// nobody reads (containerd restarting) drops the line rather than failing.
pub fn log(message: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "containerd-shim-berth-v2: {message}");
}

/// Writes a file of the shim's own (an address, the runtime options, a pid,
/// an exec's process spec) readable by root alone, whatever the umask.
pub fn write_private(path: &std::path::Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A file an older shim left keeps its mode on open: set it again.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_ref())
}

/// The shim's version, reported by `Connect`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
