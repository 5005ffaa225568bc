//! The container process's own settings: rlimits, user and groups, umask,
//! oom score, environment and the executable lookup.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::spec::{Process, Rlimit};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("error setting rlimit type {kind}: {errno}")]
    Rlimit { kind: String, errno: nix::Error },
    #[error("cannot set {what}: {errno}")]
    Identity { what: String, errno: nix::Error },
    #[error("cannot write oom_score_adj {value}: {source}")]
    OomScore { value: i32, source: std::io::Error },
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("exec: {path:?}: {source}")]
    NotExecutable {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid {what} {value:?}: contains a NUL byte")]
    Nul { what: &'static str, value: String },
    #[error("unable to use preserved fd {fd} (of {count}): it is not open")]
    PreservedFd { fd: u64, count: u64 },
}

pub fn apply_rlimits(rlimits: &[Rlimit]) -> Result<(), ProcessError> {
    for rlimit in rlimits {
        let Some(resource) = berth_oci::kernel_names::rlimit(&rlimit.kind) else {
            continue;
        };
        let value = libc::rlimit {
            rlim_cur: rlimit.soft,
            rlim_max: rlimit.hard,
        };
        // SAFETY: plain syscall with a valid struct.
        if unsafe { libc::setrlimit(resource, &value) } != 0 {
            return Err(ProcessError::Rlimit {
                kind: rlimit.kind.clone(),
                errno: nix::Error::last(),
            });
        }
    }
    Ok(())
}

pub fn apply_oom_score_adj(value: i32) -> Result<(), ProcessError> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
        .map_err(|source| ProcessError::OomScore { value, source })
}

fn errno_result(rc: libc::c_int, what: impl FnOnce() -> String) -> Result<(), ProcessError> {
    if rc != 0 {
        return Err(ProcessError::Identity {
            what: what(),
            errno: nix::Error::last(),
        });
    }
    Ok(())
}

/// Switches to the spec's user: supplementary groups, gid, then uid, keeping
/// capabilities across the switch so they can be set afterwards.
pub fn switch_user(process: &Process, setgroups_allowed: bool) -> Result<(), ProcessError> {
    let user = &process.user;
    // SAFETY: plain prctl/set*id syscalls.
    unsafe {
        errno_result(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0), || {
            "keep-caps".into()
        })?;
        if setgroups_allowed {
            let groups: Vec<libc::gid_t> = user.additional_gids.clone();
            errno_result(libc::setgroups(groups.len(), groups.as_ptr()), || {
                format!("additional gids {:?}", user.additional_gids)
            })?;
        }
        errno_result(libc::setresgid(user.gid, user.gid, user.gid), || {
            format!("gid {}", user.gid)
        })?;
        errno_result(libc::setresuid(user.uid, user.uid, user.uid), || {
            format!("uid {}", user.uid)
        })?;
        errno_result(libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0), || {
            "keep-caps".into()
        })?;
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<(), ProcessError> {
    // SAFETY: plain prctl.
    errno_result(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        || "no_new_privs".into(),
    )
}

/// Where the process starts: a directory the init opened inside the rootfs
/// before `pivot_root` (entered by fd, so no path is looked up again:
/// CVE-2024-21626), or, for `exec`, a path in the container's mount
/// namespace, which is already the process's.
pub enum Cwd {
    Opened(OwnedFd),
    Path(String),
}

impl Cwd {
    fn enter(&self) -> nix::Result<()> {
        match self {
            Cwd::Opened(fd) => nix::unistd::fchdir(fd.as_raw_fd()),
            Cwd::Path(path) => nix::unistd::chdir(path.as_str()),
        }
    }
}

/// What `execve` needs.
pub struct Execve {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

/// How the caller becomes the container's process; the same for the init
/// and for `exec`.
pub struct Becoming<'a> {
    pub process: &'a Process,
    /// Connected `--console-socket` (a terminal process only).
    pub console_socket: Option<RawFd>,
    pub cwd: Cwd,
    /// The umask when the spec has none (runc: 0022 for the init; an exec
    /// keeps its caller's).
    pub default_umask: Option<libc::mode_t>,
    /// Descriptors 0..this stay open across execve.
    pub keep_fds_below: u32,
}

