//! GNU sparse files (format 1.0) in PAX layers: the map of data regions
//! at the head of the entry's data, read with bounds on every number so a
//! hostile layer cannot make the unpacker allocate or seek without limit.

use std::io::{self, Read};

use super::{Error, Result};

/// A sparse file in GNU's 1.0 format, from an entry's PAX records.
#[derive(Debug)]
pub(super) struct PaxSparse {
    /// The file's real name (the entry's own is `GNUSparseFile.N/NAME`).
    pub(super) name: Vec<u8>,
    pub(super) real_size: u64,
}

/// The entry's GNU sparse PAX records, if any: format 1.0 is returned, the
/// older 0.x formats (whose maps live in the records) are refused.
pub(super) fn pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<PaxSparse>> {
    let Some(pax) = entry.pax_extensions().map_err(Error::Read)? else {
        return Ok(None);
    };
    let (mut major, mut minor, mut name, mut real_size, mut any) = (None, None, None, None, false);
    for ext in pax {
        let ext = ext.map_err(Error::Read)?;
        let Some(key) = ext.key_bytes().strip_prefix(b"GNU.sparse.") else {
            continue;
        };
        any = true;
        let value = ext.value_bytes();
        let number = || std::str::from_utf8(value).ok()?.parse::<u64>().ok();
        match key {
            b"major" => major = number(),
            b"minor" => minor = number(),
            b"name" => name = Some(value.to_vec()),
            b"realsize" => real_size = number(),
            _ => {}
        }
    }
    if !any {
        return Ok(None);
    }
    let path = String::from_utf8_lossy(name.as_deref().unwrap_or(&entry.path_bytes())).into_owned();
    match (major, minor, name, real_size) {
        (Some(1), Some(0), Some(name), Some(real_size)) => Ok(Some(PaxSparse { name, real_size })),
        (Some(1), Some(0), ..) => Err(Error::Sparse {
            path,
            detail: "GNU sparse 1.0 without GNU.sparse.name or GNU.sparse.realsize".into(),
        }),
        (major, minor, ..) => Err(Error::Sparse {
            path,
            detail: format!(
                "GNU sparse format {}.{} in PAX records is not supported (only 1.0, GNU tar's default)",
                major.map_or("0".into(), |m| m.to_string()),
                minor.map_or("?".into(), |m| m.to_string()),
            ),
        }),
    }
}

#[derive(Debug)]
pub(super) enum SparseMapError {
    Read(io::Error),
    Invalid(String),
}

/// Most regions a sparse map may list (each costs 16 bytes here).
const MAX_SPARSE_REGIONS: u64 = 1 << 20;

/// GNU sparse 1.0's map, at the start of the entry's data: decimal lines
/// (the number of regions, then each one's offset and size), padded to a
/// 512-byte block. Regions must be in order, apart and inside the file.
pub(super) fn read_sparse_map<R: Read>(
    data: &mut R,
    real_size: u64,
) -> std::result::Result<Vec<(u64, u64)>, SparseMapError> {
    let mut consumed = 0u64;
    let mut number = |data: &mut R| -> std::result::Result<u64, SparseMapError> {
        let mut digits = Vec::new();
        loop {
            let mut byte = [0u8];
            data.read_exact(&mut byte).map_err(SparseMapError::Read)?;
            consumed += 1;
            match byte[0] {
                b'\n' => break,
                b @ b'0'..=b'9' if digits.len() < 20 => digits.push(b),
                other => {
                    return Err(SparseMapError::Invalid(format!(
                        "unexpected byte {other:#04x} in the sparse map"
                    )))
                }
            }
        }
        std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| {
                SparseMapError::Invalid("empty or overlong number in the sparse map".into())
            })
    };
    let count = number(data)?;
    if count > MAX_SPARSE_REGIONS {
        return Err(SparseMapError::Invalid(format!(
            "{count} regions, more than the {MAX_SPARSE_REGIONS} accepted"
        )));
    }
    let mut regions = Vec::with_capacity(count as usize);
    let mut end = 0u64;
    for _ in 0..count {
        let offset = number(data)?;
        let len = number(data)?;
        let region_end = offset.checked_add(len).filter(|&e| e <= real_size);
        match region_end {
            Some(region_end) if offset >= end => {
                regions.push((offset, len));
                end = region_end;
            }
            _ => {
                return Err(SparseMapError::Invalid(format!(
                    "region {offset}+{len} overlaps the one before or passes the file's size {real_size}"
                )))
            }
        }
    }
    let padding = (512 - consumed % 512) % 512;
    io::copy(&mut data.take(padding), &mut io::sink()).map_err(SparseMapError::Read)?;
    Ok(regions)
}

/// Reads until `buf` is full or the stream ends.
pub(super) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
