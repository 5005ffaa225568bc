//! `mounts`, `root.readonly`, `linux.maskedPaths` and `linux.readonlyPaths`.

use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;

use crate::config::{Config, Mount};
use crate::mountinfo::{MountEntry, MountTable};
use crate::paths;
use crate::sys;
use crate::tap::Report;

pub fn check(config: &Config, report: &mut Report) {
    match MountTable::read() {
        Ok(table) => {
            for (index, mount) in config.mounts.iter().enumerate() {
                check_mount(config, index, mount, &table, report);
            }
            check_root(config, &table, report);
        }
        Err(e) => report.fail("the mount table is readable", e, "/proc/self/mountinfo"),
    }
    for path in &config.linux.masked_paths {
        check_masked(&paths::clean(path), report);
    }
    for path in &config.linux.readonly_paths {
        check_read_only(&paths::clean(path), report);
    }
}

/// The `index`th entry of `mounts` is mounted where it asks, with the type
/// and flags it asks for.
fn check_mount(
    config: &Config,
    index: usize,
    mount: &Mount,
    table: &MountTable,
    report: &mut Report,
) {
    let destination = paths::clean(&mount.destination);
    if let Some(cover) = covered_by(config, index, &destination) {
        report.skip(format!("mount {destination}"), format!("hidden by {cover}"));
        return;
    }
    let mount_point = paths::resolve(&destination);
    let Some(entry) = table.at(&mount_point) else {
        report.fail(
            format!("{destination} is a mount point"),
            "no mountinfo entry",
            format!("an entry at {mount_point}"),
        );
        return;
    };
    report.pass(format!("{destination} is a mount point"));

    let requested = RequestedFlags::parse(&mount.options);
    let kind = mount.kind.as_deref().unwrap_or("");
    // Runtimes build a "cgroup" mount their own way (a tmpfs with one
    // mount per controller on cgroup v1; cgroup2, or a bind of it, on v2),
    // so only what holds for every way is checked, as for a bind mount.
    let bind_like = requested.bind || kind == "bind" || kind == "cgroup";
    if !bind_like && !kind.is_empty() {
        report.compare(
            format!("{destination} has type {kind}"),
            entry.fstype.as_str(),
            kind,
        );
    }
    let read_only_path = config
        .linux
        .readonly_paths
        .iter()
        .any(|p| paths::clean(p) == destination);
    let mut flags = requested.flags(bind_like);
    if read_only_path {
        // A readonlyPaths entry on the same point is remounted read-only
        // after the mounts are made.
        flags.retain(|flag| *flag != Flag::Present("rw"));
    }
    check_flags(&destination, entry, &flags, report);
}

/// What hides the `index`th mount entirely: a later mount on it or on a
/// directory above it, or a maskedPaths entry on or above it (paths are
/// masked after every mount is made).
fn covered_by(config: &Config, index: usize, destination: &str) -> Option<String> {
    let later_mount = config
        .mounts
        .iter()
        .skip(index + 1)
        .map(|m| paths::clean(&m.destination))
        .find(|later| paths::is_within(destination, later));
    if let Some(later) = later_mount {
        return Some(format!("the later mount on {later}"));
    }
    config
        .linux
        .masked_paths
        .iter()
        .map(|p| paths::clean(p))
        .find(|masked| paths::is_within(destination, masked))
        .map(|masked| format!("maskedPaths entry {masked}"))
}

fn check_flags(destination: &str, entry: &MountEntry, flags: &[Flag], report: &mut Report) {
    if flags.is_empty() {
        return;
    }
    let want: Vec<String> = flags.iter().map(Flag::to_string).collect();
    let want = want.join(",");
    let description = format!("{destination} mount flags {want}");
    if flags.iter().all(|flag| flag.holds(entry)) {
        report.pass(description);
    } else {
        report.fail(description, entry.options_string(), want);
    }
}

/// A per-mount flag that must (`Present`) or must not (`Absent`) be shown
/// in mountinfo field 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Present(&'static str),
    Absent(&'static str),
}

