//! OCI hooks: run with the container's state on stdin, killed at their timeout.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::spec::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{phase} hook {path}: cannot start: {source}")]
    Start {
        phase: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{phase} hook {path}: {status}{}", stderr_suffix(.stderr))]
    Failed {
        phase: &'static str,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{phase} hook {path}: timed out after {seconds}s")]
    Timeout {
        phase: &'static str,
        path: String,
        seconds: i64,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(", stderr: {trimmed}")
    }
}

/// Runs each hook in order; the first failure stops the rest.
pub fn run_all(phase: &'static str, hooks: &[Hook], state_json: &[u8]) -> Result<(), HookError> {
    hooks.iter().try_for_each(|h| run(phase, h, state_json))
}

pub fn run(phase: &'static str, hook: &Hook, state_json: &[u8]) -> Result<(), HookError> {
    let path = hook.path.display().to_string();
    let mut command = Command::new(&hook.path);
    if let Some(arg0) = hook.args.first() {
        command.arg0(arg0);
        command.args(&hook.args[1..]);
    }
    command.env_clear();
    for entry in &hook.env {
        if let Some((k, v)) = entry.split_once('=') {
            command.env(k, v);
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| HookError::Start {
        phase,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook
        .timeout
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let mut pause = Duration::from_micros(200);
    // Drained while waiting: a hook that writes more than a pipe holds to
    // stderr would otherwise block forever.
    let mut stderr = Vec::new();
    if let Some(pipe) = &child.stderr {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a pipe we own.
        unsafe {
            let flags = libc::fcntl(pipe.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let status = loop {
        drain(&mut child, &mut stderr);
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Start {
                    phase,
                    path,
                    source,
                })
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                phase,
                path,
                seconds: hook.timeout.unwrap_or_default(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    if status.success() {
        return Ok(());
    }
    drain(&mut child, &mut stderr);
    Err(HookError::Failed {
        phase,
        path,
        status: status.to_string(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Reads what the hook wrote to stderr so far, keeping the first 64 KiB.
fn drain(child: &mut std::process::Child, into: &mut Vec<u8>) {
    use std::io::Read;
    let Some(pipe) = child.stderr.as_mut() else {
        return;
    };
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        if into.len() < 64 * 1024 {
            into.extend_from_slice(&buf[..n]);
        }
    }
}
