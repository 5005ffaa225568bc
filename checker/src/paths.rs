//! Paths as the config names them and as the container sees them.

/// `path` made absolute and lexically clean: no `.`, `..`, repeated or
/// trailing slashes. runc accepts relative mount destinations and takes
/// them from `/`, hence the leading slash.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// True when clean path `path` is `dir` or lies below it.
pub fn is_within(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Where `path` really is inside the container. Runtimes resolve symlinks
/// in a mount destination within the rootfs (runc with securejoin), so a
/// mount on `/var/run` lands on `/run` when that is a link; resolving it
/// again from inside finds the same place. Falls back to the clean path
/// when it cannot be resolved.
pub fn resolve(path: &str) -> String {
    let clean = clean(path);
    std::fs::canonicalize(&clean)
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .unwrap_or(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_normalizes_lexically() {
        assert_eq!(clean("/dev/"), "/dev");
        assert_eq!(clean("//dev//shm/./"), "/dev/shm");
        assert_eq!(clean("/a/b/../c"), "/a/c");
        assert_eq!(clean("/../.."), "/");
        assert_eq!(clean("tmp/x"), "/tmp/x");
        assert_eq!(clean(""), "/");
    }

    #[test]
    fn is_within_respects_component_boundaries() {
        assert!(is_within("/dev/shm", "/dev"));
        assert!(is_within("/dev", "/dev"));
        assert!(is_within("/anything", "/"));
        assert!(!is_within("/devices", "/dev"));
        assert!(!is_within("/dev", "/dev/shm"));
    }
}
