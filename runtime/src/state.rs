//! A container's state directory `ROOT/ID/`: `state.json`, the start socket
//! and the lock.
//!
//! `mkdir` of the directory is what reserves an id, so two racing `create`s
//! of one id cannot both win. `state.json` is replaced atomically (a temp
//! file, then a rename). The init's start time (field 22 of `/proc/PID/stat`) is kept,
//! so a pid the kernel reused for another process is never taken for the
//! container.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::Hooks;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container does not exist")]
    NotExist,
    #[error("container with given ID already exists: {0}")]
    Exists(String),
    #[error("invalid container id {0:?}: use letters, digits, '_', '-', '.' and '+' only")]
    InvalidId(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt state file {path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What berth remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i32,
    /// Start time of the init in clock ticks since boot.
    pub init_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub hooks: Option<Hooks>,
    /// Cgroup directories the container was placed in, one per hierarchy.
    #[serde(default)]
    pub cgroup_paths: Vec<PathBuf>,
    /// Whether the container has its own pid namespace (killing the init kills all).
    #[serde(default)]
    pub own_pid_namespace: bool,
}

/// The OCI state of `berth state`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState<'a> {
    pub oci_version: &'static str,
    pub id: &'a str,
    pub status: &'static str,
    pub pid: i32,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
}

/// A container's directory under the runtime root.
pub struct ContainerDir {
    pub path: PathBuf,
    pub id: String,
    /// Held open for `flock`; the lock is released when this is dropped.
    lock: File,
}

pub const START_SOCKET: &str = "start.sock";
const STATE_FILE: &str = "state.json";
/// The config as `create` validated it, for `exec`.
pub const CONFIG_FILE: &str = "config.json";
/// The cgroup directories a create is about to make, one per line (see
/// `container::cleaner`).
pub const PLANNED_CGROUPS: &str = "cgroups.planned";
/// Everything berth puts in a container's directory, in the order
/// [`ContainerDir::remove`] takes it away: state.json first, so that the
/// container is gone for every reader at once, and a delete killed half-way
/// leaves what a create killed half-way leaves (see `delete --force`).
const FILES: [&str; 4] = [STATE_FILE, START_SOCKET, CONFIG_FILE, PLANNED_CGROUPS];

/// Ids name directories: refuse anything that could name another path.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidId(id.to_string()))
    }
}

