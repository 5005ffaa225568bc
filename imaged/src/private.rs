//! The store is root's alone.
//!
//! Snapshots hold whatever the images hold: setuid-root programs, device
//! nodes, secrets in configs and blobs pulled with credentials. A local user
//! who can reach `snapshots/N/fs/` can run a setuid file from there as root,
//! so every directory the daemon makes under its root is 0700 (containerd
//! keeps its own the same way), and so is the root itself. Files written
//! there are 0600. No non-root process needs to read any of it: the shim,
//! the runtime and `berthctl image mount` all run as root, and a container
//! reaches its rootfs and volumes through mounts, never by these paths.
//!
//! The exceptions, each read by a container's own users: a bundle's
//! `hosts`, `hostname` and `resolv.conf` (0644, bound onto the container's
//! `/etc`). The directories *inside* a snapshot (`fs/`) or a volume (`_data/`) keep
//! the modes the image or the container gave them: they are the
//! container's, and it needs them as they are.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory the daemon makes in its store.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the daemon writes in its store.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` (and missing parents) as root's alone; an existing
/// directory is tightened to 0700.
pub fn create_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    restrict(path, DIR_MODE)
}

/// Writes (creating or truncating) a file only root can read.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?
        .write_all(bytes)
}

/// Sets `path`'s permission bits to `mode`.
pub fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Tightens a store made by an older daemon, whose directories were 0755
/// and files 0644: the root, the daemon's own directories one level into
/// each area (each snapshot's, volume's, bundle's and ingest's directory),
/// and the blobs and metadata. What lies inside snapshots and volumes is
/// left as it is (see the module's doc).
pub fn tighten_store(root: &Path) -> io::Result<()> {
    create_dir(root)?;
    for area in ["content", "snapshots", "volumes", "bundles", "tmp"] {
        let dir = root.join(area);
        if !dir.exists() {
            continue;
        }
        restrict(&dir, DIR_MODE)?;
        if area != "content" {
            tighten_children(&dir, false)?;
        }
    }
    let content = root.join("content");
    for dir in ["blobs", "ingest"] {
        let dir = content.join(dir);
        if dir.exists() {
            restrict(&dir, DIR_MODE)?;
        }
    }
    let ingest = content.join("ingest");
    if ingest.exists() {
        tighten_children(&ingest, false)?;
    }
    let blobs = content.join("blobs");
    if blobs.exists() {
        // blobs/<algorithm>/<hex>: the algorithm directories and their files.
        tighten_children(&blobs, true)?;
    }
    let meta = root.join("meta.redb");
    if meta.exists() {
        restrict(&meta, FILE_MODE)?;
    }
    Ok(())
}

/// Restricts each directory directly in `dir`; with `files_inside`, also the
/// regular files directly in each of them.
fn tighten_children(dir: &Path, files_inside: bool) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        restrict(&path, DIR_MODE)?;
        if files_inside {
            for file in fs::read_dir(&path)? {
                let file = file?;
                if file.file_type()?.is_file() {
                    restrict(&file.path(), FILE_MODE)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn an_old_open_store_is_tightened_but_image_content_keeps_its_modes() {
        let tmp = std::env::temp_dir().join(format!("berth-private-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let root = tmp.join("root");
        let dirs = [
            "content/blobs/sha256",
            "content/ingest/ref1",
            "snapshots/7/fs/usr/bin",
            "snapshots/7/work",
            "volumes/data/_data",
            "bundles/abc/rootfs",
            "tmp",
        ];
        for d in dirs {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("content/blobs/sha256/aa"), b"blob").unwrap();
        fs::write(root.join("meta.redb"), b"db").unwrap();
        let mut all = vec![root.clone()];
        for d in dirs {
            let mut p = root.join(d);
            while p != root {
                all.push(p.clone());
                p = p.parent().unwrap().to_path_buf();
            }
        }
        for p in &all {
            restrict(p, 0o755).unwrap();
        }
        restrict(&root.join("content/blobs/sha256/aa"), 0o644).unwrap();
        restrict(&root.join("meta.redb"), 0o644).unwrap();

        tighten_store(&root).unwrap();

        for private in [
            "",
            "content",
            "content/blobs",
            "content/blobs/sha256",
            "content/ingest",
            "content/ingest/ref1",
            "snapshots",
            "snapshots/7",
            "volumes",
            "volumes/data",
            "bundles",
            "bundles/abc",
            "tmp",
        ] {
            assert_eq!(mode(&root.join(private)), 0o700, "{private}");
        }
        assert_eq!(mode(&root.join("content/blobs/sha256/aa")), 0o600);
        assert_eq!(mode(&root.join("meta.redb")), 0o600);
        // The container's own directories keep their modes.
        for theirs in [
            "snapshots/7/fs",
            "snapshots/7/fs/usr/bin",
            "volumes/data/_data",
        ] {
            assert_eq!(mode(&root.join(theirs)), 0o755, "{theirs}");
        }
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn create_dir_makes_and_tightens() {
        let tmp = std::env::temp_dir().join(format!("berth-private-mk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let deep = tmp.join("a/b");
        create_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
        restrict(&deep, 0o755).unwrap();
        create_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
        fs::remove_dir_all(&tmp).unwrap();
    }
}
