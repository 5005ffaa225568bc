//! Pull progress as a person or a script wants it: one bar per layer with
//! size and speed when stdout is a terminal that can draw them, otherwise
//! (a pipe, a file, `TERM` unset or `dumb`) one plain line per step of each
//! blob (never per chunk, so logs stay short).

use std::collections::HashMap;
use std::io::IsTerminal;

use berth_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pb::pull_progress::Phase;

use crate::output::short_digest;

pub enum Progress {
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
        style: ProgressStyle,
    },
    Lines {
        /// The last phase printed per blob.
        seen: HashMap<String, i32>,
    },
    Quiet,
}

/// Whether the terminal can redraw a line: indicatif draws nothing at all
/// on a `dumb` one (or with `TERM` unset, as under cron or a bare `env -i`).
fn draws_bars() -> bool {
    std::env::var_os("TERM").is_some_and(|term| !term.is_empty() && term != "dumb")
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if std::io::stdout().is_terminal() && draws_bars() {
            let style = ProgressStyle::with_template(
                "{prefix:.bold} {msg:<12} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            Progress::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                bars: HashMap::new(),
                style,
            }
        } else {
            Progress::Lines {
                seen: HashMap::new(),
            }
        }
    }

    pub fn update(&mut self, p: &pb::PullProgress) {
        let phase = Phase::try_from(p.phase).unwrap_or(Phase::Unspecified);
        match self {
            Progress::Quiet => {}
            Progress::Lines { seen } => {
                let line = match phase {
                    Phase::Resolving => Some("resolving".to_string()),
                    Phase::Resolved => Some(format!("resolved {} ({})", p.digest, p.media_type)),
                    Phase::Downloading => Some(format!(
                        "{}: downloading {}",
                        short_digest(&p.digest),
                        crate::output::size(p.total.max(0) as u64)
                    )),
                    Phase::Verified => Some(format!("{}: verified", short_digest(&p.digest))),
                    Phase::Unpacking => Some(format!("{}: unpacking", short_digest(&p.digest))),
                    Phase::Unpacked => Some(format!("{}: unpacked", short_digest(&p.digest))),
                    Phase::AlreadyExists => {
                        Some(format!("{}: already exists", short_digest(&p.digest)))
                    }
                    Phase::Done | Phase::Unspecified => None,
                };
                let key = format!("{}{}", p.digest, p.phase);
                if let Some(line) = line {
                    if seen.insert(key, p.phase).is_none() {
                        println!("{line}");
                    }
                }
            }
            Progress::Bars {
                multi, bars, style, ..
            } => {
                if p.digest.is_empty() || phase == Phase::Resolved {
                    return;
                }
                let bar = bars.entry(p.digest.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(p.total.max(0) as u64));
                    bar.set_style(style.clone());
                    bar.set_prefix(short_digest(&p.digest).to_string());
                    bar
                });
                match phase {
                    Phase::Downloading => {
                        if p.total > 0 {
                            bar.set_length(p.total as u64);
                        }
                        bar.set_position(p.offset.max(0) as u64);
                        bar.set_message("downloading");
                    }
                    Phase::Verified => {
                        if let Some(len) = bar.length() {
                            bar.set_position(len);
                        }
                        bar.set_message("verified");
                    }
                    Phase::Unpacking => bar.set_message("unpacking"),
                    Phase::Unpacked => bar.finish_with_message("done"),
                    Phase::AlreadyExists => bar.finish_with_message("exists"),
                    _ => {}
                }
            }
        }
    }

    /// Ends every bar (a failed pull leaves none half-drawn).
    pub fn finish(&mut self) {
        if let Progress::Bars { bars, .. } = self {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}
