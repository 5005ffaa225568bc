//! berth: a runc-compatible OCI runtime.
//!
//! `berth create` turns a bundle (`config.json` + rootfs) into a container
//! whose init waits for `berth start`; `run`, `exec`, `state`, `kill`,
//! `delete`, `list`, `spec` and `features` follow runc's CLI (see
//! `src/bin/berth/main.rs`); `pause`, `resume`, `ps`, `update` and `events` come
//! with the cgroup limits.
//!
//! Where to start reading:
//! - [`container`]: the verbs, what each command does to the state directory
//!   and the container's processes;
//! - [`init`]: every step of building the container, in order, as the child
//!   process runs them; [`channel`] is how it talks to the runtime;
//! - [`rootfs`] and [`mounts`]: the filesystem the container sees;
//!   `berth_oci::safe_path` is the primitive that keeps every path inside
//!   the rootfs;
//! - [`exec`]: a new process in a running container;
//! - [`seccomp`]: profiles compiled to BPF;
//! - [`trace`]: `BERTH_TRACE=1`, a timeline of the steps on stderr.
//!
//! The OCI vocabulary the daemon shares (defaults for `berth spec`,
//! capability and rlimit names, the safe filesystem toolkit, engines'
//! seccomp profiles) lives in the `berth-oci` crate.
//!
//! There is no `init` subcommand: the runtime clones the container's init
//! directly (as crun does), and the container must never reach the binary
//! through `/proc/PID/exe` (CVE-2019-5736). [`sealed_init`] says how: an
//! init in a pid namespace of its own builds the container as berth and
//! executes last a tiny sealed launcher (`launcher/launcher.rs`, built by
//! `build.rs`) that waits for `start` and executes the process; where that
//! launcher cannot be exact (a `startContainer` or `createContainer` hook, a seccomp profile that
//! may refuse it) the init re-executes berth from a read-only view of itself
//! first ([`sealed_exe`]), as `exec` always does and the runtime does when
//! the container shares its pid namespace. Neither is needed when a user
//! namespace leaves the binary's owner unmapped.

pub mod capabilities;
pub mod cgroups;
pub mod channel;
pub mod console;
pub mod container;
pub mod devices;
pub mod events;
pub mod exec;
pub mod heap;
pub mod hooks;
pub mod init;
pub mod log;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod sealed_exe;
pub mod sealed_init;
pub mod seccomp;
pub mod state;
pub mod time;
pub mod trace;

pub use berth_oci::{spec, OCI_VERSION};
