//! berth-checker: berth's in-container conformance checker, in the spirit
//! of runtime-tools' `runtimetest`.
//!
//! The integration tests put the static `berth-checker` binary in a
//! container's rootfs, bind-mount the bundle's `config.json` into the
//! container read-only, and run `berth-checker /berth-config.json` as the
//! container's process, under berth or under runc (the reference). The
//! checker reads the config and checks from inside that what it asks for
//! holds: namespaces, mounts, devices, hostname, masked and read-only
//! paths, sysctls, user, capabilities, rlimits, and the rest of `process`.
//! It prints TAP (`1..N`, then `ok N - ...` / `not ok N - ... # got X, want
//! Y`) and exits 0 when every check passed, 1 otherwise. It needs nothing
//! from the rootfs and never stops early: a failed read is a `not ok`.
//!
//! Where to start reading: [`run`] lists the check groups in order; each
//! lives in [`checks`]. [`tap`] is the report, [`config`] the fields the
//! checks compare against. Expectations that runc meets differently from
//! the spec's letter are explained where they are encoded (notably
//! [`capabilities::after_exec`] and the bind-mount rules in
//! [`checks::filesystem`]).
//!
//! Some expectations cannot be known from inside: the host's namespace
//! inodes come in annotations the test sets (see [`checks::namespaces`]).

pub mod capabilities;
pub mod checks;
pub mod config;
pub mod mountinfo;
pub mod paths;
pub mod procfs;
pub mod sys;
pub mod tap;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use config::Config;
use tap::Report;

/// A group of checks over one part of the config.
type CheckGroup = fn(&Config, &mut Report);

const GROUPS: [(&str, CheckGroup); 5] = [
    ("namespace", checks::namespaces::check),
    ("filesystem", checks::filesystem::check),
    ("device", checks::devices::check),
    ("system", checks::system::check),
    ("process", checks::process::check),
];

/// Runs every check against the config at `config_path`.
pub fn run(config_path: &Path) -> Report {
    let mut report = Report::new();
    let config = match load(config_path) {
        Ok(config) => config,
        Err(e) => {
            report.fail("the config is readable", e, "a JSON object");
            return report;
        }
    };
    for (name, group) in GROUPS {
        // A bug in one group must not cost the report of the others. This
        // needs panics to unwind: the workspace's release profile aborts on
        // panic, so the tests should run a debug build.
        let finished = catch_unwind(AssertUnwindSafe(|| group(&config, &mut report)));
        if finished.is_err() {
            report.fail(
                format!("the {name} checks ran to the end"),
                "a panic",
                "no panic",
            );
        }
    }
    report
}

fn load(path: &Path) -> Result<Config, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Config::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}
