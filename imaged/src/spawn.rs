//! Running a shim's `start` or `delete` without forking the daemon.
//!
//! containerd's contract runs both with the bundle as working directory.
//! std's `Command` sets one in a `posix_spawn` child only where it finds
//! `posix_spawn_file_actions_addchdir_np` at run time, in a dynamic glibc;
//! the static daemon's `spawn` therefore forks, copying the page tables of
//! all its memory and leaving copy-on-write faults behind, for every
//! container's start and removal: 0.3 ms of the daemon's CPU per spawn at
//! 16 MiB, 0.9 ms at 64 MiB here (a daemon serving 1000 containers has
//! 53 MiB). [`Spawn`] calls glibc's `posix_spawnp` itself, whose child
//! shares the daemon's memory until its exec, with the working directory
//! and the standard streams set in that child. A spawn returns once the
//! child holds none of the daemon's descriptors but its streams (see
//! `past_close_on_exec`), and only then is a spare shim put at the idle
//! priority. Everything here blocks until the child ends: callers run it
//! on a blocking thread.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

/// What becomes of a child's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// stdin carries the input given to [`Spawn::output`]; stdout and
    /// stderr are collected.
    Piped,
    /// All three are /dev/null.
    Null,
}

/// A program to run: its name (a path, or a name looked up on the
/// daemon's `PATH`), arguments, added environment and working directory.
#[derive(Debug, Clone)]
pub struct Spawn {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<OsString>,
    idle: bool,
}

