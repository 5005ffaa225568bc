//! The user a container runs as, from the image's own `/etc/passwd` and
//! `/etc/group`, read inside each layer directory.

use std::path::{Path, PathBuf};

use super::{Error, Result};

/// The most of an image's passwd or group file the daemon reads.
const MAX_IMAGE_FILE: u64 = 1 << 20;

/// Reads the regular file `relative` from the first of `roots` that has it
/// (the container's mounted rootfs; or layer directories, topmost first,
/// where a `.wh.` entry hides the lower ones).
pub fn read_image_file(layers: &[PathBuf], relative: &str) -> Option<String> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let path = Path::new(relative);
    let parent = path.parent().unwrap_or(Path::new(""));
    let name = path.file_name()?.to_string_lossy().into_owned();
    for layer in layers {
        let Ok(root) = std::fs::File::open(layer) else {
            continue;
        };
        let whiteout = parent.join(format!(".wh.{name}"));
        if berth_oci::safe_path::open_in_root(root.as_raw_fd(), &whiteout, libc::O_PATH).is_ok() {
            return None;
        }
        // Never blocking (a fifo), never a device (it could be the host's
        // disk or /dev/zero), never more than a passwd file could need.
        let Ok(fd) = berth_oci::safe_path::open_in_root(
            root.as_raw_fd(),
            path,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        ) else {
            continue;
        };
        let file = std::fs::File::from(fd);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        file.take(MAX_IMAGE_FILE).read_to_string(&mut text).ok()?;
        return Some(text);
    }
    None
}

/// uid, gid and supplementary gids of `user` (`name`, `uid`, `name:group`,
/// `uid:gid`) in the image, as docker resolves them.
pub fn resolve_user(user: &str, layers: &[PathBuf]) -> Result<(u32, u32, Vec<u32>)> {
    let passwd = read_image_file(layers, "etc/passwd").unwrap_or_default();
    let groups = read_image_file(layers, "etc/group").unwrap_or_default();
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    // name:x:uid:gid:...
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let by_name = entries.iter().find(|f| f[0] == user_part);
    let numeric = user_part.parse::<u32>().ok();
    let (uid, mut gid, name) = match (by_name, numeric) {
        (Some(f), _) => (
            f[2].parse()
                .map_err(|_| Error::NoUser(user_part.to_string()))?,
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (None, Some(uid)) => {
            let entry = entries
                .iter()
                .find(|f| f[2].parse::<u32>().ok() == Some(uid));
            (
                uid,
                entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
                entry.map(|f| f[0].to_string()),
            )
        }
        (None, None) => return Err(Error::NoUser(user_part.to_string())),
    };
    // name:x:gid:member,member
    let group_entries: Vec<Vec<&str>> = groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    if let Some(group) = group_part {
        gid = match group_entries.iter().find(|f| f[0] == group) {
            Some(f) => f[2]
                .parse()
                .map_err(|_| Error::NoGroup(group.to_string()))?,
            None => group
                .parse()
                .map_err(|_| Error::NoGroup(group.to_string()))?,
        };
    }
    let mut additional: Vec<u32> = match &name {
        Some(name) if group_part.is_none() => group_entries
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == name)))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional.sort_unstable();
    additional.dedup();
    Ok((uid, gid, additional))
}
