//! The OCI runtime as the shim calls it: runc's command line with
//! `--root`, `--log BUNDLE/log.json --log-format json`, and on failure the
//! last `"level":"error"` record that call wrote, which is what containerd
//! shows the user.
//!
//! Two calls skip the command line when the runtime is the berth installed
//! beside this shim (the two are built and shipped together): `delete` runs
//! berth's own delete in the shim's process, so a container's teardown
//! starts no process at all, and an init's `create` or `run --detach` runs
//! in a fork of the shim ([`crate::berth_fork`]). Each saves about a
//! millisecond here (most of it glibc's start-up in a VM).

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::berth_fork;
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

    /// The runtime's global flags, then `args`.
    fn arguments<'a>(&'a self, args: &'a [&'a str]) -> Vec<&'a OsStr> {
        let mut all: Vec<&OsStr> = vec![
            "--root".as_ref(),
            self.options.root.as_os_str(),
            "--log".as_ref(),
            self.log.as_os_str(),
            "--log-format".as_ref(),
            "json".as_ref(),
        ];
        if self.options.systemd_cgroup {
            all.push("--systemd-cgroup".as_ref());
        }
        all.extend(args.iter().map(OsStr::new));
        all
    }

    /// The runtime with its global flags, then `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.options.binary);
        command.args(self.arguments(args)).stdin(Stdio::null());
        // In the container's bundle, as containerd's runc shim runs runc
        // (a shim serving a pod started in another container's bundle).
        if self.bundle.is_dir() {
            command.current_dir(&self.bundle);
        }
        command
    }

    /// `args` (an init's `create` or `run --detach`) can run in a fork of
    /// this shim ([`crate::berth_fork`]): the runtime is the berth beside
    /// it, and the call is one the shim builds.
    pub fn forkable(&self, args: &[&str]) -> Option<(berth_fork::Call, PathBuf)> {
        if self.options.systemd_cgroup {
            return None;
        }
        let call = berth_fork::Call::parse(args)?;
        Some((call, berth_beside_this_shim(&self.options.binary)?))
    }

    /// Runs a [`Runtime::forkable`] call in a fork of this shim, with
    /// `stdio` as the process's; waits for it and turns a failure into its
    /// error, as [`Runtime::finish`] does for a command.
    pub fn run_forked(
        &self,
        (call, berth): (berth_fork::Call, PathBuf),
        args: &[&str],
        stdio: [Option<std::os::fd::OwnedFd>; 3],
    ) -> Result<(), RuntimeError> {
        let mark = self.log_len();
        let root = self.options.root.clone();
        let prepared =
            berth_fork::Prepared::new(call, &berth, &root, &self.log, &self.arguments(args), stdio)
                .map_err(|e| self.spawn_error(e))?;
        let pid = prepared.spawn().map_err(|e| self.spawn_error(e))?;
        let code = berth_fork::wait(pid).map_err(|e| self.spawn_error(e))?;
        if code == 0 {
            return Ok(());
        }
        Err(RuntimeError::Failed {
            binary: self.options.binary.clone(),
            verb: args.first().copied().unwrap_or("").to_string(),
            message: self
                .last_error(mark)
                .unwrap_or_else(|| format!("exit status {code}")),
        })
    }

    /// `RUNTIME delete --force ID`: the container's processes are killed,
    /// its cgroups and state removed. Gone already is no error.
    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        if !is_berth_beside_this_shim(&self.options.binary) {
            return self.output(&["delete", "--force", id], None).map(drop);
        }
        // A relative root is the bundle's, as for the command, which runs there.
        let root = match self.options.root.is_relative() && self.bundle.is_dir() {
            true => self.bundle.join(&self.options.root),
            false => self.options.root.clone(),
        };
        berth_runtime::container::delete(&root, id, true).map_err(|e| RuntimeError::Failed {
            binary: self.options.binary.clone(),
            verb: "delete".into(),
            message: e.to_string(),
        })
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