impl ContainerDir {
    /// Reserves `ROOT/ID` for a new container and locks it.
    pub fn create(root: &Path, id: &str) -> Result<ContainerDir, StateError> {
        use std::os::unix::fs::DirBuilderExt;
        validate_id(id)?;
        let path = root.join(id);
        // Each container's directory may be passed through but not listed
        // (runc: 0711). The root exists but for the first container, so it
        // is made (private to its owner, runc: 0700) only once the
        // directory could not be: the errors stay those of root first.
        let mkdir = || std::fs::DirBuilder::new().mode(0o711).create(&path);
        let made = match mkdir() {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(io("cannot create runtime root", root))?;
                mkdir()
            }
            made => made,
        };
        match made {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.to_string()))
            }
            Err(e) => return Err(io("cannot create state directory", &path)(e)),
        }
        let dir = Self::open_locked(path, id)?;
        Ok(dir)
    }

    /// Opens and locks an existing container's directory.
    pub fn open(root: &Path, id: &str) -> Result<ContainerDir, StateError> {
        validate_id(id)?;
        let path = root.join(id);
        if !path.join(STATE_FILE).exists() {
            return Err(StateError::NotExist);
        }
        let dir = Self::open_locked(path, id)?;
        // Whoever held the lock may have deleted the container meanwhile.
        if !dir.path.join(STATE_FILE).exists() {
            return Err(StateError::NotExist);
        }
        Ok(dir)
    }

    /// Opens and locks the directory of `id`, whatever is in it (what a
    /// killed create left has no state.json): still the one the path
    /// names once locked, or `NotExist`.
    pub fn open_left(root: &Path, id: &str) -> Result<ContainerDir, StateError> {
        validate_id(id)?;
        Self::open_locked(root.join(id), id)
    }

    fn open_locked(path: PathBuf, id: &str) -> Result<ContainerDir, StateError> {
        let lock = File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StateError::NotExist
            } else {
                io("cannot open state directory", &path)(e)
            }
        })?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("cannot lock", &path)(std::io::Error::last_os_error()));
        }
        // While this waited for the lock, its holder may have removed the
        // directory and another create made a new one under the same id:
        // the path must still name the directory locked, or every step
        // from here (all by path) would act on that other container.
        let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| {
            use std::os::unix::fs::MetadataExt;
            (a.dev(), a.ino()) == (b.dev(), b.ino())
        };
        match (lock.metadata(), std::fs::metadata(&path)) {
            (Ok(locked), Ok(named)) if same(&locked, &named) => {}
            _ => return Err(StateError::NotExist),
        }
        Ok(ContainerDir {
            path,
            id: id.to_string(),
            lock,
        })
    }

    pub fn load(&self) -> Result<State, StateError> {
        read_state_file(&self.path)
    }

    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(state).map_err(|source| StateError::Corrupt {
            path: self.path.join(STATE_FILE),
            source,
        })?;
        write_atomic(&self.path.join(STATE_FILE), &bytes, Access::Private)
    }

    pub fn start_socket(&self) -> PathBuf {
        self.path.join(START_SOCKET)
    }

    /// The container's status as the kernel sees it now.
    pub fn status(&self, state: &State) -> Status {
        status_at(&self.path, state)
    }

    /// Removes the directory; the lock goes with it.
    ///
    /// berth knows what it put there: those names go one by one through
    /// the locked descriptor, with no listing of the directory; only
    /// something else left inside (a temporary file of a write that was
    /// killed) makes it list and remove everything.
    pub fn remove(self) -> Result<(), StateError> {
        for name in FILES {
            // A missing file is fine; any other failure shows in the rmdir.
            let _ = nix::unistd::unlinkat(
                Some(self.lock.as_raw_fd()),
                name,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        if std::fs::remove_dir(&self.path).is_err() {
            std::fs::remove_dir_all(&self.path)
                .map_err(io("cannot remove state directory", &self.path))?;
        }
        drop(self.lock);
        Ok(())
    }
}

impl ContainerDir {
    /// Takes the directory out of the container's id at once, for
    /// someone else to remove (see `container::run`): renamed in place to
    /// `name` (a [`retired_name`]), which is no container's id. Removed
    /// here instead if it cannot be renamed. Returns whether it was.
    pub fn retire(self, name: &str) -> Result<bool, StateError> {
        let Some(root) = self.path.parent() else {
            return self.remove().map(|()| false);
        };
        match std::fs::rename(&self.path, root.join(name)) {
            Ok(()) => Ok(true),
            Err(_) => self.remove().map(|()| false),
        }
    }
}

/// The name a retired state directory of container `id` has until it is
/// removed: `@` is in no id, so it can neither be listed nor opened as a
/// container; `token` tells retirements of one id apart.
pub fn retired_name(id: &str, token: u32) -> String {
    format!("@{id}.{token}")
}

/// Removes a directory [`ContainerDir::retire`] renamed to `name` under
/// `root`; nothing if the name is not a retired one or is gone already.
pub fn remove_retired(root: &Path, name: &str) {
    if name.starts_with('@') && !name.contains('/') && name.len() > 1 {
        let _ = std::fs::remove_dir_all(root.join(name));
    }
}

/// Removes the retired directories under `root` whose remover is gone (a
/// cleaner killed first: systemd stops what is left of a unit once `run`
/// has exited), which nothing else would: no id names them. Those whose
/// token is a live process are left to it.
pub fn remove_abandoned(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for name in entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
    {
        let Some(token) = name
            .strip_prefix('@')
            .and_then(|rest| rest.rsplit_once('.'))
            .and_then(|(_, token)| token.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        let pid = nix::unistd::Pid::from_raw(token);
        if nix::sys::signal::kill(pid, None) == Err(nix::Error::ESRCH) {
            remove_retired(root, &name);
        }
    }
}

/// Writes `path`, a file of a container's directory that must not exist
/// yet, in place (no temporary file and rename, as [`write_atomic`] does).
///
/// For config.json, which `create` writes before state.json: nobody reads
/// it until state.json exists, which is written after it, and a create
/// killed in the middle of it leaves a directory without state.json, which
/// is removed whole (`cleaner`, `delete --force`). (cgroups.planned, which
/// the cleaner reads in just that case, ends each line: a torn last line
/// is ignored.) The
/// directory is new and private to root, so no one can have planted
/// anything there; `O_EXCL | O_NOFOLLOW` all the same.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(io("cannot write", path))
}

fn read_state_file(dir: &Path) -> Result<State, StateError> {
    let file = dir.join(STATE_FILE);
    let bytes = std::fs::read(&file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StateError::NotExist
        } else {
            io("cannot read", &file)(e)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt { path: file, source })
}

/// Reads a container's state without taking its lock (for the read-only
/// verbs: `state`, `list`, `kill`, `exec`, `events`); returns its directory too.
pub fn read_unlocked(root: &Path, id: &str) -> Result<(PathBuf, State), StateError> {
    validate_id(id)?;
    let dir = root.join(id);
    let state = read_state_file(&dir)?;
    Ok((dir, state))
}

/// The status of the container whose state directory is `dir`, as the
/// kernel sees it now.
pub fn status_at(dir: &Path, state: &State) -> Status {
    if !process_is(state.pid, state.init_start_time) {
        Status::Stopped
    } else if dir.join(START_SOCKET).exists() {
        Status::Created
    } else if crate::cgroups::driver_for(&state.cgroup_paths).is_frozen() {
        Status::Paused
    } else {
        Status::Running
    }
}

impl State {
    /// The OCI state of the container in `status` (pid 0 once stopped).
    pub fn oci(&self, status: Status) -> OciState<'_> {
        OciState {
            oci_version: crate::OCI_VERSION,
            id: &self.id,
            status: status.as_str(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            owner: &self.owner,
            annotations: &self.annotations,
        }
    }
}

/// Who may read a file berth writes: state and configs hold the
/// container's environment (secrets), the pid file is public (runc's modes).
#[derive(Debug, Clone, Copy)]
pub enum Access {
    Private,
    Public,
}

/// Writes `path` through a temporary file and a rename, so readers see the
/// old content or the new, never a part.
///
/// Threat: a local user who can write in `path`'s directory (a pid file in
/// /tmp, or a user's own directory) plants a symlink or file at the
/// temporary name to make root write through it. The temporary file is
/// created with `O_EXCL | O_NOFOLLOW` under a name that is not known in
/// advance, so it is always a new file of ours; the rename then replaces
/// whatever `path` was (a symlink included) without following it.
pub fn write_atomic(path: &Path, bytes: &[u8], access: Access) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = match access {
        Access::Private => 0o600,
        Access::Public => 0o644,
    };
    let mut last = None;
    for attempt in 0..16u32 {
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", unpredictable(attempt)));
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        let mut file = match created {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(io("cannot write", path)(e)),
        };
        let result = file
            .write_all(bytes)
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("cannot write", path)(e));
        }
        return Ok(());
    }
    let e = last.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into());
    Err(io("cannot create a temporary file beside", path)(e))
}