/// Turns the calling process into the container's process, up to (not
/// including) execve. The order is the security property:
/// 1. terminal, rlimits and the environment, while still root;
/// 2. no_new_privs when asked, then the seccomp filter when no_new_privs is
///    not set: installing it then needs CAP_SYS_ADMIN, still held (with
///    no_new_privs the caller installs it last, just before execve, so that
///    as few of its own calls as possible run under it — as runc does);
/// 3. the bounding set, then the user (groups, gid, uid; capabilities kept
///    across the switch), then the other capability sets;
/// 4. non-dumpable again (the uid change reset it; until execve this is a
///    copy of berth: CVE-2019-5736);
/// 5. the cwd, entered again as the user if root could not enter it;
/// 6. the executable looked up as the user from the cwd, as execve will;
///    the umask;
/// 7. every descriptor past the kept ones close-on-exec (CVE-2024-21626).
pub fn become_container_process(
    how: Becoming,
    install_seccomp: &mut dyn FnMut() -> Result<(), String>,
) -> Result<Execve, String> {
    let process = how.process;
    // Without a socket (`run` in the foreground) the caller's terminal is
    // the process's stdio already.
    if let (true, Some(socket)) = (process.terminal, how.console_socket) {
        crate::console::setup(socket, process.console_size, process.user.uid)
            .map_err(|e| e.to_string())?;
    }
    apply_rlimits(&process.rlimits).map_err(|e| e.to_string())?;
    // HOME from the container's /etc/passwd, read while still root.
    let env = environment(process);
    let cwd_as_root = how.cwd.enter();
    if process.no_new_privileges {
        set_no_new_privs().map_err(|e| e.to_string())?;
    } else {
        install_seccomp()?;
    }
    crate::capabilities::apply_bounding(&process.capabilities).map_err(|e| e.to_string())?;
    switch_user(process, true).map_err(|e| e.to_string())?;
    crate::capabilities::apply_process_sets(&process.capabilities).map_err(|e| e.to_string())?;
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
    if cwd_as_root.is_err() {
        // A directory only the container's user may enter.
        how.cwd.enter().map_err(|e| {
            format!(
                "chdir to cwd ({:?}) set in config.json failed: {e}",
                process.cwd
            )
        })?;
    }
    drop(how.cwd);
    let executable = find_executable(&process.args[0], &env).map_err(|e| e.to_string())?;
    if let Some(umask) = process.user.umask.or(how.default_umask) {
        // SAFETY: plain umask.
        unsafe { libc::umask(umask) };
    }
    let argv = c_strings("argument", &process.args).map_err(|e| e.to_string())?;
    let envp = c_strings("environment entry", &env).map_err(|e| e.to_string())?;
    let path = CString::new(executable.as_os_str().as_encoded_bytes())
        .map_err(|_| "executable path contains a NUL byte".to_string())?;
    mark_cloexec_from(how.keep_fds_below)?;
    Ok(Execve { path, argv, envp })
}

impl Execve {
    /// Replaces this process; returns only the error.
    pub fn exec(&self) -> std::io::Error {
        let (argv, envp) = (c_pointers(&self.argv), c_pointers(&self.envp));
        // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        std::io::Error::last_os_error()
    }
}

/// The NULL-terminated array of pointers `execve` takes; valid while
/// `list` lives.
pub fn c_pointers<S: AsRef<std::ffi::CStr>>(list: &[S]) -> Vec<*const libc::c_char> {
    let mut pointers: Vec<*const libc::c_char> = list.iter().map(|s| s.as_ref().as_ptr()).collect();
    pointers.push(std::ptr::null());
    pointers
}

/// The environment the process starts with: the spec's, plus `HOME` from the
/// container's `/etc/passwd` when the spec has none (as runc does).
pub fn environment(process: &Process) -> Vec<String> {
    let mut env = process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home_of(process.user.uid).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse() == Ok(uid)).then(|| fields[5].to_string())
    })
}