impl Flag {
    fn holds(&self, entry: &MountEntry) -> bool {
        match *self {
            Flag::Present(name) => entry.has_option(name),
            Flag::Absent(name) => !entry.has_option(name),
        }
    }
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flag::Present(name) => write!(f, "{name}"),
            Flag::Absent(name) => write!(f, "!{name}"),
        }
    }
}

/// The per-mount flags a mount's options ask for, later options winning
/// over earlier ones as in runc's option parsing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestedFlags {
    pub bind: bool,
    /// `Some(true)` for `ro`, `Some(false)` for an explicit `rw`.
    pub read_only: Option<bool>,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub noatime: bool,
    pub relatime: bool,
    pub strictatime: bool,
    pub nodiratime: bool,
}

impl RequestedFlags {
    pub fn parse(options: &[String]) -> RequestedFlags {
        let mut r = RequestedFlags::default();
        for option in options {
            match option.as_str() {
                "bind" | "rbind" => r.bind = true,
                "ro" => r.read_only = Some(true),
                "rw" => r.read_only = Some(false),
                "nosuid" | "suid" => r.nosuid = option == "nosuid",
                "nodev" | "dev" => r.nodev = option == "nodev",
                "noexec" | "exec" => r.noexec = option == "noexec",
                "noatime" | "atime" => r.noatime = option == "noatime",
                "relatime" | "norelatime" => r.relatime = option == "relatime",
                "strictatime" | "nostrictatime" => r.strictatime = option == "strictatime",
                "nodiratime" | "diratime" => r.nodiratime = option == "nodiratime",
                _ => {}
            }
        }
        r
    }

    /// The flags to look for. A bind mount keeps flags of its source that
    /// were not asked for (the kernel copies them, and locks some inside a
    /// user namespace), so for one only the restricting flags asked for are
    /// checked, and never `rw` or an access-time mode.
    pub fn flags(&self, bind_like: bool) -> Vec<Flag> {
        let mut flags = Vec::new();
        match self.read_only {
            Some(true) => flags.push(Flag::Present("ro")),
            Some(false) if !bind_like => flags.push(Flag::Present("rw")),
            _ => {}
        }
        for (asked, name) in [
            (self.nosuid, "nosuid"),
            (self.nodev, "nodev"),
            (self.noexec, "noexec"),
        ] {
            if asked {
                flags.push(Flag::Present(name));
            }
        }
        if bind_like {
            return flags;
        }
        // The kernel's precedence: strictatime clears noatime and relatime;
        // noatime suppresses the relatime default.
        if self.strictatime {
            flags.push(Flag::Absent("noatime"));
            flags.push(Flag::Absent("relatime"));
        } else if self.noatime {
            flags.push(Flag::Present("noatime"));
        } else if self.relatime {
            flags.push(Flag::Present("relatime"));
        }
        if self.nodiratime {
            flags.push(Flag::Present("nodiratime"));
        }
        flags
    }
}

fn check_root(config: &Config, table: &MountTable, report: &mut Report) {
    let (description, want) = if config.root_readonly {
        ("root is read-only", "ro")
    } else {
        ("root is read-write", "rw")
    };
    match table.at("/") {
        Some(entry) if entry.has_option(want) => report.pass(description),
        Some(entry) => report.fail(description, entry.options_string(), want),
        None => report.fail(description, "no mountinfo entry for /", want),
    }
}

/// A masked path reads as empty: runtimes bind /dev/null over a file and
/// mount an empty read-only tmpfs over a directory. A path that does not
/// exist needs no masking.
fn check_masked(path: &str, report: &mut Report) {
    let description = format!("masked path {path} is empty");
    match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            report.pass(format!("masked path {path} is absent"))
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            report.skip(description, format!("cannot look at it: {e}"))
        }
        Err(e) => report.fail(description, format!("cannot stat: {e}"), "empty"),
        Ok(meta) if meta.is_dir() => match std::fs::read_dir(path) {
            Ok(entries) => {
                let names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect();
                if names.is_empty() {
                    report.pass(description);
                } else {
                    report.fail(description, format!("entries {}", names.join(",")), "none");
                }
            }
            Err(e) => report.fail(description, format!("cannot list: {e}"), "no entries"),
        },
        Ok(_) => match read_some(path) {
            Ok(0) => report.pass(description),
            Ok(n) => report.fail(description, format!("{n} bytes read"), "0 bytes"),
            Err(e) => report.fail(description, format!("cannot read: {e}"), "0 bytes"),
        },
    }
}

