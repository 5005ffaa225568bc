//! The few system calls the checks make, behind safe functions.
//!
//! Raw `libc`, since `serde_json` and `libc` are the crate's only
//! dependencies; each call is a plain query of the calling process.

use std::ffi::CString;
use std::io;

/// Real and effective user and group ids.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
}

pub fn ids() -> Ids {
    // SAFETY: these calls take no arguments and cannot fail.
    unsafe {
        Ids {
            uid: libc::getuid(),
            euid: libc::geteuid(),
            gid: libc::getgid(),
            egid: libc::getegid(),
        }
    }
}

/// The supplementary group ids.
pub fn groups() -> Result<Vec<u32>, String> {
    // SAFETY: a zero size asks only for the count; the buffer is not touched.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let len = usize::try_from(count).map_err(|_| getgroups_error())?;
    let mut gids: Vec<libc::gid_t> = vec![0; len];
    // SAFETY: `gids` has room for `count` entries, the size passed.
    let written = unsafe { libc::getgroups(count, gids.as_mut_ptr()) };
    let written = usize::try_from(written).map_err(|_| getgroups_error())?;
    gids.truncate(written);
    Ok(gids)
}

fn getgroups_error() -> String {
    format!("getgroups: {}", io::Error::last_os_error())
}

/// `uname`'s node name (the hostname) and NIS domain name.
pub struct Uname {
    pub nodename: String,
    pub domainname: String,
}

pub fn uname() -> Result<Uname, String> {
    // SAFETY: utsname is arrays of c_char only, for which zero is valid.
    let mut buf: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `buf` is a valid, writable utsname.
    if unsafe { libc::uname(&mut buf) } != 0 {
        return Err(format!("uname: {}", io::Error::last_os_error()));
    }
    Ok(Uname {
        nodename: c_chars(&buf.nodename),
        domainname: c_chars(&buf.domainname),
    })
}

/// A NUL-terminated `c_char` array as text, without reading past its end.
fn c_chars(field: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The resource number of an `RLIMIT_*` name.
pub fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// `(soft, hard)` of a resource limit; RLIM_INFINITY is `u64::MAX`.
pub fn getrlimit(resource: libc::__rlimit_resource_t) -> Result<(u64, u64), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Whether the mount `path` resolves onto is read-only (`ST_RDONLY`, set by
/// a read-only mount or a read-only superblock).
pub fn is_read_only(path: &str) -> io::Result<bool> {
    let c_path = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs is plain integers, for which zero is valid.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `buf` is valid and writable.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf.f_flag & libc::ST_RDONLY != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_chars_stops_at_nul_or_end() {
        let with_nul: [libc::c_char; 4] = [104, 105, 0, 120];
        assert_eq!(c_chars(&with_nul), "hi");
        let without_nul: [libc::c_char; 2] = [104, 105];
        assert_eq!(c_chars(&without_nul), "hi");
    }

    #[test]
    fn rlimit_names_map_to_resources() {
        assert_eq!(rlimit_resource("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(rlimit_resource("RLIMIT_BOGUS"), None);
    }
}
