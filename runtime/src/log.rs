//! runc-style logging: `--log FILE` with `--log-format text|json`.
//!
//! containerd and podman read the last `"level":"error"` record of the log
//! file and show its `msg` to the user, so error text must reach it.

use std::io::Write;
use std::sync::Mutex;

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

struct Sink {
    file: std::fs::File,
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
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink { file, json, debug });
    Ok(())
}

/// Writes one record to the log file; without one, warnings and errors go to stderr.
pub fn write(level: Level, msg: &str) {
    let mut guard = SINK.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_mut() {
        Some(sink) => {
            if level == Level::Debug && !sink.debug {
                return;
            }
            let time = crate::time::rfc3339_now();
            let line = if sink.json {
                let record = serde_json::json!({"level": level.name(), "msg": msg, "time": time});
                format!("{record}\n")
            } else {
                format!("time={time:?} level={} msg={msg:?}\n", level.name())
            };
            let _ = sink.file.write_all(line.as_bytes());
        }
        None if level >= Level::Warn => {
            let _ = if level == Level::Error {
                writeln!(std::io::stderr(), "berth: {msg}")
            } else {
                writeln!(std::io::stderr(), "berth: {}: {msg}", level.name())
            };
        }
        None => {}
    }
}

pub fn warn(msg: &str) {
    write(Level::Warn, msg)
}

pub fn debug(msg: &str) {
    write(Level::Debug, msg)
}
