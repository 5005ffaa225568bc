//! `BERTH_TRACE=1` in the daemon's environment: for each container it
//! creates, starts, sees exit and removes, one line on stderr with the time
//! each step took, in order — where a `berthctl run` spends its time inside
//! the daemon (bench/trace.sh shows the same path from the outside, as
//! system calls). Unset, a timeline is one flag test per step.
//!
//! ```text
//! berth-imaged: trace start 3f2a9c01b7e4 @41234.567890: network 0.01 | shim 2.31 | readers 0.05 | Create 4.80 | record 0.42 = 7.59 ms
//! ```
//!
//! After the `@`, when the operation began, on the `CLOCK_MONOTONIC` clock
//! the runtime's `BERTH_TRACE` lines use: the two sort into one timeline.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("BERTH_TRACE").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// The steps of one operation on one container, printed when it is dropped.
pub struct Timeline {
    on: Option<Running>,
}

struct Running {
    what: &'static str,
    id: String,
    started: Instant,
    last: Instant,
    steps: String,
    at: String,
}

impl Timeline {
    pub fn new(what: &'static str, id: &str) -> Timeline {
        if !enabled() {
            return Timeline { on: None };
        }
        let now = Instant::now();
        Timeline {
            on: Some(Running {
                what,
                id: id.chars().take(12).collect(),
                started: now,
                last: now,
                steps: String::new(),
                at: berth_oci::time::monotonic_stamp(),
            }),
        }
    }

    /// Ends the step called `step`: the time since the previous one.
    pub fn step(&mut self, step: &str) {
        let Some(r) = &mut self.on else {
            return;
        };
        let now = Instant::now();
        let ms = now.duration_since(r.last).as_secs_f64() * 1000.0;
        if !r.steps.is_empty() {
            r.steps.push_str(" | ");
        }
        let _ = write!(r.steps, "{step} {ms:.2}");
        r.last = now;
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        if let Some(r) = &self.on {
            let total = r.started.elapsed().as_secs_f64() * 1000.0;
            eprintln!(
                "berth-imaged: trace {} {} @{}: {} = {total:.2} ms",
                r.what, r.id, r.at, r.steps
            );
        }
    }
}
