//! `berth-bench-floor`: the floor of berth's start-up benchmark.
//!
//! It does the least any OCI runtime must do to start a container, and nothing else, so that
//! `bench/startup.sh` can report how far berth, runc and crun sit above the kernel's own cost:
//!
//! 1. clone into new mount, pid, network, IPC and UTS namespaces (one raw `clone`, like a fork);
//! 2. before it, in the parent, create `berth-floor/<CGROUP_NAME>` in every cgroup hierarchy
//!    mounted under `/sys/fs/cgroup` (each v1 controller and the cgroup2 one) and open each one's
//!    join file; the child moves itself there, writing `0` (itself) to each: v1's `tasks` (a
//!    thread moving itself skips the kernel's threadgroup lock, whose first taker after a quiet
//!    spell waits for an RCU grace period; berth's init joins the same way), v2's `cgroup.procs`;
//! 3. the child then makes `/` a recursive slave, bind-mounts ROOTFS onto itself, mounts proc on
//!    `ROOTFS/proc`, pivots into ROOTFS, detaches the old root and execs;
//! 4. wait for the child, remove the cgroups, exit with the child's status.
//!
//! Usage: `berth-bench-floor ROOTFS CGROUP_NAME -- PROG [ARGS...]`, as root. PROG is a path inside
//! ROOTFS (no `PATH` search), and ROOTFS must contain a `proc` directory.
//!
//! Exit status: the child's, or 128 + signal if it was killed; 125 if setting up failed; 127 if
//! PROG could not be executed.
//!
//! Not done on purpose (a runtime does them, the floor measures without them): no config parsing,
//! no state files, no `/dev` or `/sys`, no cgroup or user namespace, no capabilities, seccomp or
//! rlimits.

use std::ffi::{CStr, CString, OsString};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PARENT_GROUP: &str = "berth-floor";
const EXIT_SETUP: u8 = 125;
const EXIT_EXEC: u8 = 127;

/// Everything the child needs, prepared before `clone` so the child only makes syscalls.
struct ChildArgs {
    rootfs: CString,
    proc_dir: CString,
    prog: CString,
    /// The opened join file of each cgroup (`tasks` on v1, `cgroup.procs` on v2).
    joins: Vec<fs::File>,
    /// Keeps the strings `argv` points into alive.
    _argv_owned: Vec<CString>,
    argv: Vec<*const libc::c_char>,
}

/// One cgroup hierarchy: its mount point, whether it is v1, and whether it is v1 `cpuset`,
/// which needs its `cpuset.cpus`/`cpuset.mems` filled in before a task may join a new group.
struct Hierarchy {
    mount: PathBuf,
    v1: bool,
    v1_cpuset: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("berth-bench-floor: {e}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn run() -> Result<u8, String> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.len() < 5 || args[3] != "--" {
        return Err("usage: berth-bench-floor ROOTFS CGROUP_NAME -- PROG [ARGS...]".into());
    }
    let name = args[2]
        .to_str()
        .filter(|n| !n.is_empty() && !n.contains('/') && *n != "." && *n != "..");
    let Some(name) = name else {
        return Err(format!(
            "bad CGROUP_NAME {:?}: want one path component",
            args[2]
        ));
    };
    let mut child_args = ChildArgs::new(Path::new(&args[1]), &args[4..])?;
    let hierarchies = cgroup_hierarchies().map_err(|e| format!("reading mountinfo: {e}"))?;
    let groups: Vec<PathBuf> = hierarchies
        .iter()
        .map(|h| h.mount.join(PARENT_GROUP).join(name))
        .collect();
    let joins = hierarchies
        .iter()
        .zip(&groups)
        .map(|(h, group)| prepare_cgroup(h, group))
        .collect::<Result<Vec<_>, _>>();
    child_args.joins = match joins {
        Ok(joins) => joins,
        Err(e) => {
            remove_cgroups(&groups);
            return Err(e);
        }
    };

    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::SIGCHLD;
    // Every argument is passed at full register width: syscall(2) reads them all as longs.
    let no_tid = std::ptr::null_mut::<libc::pid_t>();
    // SAFETY: a raw clone with a null stack pointer and no CLONE_VM/CLONE_SETTLS is a fork: the
    // child gets a copy of this single-threaded process, so no lock can be held by another
    // thread, and it only runs `child`, which never returns into Rust code of the parent.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            no_tid,
            no_tid,
            0usize,
        )
    };
    if pid < 0 {
        let e = io::Error::last_os_error();
        remove_cgroups(&groups);
        return Err(format!("clone: {e}"));
    }
    if pid == 0 {
        child(&child_args);
    }
    let pid = pid as libc::pid_t;
    drop(child_args);
    let status = wait(pid);
    remove_cgroups(&groups);
    status.map_err(|e| format!("waitpid {pid}: {e}"))
}

impl ChildArgs {
    fn new(rootfs: &Path, command: &[OsString]) -> Result<Self, String> {
        let cstr =
            |b: &[u8]| CString::new(b).map_err(|_| "argument contains a NUL byte".to_string());
        let argv_owned: Vec<CString> = command
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        Ok(ChildArgs {
            rootfs: cstr(rootfs.as_os_str().as_bytes())?,
            proc_dir: cstr(rootfs.join("proc").as_os_str().as_bytes())?,
            prog: argv_owned[0].clone(),
            joins: Vec::new(),
            _argv_owned: argv_owned,
            argv,
        })
    }
}