/// How a child ended and what it wrote.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Spawn {
    pub fn new(program: impl AsRef<OsStr>) -> Spawn {
        Spawn {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            idle: false,
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Spawn {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Spawn {
        for arg in args {
            self.arg(arg);
        }
        self
    }

    /// Sets `key` in the child's environment, which is the daemon's
    /// otherwise; the last value set for a key wins.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Spawn {
        let key = key.as_ref().to_owned();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.as_ref().to_owned()));
        self
    }

    pub fn current_dir(&mut self, dir: &Path) -> &mut Spawn {
        self.dir = Some(dir.as_os_str().to_owned());
        self
    }

    /// Runs the child under `SCHED_IDLE` from just after its exec (see
    /// [`crate::idle`]).
    pub fn idle(&mut self) -> &mut Spawn {
        self.idle = true;
        self
    }

    /// Runs the program to its end: `input` on its stdin, its stdout and
    /// stderr collected (with [`Streams::Piped`]). The input is written
    /// whole before the output is read, so it must fit a pipe (64 KiB)
    /// unless the child reads it before it writes much: a shim's runtime
    /// options are a few hundred bytes.
    pub fn output(&self, streams: Streams, input: &[u8]) -> io::Result<Output> {
        let mut pipes = Vec::new();
        let (child_ends, stdin, stdout, stderr) = match streams {
            Streams::Piped => {
                let (stdin_read, stdin_write) = pipe()?;
                let (stdout_read, stdout_write) = pipe()?;
                let (stderr_read, stderr_write) = pipe()?;
                pipes.extend([stdin_read, stdout_write, stderr_write]);
                (
                    Some([0, 1, 2].map(|i| pipes[i].as_raw_fd())),
                    Some(stdin_write),
                    Some(stdout_read),
                    Some(stderr_read),
                )
            }
            Streams::Null => (None, None, None, None),
        };
        let pid = self.spawn(child_ends)?;
        // The child's ends are the child's alone now: EOF comes when it
        // (and whatever it leaves running with them) closes them.
        drop(pipes);
        let mut collected = (Vec::new(), Vec::new());
        let streamed = match (stdin, stdout, stderr) {
            (Some(stdin), Some(stdout), Some(stderr)) => {
                // A child that does not read its input ends the pipe: not
                // an error of this call (what the child says is).
                let _ = std::fs::File::from(stdin).write_all(input);
                read_both(stdout, stderr, &mut collected)
            }
            _ => Ok(()),
        };
        let status = reap(pid)?;
        streamed?;
        Ok(Output {
            status,
            stdout: collected.0,
            stderr: collected.1,
        })
    }

    /// `posix_spawnp` with this program's arguments, environment, working
    /// directory and priority; `stdio` the descriptors for 0, 1 and 2, or
    /// /dev/null for all three.
    fn spawn(&self, stdio: Option<[RawFd; 3]>) -> io::Result<libc::pid_t> {
        let program = c_string(&self.program)?;
        let mut argv_owned = vec![program.clone()];
        for arg in &self.args {
            argv_owned.push(c_string(arg)?);
        }
        let mut env_owned = Vec::new();
        for (key, value) in std::env::vars_os() {
            if !self.env.iter().any(|(k, _)| *k == key) {
                env_owned.push(env_entry(&key, &value)?);
            }
        }
        for (key, value) in &self.env {
            env_owned.push(env_entry(key, value)?);
        }
        let argv = null_terminated(&argv_owned);
        let envp = null_terminated(&env_owned);
        let dir = self.dir.as_deref().map(c_string).transpose()?;
        let null = c"/dev/null";

        // SAFETY: C structs, each with its own init and destroy.
        let mut actions = unsafe {
            SpawnObject::new(
                libc::posix_spawn_file_actions_init,
                libc::posix_spawn_file_actions_destroy,
            )?
        };
        match stdio {
            Some(fds) => {
                for (target, fd) in fds.into_iter().enumerate() {
                    // SAFETY: an initialised actions object, two descriptors.
                    check(unsafe {
                        libc::posix_spawn_file_actions_adddup2(
                            &mut actions.value,
                            fd,
                            target as i32,
                        )
                    })?;
                }
            }
            None => {
                for target in 0..3 {
                    // SAFETY: an initialised actions object; the path lives
                    // until the spawn is done.
                    check(unsafe {
                        libc::posix_spawn_file_actions_addopen(
                            &mut actions.value,
                            target,
                            null.as_ptr(),
                            libc::O_RDWR,
                            0,
                        )
                    })?;
                }
            }
        }
        if let Some(dir) = &dir {
            // SAFETY: as above.
            check(unsafe {
                libc::posix_spawn_file_actions_addchdir_np(&mut actions.value, dir.as_ptr())
            })?;
        }

        // SAFETY: as above.
        let mut attributes =
            unsafe { SpawnObject::new(libc::posix_spawnattr_init, libc::posix_spawnattr_destroy)? };
        // As std's spawn: no signal blocked, and SIGPIPE (which the daemon
        // ignores) at its default.
        // SAFETY: sigset_t values on the stack, filled by sigemptyset and
        // sigaddset before use; the attributes are initialised.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            let mut default: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut default);
            libc::sigaddset(&mut default, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(
                &mut attributes.value,
                &none,
            ))?;
            check(libc::posix_spawnattr_setsigdefault(
                &mut attributes.value,
                &default,
            ))?;
        }
        let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        // SAFETY: initialised attributes.
        check(unsafe {
            libc::posix_spawnattr_setflags(&mut attributes.value, flags as libc::c_short)
        })?;

        // Closed by the kernel in the child where it closes all the
        // daemon's close-on-exec descriptors: see `past_close_on_exec`.
        let (exec_read, exec_write) = pipe()?;
        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer is to a live, NUL-terminated string or a
        // NULL-terminated array of them, kept alive until the call returns
        // (glibc's child has exec'd or failed by then).
        check(unsafe {
            libc::posix_spawnp(
                &mut pid,
                program.as_ptr(),
                &actions.value,
                &attributes.value,
                argv.as_ptr(),
                envp.as_ptr(),
            )
        })?;
        drop(exec_write);
        if let Err(error) = past_close_on_exec(exec_read) {
            // SAFETY: our own child, not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = reap(pid);
            return Err(error);
        }
        if self.idle {
            // glibc's spawn sets no SCHED_IDLE (POSIX knows only
            // SCHED_OTHER, FIFO and RR). Set here, once the child holds
            // nothing of the daemon's but its streams, on
            // the child's one thread. A shim's `start` reads its stdin to
            // the end before it forks the server, and `output` writes the
            // input only after this: the server inherits the policy. Where
            // setting it fails, the child runs at the daemon's policy,
            // which is only slower for others.
            let _ = crate::idle::IdlePriority::enter(pid);
        }
        Ok(pid)
    }
}

/// One of glibc's spawn objects (`posix_spawn_file_actions_t`,
/// `posix_spawnattr_t`): made by its `init`, destroyed by its `destroy`
/// when dropped.
struct SpawnObject<T> {
    value: T,
    destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
}

