//! The checks, one module per part of the config. Each `check` reads what
//! it needs from the [`Config`](crate::config::Config), looks at the
//! container from inside, and records one TAP line per expectation; a part
//! the config does not ask for records nothing.

pub mod devices;
pub mod filesystem;
pub mod namespaces;
pub mod process;
pub mod system;
