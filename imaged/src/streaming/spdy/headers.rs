//! SPDY/3 header blocks (draft-mbelshe-httpbis-spdy-00 §2.6.10): a count and
//! length-prefixed name/value pairs, compressed with one zlib stream per
//! direction per connection, primed with the dictionary the spec defines.
//! Both ends must use the same dictionary byte for byte: zlib checks its
//! Adler-32 before it inflates anything.

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;

/// Name/value pairs as they arrived (names lowercase, per SPDY/3).
pub(crate) type Headers = Vec<(String, String)>;

/// A decompressed header block larger than this is refused (zip bombs).
const MAX_BLOCK: usize = 256 * 1024;

/// The spec's dictionary: these words, each with a four-byte big-endian
/// length before it, then the literal tail below.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut bytes = Vec::with_capacity(1423);
        for word in DICTIONARY_WORDS {
            bytes.extend_from_slice(&(word.len() as u32).to_be_bytes());
            bytes.extend_from_slice(word.as_bytes());
        }
        bytes.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        bytes
    })
}

/// The compressing side: the header blocks this end sends.
pub(crate) struct Deflater(Compress);

impl Deflater {
    pub(crate) fn new() -> Result<Self, SpdyError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(dictionary())
            .map_err(|e| SpdyError::Zlib(e.to_string()))?;
        Ok(Deflater(zlib))
    }

    /// Encodes and compresses one block; a sync flush ends it on a byte
    /// boundary so the peer can inflate it without the next one.
    pub(crate) fn block(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, SpdyError> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for part in [name, value] {
                plain.extend_from_slice(&(part.len() as u32).to_be_bytes());
                plain.extend_from_slice(part.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let start = self.0.total_in();
        loop {
            let consumed = (self.0.total_in() - start) as usize;
            out.reserve(64);
            self.0
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            // Done once all input is in and zlib left spare room (a full
            // buffer may hide more flushed output).
            if (self.0.total_in() - start) as usize == plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The inflating side: the header blocks the peer sends.
pub(crate) struct Inflater(Decompress);

impl Inflater {
    pub(crate) fn new() -> Self {
        Inflater(Decompress::new(true))
    }

    pub(crate) fn block(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut plain = Vec::with_capacity(compressed.len() * 4 + 64);
        let start = self.0.total_in();
        loop {
            let consumed = (self.0.total_in() - start) as usize;
            if plain.len() == plain.capacity() {
                plain.reserve(plain.capacity());
            }
            if plain.len() > MAX_BLOCK {
                return Err(SpdyError::Protocol("header block too large".into()));
            }
            match self
                .0
                .decompress_vec(&compressed[consumed..], &mut plain, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => {
                    return Err(SpdyError::Protocol(
                        "header compression stream ended".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Zlib(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Zlib(e.to_string())),
            }
            let consumed = (self.0.total_in() - start) as usize;
            if consumed == compressed.len() && plain.len() < plain.capacity() {
                return parse_block(&plain);
            }
        }
    }
}

fn parse_block(mut block: &[u8]) -> Result<Headers, SpdyError> {
    let count = take_u32(&mut block)?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = take_string(&mut block)?.to_ascii_lowercase();
        // Several values of one name travel NUL-separated.
        for value in take_string(&mut block)?.split('\0') {
            headers.push((name.clone(), value.to_string()));
        }
    }
    Ok(headers)
}

fn take_u32(block: &mut &[u8]) -> Result<u32, SpdyError> {
    let (head, rest) = block
        .split_first_chunk::<4>()
        .ok_or_else(|| SpdyError::Protocol("truncated header block".into()))?;
    *block = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_string(block: &mut &[u8]) -> Result<String, SpdyError> {
    let len = take_u32(block)? as usize;
    if block.len() < len {
        return Err(SpdyError::Protocol("truncated header block".into()));
    }
    let (text, rest) = block.split_at(len);
    *block = rest;
    String::from_utf8(text.to_vec()).map_err(|_| SpdyError::Protocol("header is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in bytes {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn the_dictionary_is_the_specs() {
        // Length and checksum of the dictionary in the SPDY/3 draft: zlib
        // peers announce and check exactly this Adler-32.
        assert_eq!(dictionary().len(), 1423);
        assert_eq!(adler32(dictionary()), 0xe3c6_a7c2);
    }

    #[test]
    fn blocks_round_trip_through_one_stream_each_way() {
        let mut deflater = Deflater::new().unwrap();
        let mut inflater = Inflater::new();
        for round in 0..3 {
            let port = round.to_string();
            let block = deflater
                .block(&[("streamtype", "data"), ("port", &port)])
                .unwrap();
            let headers = inflater.block(&block).unwrap();
            assert_eq!(
                headers,
                vec![("streamtype".into(), "data".into()), ("port".into(), port)]
            );
        }
    }

    #[test]
    fn nul_separated_values_split() {
        let mut block = Vec::new();
        block.extend_from_slice(&1u32.to_be_bytes());
        block.extend_from_slice(&1u32.to_be_bytes());
        block.extend_from_slice(b"A");
        block.extend_from_slice(&3u32.to_be_bytes());
        block.extend_from_slice(b"x\0y");
        let headers = parse_block(&block).unwrap();
        assert_eq!(
            headers,
            vec![("a".into(), "x".into()), ("a".into(), "y".into())]
        );
    }

    #[test]
    fn a_truncated_block_is_an_error() {
        let block = [0, 0, 0, 2, 0, 0, 0, 9, b'a'];
        assert!(parse_block(&block).is_err());
    }
}