/// Finds `args[0]` the way `execvp` would, with the container's `PATH`.
pub fn find_executable(program: &str, env: &[String]) -> Result<PathBuf, ProcessError> {
    let check = |path: &Path| -> Result<(), std::io::Error> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: valid C string.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if path.is_dir() {
            return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
        }
        Ok(())
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return check(&path)
            .map(|()| path)
            .map_err(|source| ProcessError::NotExecutable {
                path: program.to_string(),
                source,
            });
    }
    let search = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in search.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        if check(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(ProcessError::NotFound(program.to_string()))
}

/// Strings as the NUL-terminated array `execve` needs.
pub fn c_strings(what: &'static str, values: &[String]) -> Result<Vec<CString>, ProcessError> {
    values
        .iter()
        .map(|v| {
            CString::new(v.as_bytes()).map_err(|_| ProcessError::Nul {
                what,
                value: v.clone(),
            })
        })
        .collect()
}

/// Marks every descriptor from `first` up close-on-exec (CVE-2024-21626:
/// nothing of the runtime may reach the container).
pub fn mark_cloexec_from(first: u32) -> Result<(), String> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes flags of our own descriptors.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc != 0 {
        // Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: mark them one by one.
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map_err(|e| format!("cannot list descriptors: {e}"))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .filter(|fd: &i32| *fd >= first as i32)
            .collect();
        for fd in fds {
            // SAFETY: fcntl on a descriptor number; a closed one fails harmlessly.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Forgets who started berth, in a child that will become a container
/// process: its environment is emptied and the memory the kernel shows as
/// `/proc/PID/environ` and `/proc/PID/cmdline` is overwritten (the latter
/// with `berth init`).
///
/// Threat: until `start`, the init is a copy of the runtime that ran
/// `create`; a process in the container able to read its `/proc/1/environ`
/// (an exec with `CAP_SYS_PTRACE`) would read the caller's host secrets and
/// host command line there. runc's init is a new program with a clean
/// environment; berth clones, so it wipes. Only for a process whose memory
/// is its own (not `CLONE_VM`), before anything reads the environment.
pub fn forget_caller() {
    // SAFETY: clearenv only resets this process's `environ`; nothing holds
    // a reference into it (the init is single-threaded).
    unsafe { libc::clearenv() };
    let Some(areas) = caller_strings::areas() else {
        return;
    };
    let [arg_start, arg_end, env_start, env_end] = areas;
    for (start, end) in [(arg_start, arg_end), (env_start, env_end)] {
        if start != 0 && end > start {
            // SAFETY: the kernel put these ranges on this process's own
            // initial stack (argument and environment strings), mapped
            // writable; after clearenv nothing reads them.
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
        }
    }
    let title = b"berth\0init\0";
    if arg_end - arg_start > title.len() {
        // SAFETY: within the argument area zeroed above.
        unsafe { std::ptr::copy_nonoverlapping(title.as_ptr(), arg_start as *mut u8, title.len()) };
    }
}

/// Where the kernel put this process's argument and environment strings
/// (what `/proc/PID/cmdline` and `/proc/PID/environ` read): `[arg_start,
/// arg_end, env_start, env_end]`, as `/proc/PID/stat` reports them.
mod caller_strings {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static NOTED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

    /// glibc calls each `.init_array` function with `main`'s `argc`, `argv`
    /// and `envp` (Rust's standard library learns its arguments the same
    /// way), so the areas are known before `main` without a read of
    /// `/proc/self/stat`, which cost the init about 50 µs.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[used]
    #[link_section = ".init_array"]
    static NOTE: extern "C" fn(
        libc::c_int,
        *const *const libc::c_char,
        *const *const libc::c_char,
    ) = note;

    #[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
    extern "C" fn note(
        argc: libc::c_int,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) {
        if argc <= 0 || argv.is_null() || envp.is_null() {
            return;
        }
        // SAFETY: glibc passes the process's own argc/argv/envp, each array
        // ended by a null pointer, each string by a NUL.
        let areas = unsafe {
            let arg_start = *argv as usize;
            laid_out_from(arg_start, argv, argc as usize).and_then(|arg_end| {
                laid_out_from(arg_end, envp, usize::MAX)
                    .map(|env_end| [arg_start, arg_end, arg_end, env_end])
            })
        };
        // Anything else is left to `/proc/self/stat`.
        if let Some(areas) = areas.filter(|a| a[0] != 0) {
            for (noted, value) in NOTED.iter().zip(areas) {
                noted.store(value, Ordering::Relaxed);
            }
        }
    }

    /// The end (past the NUL) of the last of `count` strings of `list` at
    /// most, if each starts where the one before ended, the first at
    /// `start`: as the kernel lays them out, the environment's right after
    /// the arguments'. glibc may point an entry elsewhere before `main`
    /// (2.36 moves `GLIBC_TUNABLES` into a copy of its own; secure mode
    /// drops variables): spanning such a list from its first to its last
    /// string would miss the area, or cover memory far outside it.
    ///
    /// # Safety
    /// `list` is a null-ended array of NUL-ended strings.
    unsafe fn laid_out_from(
        start: usize,
        list: *const *const libc::c_char,
        count: usize,
    ) -> Option<usize> {
        let mut end = start;
        let mut n = 0;
        while n < count && !(*list.add(n)).is_null() {
            let string = *list.add(n);
            if string as usize != end {
                return None;
            }
            end += libc::strlen(string) + 1;
            n += 1;
        }
        Some(end)
    }

    /// The areas to wipe: as noted before `main`, else as the kernel reports.
    pub(super) fn areas() -> Option<[usize; 4]> {
        noted().or_else(from_proc)
    }

    /// The areas noted before `main`, where the platform noted them.
    fn noted() -> Option<[usize; 4]> {
        let areas = NOTED.each_ref().map(|a| a.load(Ordering::Relaxed));
        (areas[0] != 0).then_some(areas)
    }

    /// The areas as `/proc/self/stat` reports them (fields 48–51).
    fn from_proc() -> Option<[usize; 4]> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Counted from field 3.
        let fields: Vec<usize> = crate::state::stat_fields(&stat)?
            .skip(45)
            .take(4)
            .filter_map(|f| f.parse().ok())
            .collect();
        fields.try_into().ok()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        fn the_areas_noted_before_main_are_the_kernels() {
            let noted = super::noted().expect("noted before main");
            let [arg_start, arg_end, env_start, env_end] =
                super::from_proc().expect("/proc/self/stat");
            assert_eq!(noted[0], arg_start);
            assert_eq!(noted[1], arg_end);
            assert_eq!(noted[2], env_start);
            assert_eq!(noted[3], env_end);
        }

        /// Run on its own by the test below, in the environment it sets.
        #[test]
        fn the_areas_wiped_are_the_kernels() {
            assert_eq!(super::areas(), super::from_proc());
        }

        /// glibc 2.36 points `GLIBC_TUNABLES` at a copy outside the area
        /// before `main`: as the first variable, spanning first to last
        /// string covered gigabytes (the init crashed); as the last, the
        /// span ended below its start and nothing was wiped.
        #[test]
        fn an_environment_glibc_rearranged_is_still_the_kernels() {
            // `Command` passes the variables sorted by name.
            for (name, place) in [("Z_OTHER", "before"), ("A_OTHER", "after")] {
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", "--test-threads=1"])
                    .arg("process::caller_strings::tests::the_areas_wiped_are_the_kernels")
                    .env_clear()
                    .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
                    .env(name, "1")
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && stdout.contains("1 passed"),
                    "GLIBC_TUNABLES {place} {name}: {:?}\n{stdout}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// Checks that descriptors 3..3+`count` are all open in this process (as
/// runc does) and returns the first descriptor past them. A count near
/// 2^32 would otherwise wrap the sum and close the container's stdio.
pub fn check_preserved_fds(count: u64) -> Result<u32, ProcessError> {
    let end = 3 + count;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    // Descriptors at or above the soft limit cannot be open.
    let possible = end.min(limit.rlim_cur.max(3));
    for fd in 3..possible {
        // SAFETY: F_GETFD only asks whether the descriptor number is open.
        if unsafe { libc::fcntl(fd as libc::c_int, libc::F_GETFD) } < 0 {
            return Err(ProcessError::PreservedFd { fd, count });
        }
    }
    if possible < end {
        return Err(ProcessError::PreservedFd {
            fd: possible,
            count,
        });
    }
    Ok(end as u32)
}

/// Default dispositions and an empty mask: ignored signals survive execve,
/// and berth ignores SIGPIPE (see its `entry.rs`), which a shell pipeline in
/// the container relies on.
pub fn reset_signals() {
    // SAFETY: resetting dispositions and the mask of this single-threaded process.
    unsafe {
        // The raw syscall: glibc's wrappers refuse its own two reserved
        // real-time signals, which a caller may still have left ignored.
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    &action as *const libc::sigaction,
                    std::ptr::null_mut::<libc::sigaction>(),
                    8usize,
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// `clone(flags | SIGCHLD)` with no new stack: like fork, the child returns
/// 0 on a copy of the caller's memory. Only for a single-threaded caller.
pub fn clone_like_fork(flags: libc::c_int) -> std::io::Result<i32> {
    // SAFETY: a null stack makes the raw clone behave like fork; the caller
    // is single-threaded, so the child may run ordinary code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(pid as i32)
}

/// `CLONE_INTO_CGROUP` (Linux 5.7, `linux/sched.h`). libc 0.2 declares it
/// as a `c_int`, which the value does not fit.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`clone_like_fork`], with the child born in the cgroup v2 directory
/// `birthplace` (clone3's `CLONE_INTO_CGROUP`); returns the child's pid
/// (0 in the child) and, on both sides, the directory the child was born
/// in, if it was.
///
/// Why not clone, then move the child: a process moved in through
/// `cgroup.procs` makes the kernel take `cgroup_threadgroup_rwsem` for
/// writing, and the first writer after a quiet spell waits for an RCU
/// grace period (5 to 16 ms measured here). A clone takes it only for
/// reading, and the child runs its first instruction under the
/// directory's limits.
///
/// Where the kernel refuses clone3 or the flag, the child is cloned as
/// before, in the caller's cgroups, and has to join the directory itself:
/// kernels before 5.3 (ENOSYS) or 5.7 (E2BIG: our `clone_args` is longer
/// than theirs), and seccomp filters that deny clone3, as docker's default
/// profile does (ENOSYS) or others may (EPERM, EINVAL). Any other error
/// (EAGAIN at the directory's `pids.max`, say) is the clone's.
pub fn clone_into_cgroup(
    flags: libc::c_int,
    birthplace: Option<&crate::cgroups::Birthplace>,
) -> std::io::Result<(i32, Option<PathBuf>)> {
    let Some(birthplace) = birthplace else {
        return Ok((clone_like_fork(flags)?, None));
    };
    let mut args = libc::clone_args {
        flags: u64::from(flags as u32) | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: birthplace.fd().as_raw_fd() as u64,
    };
    // SAFETY: clone3 with no stack behaves like fork (the child returns 0
    // on a copy of our memory); the caller is single-threaded, so the child
    // may run ordinary code. `args` outlives the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if pid >= 0 {
        return Ok((pid as i32, Some(birthplace.dir().to_path_buf())));
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENOSYS | libc::E2BIG | libc::EPERM | libc::EINVAL) => {
            Ok((clone_like_fork(flags)?, None))
        }
        _ => Err(error),
    }
}

/// Signals `run` forwards to the container, as runc does.
pub const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Blocks SIGCHLD and the signals forwarded to a container's process, so
/// the caller can take them with sigwaitinfo or a signalfd; returns the set.
pub fn block_forwarded_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on local storage, then sigprocmask for this
    // (single) thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, *sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for our child `pid`, forwarding the usual signals to it, and
/// returns its exit status (128+signal when killed).
pub fn wait_forwarding_signals(pid: i32) -> i32 {
    // SAFETY: sigset manipulation on local storage, then sigprocmask for this
    // (single) thread; waitpid on our own child.
    let set = block_forwarded_signals();
    let status = unsafe {
        let mut status = 0;
        loop {
            let rc = libc::waitpid(pid, &mut status, libc::WNOHANG);
            if rc == pid
                || (rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
            {
                break;
            }
            let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
            if sig > 0 && sig != libc::SIGCHLD {
                libc::kill(pid, sig);
            }
        }
        status
    };
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}
