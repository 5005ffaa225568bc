//! Chunks of a byte stream that the async side takes off a gRPC stream,
//! read as one [`std::io::Read`] by blocking code (a tar reader, an
//! unpacker) on its own thread: berthctl's `cp` out of a container and the
//! daemon's `cp` into one both read tars this way.

use std::io::Read;

use tokio::sync::mpsc;

/// Reads the chunks sent on a channel, in order; the end of the stream is
/// the channel closing. For blocking threads only (`spawn_blocking`):
/// a read waits for the next chunk.
pub struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<Vec<u8>>) -> ChunkReader {
        ChunkReader {
            rx,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.blocking_recv() {
                Some(next) => {
                    self.current = next;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    #[test]
    fn chunks_read_as_one_stream() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        for chunk in [b"ab".to_vec(), Vec::new(), b"cde".to_vec()] {
            tx.try_send(chunk).unwrap();
        }
        drop(tx);
        let mut text = String::new();
        super::ChunkReader::new(rx)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "abcde");
    }
}
