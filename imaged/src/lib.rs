//! berth-imaged: the daemon, to berth what containerd is to runc. Over gRPC
//! on unix sockets (berth's own API from `berth-proto`, and CRI v1) it pulls
//! and builds images, keeps their content and snapshots, makes containers
//! (bundles) from them, drives one `containerd-shim-berth-v2` per running
//! container, and connects containers to networks. ARCHITECTURE.md at the
//! repository root draws the processes and the crates.
//!
//! Where to start reading, by capability:
//! - images: [`images::Images::pull`] is the whole path of a pull — resolve,
//!   choose a platform, fetch blobs into [`content`] (in parallel, hashed as
//!   they stream), [`unpack`] each layer into its own [`snapshots`]
//!   directory, commit the layers by chain ID, record the image in
//!   [`metadata`]; [`archive`] imports and exports OCI layouts and
//!   `docker save` tars; [`distribution`] tags, pushes and logs in.
//! - containers: [`containers`] makes one from an image (an active
//!   snapshot mounted by [`mounts`], a bundle whose `config.json`
//!   [`bundle`] builds with `berth-oci`'s types), with [`volumes`] and
//!   [`logs`].
//! - tasks: [`tasks`] starts, execs, attaches to, stops, restarts and
//!   recovers containers through their shims ([`shim`]); [`events`] is the
//!   ttrpc endpoint the shims publish to.
//! - networks: [`networks`] (records, addresses) over the `berth-net` crate.
//! - builds: [`build`] runs Dockerfiles step by step, `RUN` in real
//!   containers.
//! - Kubernetes: [`cri`] serves CRI v1 (pods, containers, images) on a
//!   socket of its own, in a namespace of its own over the same stores;
//!   [`streaming`] is its exec/attach/port-forward server.
//! - gRPC: [`grpc`] (images, workloads, networks) and the `service`
//!   modules of [`build`], [`distribution`] and [`cri`] translate between
//!   `berth-proto` and the pieces above; [`config`] reads flags and the
//!   TOML file.
//!
//! The daemon links no runtime code: it reaches `berth` (or runc) only
//! through the shim, and shares the OCI types with the runtime through the
//! `berth-oci` crate.
//!
//! On disk, under the root (default `/var/lib/berth`): `content/` (blobs and
//! ingests), `snapshots/<id>/{fs,work}`, `bundles/<id>/`, `meta.redb`. In
//! the state directory (default `/run/berth-imaged`, a tmpfs on most
//! hosts): `bundles/<id>/` of the containers removed at their exit, and the
//! runtime's state (`runtime/`, unless `--runtime-root` says otherwise).

/// Defines `$name(op, path)`: the `map_err` that makes an I/O failure the
/// module's `$error::Io { op, path, source }` (what was done, on what).
macro_rules! io_context {
    ($name:ident, $error:ident) => {
        fn $name<'a>(
            op: &'static str,
            path: &'a std::path::Path,
        ) -> impl FnOnce(std::io::Error) -> $error + 'a {
            move |source| $error::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        }
    };
}

pub mod archive;
pub mod build;
pub mod bundle;
pub mod clock;
pub mod config;
pub mod containers;
pub mod content;
pub mod cri;
pub mod distribution;
pub mod events;
pub mod files;
pub mod grpc;
pub mod idle;
pub mod images;
pub mod logs;
pub mod metadata;
pub mod mounts;
pub mod networks;
pub mod private;
pub mod registry;
pub mod shim;
pub mod snapshots;
pub mod spawn;
pub mod steps;
pub mod streaming;
pub mod tasks;
pub mod unpack;
pub mod volumes;
