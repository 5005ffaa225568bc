//! berth's `create` and `run --detach`, run in a fork of the shim instead
//! of a new process, when the runtime is the berth installed beside this
//! shim (as its `delete` already is, see [`crate::runtime`]). The child is
//! what `berth create` would be after its start-up: the same stdio, the
//! bundle as working directory, the same `--log` file and errors in it,
//! the same exit status. It saves the runtime's `execve` and its libc's
//! start-up (about a millisecond here, most of it glibc's `cpuid` probes in
//! a VM), on the path every container start takes.
//!
//! Only what the shim itself builds runs here ([`Call::parse`] knows its
//! arguments and nothing else); anything else is the command line. The
//! child also goes back to the command line (it executes berth with the
//! same arguments, nothing done yet) when berth would first re-execute
//! itself from a sealed copy: the container could reach the runtime
//! process (`Loaded::runtime_needs_seal`), and what would be sealed is this
//! shim's binary, which berth's `main` is not. The init's own sealing needs
//! nothing of the kind: it ends in berth's sealed launcher, or re-executes
//! `/proc/self/exe` (this shim's binary), whose `main` resumes it
//! ([`resume_handed_over_init`]).
//!
//! The child of a two-thread process (the events thread): it takes no lock
//! another thread may hold (berth's log goes to the `--log` file, its
//! trace lines are single `write`s; glibc's malloc is fork-safe), closes
//! every descriptor it did not get as stdio, unblocks the signals the
//! server blocks for its signalfd and resets their handlers, and leaves
//! with `_exit`.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_runtime::container::{self, CreateOptions, Loaded};
use berth_runtime::log;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// A `create` or `run --detach` the shim built, parsed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `run --detach` (create and start) rather than `create`.
    pub run: bool,
    pub bundle: PathBuf,
    pub pid_file: PathBuf,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub id: String,
}

impl Call {
    /// `args` as [`crate::task`] builds them for an init without a
    /// terminal: `create` or `run --detach`, then `--bundle B --pid-file P`,
    /// `--no-pivot`, `--no-new-keyring`, and the id last. `None` for
    /// anything else.
    pub fn parse(args: &[&str]) -> Option<Call> {
        let (run, rest) = match args {
            ["create", rest @ ..] => (false, rest),
            ["run", "--detach", rest @ ..] => (true, rest),
            _ => return None,
        };
        let (id, mut flags) = rest.split_last()?;
        let (mut bundle, mut pid_file) = (None, None);
        let (mut no_pivot, mut no_new_keyring) = (false, false);
        while let Some((flag, after)) = flags.split_first() {
            flags = after;
            match *flag {
                "--bundle" | "--pid-file" => {
                    let (value, after) = flags.split_first()?;
                    flags = after;
                    let slot = if *flag == "--bundle" {
                        &mut bundle
                    } else {
                        &mut pid_file
                    };
                    *slot = Some(PathBuf::from(value));
                }
                "--no-pivot" => no_pivot = true,
                "--no-new-keyring" => no_new_keyring = true,
                _ => return None,
            }
        }
        if id.is_empty() || id.starts_with('-') {
            return None;
        }
        Some(Call {
            run,
            bundle: bundle?,
            pid_file: pid_file?,
            no_pivot,
            no_new_keyring,
            id: id.to_string(),
        })
    }
}

/// Everything the child needs, made before the fork.
pub struct Prepared {
    call: Call,
    root: PathBuf,
    log: PathBuf,
    /// The command line to fall back on: berth's path first.
    argv: Vec<CString>,
    bundle_c: CString,
    stdio: [OwnedFd; 3],
}

impl Prepared {
    /// `berth` is the runtime's resolved path; `argv` the full command line
    /// (without the binary); `stdio` the process's, /dev/null where `None`.
    pub fn new(
        call: Call,
        berth: &Path,
        root: &Path,
        log: &Path,
        argv: &[&OsStr],
        stdio: [Option<OwnedFd>; 3],
    ) -> std::io::Result<Prepared> {
        let c = |s: &OsStr| {
            CString::new(s.as_bytes())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        };
        let mut full = vec![c(berth.as_os_str())?];
        for arg in argv {
            full.push(c(arg)?);
        }
        let null = || {
            std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
        };
        let [stdin, stdout, stderr] =
            stdio.map(|fd| fd.map_or_else(|| null().map(OwnedFd::from), Ok));
        Ok(Prepared {
            bundle_c: c(call.bundle.as_os_str())?,
            call,
            root: root.to_path_buf(),
            log: log.to_path_buf(),
            argv: full,
            stdio: [stdin?, stdout?, stderr?],
        })
    }

    /// Forks the child that runs the call; the parent's copies of the
    /// stdio close when `self` is dropped.
    pub fn spawn(self) -> std::io::Result<Pid> {
        // SAFETY: the child runs only `child`, which never returns.
        match unsafe { fork() }.map_err(std::io::Error::from)? {
            ForkResult::Parent { child } => Ok(child),
            ForkResult::Child => child(&self),
        }
    }
}

