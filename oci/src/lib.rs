//! berth-oci: the OCI vocabulary the runtime (`berth`) and the daemon
//! (`berth-imaged`) share, and nothing that forks, unshares or changes
//! directory (its syscall wrappers act only on what the caller hands them).
//!
//! Both sides build on this crate; neither links the other (the daemon talks
//! to the runtime only through the runc CLI, via the shim). What lives here:
//! - [`spec`]: the runtime-spec types (`config.json`), read as runc reads
//!   it (Go's null and case rules, runc's zero values) and validated; the
//!   daemon writes its bundles with the same types;
//! - `image` (feature `image`, default; the runtime turns it off): the
//!   image-spec types (manifest, index, image configuration) from the
//!   `oci-spec` crate, and reading them as Go engines write them;
//! - [`go_json`]: JSON read as Go's `encoding/json` reads it (null is absent,
//!   keys match ignoring case), for `config.json` and image documents alike;
//! - [`defaults`]: the default `config.json` (`berth spec`) every bundle
//!   starts from, and `berth features`;
//! - [`kernel_names`]: capability and rlimit names, docker's default
//!   capability set;
//! - [`seccomp`]: engines' seccomp profiles (docker's, containers-common's)
//!   resolved into OCI `linux.seccomp` for one container;
//! - [`safe_path`]: the one safe filesystem toolkit, `openat2`
//!   (`RESOLVE_IN_ROOT`) lookups inside a root and the `*at` calls that
//!   never follow a final symlink;
//! - [`time`]: RFC 3339 timestamps, the workspace's one date routine,
//!   and the monotonic stamp of the trace lines;
//! - [`fd_passing`]: receiving a descriptor over a unix socket
//!   (`SCM_RIGHTS`: the console socket, a seccomp agent's socket);
//! - [`mount_api`]: the kernel's `open_tree`/`mount_setattr`/`move_mount`
//!   calls `nix` lacks (calls only: where and when to mount is each
//!   caller's).
//!
//! Where to start reading: [`spec`], then [`safe_path`] (the security
//! primitive).

pub mod defaults;
pub mod fd_passing;
pub mod go_json;
#[cfg(feature = "image")]
pub mod image;
pub mod kernel_names;
pub mod mount_api;
pub mod safe_path;
pub mod seccomp;
pub mod spec;
pub mod time;

/// The version of the OCI runtime spec berth implements.
pub const OCI_VERSION: &str = "1.2.0";
