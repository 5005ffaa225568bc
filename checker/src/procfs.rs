//! Reads of `/proc` that the checks share. Every failure comes back as a
//! message naming the file, to be shown in a `not ok` line.

use std::os::unix::fs::MetadataExt;

/// A whole file, as text.
pub fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// A whole file, trimmed of surrounding whitespace.
pub fn read_trimmed(path: &str) -> Result<String, String> {
    read(path).map(|text| text.trim().to_owned())
}

/// `/proc/self/status`, read once.
pub struct Status {
    text: String,
}

impl Status {
    pub fn read() -> Result<Status, String> {
        read("/proc/self/status").map(|text| Status { text })
    }

    pub fn parse(text: &str) -> Status {
        Status {
            text: text.to_owned(),
        }
    }

    /// The value of the `Name:` line, trimmed.
    pub fn field(&self, name: &str) -> Result<&str, String> {
        self.text
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key == name).then_some(value.trim())
            })
            .ok_or_else(|| format!("no {name} line in /proc/self/status"))
    }
}

/// The inode of the checker's namespace `name` (as under `/proc/self/ns/`):
/// two processes share a namespace exactly when these are equal.
pub fn namespace_inode(name: &str) -> Result<u64, String> {
    let path = format!("/proc/self/ns/{name}");
    std::fs::metadata(&path)
        .map(|meta| meta.ino())
        .map_err(|e| format!("cannot stat {path}: {e}"))
}

/// The highest capability number the running kernel knows. Without a
/// readable `/proc/sys` the checker assumes the newest it knows itself.
pub fn cap_last_cap() -> u32 {
    read_trimmed("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_found_by_exact_name() {
        let status =
            Status::parse("Name:\tx\nUmask:\t0022\nCapEff:\t0000000000000400\nNoNewPrivs:\t1\n");
        assert_eq!(status.field("Umask"), Ok("0022"));
        assert_eq!(status.field("CapEff"), Ok("0000000000000400"));
        assert_eq!(status.field("NoNewPrivs"), Ok("1"));
        assert!(status.field("Cap").is_err());
    }
}
