//! Process output: the daemon reads each process's stdout and stderr fifos,
//! fans the bytes out to attached clients, and keeps the init's in the
//! container's log (`<bundle>/container.log`, JSON lines with a timestamp
//! and the stream, rotated to `container.log.1` at a size).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use berth_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Rotate the log when it grows past this.
pub const DEFAULT_MAX_LOG: u64 = 10 << 20;

/// A piece of output as read; an empty one marks the end of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub stream: pb::StdioStream,
    pub data: Vec<u8>,
    /// Nanoseconds since the epoch.
    pub time: u128,
}

/// One line of the log file.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    /// Nanoseconds since the epoch.
    t: u128,
    s: String,
    /// The bytes as text (invalid UTF-8 is replaced).
    d: String,
}

fn stream_name(stream: pb::StdioStream) -> &'static str {
    match stream {
        pb::StdioStream::Stdout => "stdout",
        pb::StdioStream::Stderr => "stderr",
    }
}

pub fn log_path(bundle: &Path) -> PathBuf {
    bundle.join("container.log")
}

/// Appends chunks to a container's log, rotating at `max` bytes.
pub struct LogWriter {
    path: PathBuf,
    max: u64,
    file: Option<std::fs::File>,
    size: u64,
}

impl LogWriter {
    pub fn new(bundle: &Path, max: u64) -> LogWriter {
        let path = log_path(bundle);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        LogWriter {
            path,
            max,
            file: None,
            size,
        }
    }

    pub fn write(&mut self, chunk: &Chunk) {
        let line = Line {
            t: chunk.time,
            s: stream_name(chunk.stream).to_string(),
            d: String::from_utf8_lossy(&chunk.data).into_owned(),
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        if self.size + text.len() as u64 > self.max && self.size > 0 {
            self.file = None;
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            self.size = 0;
        }
        if self.file.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            // Output may hold secrets: the log is root's alone.
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .ok();
        }
        if let Some(file) = &mut self.file {
            if file.write_all(text.as_bytes()).is_ok() {
                self.size += text.len() as u64;
            }
        }
    }
}

/// The log's entries, oldest first; only the last `tail` when not 0.
pub fn read(bundle: &Path, tail: usize) -> Vec<pb::LogEntry> {
    let path = log_path(bundle);
    let mut out = Vec::new();
    for file in [path.with_extension("log.1"), path] {
        let Ok(f) = std::fs::File::open(&file) else {
            continue;
        };
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            if let Ok(l) = serde_json::from_str::<Line>(&line) {
                out.push(entry(&Chunk {
                    stream: if l.s == "stderr" {
                        pb::StdioStream::Stderr
                    } else {
                        pb::StdioStream::Stdout
                    },
                    data: l.d.into_bytes(),
                    time: l.t,
                }));
            }
        }
    }
    if tail > 0 && out.len() > tail {
        out.drain(..out.len() - tail);
    }
    out
}

pub fn entry(chunk: &Chunk) -> pb::LogEntry {
    pb::LogEntry {
        time: Some(prost_types::Timestamp {
            seconds: (chunk.time / 1_000_000_000) as i64,
            nanos: (chunk.time % 1_000_000_000) as i32,
        }),
        stream: chunk.stream as i32,
        data: chunk.data.clone(),
    }
}

/// The daemon's read end of an output fifo.
pub type FifoReader = tokio::net::unix::pipe::Receiver;

/// Opens the read end of an output fifo without waiting for a writer. It
/// must be open before the shim is asked to open the write end (Create,
/// Exec): the fifo's buffer lives only while some end is open, so output
/// written and closed by a short process before the daemon's end exists is
/// lost, and a reader that arrives after the last writer has gone waits
/// for an end of file that never comes (it never saw a writer to lose).
pub fn open_reader(path: &Path) -> std::io::Result<FifoReader> {
    tokio::net::unix::pipe::OpenOptions::new().open_receiver(path)
}

/// How many chunks a process's output broadcast holds for its slowest
/// subscriber.
pub const OUTPUT_CAPACITY: usize = 256;

/// Copies a fifo until end-of-file (the shim closes its end when the
/// process exits), sending every chunk to `output` and, for the init, to
/// the log (`log` is shared by stdout's and stderr's copiers).
///
/// With `waits` (an exec's output, whose readers are the sessions that
/// started it; a CRI init's, whose log must be whole), while the slowest
/// reader's queue is full the copier waits instead of letting the
/// broadcast drop its oldest chunks, so the fifo fills and the process
/// waits for its readers, as it would on a pipe. Without, a reader that
/// falls behind loses output (berthctl's inits: a stalled `attach` must
/// not stop the container).
pub async fn copy_fifo(
    fifo: FifoReader,
    stream: pb::StdioStream,
    output: broadcast::Sender<Chunk>,
    log: Option<std::sync::Arc<std::sync::Mutex<LogWriter>>>,
    waits: bool,
) {
    loop {
        // The buffer exists only while there is output to read: an idle
        // container's copiers (two per container, for its whole life) hold
        // no memory.
        let read = match fifo.readable().await {
            Ok(()) => {
                let mut buf = vec![0u8; 32 * 1024];
                match fifo.try_read(&mut buf) {
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match read {
            Ok(data) if !data.is_empty() => {
                let chunk = Chunk {
                    stream,
                    data,
                    time: crate::clock::now_nanos(),
                };
                if let Some(log) = &log {
                    if let Ok(mut writer) = log.lock() {
                        writer.write(&chunk);
                    }
                }
                if waits {
                    room(&output).await;
                }
                let _ = output.send(chunk);
            }
            _ => {
                if waits {
                    room(&output).await;
                }
                // An empty chunk says this stream has ended.
                let _ = output.send(Chunk {
                    stream,
                    data: Vec::new(),
                    time: crate::clock::now_nanos(),
                });
                break;
            }
        }
    }
}

/// Waits until the slowest subscriber of `output` has room for one more
/// chunk (a dropped subscriber frees its share at once).
async fn room(output: &broadcast::Sender<Chunk>) {
    while output.len() + 1 >= OUTPUT_CAPACITY {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Makes a fifo (replacing a stale one).
pub fn make_fifo(path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_at_its_size_and_reads_back_in_order() {
        let dir = std::env::temp_dir().join(format!("berth-logs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut writer = LogWriter::new(&dir, 300);
        for i in 0..20u128 {
            writer.write(&Chunk {
                stream: if i % 2 == 0 {
                    pb::StdioStream::Stdout
                } else {
                    pb::StdioStream::Stderr
                },
                data: format!("line {i}\n").into_bytes(),
                time: 1_000 + i,
            });
        }
        assert!(std::fs::metadata(log_path(&dir)).unwrap().len() <= 300);
        assert!(log_path(&dir).with_extension("log.1").exists());
        let entries = read(&dir, 0);
        // Older lines went with the rotation; what is kept is in order.
        let last: Vec<String> = entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect();
        assert_eq!(last.last().unwrap(), "line 19\n");
        assert!(entries.windows(2).all(|w| {
            let t = |e: &pb::LogEntry| e.time.as_ref().unwrap().nanos;
            t(&w[0]) < t(&w[1])
        }));
        assert_eq!(
            entries.last().unwrap().stream,
            pb::StdioStream::Stderr as i32
        );
        let tail = read(&dir, 3);
        assert_eq!(tail.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