/// A name part nobody can plant in advance: the pid, the clock's
/// nanoseconds and a counter, mixed.
fn unpredictable(attempt: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut random = [0u8; 8];
    // SAFETY: getrandom fills the buffer we own; a failure leaves zeros and
    // the clock still varies the name.
    unsafe {
        libc::getrandom(
            random.as_mut_ptr().cast(),
            random.len(),
            libc::GRND_NONBLOCK,
        )
    };
    format!(
        "{}.{:x}{:x}.{attempt}",
        std::process::id(),
        nanos,
        u64::from_ne_bytes(random)
    )
}

/// The fields of a `/proc/PID/stat` text from the third (the state) on:
/// the command name before them may hold spaces and parentheses, so they
/// start after its last `)`.
pub fn stat_fields(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace())
}

/// Start time (clock ticks since boot) of `pid`, if it is alive and not a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat_fields(&stat)?.collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start`.
pub fn process_is(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

/// Every container directory under `root`, sorted by id.
pub fn list_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| validate_id(id).is_ok() && root.join(id).join(STATE_FILE).exists())
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_directory_is_no_container_and_only_it_is_removed() {
        let root = std::env::temp_dir().join(format!("berth-retire-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        for id in ["kept", "gone"] {
            let dir = ContainerDir::create(&root, id).unwrap();
            std::fs::write(dir.path.join(STATE_FILE), b"{}").unwrap();
            if id == "gone" {
                assert!(dir.retire(&retired_name(id, 7)).unwrap());
            }
        }
        assert_eq!(list_ids(&root), vec!["kept".to_string()]);
        assert!(validate_id(&retired_name("gone", 7)).is_err());
        assert!(root.join("@gone.7").join(STATE_FILE).exists());
        // Only a retired name is ever removed.
        remove_retired(&root, "kept");
        remove_retired(&root, "@gone.7/..");
        assert!(root.join("kept").exists() && root.join("@gone.7").exists());
        remove_retired(&root, "@gone.7");
        assert!(!root.join("@gone.7").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn ids_cannot_name_other_paths() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    /// A fresh runtime root under the system's temporary directory.
    fn scratch_root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("berth-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        root
    }

    #[test]
    fn a_waiter_whose_container_was_deleted_meanwhile_does_not_get_the_next_one() {
        let root = scratch_root("race");
        let first = ContainerDir::create(&root, "c1").expect("create");
        std::fs::write(first.path.join(STATE_FILE), b"{}").expect("state.json");
        let waiter = {
            let root = root.clone();
            std::thread::spawn(move || ContainerDir::open(&root, "c1").map(|d| d.path))
        };
        // Long enough for the waiter to open the directory and block on
        // its lock (ordering, not timing: were it later, it would open
        // the new container legitimately and this test would fail loudly).
        std::thread::sleep(std::time::Duration::from_millis(200));
        // The holder deletes the container; another create takes the id.
        std::fs::remove_dir_all(&first.path).expect("remove");
        std::fs::create_dir(&first.path).expect("the next container's directory");
        std::fs::write(first.path.join(STATE_FILE), b"{}").expect("its state.json");
        drop(first);
        let got = waiter.join().expect("waiter");
        assert!(matches!(got, Err(StateError::NotExist)), "{got:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_container_directory_is_made_and_removed_whole() {
        let root = scratch_root("remove");
        let dir = ContainerDir::create(&root, "c1").expect("create, root included");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir.path), 0o711);
        write_atomic(&dir.path.join(PLANNED_CGROUPS), b"x", Access::Private).expect("plan");
        write_new(&dir.path.join(CONFIG_FILE), b"x").expect("a new file");
        assert!(
            write_new(&dir.path.join(CONFIG_FILE), b"y").is_err(),
            "an existing file"
        );
        write_atomic(&dir.path.join(STATE_FILE), b"{}", Access::Private).expect("state");
        assert!(matches!(
            ContainerDir::create(&root, "c1"),
            Err(StateError::Exists(_))
        ));
        let path = dir.path.clone();
        dir.remove().expect("remove");
        assert!(!path.exists());

        // Something berth did not put there (a killed write's temporary
        // file, a directory) goes too.
        let dir = ContainerDir::create(&root, "c2").expect("create");
        std::fs::write(dir.path.join(".state.json.1.tmp"), b"x").expect("leftover");
        std::fs::create_dir(dir.path.join("sub")).expect("subdirectory");
        let path = dir.path.clone();
        dir.remove().expect("remove with leftovers");
        assert!(!path.exists());
        std::fs::remove_dir(&root).expect("root left empty");
    }

    #[test]
    fn own_start_time_is_read_and_matches() {
        let pid = std::process::id() as i32;
        let start = start_time(pid).expect("own stat");
        assert!(process_is(pid, start));
        assert!(!process_is(pid, start + 1));
    }
}
