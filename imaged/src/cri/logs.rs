//! Container logs in the CRI format, at the `log_path` kubelet asked for:
//! one line per line of output, `TIMESTAMP STREAM TAG TEXT`, the timestamp
//! RFC 3339 with nanoseconds as Go's `time.RFC3339Nano` prints it (trailing
//! zeros of the fraction dropped), the tag `F` for a full line and `P` for
//! a part of a longer one. kubelet reads these files (`kubectl logs`),
//! rotates them by renaming and then asks for `ReopenContainerLog`.

use std::io::Write;
use std::path::{Path, PathBuf};

use berth_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::logs::Chunk;

/// Longest line written whole; a longer one is cut into `P` parts (as
/// containerd's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Asks a writer to reopen its file; answered once it has.
pub type Reopen = mpsc::UnboundedSender<oneshot::Sender<std::io::Result<()>>>;

/// Go's `time.RFC3339Nano` of a time in nanoseconds since the epoch, UTC.
pub fn rfc3339_nano(nanos: u128) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let fraction = (nanos % 1_000_000_000) as u32;
    berth_oci::time::rfc3339(secs, fraction, berth_oci::time::Fraction::Trimmed)
}

fn stream_name(stream: pb::StdioStream) -> &'static str {
    match stream {
        pb::StdioStream::Stdout => "stdout",
        pb::StdioStream::Stderr => "stderr",
    }
}

/// Turns output chunks of one stream into CRI log lines: complete lines
/// `F`, a line longer than [`MAX_LINE`] in `P` parts, and what is left
/// when the stream ends as a last `F` line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// The lines (`tag`, text without the newline) that `data` completes.
    pub fn push(&mut self, data: &[u8]) -> Vec<(char, Vec<u8>)> {
        let mut out = Vec::new();
        for &byte in data {
            if byte == b'\n' {
                out.push(('F', std::mem::take(&mut self.pending)));
                continue;
            }
            self.pending.push(byte);
            if self.pending.len() == MAX_LINE {
                out.push(('P', std::mem::take(&mut self.pending)));
            }
        }
        out
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> Option<(char, Vec<u8>)> {
        (!self.pending.is_empty()).then(|| ('F', std::mem::take(&mut self.pending)))
    }
}

/// One formatted line.
pub fn format_line(time: u128, stream: pb::StdioStream, tag: char, text: &[u8]) -> Vec<u8> {
    let mut line = format!("{} {} {tag} ", rfc3339_nano(time), stream_name(stream)).into_bytes();
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Output may hold secrets: the log is root's (kubelet reads as root).
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Writes a container's output to `path` until all `streams` have ended;
/// reopens the file when asked. Returns the handle that asks.
pub fn spawn_writer(
    path: PathBuf,
    mut output: broadcast::Receiver<Chunk>,
    streams: usize,
) -> std::io::Result<Reopen> {
    let mut file = open(&path)?;
    let (reopen_tx, mut reopen) = mpsc::unbounded_channel::<oneshot::Sender<std::io::Result<()>>>();
    tokio::spawn(async move {
        let mut splitters = [LineSplitter::default(), LineSplitter::default()];
        let mut ended = 0;
        let mut write = |file: &mut std::fs::File, chunk: &Chunk| {
            let index = chunk.stream as usize;
            let splitter = &mut splitters[index.min(1)];
            let lines = if chunk.data.is_empty() {
                splitter.finish().into_iter().collect()
            } else {
                splitter.push(&chunk.data)
            };
            let mut bytes = Vec::new();
            for (tag, text) in lines {
                bytes.extend(format_line(chunk.time, chunk.stream, tag, &text));
            }
            if !bytes.is_empty() {
                if let Err(e) = file.write_all(&bytes) {
                    eprintln!("berth-imaged: cri log {}: {e}", path.display());
                }
            }
        };
        while ended < streams {
            tokio::select! {
                chunk = output.recv() => match chunk {
                    Ok(chunk) => {
                        if chunk.data.is_empty() {
                            ended += 1;
                        }
                        write(&mut file, &chunk);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("berth-imaged: cri log {}: {n} chunks of output lost (the writer fell behind)", path.display());
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(ack) = reopen.recv() => {
                    let reopened = open(&path).map(|f| file = f);
                    let _ = ack.send(reopened);
                }
            }
        }
        let _ = file.sync_all();
    });
    Ok(reopen_tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_go_rfc3339nano() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        // 2016-10-06T00:17:09.669794202Z, the CRI design document's example.
        assert_eq!(
            rfc3339_nano(1_475_713_029_669_794_202),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(
            rfc3339_nano(1_475_713_029_500_000_000),
            "2016-10-06T00:17:09.5Z"
        );
        // A leap day.
        assert_eq!(
            rfc3339_nano(951_782_400_000_000_000),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn lines_are_full_or_partial_and_the_rest_ends_full() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"one\ntw"), vec![('F', b"one".to_vec())]);
        assert_eq!(
            s.push(b"o\n\n"),
            vec![('F', b"two".to_vec()), ('F', vec![])]
        );
        assert_eq!(s.push(b"tail"), vec![]);
        assert_eq!(s.finish(), Some(('F', b"tail".to_vec())));
        assert_eq!(s.finish(), None);
        let long = vec![b'x'; MAX_LINE + 3];
        let lines = s.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, 'P');
        assert_eq!(lines[0].1.len(), MAX_LINE);
        assert_eq!(s.push(b"\n"), vec![('F', b"xxx".to_vec())]);
    }

    #[test]
    fn a_line_has_time_stream_tag_and_text() {
        let line = format_line(
            1_475_713_029_669_794_202,
            pb::StdioStream::Stderr,
            'F',
            b"hi",
        );
        assert_eq!(line, b"2016-10-06T00:17:09.669794202Z stderr F hi\n");
    }
}