/// Waits for the child: `Ok(0)` when it succeeded, else its exit status
/// (128 + the signal that killed it).
pub fn wait(pid: Pid) -> std::io::Result<i32> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn child(prepared: &Prepared) -> ! {
    // SAFETY: single-threaded from here on; only this process's own state
    // is changed, and nothing returns to the shim's code.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        for signal in 1..libc::SIGRTMIN() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                // As berth's own start leaves them: default, SIGPIPE ignored.
                let action = if signal == libc::SIGPIPE {
                    libc::SIG_IGN
                } else {
                    libc::SIG_DFL
                };
                libc::signal(signal, action);
            }
        }
        // Out of the way of 0-2 first, then into place.
        let mut high = [-1; 3];
        for (i, fd) in prepared.stdio.iter().enumerate() {
            high[i] = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10);
            if high[i] < 0 {
                libc::_exit(127);
            }
        }
        for (target, fd) in high.iter().enumerate() {
            if libc::dup2(*fd, target as RawFd) < 0 {
                libc::_exit(127);
            }
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        if libc::chdir(prepared.bundle_c.as_ptr()) != 0 {
            libc::_exit(127);
        }
    }
    let code = run(prepared);
    // SAFETY: leaving without running the shim's destructors or atexit
    // handlers, as an exec'd berth's exit would.
    unsafe { libc::_exit(code) }
}

/// berth's `create` or `run --detach`, as its `main` would run it.
fn run(prepared: &Prepared) -> i32 {
    let call = &prepared.call;
    berth_runtime::heap::keep();
    berth_runtime::trace::init();
    if log::init(&prepared.log, true, false).is_err() {
        // berth's own start-up reports it.
        return command_line(prepared);
    }
    // Unreadable or invalid: the command line's error, word for word.
    let loaded = match Loaded::read(&call.bundle) {
        Ok(loaded) if !loaded.runtime_needs_seal() => Arc::new(loaded),
        _ => return command_line(prepared),
    };
    berth_runtime::trace::step("config read");
    let options = CreateOptions {
        id: call.id.clone(),
        bundle: call.bundle.clone(),
        pid_file: Some(call.pid_file.clone()),
        console_socket: None,
        console_fd: None,
        no_pivot: call.no_pivot,
        no_new_keyring: call.no_new_keyring,
        preserve_fds: 0,
        foreground: false,
        loaded: Some(loaded),
    };
    let done = if call.run {
        container::run(&prepared.root, &options, true, false).map(drop)
    } else {
        container::create(&prepared.root, &options).map(drop)
    };
    match done {
        Ok(()) => 0,
        Err(e) => {
            log::write(log::Level::Error, &format!("{e}"));
            1
        }
    }
}

/// Executes berth with the call's command line; returns only on failure.
fn command_line(prepared: &Prepared) -> i32 {
    let mut argv: Vec<*const libc::c_char> = prepared.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: a null-terminated vector of C strings that outlive the call.
    unsafe { libc::execv(argv[0], argv.as_ptr()) };
    127
}

/// The shim's binary re-executed as a container's init (berth's init
/// seals itself by running `/proc/self/exe` again, and that is this shim's
/// binary when berth ran in the shim's fork): resumes the init, as berth's
/// `main` does. Called first thing in the shim's `main`.
pub fn resume_handed_over_init() {
    if let Some(handover) = berth_runtime::sealed_init::handed_over() {
        berth_runtime::sealed_init::resume(handover);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_shims_own_create_calls_are_taken() {
        let call = Call::parse(&[
            "run",
            "--detach",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--no-pivot",
            "c1",
        ])
        .expect("the shim's run --detach");
        assert_eq!(
            call,
            Call {
                run: true,
                bundle: "/b".into(),
                pid_file: "/b/init.pid".into(),
                no_pivot: true,
                no_new_keyring: false,
                id: "c1".into(),
            }
        );
        let create = Call::parse(&["create", "--bundle", "/b", "--pid-file", "/p", "c1"]);
        assert!(create.is_some_and(|c| !c.run && !c.no_pivot));
        for other in [
            &[
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "--console-socket",
                "/s",
                "c1",
            ][..],
            &["create", "--bundle", "/b", "c1"],
            &["create", "--pid-file", "/p", "c1"],
            &["create", "--bundle", "/b", "--pid-file", "/p"],
            &["create", "--bundle", "/b", "--pid-file"],
            &["run", "--bundle", "/b", "--pid-file", "/p", "c1"],
            &["exec", "--process", "/p.json", "--pid-file", "/p", "c1"],
            &[
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "--preserve-fds",
                "2",
                "c1",
            ],
        ] {
            assert_eq!(Call::parse(other), None, "{other:?}");
        }
    }
}
