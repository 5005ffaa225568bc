//! What the two framings share: a session sees plain byte pipes, one per
//! stream or channel, and a pump per outgoing pipe turns what the session
//! writes into frames on the connection. Closing a pipe ends its stream.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes buffered per pipe before the writer waits for the reader.
pub(crate) const PIPE_CAPACITY: usize = 64 * 1024;
/// Largest payload put in one frame.
const CHUNK: usize = 32 * 1024;

/// The connection side of outgoing pipes.
#[async_trait]
pub(crate) trait FrameSink: Send + Sync + 'static {
    /// Sends `data` on `channel`; `fin` marks the channel's last frame.
    async fn send(&self, channel: u32, data: &[u8], fin: bool) -> io::Result<()>;
}

/// Frames queued per incoming stream before the connection's reader waits.
const QUEUED_FRAMES: usize = 16;

/// The connection's end of an incoming pipe. A short queue sits in front
/// of the pipe so that one stream whose reader is slow (a process that
/// does not read its stdin) holds up the frames of the other streams only
/// once the queue is full too: SPDY as spdystream speaks it has no flow
/// control to push back on the client with. Dropping the feed is the
/// pipe's EOF, once what is queued has gone through.
pub(crate) struct Feed(mpsc::Sender<Vec<u8>>);

impl Feed {
    /// Queues `data`; false once the session stopped reading this pipe.
    pub(crate) async fn push(&self, data: Vec<u8>) -> bool {
        self.0.send(data).await.is_ok()
    }
}

/// A pipe the session reads and the connection fills with what the client
/// sends.
pub(crate) fn incoming() -> (DuplexStream, Feed) {
    let (session_end, mut feed_end) = tokio::io::duplex(PIPE_CAPACITY);
    let (queue, mut queued) = mpsc::channel::<Vec<u8>>(QUEUED_FRAMES);
    tokio::spawn(async move {
        while let Some(data) = queued.recv().await {
            if feed_end.write_all(&data).await.is_err() {
                return;
            }
        }
    });
    (session_end, Feed(queue))
}

/// A pipe for the session to write `channel` into; the returned task ends
/// once the session closed (dropped) its end and everything was sent.
pub(crate) fn outgoing(sink: Arc<dyn FrameSink>, channel: u32) -> (DuplexStream, JoinHandle<()>) {
    let (session_end, mut pump_end) = tokio::io::duplex(PIPE_CAPACITY);
    let pump = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            // The session's end is an in-memory pipe: it cannot fail, only
            // close (0).
            let n: usize = pump_end.read(&mut buf).await.unwrap_or_default();
            if sink.send(channel, &buf[..n], n == 0).await.is_err() || n == 0 {
                return;
            }
        }
    });
    (session_end, pump)
}

/// Waits for the pumps, so that everything written reached the connection.
pub(crate) async fn drain(pumps: Vec<JoinHandle<()>>) {
    for pump in pumps {
        // A pump that panicked has nothing left to send.
        let _ = pump.await;
    }
}

/// When a connection last carried a frame, either way. kubelet closes a
/// streaming connection that stays idle for its stream idle timeout (4 h
/// by default), so that a client that vanished without closing does not
/// hold a session open forever.
pub(crate) struct Activity {
    born: Instant,
    /// Milliseconds after `born`.
    last: AtomicU64,
    limit: Duration,
}

impl Activity {
    pub(crate) fn new(limit: Duration) -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            last: AtomicU64::new(0),
            limit,
        })
    }

    pub(crate) fn touch(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    /// `next`'s output, or `None` once the connection has been idle (both
    /// ways) for the limit first.
    pub(crate) async fn unless_idle<F: Future>(&self, next: F) -> Option<F::Output> {
        tokio::pin!(next);
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let idle = self.born.elapsed().saturating_sub(last);
            let left = self
                .limit
                .checked_sub(idle)
                .filter(|left| !left.is_zero())?;
            if let Ok(output) = tokio::time::timeout(left, &mut next).await {
                self.touch();
                return Some(output);
            }
            // Time is up for reading; writes may have kept it busy: look again.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn activity_ends_an_idle_wait() {
        let activity = Activity::new(Duration::from_millis(1));
        let never = std::future::pending::<()>();
        assert_eq!(activity.unless_idle(never).await, None);
        let busy = Activity::new(Duration::from_secs(3600));
        assert_eq!(busy.unless_idle(async { 7 }).await, Some(7));
    }
}
