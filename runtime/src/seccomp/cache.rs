//! Compiled filters kept in the runtime's root, `ROOT/~seccomp/`.
//!
//! An engine gives nearly every container the same profile (docker's,
//! podman's, containerd's default): parsing and compiling it again costs
//! `create` about half a millisecond here. A filter compiled once is kept
//! under a hash of the profile, and used again only when everything that
//! made it is the same:
//! - the profile, compared byte for byte (the hash only names the file);
//! - this berth binary: device, inode, size, modification and change
//!   times of `/proc/self/exe` (a berth running from a sealed copy in
//!   memory has no stable identity, and neither reads nor writes the
//!   cache). The change time is the one a copy cannot carry over: an
//!   installer that keeps the modification time (`cp -p`, packages,
//!   reproducible builds) on a file that reuses a freed inode of the same
//!   size would otherwise pass for the old binary.
//!
//! A file that fails any check (another build's, or one torn by a crash:
//! a checksum covers it) is compiled over. The directory is root's alone
//! (0700) like the rest of the root; a cache directory anyone else could
//! write is not used. Filters that hand calls to an agent
//! (`SCMP_ACT_NOTIFY`) are never kept: they carry a listener.
//!
//! `~` cannot start a container id, so the directory never meets one.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Compiled, SeccompError};

/// The cache's directory in the runtime's root.
pub const DIR: &str = "~seccomp";
/// The first bytes of every cache file, with the format's version.
const MAGIC: &[u8] = b"berth seccomp cache 2\n";
/// More profiles than any engine uses: past this, new ones are not kept.
const MAX_FILES: usize = 64;

/// The profile's filters, from `root`'s cache when it holds them, else
/// compiled (and kept there for the next container). Without a root, or a
/// cache to trust, they are compiled.
pub fn compile(root: Option<&Path>, profile: &serde_json::Value) -> Result<Compiled, SeccompError> {
    match root.and_then(Cache::open) {
        Some(cache) => cache.compile(profile),
        None => uncached(profile),
    }
}

/// The profile parsed and compiled.
fn uncached(profile: &serde_json::Value) -> Result<Compiled, SeccompError> {
    super::parse(profile).and_then(|p| super::compile(&p))
}

struct Cache {
    /// The directory as [`Cache::open`] checked it, every file named
    /// through it ([`Cache::at`]): whoever may rename the root's entries
    /// cannot swap another directory in once it is checked.
    dir: std::fs::File,
    identity: [u64; 7],
}

