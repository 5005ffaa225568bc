//! berth-net: the networks of berth's containers, as containerd's CRI,
//! nerdctl and podman make them: a network namespace per container, pinned
//! by a bind mount so that it outlives any process in it, and the standard
//! CNI plugins (Debian's `containernetworking-plugins`) run into it.
//!
//! Where to start reading:
//! - [`network::Network`]: what a network is (a bridge, a subnet) and the
//!   plugin list ([`network::Network::plugins`]) it becomes.
//! - [`attach`]: connecting a container (the network's chain with its port
//!   mappings) and disconnecting it again.
//! - [`cni`]: running one plugin by the CNI 1.0 contract: environment in,
//!   config on stdin, a result or an error on stdout.
//! - [`netns`]: making (loopback up), pinning and removing a network
//!   namespace.
//!
//! Everything here is synchronous and blocking (plugins are processes): the
//! daemon calls it from a blocking thread.

pub mod attach;
pub mod cni;
pub mod netns;
pub mod network;
pub mod ports;
pub mod rules;
