//! `/proc/self/mountinfo`, the mount table of the checker's mount namespace
//! as seen from its root (see proc(5)).
//!
//! A line reads
//! `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
//! mount id, parent id, device, root, mount point, per-mount options, zero
//! or more optional fields, `-`, filesystem type, source, superblock options.

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: String,
    /// Field 6: the flags of this mount (`ro`/`rw`, `nosuid`, `relatime`...),
    /// not those of the filesystem behind it.
    pub options: Vec<String>,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    pub fn has_option(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }

    pub fn options_string(&self) -> String {
        self.options.join(",")
    }
}

/// The mount table, in the order the kernel lists it.
#[derive(Debug, Default)]
pub struct MountTable {
    pub entries: Vec<MountEntry>,
}

impl MountTable {
    pub fn read() -> Result<MountTable, String> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        MountTable::parse(&text)
    }

    pub fn parse(text: &str) -> Result<MountTable, String> {
        let entries = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                parse_line(line).ok_or_else(|| format!("malformed mountinfo line {line:?}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(MountTable { entries })
    }

    /// The entry mounted at `mount_point`. Mounts on the same point stack and
    /// the kernel lists them in mount order, so the last one is on top.
    pub fn at(&self, mount_point: &str) -> Option<&MountEntry> {
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.mount_point == mount_point)
    }
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    // The optional fields end at a lone "-", which cannot come before field 7.
    let separator = 6 + fields.get(6..)?.iter().position(|f| *f == "-")?;
    Some(MountEntry {
        mount_point: unescape(fields.get(4)?),
        options: fields.get(5)?.split(',').map(str::to_owned).collect(),
        fstype: unescape(fields.get(separator + 1)?),
        source: unescape(fields.get(separator + 2)?),
    })
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(byte) = octal_escape(&bytes[i..]) {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte of a `\ooo` escape at the start of `bytes`, if there is one.
fn octal_escape(bytes: &[u8]) -> Option<u8> {
    let [b'\\', digits @ ..] = bytes else {
        return None;
    };
    let digits = digits.get(..3)?;
    if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
1571 1570 0:160 / / ro,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u
1572 1571 0:163 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1573 1571 0:164 / /dev rw,nosuid shared:7 master:1 - tmpfs tmpfs rw,size=65536k,mode=755
1574 1573 0:165 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620
1580 1571 8:1 /home/me/my\\040dir /data\\040dir rw,relatime - ext4 /dev/sda1 rw
1590 1573 0:170 / /dev rw,nosuid,nodev,noexec - tmpfs shm rw
";

    #[test]
    fn parses_every_field_the_checks_use() {
        let table = MountTable::parse(SAMPLE).expect("valid mountinfo");
        assert_eq!(table.entries.len(), 6);
        let proc = table.at("/proc").expect("/proc is mounted");
        assert_eq!(proc.fstype, "proc");
        assert_eq!(proc.source, "proc");
        assert!(proc.has_option("nosuid"));
        assert!(proc.has_option("rw"));
        assert!(!proc.has_option("ro"));
        assert_eq!(proc.options_string(), "rw,nosuid,nodev,noexec,relatime");
    }

    #[test]
    fn optional_fields_are_skipped() {
        let table = MountTable::parse(SAMPLE).expect("valid mountinfo");
        let dev = &table.entries[2];
        assert_eq!(dev.mount_point, "/dev");
        assert_eq!(dev.fstype, "tmpfs");
        assert_eq!(dev.source, "tmpfs");
    }

    #[test]
    fn the_last_mount_on_a_point_is_on_top() {
        let table = MountTable::parse(SAMPLE).expect("valid mountinfo");
        let dev = table.at("/dev").expect("/dev is mounted");
        assert_eq!(dev.source, "shm");
        assert!(dev.has_option("noexec"));
        assert!(table.at("/nowhere").is_none());
    }

    #[test]
    fn octal_escapes_are_decoded() {
        let table = MountTable::parse(SAMPLE).expect("valid mountinfo");
        assert!(table.at("/data dir").is_some());
        assert_eq!(unescape("a\\011b\\012c\\134d"), "a\tb\nc\\d");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("not\\999octal"), "not\\999octal");
    }

    #[test]
    fn malformed_lines_are_an_error_not_a_panic() {
        assert!(MountTable::parse("1 2 3\n").is_err());
        assert!(MountTable::parse("1 2 0:1 / / rw shared:1 -\n").is_err());
        assert!(MountTable::parse("").is_ok_and(|t| t.entries.is_empty()));
    }
}