/// Reads once from `path`. Non-blocking, so an unmasked fifo or
/// `/proc/kmsg` gives an error rather than hanging the checker.
fn read_some(path: &str) -> std::io::Result<usize> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let mut buf = [0u8; 512];
    file.read(&mut buf)
}

fn check_read_only(path: &str, report: &mut Report) {
    let description = format!("readonly path {path} is read-only");
    match sys::is_read_only(path) {
        Ok(true) => report.pass(description),
        Ok(false) => report.fail(description, "writable mount", "read-only mount"),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            report.pass(format!("readonly path {path} is absent"))
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            report.skip(description, format!("cannot look at it: {e}"))
        }
        Err(e) => report.fail(description, format!("statvfs: {e}"), "read-only mount"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn entry(opts: &str) -> MountEntry {
        MountEntry {
            mount_point: "/x".into(),
            options: opts.split(',').map(str::to_owned).collect(),
            fstype: "tmpfs".into(),
            source: "tmpfs".into(),
        }
    }

    #[test]
    fn later_options_win() {
        let r = RequestedFlags::parse(&options(&["ro", "rw", "nosuid", "suid", "nodev"]));
        assert_eq!(r.read_only, Some(false));
        assert!(!r.nosuid);
        assert!(r.nodev);
    }

    #[test]
    fn fresh_mounts_check_every_flag_asked_for() {
        let r = RequestedFlags::parse(&options(&["nosuid", "strictatime", "mode=755", "ro"]));
        assert_eq!(
            r.flags(false),
            vec![
                Flag::Present("ro"),
                Flag::Present("nosuid"),
                Flag::Absent("noatime"),
                Flag::Absent("relatime"),
            ]
        );
        let r = RequestedFlags::parse(&options(&["rw", "noatime", "nodiratime"]));
        assert_eq!(
            r.flags(false),
            vec![
                Flag::Present("rw"),
                Flag::Present("noatime"),
                Flag::Present("nodiratime")
            ]
        );
    }

    #[test]
    fn bind_mounts_check_only_restrictions() {
        let r = RequestedFlags::parse(&options(&["rbind", "rw", "noatime", "nosuid"]));
        assert!(r.bind);
        assert_eq!(r.flags(true), vec![Flag::Present("nosuid")]);
        let r = RequestedFlags::parse(&options(&["bind", "ro"]));
        assert_eq!(r.flags(true), vec![Flag::Present("ro")]);
    }

    #[test]
    fn ro_is_never_mistaken_for_rw() {
        assert!(Flag::Present("ro").holds(&entry("ro,nosuid")));
        assert!(!Flag::Present("ro").holds(&entry("rw,nosuid")));
        assert!(!Flag::Present("rw").holds(&entry("ro,relatime")));
        assert!(Flag::Absent("relatime").holds(&entry("rw,nosuid")));
    }

    #[test]
    fn later_and_masked_mounts_hide_earlier_ones() {
        let mut config = Config::default();
        for destination in ["/dev/shm", "/dev", "/dev/pts", "/proc", "/proc/acpi"] {
            config.mounts.push(Mount {
                destination: destination.into(),
                ..Mount::default()
            });
        }
        config.linux.masked_paths = vec!["/proc/acpi".into()];
        assert_eq!(
            covered_by(&config, 0, "/dev/shm").as_deref(),
            Some("the later mount on /dev")
        );
        assert_eq!(covered_by(&config, 1, "/dev"), None);
        assert_eq!(covered_by(&config, 2, "/dev/pts"), None);
        assert_eq!(covered_by(&config, 3, "/proc"), None);
        assert_eq!(
            covered_by(&config, 4, "/proc/acpi").as_deref(),
            Some("maskedPaths entry /proc/acpi")
        );
    }
}
