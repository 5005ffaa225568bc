//! The one place the daemon mounts: what the snapshotter describes
//! ([`snapshots::Mount`], as containerd's snapshotters return mounts) applied
//! with `mount(2)`, and taken down again.
//!
//! Two kernel behaviours shape it:
//! - a bind mount ignores `MS_RDONLY` on the call that creates it: a
//!   read-only bind is a bind and then a `MS_REMOUNT|MS_BIND|MS_RDONLY`, or
//!   the container's lower layers would be writable;
//! - an overlay whose `lowerdir` list is too long for one page of mount data
//!   gets paths relative to [`snapshots::Mount::base`], which the kernel
//!   resolves against the caller's working directory. The daemon is
//!   multi-threaded and must not `chdir`: the mount runs on a thread of its
//!   own that first unshares its filesystem attributes (`CLONE_FS`), so only
//!   that thread's working directory moves.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::snapshots;

/// A mount that failed, and where.
#[derive(Debug, thiserror::Error)]
#[error("cannot mount {kind} {source_path} on {target}: {errno}")]
pub struct Error {
    pub kind: String,
    pub source_path: String,
    pub target: PathBuf,
    pub errno: nix::errno::Errno,
}

/// Mounts `mounts` on `target`, in order. On a failure the mounts already
/// made are taken down again: nothing is left half-mounted.
pub fn apply(mounts: &[snapshots::Mount], target: &Path) -> Result<(), Error> {
    for (done, m) in mounts.iter().enumerate() {
        if let Err(e) = apply_one(m, target) {
            for _ in 0..done {
                unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn apply_one(m: &snapshots::Mount, target: &Path) -> Result<(), Error> {
    let fail = |errno| Error {
        kind: m.kind.clone(),
        source_path: m.source.clone(),
        target: target.to_path_buf(),
        errno,
    };
    if m.kind == "bind" {
        let read_only = m.options.iter().any(|o| o == "ro");
        let recursive = m.options.iter().any(|o| o == "rbind");
        let mut flags = MsFlags::MS_BIND;
        if recursive {
            flags |= MsFlags::MS_REC;
        }
        mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(fail)?;
        if read_only {
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if let Err(errno) = mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
                unmount(target);
                return Err(fail(errno));
            }
        }
        return Ok(());
    }
    let (flags, data) = flags_and_data(&m.options);
    let call = || {
        mount(
            Some(m.source.as_str()),
            target,
            Some(m.kind.as_str()),
            flags,
            Some(data.as_str()),
        )
    };
    match &m.base {
        None => call().map_err(fail),
        Some(base) => in_directory(base, call).map_err(fail),
    }
}

/// Options that are mount flags, and the rest as the filesystem's data.
fn flags_and_data(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Runs `call` with `dir` as the working directory, on a thread whose
/// filesystem attributes are its own (see the module comment).
fn in_directory(dir: &Path, call: impl FnOnce() -> nix::Result<()> + Send) -> nix::Result<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
                nix::unistd::chdir(dir)?;
                call()
            })
            .join()
            .unwrap_or(Err(nix::errno::Errno::EINTR))
    })
}

/// Takes down the topmost mount on `target`, lazily: a process that still
/// holds it (a dying container) must not make a delete fail.
pub fn unmount(target: &Path) {
    let _ = umount2(target, MntFlags::MNT_DETACH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_split_from_filesystem_data() {
        let options: Vec<String> = ["ro", "index=off", "lowerdir=1/fs:2/fs", "nosuid"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = flags_and_data(&options);
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(data, "index=off,lowerdir=1/fs:2/fs");
    }

    /// The kernel ignores `ro` on the call that makes a bind: without the
    /// remount a read-only snapshot view would be writable. Root only.
    #[test]
    fn a_read_only_bind_is_read_only() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if !nix::unistd::Uid::effective().is_root() {
            assert!(!ci, "cannot run under CI=true: mounting needs root");
            eprintln!("skipping: mounting needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("berth-imaged-mounts-{}", std::process::id()));
        let (source, target) = (dir.join("source"), dir.join("target"));
        std::fs::create_dir_all(&source).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        let bind = snapshots::Mount {
            kind: "bind".into(),
            source: source.to_string_lossy().into_owned(),
            options: vec!["ro".into(), "rbind".into()],
            base: None,
        };
        apply(&[bind], &target).unwrap();
        let write = std::fs::write(target.join("file"), b"x");
        unmount(&target);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            write.unwrap_err().raw_os_error(),
            Some(libc::EROFS),
            "the read-only bind took a write"
        );
    }
}