impl<T> SpawnObject<T> {
    /// # Safety
    /// `T` is a C struct for which all zero bytes are plain storage, and
    /// `init` and `destroy` are its pair.
    unsafe fn new(
        init: unsafe extern "C" fn(*mut T) -> libc::c_int,
        destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
    ) -> io::Result<SpawnObject<T>> {
        let mut value: T = std::mem::zeroed();
        // Destroyed only once this succeeded (by `Drop`).
        check(init(&mut value))?;
        Ok(SpawnObject { value, destroy })
    }
}

impl<T> Drop for SpawnObject<T> {
    fn drop(&mut self) {
        // SAFETY: made by the matching `init` in `new`.
        unsafe { (self.destroy)(&mut self.value) };
    }
}

/// The posix_spawn family returns an error number rather than setting errno.
fn check(code: libc::c_int) -> io::Result<()> {
    match code {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(code)),
    }
}

fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{text:?} holds a NUL byte"),
        )
    })
}

fn env_entry(key: &OsStr, value: &OsStr) -> io::Result<CString> {
    let mut entry = key.to_owned();
    entry.push("=");
    entry.push(value);
    c_string(&entry)
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// A pipe, both ends close-on-exec: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors, owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits for the end of file on the read end of a close-on-exec pipe whose
/// write end the child got a copy of at the spawn. glibc's spawn returns
/// when the child's exec has replaced its memory, which is before the
/// kernel closes the child's copies of the daemon's close-on-exec
/// descriptors (its database's, whose lock a copy keeps). A child that
/// lost the processor in between, all the more one then put at the idle
/// priority, held them on: a daemon killed meanwhile left its successor a
/// locked database. The kernel drops all those copies in one pass, and
/// releases the pipe (the daemon's own end is closed by then) only as the
/// child returns from its exec: the end of file comes after the child has
/// let go of every one. Other children spawned meanwhile hold copies too,
/// until their own exec, a few microseconds later.
fn past_close_on_exec(read_end: OwnedFd) -> io::Result<()> {
    let mut file = std::fs::File::from(read_end);
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads `stdout` and `stderr` to their ends, whichever has data first,
/// so that a child filling one pipe never waits on the other.
fn read_both(stdout: OwnedFd, stderr: OwnedFd, into: &mut (Vec<u8>, Vec<u8>)) -> io::Result<()> {
    let mut open = [
        Some(std::fs::File::from(stdout)),
        Some(std::fs::File::from(stderr)),
    ];
    while open.iter().any(Option::is_some) {
        let mut polled: Vec<libc::pollfd> = open
            .iter()
            .map(|f| libc::pollfd {
                fd: f.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds (-1 entries are skipped).
        if unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) } < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        for (i, entry) in polled.iter().enumerate() {
            if entry.revents == 0 {
                continue;
            }
            let Some(file) = open[i].as_mut() else {
                continue;
            };
            let sink = if i == 0 { &mut into.0 } else { &mut into.1 };
            let mut buffer = [0u8; 4096];
            match file.read(&mut buffer) {
                Ok(0) => open[i] = None,
                Ok(n) => sink.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Waits for child `pid` to end, and reaps it.
fn reap(pid: libc::pid_t) -> io::Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child, status on the stack.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Spawn {
        let mut spawn = Spawn::new("sh");
        spawn.arg("-c").arg(script);
        spawn
    }

    #[test]
    fn the_child_runs_in_its_directory_with_its_input_and_environment() {
        let dir = std::env::temp_dir().join(format!("berth-spawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let mut spawn = sh("pwd; echo \"$BERTH_SPAWN_TEST\"; cat; echo to-stderr >&2; exit 3");
        spawn.current_dir(&dir).env("BERTH_SPAWN_TEST", "set");
        let out = spawn.output(Streams::Piped, b"from stdin\n").unwrap();
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{}\nset\nfrom stdin\n", dir.display())
        );
        assert_eq!(out.stderr, b"to-stderr\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn a_child_writing_much_to_stderr_does_not_stall() {
        // More than a pipe holds, on stderr before stdout.
        let out = sh("head -c 200000 /dev/zero >&2; echo done")
            .output(Streams::Piped, b"")
            .unwrap();
        assert_eq!(out.stderr.len(), 200_000);
        assert_eq!(out.stdout, b"done\n");
        assert!(out.status.success());
    }

    #[test]
    fn the_child_starts_with_no_signal_blocked_and_sigpipe_at_its_default() {
        // From a thread that blocks SIGUSR1, in a process that ignores
        // SIGPIPE (as the daemon does).
        let text = std::thread::spawn(|| {
            // SAFETY: a disposition of this test process, and the signal
            // mask of this thread, in sets on the stack.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                let mut blocked: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut blocked);
                libc::sigaddset(&mut blocked, libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut());
            }
            // grep itself, not through a shell (dash clears its mask).
            let out = Spawn::new("grep")
                .args(["-E", "^Sig(Blk|Ign)", "/proc/self/status"])
                .output(Streams::Piped, b"")
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        })
        .join()
        .unwrap();
        let mask = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
                .unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{text}");
        assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{text}");
    }

    #[test]
    fn an_idle_child_runs_under_sched_idle() {
        // The input comes after the spawn (and the policy) is done; the
        // policy is field 41 of /proc/PID/stat.
        let out = sh("read go; cat /proc/$$/stat")
            .idle()
            .output(Streams::Piped, b"go\n")
            .unwrap();
        let stat = String::from_utf8(out.stdout).unwrap();
        let after_name = stat.rsplit_once(')').unwrap().1;
        let policy: i32 = after_name
            .split_whitespace()
            .nth(41 - 3)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE, "{stat}");
    }

    /// glibc's spawn returns when the child's exec has replaced its memory,
    /// which is before the kernel closes its close-on-exec descriptors: a
    /// copy of every one of the daemon's, its database's among them. A
    /// child put at the idle priority in between, on busy processors, held
    /// them for seconds after the daemon was killed, and the next daemon
    /// found its database locked. Here the processors are kept busy while
    /// idle children are spawned, and a close-on-exec pipe's write end must
    /// be gone from each when `spawn` returns.
    #[test]
    fn a_child_holds_no_descriptor_of_the_daemon_once_spawned() {
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        /// Stops the busy threads however the test ends.
        struct Hogs(
            std::sync::Arc<std::sync::atomic::AtomicBool>,
            Vec<std::thread::JoinHandle<()>>,
        );
        impl Drop for Hogs {
            fn drop(&mut self) {
                self.0.store(false, std::sync::atomic::Ordering::Relaxed);
                for hog in self.1.drain(..) {
                    let _ = hog.join();
                }
            }
        }
        let hogs = Hogs(
            busy.clone(),
            (0..4 * cpus)
                .map(|_| {
                    let busy = busy.clone();
                    std::thread::spawn(move || {
                        while busy.load(std::sync::atomic::Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                })
                .collect(),
        );
        let mut held = 0;
        let mut children = Vec::new();
        for _ in 0..40 {
            let (read_end, write_end) = pipe().unwrap();
            let pid = sh("exec sleep 5").idle().spawn(None).unwrap();
            drop(write_end);
            let mut entry = libc::pollfd {
                fd: read_end.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // Children of other tests running meanwhile may hold a copy
            // too, until their exec (a forked one of `metadata`'s for some
            // milliseconds): they run at the normal priority. An idle child
            // starved by the busy threads holds it for seconds.
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut entry, 1, 500) };
            if (ready, entry.revents & libc::POLLHUP) != (1, libc::POLLHUP) {
                held += 1;
            }
            children.push(pid);
        }
        drop(hogs);
        for pid in children {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap(pid).unwrap();
        }
        assert_eq!(held, 0, "children still held the pipe's write end");
    }

    #[test]
    fn null_streams_and_a_missing_program() {
        let dir = std::env::temp_dir().join(format!("berth-spawn-null-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let links = dir.join("fds");
        let script = format!(
            // The shell's own descriptors, read in subshells (whose
            // stdout is the substitution's pipe, not the shell's).
            "a=$(readlink /proc/$$/fd/0) b=$(readlink /proc/$$/fd/1) c=$(readlink /proc/$$/fd/2); \
             printf '%s\\n' \"$a\" \"$b\" \"$c\" > {}",
            links.display()
        );
        let out = sh(&script).output(Streams::Null, b"").unwrap();
        let found = std::fs::read_to_string(&links).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success());
        assert_eq!(found, "/dev/null\n/dev/null\n/dev/null\n");
        let err = Spawn::new("berth-no-such-program")
            .output(Streams::Piped, b"")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_last_value_of_a_variable_wins() {
        let out = sh("echo \"$BERTH_SPAWN_TWICE\"")
            .env("BERTH_SPAWN_TWICE", "first")
            .env("BERTH_SPAWN_TWICE", "last")
            .output(Streams::Piped, b"")
            .unwrap();
        assert_eq!(out.stdout, b"last\n");
    }
}