/// The child: join the cgroups, enter the rootfs, exec. Never returns.
fn child(a: &ChildArgs) -> ! {
    for join in &a.joins {
        // SAFETY: writes one byte from a static string to a descriptor the child owns a copy of.
        let ret = unsafe { libc::write(join.as_raw_fd(), c"0".as_ptr().cast(), 1) };
        check("join cgroup", ret as libc::c_int);
    }
    // pivot_root refuses a shared mount as the new root's parent; slave keeps host mounts
    // propagating in but none of ours leaking out.
    mount(
        "make / rslave",
        None,
        c"/",
        None,
        libc::MS_REC | libc::MS_SLAVE,
    );
    // pivot_root needs the new root to be a mount point.
    let (rootfs, bind) = (Some(a.rootfs.as_c_str()), libc::MS_BIND | libc::MS_REC);
    mount("bind rootfs", rootfs, &a.rootfs, None, bind);
    let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(
        "mount proc",
        Some(c"proc"),
        &a.proc_dir,
        Some(c"proc"),
        proc_flags,
    );
    // SAFETY: `a.rootfs` is a NUL-terminated string alive for this call.
    check("chdir rootfs", unsafe { libc::chdir(a.rootfs.as_ptr()) });
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then drops
    // the old root without needing a directory for it inside the rootfs.
    // SAFETY: both arguments are static NUL-terminated strings.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    check("pivot_root", ret as libc::c_int);
    // SAFETY: the argument is a static NUL-terminated string.
    check("detach old root", unsafe {
        libc::umount2(c".".as_ptr(), libc::MNT_DETACH)
    });
    // SAFETY: `prog` is NUL-terminated and `argv` is a null-terminated array of pointers into
    // strings that `a` keeps alive; execv only returns on failure.
    unsafe { libc::execv(a.prog.as_ptr(), a.argv.as_ptr()) };
    let e = io::Error::last_os_error();
    eprintln!("berth-bench-floor: exec {:?}: {e}", a.prog);
    exit(EXIT_EXEC)
}

/// mount(2) for the child; a failure ends the child with `EXIT_SETUP`.
fn mount(
    what: &str,
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
) {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every string is NUL-terminated and borrowed for the call, or null where mount(2)
    // allows it (no source or type for a propagation change, no type for a bind); no data.
    let ret = unsafe {
        libc::mount(
            ptr(src),
            target.as_ptr(),
            ptr(fstype),
            flags,
            std::ptr::null(),
        )
    };
    check(what, ret);
}

/// In the child, a failed setup step ends the child with `EXIT_SETUP`.
fn check(what: &str, ret: libc::c_int) {
    if ret < 0 {
        eprintln!("berth-bench-floor: {what}: {}", io::Error::last_os_error());
        exit(EXIT_SETUP);
    }
}

fn exit(code: u8) -> ! {
    // SAFETY: _exit ends the child at once; skipping atexit handlers and stdio flushing is
    // what a forked child must do so it does not run the parent's clean-up twice.
    unsafe { libc::_exit(code.into()) }
}

/// Every cgroup hierarchy mounted at or under `/sys/fs/cgroup`, from `/proc/self/mountinfo`.
fn cgroup_hierarchies() -> io::Result<Vec<Hierarchy>> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut found = Vec::new();
    for line in info.lines() {
        // Fields: id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let super_opts = post.nth(1).unwrap_or("");
        let Some(mount) = pre.split(' ').nth(4) else {
            continue;
        };
        if (fstype == "cgroup" || fstype == "cgroup2") && Path::new(mount).starts_with(CGROUP_ROOT)
        {
            let v1_cpuset = fstype == "cgroup" && super_opts.split(',').any(|o| o == "cpuset");
            found.push(Hierarchy {
                mount: mount.into(),
                v1: fstype == "cgroup",
                v1_cpuset,
            });
        }
    }
    if found.is_empty() {
        return Err(io::Error::other(format!(
            "no cgroup hierarchy mounted under {CGROUP_ROOT}"
        )));
    }
    Ok(found)
}

/// Creates `group` in `h` and opens the file through which the child joins it.
fn prepare_cgroup(h: &Hierarchy, group: &Path) -> Result<fs::File, String> {
    let ctx = |what: &str, p: &Path, e: io::Error| format!("{what} {}: {e}", p.display());
    fs::create_dir_all(group).map_err(|e| ctx("create cgroup", group, e))?;
    if h.v1_cpuset {
        // A new v1 cpuset group starts with no CPUs and no memory nodes, and the kernel refuses
        // tasks into it (ENOSPC) until both are set: copy them down from the parent.
        for dir in [group.parent().unwrap_or(&h.mount), group] {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let own = dir.join(file);
                let current = fs::read_to_string(&own).map_err(|e| ctx("read", &own, e))?;
                if current.trim().is_empty() {
                    let up = dir.parent().unwrap_or(&h.mount).join(file);
                    let value = fs::read_to_string(&up).map_err(|e| ctx("read", &up, e))?;
                    fs::write(&own, value.trim()).map_err(|e| ctx("write", &own, e))?;
                }
            }
        }
    }
    let join = group.join(if h.v1 { "tasks" } else { "cgroup.procs" });
    fs::OpenOptions::new()
        .write(true)
        .open(&join)
        .map_err(|e| ctx("open", &join, e))
}

/// Removes each leaf group, then its `berth-floor` parent if no other run still uses it.
fn remove_cgroups(groups: &[PathBuf]) {
    for group in groups {
        if let Err(e) = fs::remove_dir(group) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("berth-bench-floor: remove cgroup {}: {e}", group.display());
            }
        }
        if let Some(parent) = group.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Waits for `pid` and turns its status into an exit code the way a shell does.
fn wait(pid: libc::pid_t) -> io::Result<u8> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child, writing its status into a live local.
        if unsafe { libc::waitpid(pid, &mut status, 0) } >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status) as u8)
    } else {
        Ok(128u8.wrapping_add(libc::WTERMSIG(status) as u8))
    }
}
