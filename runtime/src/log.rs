//! runc-style logging: `--log FILE` with `--log-format text|json`.
//!
//! containerd and podman read the last `"level":"error"` record of the log
//! file and show its `msg` to the user, so error text must reach it.

use std::io::Write;
use std::sync::Mutex;

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

struct Sink {
    /// The `--log` file; without one, records go to stderr.
    file: Option<std::fs::File>,
    json: bool,
    debug: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

/// Opens the log file (append); `json` selects JSON lines.
pub fn init(path: &std::path::Path, json: bool, debug: bool) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink {
        file: Some(file),
        json,
        debug,
    });
    Ok(())
}

/// Without `--log`, `--debug` sends debug records to stderr (as runc's
/// do), in the `--log-format` given; errors keep their `berth: ` line.
pub fn init_stderr(json: bool, debug: bool) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink {
        file: None,
        json,
        debug,
    });
}

fn record(json: bool, level: Level, msg: &str) -> String {
    let time = crate::time::rfc3339_now();
    if json {
        let record = serde_json::json!({"level": level.name(), "msg": msg, "time": time});
        format!("{record}\n")
    } else {
        format!("time={time:?} level={} msg={msg:?}\n", level.name())
    }
}

/// Writes one record to the log file; without one, warnings and errors go
/// to stderr (and debug records with `--debug`).
pub fn write(level: Level, msg: &str) {
    let mut guard = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let sink = guard.as_mut();
    if level == Level::Debug && !sink.as_ref().is_some_and(|s| s.debug) {
        return;
    }
    match sink {
        Some(Sink {
            file: Some(file),
            json,
            ..
        }) => {
            let _ = file.write_all(record(*json, level, msg).as_bytes());
        }
        Some(Sink { json, .. }) if level == Level::Debug => {
            let _ = std::io::stderr().write_all(record(*json, level, msg).as_bytes());
        }
        _ => {
            let _ = if level == Level::Error {
                writeln!(std::io::stderr(), "berth: {msg}")
            } else {
                writeln!(std::io::stderr(), "berth: {}: {msg}", level.name())
            };
        }
    }
}

pub fn warn(msg: &str) {
    write(Level::Warn, msg)
}

pub fn debug(msg: &str) {
    write(Level::Debug, msg)
}
