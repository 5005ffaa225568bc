//! The OCI runtime as the shim calls it: runc's command line with
//! `--root`, `--log BUNDLE/log.json --log-format json`, and on failure the
//! last `"level":"error"` record that call wrote, which is what containerd
//! shows the user.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::options::Options;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot run {binary} (is it on PATH, or is binary_name right?): {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("{binary} {verb} failed: {message}")]
    Failed {
        binary: String,
        verb: String,
        message: String,
    },
}

/// One container's runtime: binary, state root, bundle and log file.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub options: Options,
    pub bundle: PathBuf,
    pub log: PathBuf,
}

impl Runtime {
    pub fn new(options: Options, bundle: &Path) -> Runtime {
        Runtime {
            options,
            bundle: bundle.to_path_buf(),
            log: bundle.join("log.json"),
        }
    }

    /// The runtime with its global flags, then `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.options.binary);
        command
            .arg("--root")
            .arg(&self.options.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if self.options.systemd_cgroup {
            command.arg("--systemd-cgroup");
        }
        command.args(args).stdin(Stdio::null());
        // In the container's bundle, as containerd's runc shim runs runc
        // (a shim serving a pod started in another container's bundle).
        if self.bundle.is_dir() {
            command.current_dir(&self.bundle);
        }
        command
    }

    /// Runs `args` to completion and returns its stdout.
    pub fn output(&self, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, RuntimeError> {
        let mark = self.log_len();
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().map_err(|e| self.spawn_error(e))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            // A runtime that exits without reading reports its own error below.
            let _ = stdin.write_all(input);
        }
        let out = child.wait_with_output().map_err(|e| self.spawn_error(e))?;
        self.check(args, mark, &out)?;
        Ok(out.stdout)
    }

    /// Waits for a spawned runtime command and turns a failure into its error.
    pub fn finish(
        &self,
        args: &[&str],
        mark: u64,
        child: std::process::Child,
    ) -> Result<(), RuntimeError> {
        let out = child.wait_with_output().map_err(|e| self.spawn_error(e))?;
        self.check(args, mark, &out)
    }

    pub fn spawn_error(&self, source: std::io::Error) -> RuntimeError {
        RuntimeError::Spawn {
            binary: self.options.binary.clone(),
            source,
        }
    }

    /// How long the log is now: errors are looked for after this mark.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    fn check(&self, args: &[&str], mark: u64, out: &Output) -> Result<(), RuntimeError> {
        if out.status.success() {
            return Ok(());
        }
        let message = self
            .last_error(mark)
            .or_else(|| {
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
                (!stderr.is_empty()).then_some(stderr)
            })
            .unwrap_or_else(|| format!("{}", out.status));
        Err(RuntimeError::Failed {
            binary: self.options.binary.clone(),
            verb: args.first().copied().unwrap_or("").to_string(),
            message,
        })
    }

    /// The message of the last error record written after `mark`.
    pub fn last_error(&self, mark: u64) -> Option<String> {
        let text = std::fs::read(&self.log).ok()?;
        let start = (mark as usize).min(text.len());
        last_error_in(&String::from_utf8_lossy(&text[start..]))
    }
}

/// The `msg` of the last `"level":"error"` JSON line in `text`.
pub fn last_error_in(text: &str) -> Option<String> {
    text.lines().rev().find_map(|line| {
        let record: serde_json::Value = serde_json::from_str(line).ok()?;
        (record["level"] == "error")
            .then(|| record["msg"].as_str().map(str::to_string))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_record_wins() {
        let log = concat!(
            "{\"level\":\"error\",\"msg\":\"old\"}\n",
            "{\"level\":\"info\",\"msg\":\"noise\"}\n",
            "{\"level\":\"error\",\"msg\":\"container does not exist\"}\n",
            "not json\n",
        );
        assert_eq!(
            last_error_in(log).as_deref(),
            Some("container does not exist")
        );
        assert_eq!(last_error_in("{\"level\":\"info\",\"msg\":\"x\"}"), None);
    }

    #[test]
    fn a_missing_binary_says_so() {
        let mut options = Options::defaults("t");
        options.binary = "/nonexistent/berth".into();
        let runtime = Runtime::new(options, Path::new("/nonexistent"));
        let err = runtime.output(&["state", "x"], None).unwrap_err();
        assert!(
            err.to_string().contains("cannot run /nonexistent/berth"),
            "{err}"
        );
    }
}
