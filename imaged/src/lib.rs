//! berth-imaged: the daemon that turns a registry reference into root
//! filesystems, as containerd does for runc, over gRPC on a unix socket.
//!
//! Where to start reading:
//! - [`images::Images::pull`]: the whole path of a pull — resolve, choose a
//!   platform, fetch blobs into [`content`] (in parallel, hashed as they
//!   stream), [`unpack`] each layer into its own [`snapshots`] directory,
//!   commit the layers by chain ID, record the image in [`metadata`].
//! - [`unpack`]: applying a layer tar safely (every path resolved inside the
//!   snapshot); [`content`]: ingest, verify, atomic commit.
//! - [`archive`]: import and export of OCI layout and `docker save` tars.
//! - [`build`]: `berthctl build` — Dockerfiles run step by step, `RUN` in
//!   real containers, layers from overlay upper directories, a layer cache;
//!   [`distribution`]: tag, history, push and login.
//! - [`cri`]: Kubernetes' CRI v1 (pods, containers, images) on a socket of
//!   its own, in a namespace of its own over the same stores.
//! - [`server`]: the gRPC services of `berth-proto` over those pieces;
//!   [`config`]: flags and the TOML file.
//!
//! On disk, under the root (default `/var/lib/berth`): `content/` (blobs and
//! ingests), `snapshots/<id>/{fs,work}`, `meta.redb`.

pub mod archive;
pub mod build;
pub mod bundle;
pub mod config;
pub mod containers;
pub mod content;
pub mod cri;
pub mod distribution;
pub mod events;
pub mod files;
pub mod images;
pub mod logs;
pub mod metadata;
pub mod networks;
pub mod networks_service;
pub mod private;
pub mod registry;
pub mod server;
pub mod shim;
pub mod snapshots;
pub mod streaming;
pub mod tasks;
pub mod unpack;
pub mod volumes;
pub mod workloads;