/// Whether `binary` (a path, or a name looked up on PATH as `Command`
/// would) is the `berth` in this shim's own directory.
fn is_berth_beside_this_shim(binary: &str) -> bool {
    berth_beside_this_shim(binary).is_some()
}

/// The `berth` in this shim's own directory, when `binary` is that one.
fn berth_beside_this_shim(binary: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    // A shim whose binary was replaced since it started (berth upgraded
    // while the shim serves a pod) runs older code than the berth beside
    // it now, which wrote the containers' state: it calls that berth.
    let current = exe
        .as_deref()
        .filter(|exe| same_file(exe, Path::new("/proc/self/exe")));
    let dir = current.and_then(Path::parent)?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    is_berth_in(dir, binary, &path).then(|| dir.join("berth"))
}

/// Whether `a` and `b` name one file (its device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Whether `binary`, found as `Command` finds it on `path`, is `dir/berth`
/// (through any symbolic links).
fn is_berth_in(dir: &Path, binary: &str, path: &std::ffi::OsStr) -> bool {
    let Ok(ours) = dir.join("berth").canonicalize() else {
        return false;
    };
    let found = if binary.contains('/') {
        Some(PathBuf::from(binary))
    } else {
        std::env::split_paths(path)
            .map(|dir| dir.join(binary))
            .find(|candidate| candidate.is_file())
    };
    found
        .and_then(|path| path.canonicalize().ok())
        .is_some_and(|path| path == ours)
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
    fn only_the_berth_beside_the_shim_is_called_in_process() {
        let dir = std::env::temp_dir().join(format!("berth-shim-beside-{}", std::process::id()));
        let (shim_dir, elsewhere, links) = (dir.join("bin"), dir.join("other"), dir.join("links"));
        for d in [&shim_dir, &elsewhere, &links] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(shim_dir.join("berth"), b"").unwrap();
        std::fs::write(elsewhere.join("berth"), b"").unwrap();
        std::os::unix::fs::symlink(shim_dir.join("berth"), links.join("berth")).unwrap();
        let ours = shim_dir.join("berth").display().to_string();
        let path = |dirs: &[&PathBuf]| std::env::join_paths(dirs).unwrap();
        assert!(is_berth_in(&shim_dir, &ours, &path(&[])));
        assert!(is_berth_in(
            &shim_dir,
            &links.join("berth").display().to_string(),
            &path(&[])
        ));
        // By name: the first berth on PATH decides, as for `Command`.
        assert!(is_berth_in(
            &shim_dir,
            "berth",
            &path(&[&links, &elsewhere])
        ));
        assert!(!is_berth_in(
            &shim_dir,
            "berth",
            &path(&[&elsewhere, &links])
        ));
        assert!(!is_berth_in(&shim_dir, "runc", &path(&[&shim_dir])));
        assert!(!is_berth_in(
            &shim_dir,
            &elsewhere.join("berth").display().to_string(),
            &path(&[])
        ));
        // No berth beside the shim: always the command line.
        assert!(!is_berth_in(
            &elsewhere.join("none"),
            "berth",
            &path(&[&shim_dir])
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shim_binary_replaced_since_it_started_is_not_this_shims() {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("berth-shim-replaced-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("containerd-shim-berth-v2");
        std::fs::write(&exe, b"old").unwrap();
        // What /proc/self/exe is to a running shim: its file, opened.
        let file = std::fs::File::open(&exe).unwrap();
        let running = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        assert!(same_file(&exe, &running));
        // An upgrade puts a new file in its place.
        std::fs::write(dir.join("new"), b"new").unwrap();
        std::fs::rename(dir.join("new"), &exe).unwrap();
        assert!(!same_file(&exe, &running));
        assert!(!same_file(&dir.join("gone"), &running));
        // This test's own binary is the one on disk.
        let this = std::env::current_exe().unwrap();
        assert!(same_file(&this, Path::new("/proc/self/exe")));
        std::fs::remove_dir_all(&dir).unwrap();
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