impl Cache {
    /// The cache of `root`, made if missing; none where it cannot be
    /// trusted or this binary has no stable identity.
    fn open(root: &Path) -> Option<Cache> {
        let exe = std::fs::read_link("/proc/self/exe").ok()?;
        if is_memfd(&exe) {
            return None;
        }
        let meta = std::fs::metadata("/proc/self/exe").ok()?;
        let identity = [
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ];
        let path = root.join(DIR);
        // Not a symlink (`O_NOFOLLOW`), and checked as opened; made the
        // first time (a hit costs no mkdir).
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&path)
        };
        let dir = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::DirBuilder::new().mode(0o700).create(&path);
                open()
            }
            opened => opened,
        }
        .ok()?;
        let dir_meta = dir.metadata().ok()?;
        // SAFETY: geteuid has no preconditions.
        let ours = dir_meta.uid() == unsafe { libc::geteuid() };
        if !dir_meta.is_dir() || !ours || dir_meta.mode() & 0o022 != 0 {
            return None;
        }
        Some(Cache { dir, identity })
    }

    /// `name` in the checked directory (through `/proc/self/fd`).
    fn at(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.dir.as_raw_fd()))
    }

    /// The profile's filters, kept or compiled (and then kept).
    fn compile(&self, profile: &serde_json::Value) -> Result<Compiled, SeccompError> {
        // Serializing the parsed profile costs a tenth of compiling it.
        let input =
            serde_json::to_vec(profile).map_err(|e| SeccompError::Invalid(e.to_string()))?;
        let path = self.at(&format!("{:016x}", fnv1a(&input)));
        if let Some(hit) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| decode(&bytes, &self.identity, &input))
        {
            return Ok(hit);
        }
        let compiled = uncached(profile)?;
        if compiled.notify.is_none() && compiled.listener.is_none() {
            self.keep(&path, &encode(&self.identity, &input, &compiled));
        }
        Ok(compiled)
    }

    /// Writes `bytes` as `path`, whole or not at all (a temporary file,
    /// then a rename). Failing to keep a filter is no error. A full cache
    /// takes no new profile, but still renews one it holds (another
    /// binary's, or torn): else, once full, it would never be of use again
    /// after an upgrade.
    fn keep(&self, path: &Path, bytes: &[u8]) {
        let full =
            !path.exists() && std::fs::read_dir(self.at(".")).is_ok_and(|d| d.count() >= MAX_FILES);
        if full {
            return;
        }
        let tmp = self.at(&format!(".tmp.{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| file.write_all(bytes));
        if written.is_err() || std::fs::rename(&tmp, path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Whether `/proc/self/exe` names a memfd (`/memfd:NAME (deleted)`).
/// Compared as bytes: `Path::starts_with` matches whole components only,
/// and `memfd:berth (deleted)` is not the component `memfd:`.
fn is_memfd(exe: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    exe.as_os_str().as_bytes().starts_with(b"/memfd:")
}

/// 64-bit FNV-1a: names a file and checks it for tears, nothing more.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn encode(identity: &[u64; 7], input: &[u8], compiled: &Compiled) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 96 + input.len() + compiled.filter.len() * 8);
    out.extend_from_slice(MAGIC);
    for word in identity {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&(input.len() as u64).to_le_bytes());
    out.extend_from_slice(input);
    out.extend_from_slice(&compiled.flags.to_le_bytes());
    out.push(u8::from(compiled.launcher_passes));
    out.extend_from_slice(&(compiled.filter.len() as u32).to_le_bytes());
    for insn in &compiled.filter {
        out.extend_from_slice(&insn.code.to_le_bytes());
        out.push(insn.jt);
        out.push(insn.jf);
        out.extend_from_slice(&insn.k.to_le_bytes());
    }
    out.extend_from_slice(&fnv1a(&out).to_le_bytes());
    out
}

/// The filters a cache file holds, if it is whole, this binary's, and made
/// from exactly `input`.
fn decode(bytes: &[u8], identity: &[u64; 7], input: &[u8]) -> Option<Compiled> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    if fnv1a(body) != u64::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    let mut reader = Reader(body.strip_prefix(MAGIC)?);
    for word in identity {
        if reader.u64()? != *word {
            return None;
        }
    }
    let len = usize::try_from(reader.u64()?).ok()?;
    if reader.take(len)? != input {
        return None;
    }
    let flags = reader.u32()?;
    let launcher_passes = match reader.take(1)? {
        [0] => false,
        [1] => true,
        _ => return None,
    };
    let count = reader.u32()? as usize;
    if count == 0 || count > super::BPF_MAXINSNS {
        return None;
    }
    let mut filter = Vec::with_capacity(count);
    for _ in 0..count {
        let insn = reader.take(8)?;
        filter.push(libc::sock_filter {
            code: u16::from_le_bytes([insn[0], insn[1]]),
            jt: insn[2],
            jf: insn[3],
            k: u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]),
        });
    }
    if !reader.0.is_empty() {
        return None;
    }
    Some(Compiled {
        filter,
        flags,
        notify: None,
        listener: None,
        launcher_passes,
    })
}

/// Reads a cache file's fields in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(errno: u32) -> serde_json::Value {
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}]
        })
    }

    fn uncached(value: &serde_json::Value) -> Compiled {
        super::uncached(value).unwrap()
    }

    fn same(a: &Compiled, b: &Compiled) -> bool {
        let insns = |c: &Compiled| -> Vec<(u16, u8, u8, u32)> {
            c.filter.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
        };
        insns(a) == insns(b) && a.flags == b.flags && a.launcher_passes == b.launcher_passes
    }

    /// An empty directory for a test's runtime root.
    fn fresh_root(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("berth-seccomp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn a_directory_swapped_in_after_the_checks_is_not_read() {
        let _identity = identity_kept();
        let root = fresh_root("swap");
        let cache = Cache::open(&root).unwrap();
        // Whoever may rename the root's entries moves the checked
        // directory away and puts one of theirs in its place, holding
        // another profile's filter under this profile's name.
        std::fs::rename(root.join(DIR), root.join("checked")).unwrap();
        std::fs::create_dir(root.join(DIR)).unwrap();
        let input = serde_json::to_vec(&profile(1)).unwrap();
        let planted = encode(&cache.identity, &input, &uncached(&profile(2)));
        let name = format!("{:016x}", fnv1a(&input));
        std::fs::write(root.join(DIR).join(&name), planted).unwrap();
        assert!(same(
            &cache.compile(&profile(1)).unwrap(),
            &uncached(&profile(1))
        ));
        // Kept in the directory checked, not in theirs.
        let kept = std::fs::read(root.join("checked").join(&name)).unwrap();
        assert!(decode(&kept, &cache.identity, &input).is_some());
        // A symlink in its place is no cache.
        std::fs::remove_dir_all(root.join(DIR)).unwrap();
        std::os::unix::fs::symlink("checked", root.join(DIR)).unwrap();
        assert!(Cache::open(&root).is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Held by the tests that need this binary's identity to stay, and by
    /// the one that changes it.
    static IDENTITY: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn identity_kept() -> std::sync::MutexGuard<'static, ()> {
        IDENTITY.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn a_kept_filter_is_used_again_only_for_the_same_profile_and_binary() {
        let _identity = identity_kept();
        let root = fresh_root("cache");
        let first = compile(Some(&root), &profile(1)).unwrap();
        assert!(same(&first, &uncached(&profile(1))));
        let files: Vec<_> = std::fs::read_dir(root.join(DIR))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(files.len(), 1, "one file per profile");
        let file = files[0].path();
        let meta = std::fs::metadata(root.join(DIR)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);

        // Used again: the file decodes to the same filters.
        let cache = Cache::open(&root).unwrap();
        let input = serde_json::to_vec(&profile(1)).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        let hit = decode(&bytes, &cache.identity, &input).expect("a hit");
        assert!(same(&hit, &first));
        assert!(same(&compile(Some(&root), &profile(1)).unwrap(), &first));

        // Another profile, another binary, a torn or altered file: no hit.
        let other = serde_json::to_vec(&profile(2)).unwrap();
        assert!(decode(&bytes, &cache.identity, &other).is_none());
        for word in 0..cache.identity.len() {
            let mut elsewhere = cache.identity;
            elsewhere[word] += 1;
            assert!(decode(&bytes, &elsewhere, &input).is_none(), "word {word}");
        }
        assert!(decode(&bytes[..bytes.len() - 9], &cache.identity, &input).is_none());
        let mut altered = bytes.clone();
        let last_k = altered.len() - 9;
        altered[last_k] ^= 1;
        assert!(decode(&altered, &cache.identity, &input).is_none());
        // A file that does not decode is compiled over, and right.
        std::fs::write(&file, b"garbage").unwrap();
        assert!(same(&compile(Some(&root), &profile(1)).unwrap(), &first));
        assert!(decode(&std::fs::read(&file).unwrap(), &cache.identity, &input).is_some());
        let second = compile(Some(&root), &profile(2)).unwrap();
        assert!(same(&second, &uncached(&profile(2))));
        assert!(!same(&second, &first));
        // What the file says is what a hit gives: a planted filter (of the
        // other profile) under this profile's name and input comes back.
        std::fs::write(&file, encode(&cache.identity, &input, &second)).unwrap();
        assert!(same(&compile(Some(&root), &profile(1)).unwrap(), &second));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_full_cache_takes_no_new_profile_but_renews_the_ones_it_holds() {
        let _identity = identity_kept();
        let root = fresh_root("full");
        compile(Some(&root), &profile(1)).unwrap();
        let dir = root.join(DIR);
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        for n in 1..MAX_FILES {
            std::fs::write(dir.join(format!("other-{n}")), b"").unwrap();
        }
        // What an older berth kept for this profile.
        let cache = Cache::open(&root).unwrap();
        let input = serde_json::to_vec(&profile(1)).unwrap();
        let mut older = cache.identity;
        older[1] += 1;
        let compiled = uncached(&profile(1));
        std::fs::write(&file, encode(&older, &input, &compiled)).unwrap();
        assert!(same(&compile(Some(&root), &profile(1)).unwrap(), &compiled));
        let renewed = std::fs::read(&file).unwrap();
        assert!(decode(&renewed, &cache.identity, &input).is_some());
        // A new profile is compiled, not kept.
        assert!(same(
            &compile(Some(&root), &profile(2)).unwrap(),
            &uncached(&profile(2))
        ));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), MAX_FILES);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_binary_changed_in_place_is_another_one() {
        let _identity = identity_kept();
        let root = fresh_root("ctime");
        let first = compile(Some(&root), &profile(1)).unwrap();
        let before = Cache::open(&root).unwrap();
        let input = serde_json::to_vec(&profile(1)).unwrap();
        let file = std::fs::read_dir(root.join(DIR))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        // A planted filter (another profile's) that this binary would use.
        std::fs::write(
            &file,
            encode(&before.identity, &input, &uncached(&profile(2))),
        )
        .unwrap();
        // Changed in place, with the same size and modification time: a
        // chmod to the same mode moves only the change time.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let permissions = std::fs::metadata(&exe).unwrap().permissions();
        std::fs::set_permissions(&exe, permissions).unwrap();
        let after = Cache::open(&root).unwrap();
        assert_eq!(after.identity[..5], before.identity[..5]);
        assert_ne!(after.identity, before.identity);
        assert!(same(&compile(Some(&root), &profile(1)).unwrap(), &first));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_berth_running_from_a_memfd_is_told_apart() {
        // What the kernel shows for the sealed copy (`sealed_exe`).
        assert!(is_memfd(Path::new("/memfd:berth (deleted)")));
        assert!(is_memfd(Path::new("/memfd:")));
        assert!(!is_memfd(Path::new("/usr/local/bin/berth")));
        assert!(!is_memfd(Path::new("/tmp/memfd:berth")));
    }

    #[test]
    fn a_cache_others_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let root = fresh_root("open");
        std::fs::create_dir(root.join(DIR)).unwrap();
        std::fs::set_permissions(root.join(DIR), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Cache::open(&root).is_none());
        // Compiling still works, and keeps nothing there.
        let compiled = compile(Some(&root), &profile(1)).unwrap();
        assert!(same(&compiled, &uncached(&profile(1))));
        assert_eq!(std::fs::read_dir(root.join(DIR)).unwrap().count(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
