//! One layer of a pull: downloaded (resuming an interrupted ingest),
//! hashed and unpacked into a staging snapshot in one pass over the bytes.

use super::pull::check_size;
use super::*;

/// Fetches and unpacks one layer. Returns the staging snapshot it was
/// unpacked into, or `None` when its chain is already a snapshot (or
/// unpacking was not asked for).
pub(super) async fn layer_task(
    ctx: &Arc<PullCtx>,
    digest: &Digest,
    size: u64,
    diff_id: &str,
    chain: &str,
    unpack: bool,
) -> Result<Option<Arc<Staging>>> {
    // Two pulls of one layer from one registry share its download: the
    // second waits, then finds the blob stored (or the layer's snapshot
    // committed), or resumes the ingest if the first was cancelled. A pull
    // from another registry does not wait: one stalled registry must not
    // hold up pulls from a good one.
    let guard = layer_lock(&ctx.registry, digest).lock_owned().await;
    let unpack = unpack && !ctx.snapshots.exists(chain)?;
    let have_blob = ctx.content.exists(digest);
    if have_blob {
        let stored = ctx.content.info(digest)?.size;
        check_size(&ctx.reference, "layer", digest, size, stored)?;
    }
    if have_blob && !unpack {
        let _ = ctx.progress.send(Progress::AlreadyExists {
            digest: digest.to_string(),
        });
        return Ok(None);
    }
    let staging = if unpack {
        Some(Arc::new(Staging::prepare(&ctx.snapshots, chain)?))
    } else {
        None
    };
    fetch_and_unpack(
        ctx,
        digest,
        size,
        diff_id,
        staging.clone(),
        have_blob,
        guard,
    )
    .await?;
    if staging.is_some() {
        let _ = ctx.progress.send(Progress::Unpacked {
            digest: digest.to_string(),
        });
    }
    Ok(staging)
}

/// A parentless snapshot one layer is unpacked into, removed when its last
/// holder lets go unless it was committed: a pull that fails, or is dropped
/// because its client went away, leaves none behind, even while its unpack
/// thread is still finishing.
#[derive(Debug)]
pub(super) struct Staging {
    pub(super) key: String,
    snapshots: Snapshotter,
    committed: std::sync::atomic::AtomicBool,
}

impl Staging {
    fn prepare(snapshots: &Snapshotter, chain: &str) -> Result<Staging> {
        // Staging keys are the pull's own: a concurrent pull of the same
        // layer unpacks into its own snapshot, and the first to commit wins.
        static PULLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PULLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let key = format!("staging-{n}-{}", Digest::of(chain.as_bytes()).hex());
        let labels = BTreeMap::from([(STAGING_LABEL.to_string(), chain.to_string())]);
        snapshots.prepare(&key, None, labels)?;
        Ok(Staging {
            key,
            snapshots: snapshots.clone(),
            committed: Default::default(),
        })
    }

    pub(super) fn committed(&self) {
        self.committed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.snapshots.remove(&self.key);
        }
    }
}

/// A task aborted when this is dropped: a download's forwarding task dies
/// with the pull that started it, and with it the registry connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The lock of one layer blob from one registry, shared by every pull in
/// this process.
fn layer_lock(registry: &str, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Entries no pull holds any more are dropped as new ones come.
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    locks
        .entry(format!("{registry} {digest}"))
        .or_default()
        .clone()
}

/// The bytes of one layer as the unpacker reads them: the part a resumed
/// ingest already has, then the network's rest.
struct Source {
    prefix: Option<io::Take<File>>,
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    pending: Bytes,
    progress: mpsc::UnboundedSender<Progress>,
    digest: String,
    received: u64,
    total: u64,
    reported: u64,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(prefix) = &mut self.prefix {
            let n = prefix.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.prefix = None;
        }
        while self.pending.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.received += chunk.len() as u64;
                    if self.received - self.reported >= 1 << 20 || self.received == self.total {
                        self.reported = self.received;
                        let _ = self.progress.send(Progress::Downloading {
                            digest: self.digest.clone(),
                            offset: self.received,
                            total: self.total,
                        });
                    }
                    self.pending = chunk;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        let _ = self.pending.split_to(n);
        Ok(n)
    }
}

/// Hashes what passes through: the uncompressed tar, whose digest is the
/// layer's diff ID.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// One layer's bytes through two threads at once: the ingest thread writes
/// and hashes the blob into the content store while the unpack thread
/// decompresses, hashes the tar and applies it. On two cores neither waits
/// for the other; the network chunks are shared, not copied.
async fn fetch_and_unpack(
    ctx: &Arc<PullCtx>,
    digest: &Digest,
    size: u64,
    diff_id: &str,
    staging: Option<Arc<Staging>>,
    have_blob: bool,
    guard: tokio::sync::OwnedMutexGuard<()>,
) -> Result<()> {
    let reference = ctx.reference.clone();
    let layer_err = |detail: String| Error::Layer {
        reference: reference.clone(),
        digest: digest.to_string(),
        detail,
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let mut source = Source {
        prefix: None,
        chunks: rx,
        pending: Bytes::new(),
        progress: ctx.progress.clone(),
        digest: digest.to_string(),
        received: 0,
        total: size,
        reported: 0,
    };
    let mut ingest = None;
    let mut _forwarder = None;
    let failure = Arc::new(std::sync::Mutex::new(None::<registry::Error>));
    if have_blob {
        source.prefix = Some(ctx.content.open_blob(digest)?.take(size));
        drop(tx);
    } else {
        // The ingest is the blob's, whichever registry it comes from, so a
        // pull from anywhere resumes it. A pull from another registry that
        // finds it busy downloads into an ingest of its own.
        let mut writer = match ctx.content.writer(&format!("layer-{digest}"), digest, size) {
            Err(content::Error::Busy(_)) => {
                ctx.content
                    .writer(&content::unique_ref(digest), digest, size)?
            }
            other => other?,
        };
        let remote = ctx.remote.as_ref().ok_or_else(|| {
            layer_err(
                "the blob is not in the content store and there is no registry to fetch it from"
                    .into(),
            )
        })?;
        // An ingest already whole (and right: the store starts a wrong one
        // over) needs no request, only its commit.
        let (stream, resumed) = if writer.offset() == size {
            (futures_util::stream::empty().boxed(), true)
        } else {
            remote.blob(digest, writer.offset()).await?
        };
        if resumed {
            let file = File::open(writer.data_path()).map_err(|e| layer_err(e.to_string()))?;
            source.prefix = Some(file.take(writer.offset()));
            source.received = writer.offset();
        } else {
            writer.truncate()?;
        }
        let (ingest_tx, mut ingest_rx) = mpsc::channel::<Bytes>(16);
        // The layer's lock goes with the writer: a pull that was dropped
        // keeps the ingest claimed until its thread has let go of it, so
        // the next pull resumes the ingest instead of finding it busy.
        ingest = Some(tokio::task::spawn_blocking(move || {
            while let Some(chunk) = ingest_rx.blocking_recv() {
                if let Err(e) = writer.write_all(&chunk) {
                    return (Err(e), guard);
                }
            }
            (Ok(writer), guard)
        }));
        let (ctx, failure, digest) = (ctx.clone(), failure.clone(), digest.to_string());
        _forwarder = Some(AbortOnDrop(tokio::spawn(async move {
            let mut stream = stream;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        // A failed ingest ends the download; the unpack
                        // side then sees the stream end.
                        if ingest_tx.send(bytes.clone()).await.is_err() {
                            break;
                        }
                        let _ = tx.send(Ok(bytes)).await;
                    }
                    Err(e) => {
                        if let Some(remote) = &ctx.remote {
                            let what = format!("layer {digest}");
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(remote.read_error(&what, &e));
                        }
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }
        })));
    }

    let upper = staging
        .as_ref()
        .map(|s| ctx.snapshots.upper_dir(&s.key))
        .transpose()?;
    // The unpack thread holds the staging snapshot until it is done with
    // it, also when this pull is dropped meanwhile.
    let unpacking = tokio::task::spawn_blocking(move || {
        let result = unpack_stream(source, upper.as_deref());
        drop(staging);
        result
    });
    let (unpacked, drained) = unpacking
        .await
        .map_err(|e| layer_err(format!("unpack task failed: {e}")))?;

    // The blob's own verdict first: a truncated or corrupt download
    // explains whatever the unpacker made of it; and why the download
    // stopped (a stalled registry) explains a truncated blob.
    let stopped = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(ingest) = ingest {
        let (writer, _guard) = ingest
            .await
            .map_err(|e| layer_err(format!("ingest task failed: {e}")))?;
        let writer = writer.map_err(|e| layer_err(format!("writing the blob: {e}")))?;
        let got = writer.offset();
        if got < size {
            if let Some(e) = stopped {
                return Err(e.into());
            }
            return Err(Error::Truncated {
                reference: reference.clone(),
                digest: digest.to_string(),
                got,
                expected: size,
            });
        }
        writer.commit()?;
        let _ = ctx.progress.send(Progress::Verified {
            digest: digest.to_string(),
        });
    }
    if let Err(e) = drained {
        return Err(layer_err(format!("download failed: {e}")));
    }
    match unpacked {
        Err(source) => Err(Error::Unpack {
            reference,
            digest: digest.to_string(),
            source,
        }),
        Ok(Some(actual)) if actual != diff_id => Err(Error::DiffId {
            reference,
            digest: digest.to_string(),
            expected: diff_id.to_string(),
            actual,
        }),
        Ok(_) => Ok(()),
    }
}

/// Unpacks the layer stream into `upper` (if given) and reads it to its
/// end. Returns the tar's digest (the diff ID) or why unpacking failed, and
/// whether the stream itself could be read to the end.
fn unpack_stream(
    source: Source,
    upper: Option<&std::path::Path>,
) -> (
    std::result::Result<Option<String>, unpack::Error>,
    io::Result<u64>,
) {
    let mut reader = BufReader::with_capacity(1 << 17, source);
    let unpacked = match upper {
        None => Ok(None),
        Some(upper) => match unpack::decompress(&mut reader) {
            Ok(tar) => {
                let mut hashing = Hashing {
                    inner: tar,
                    hasher: Sha256::new(),
                };
                unpack::apply(upper, &mut hashing)
                    .and_then(|_| {
                        io::copy(&mut hashing, &mut io::sink()).map_err(unpack::Error::Read)
                    })
                    .map(|_| Some(Digest::from_hasher(hashing.hasher).to_string()))
            }
            Err(e) => Err(unpack::Error::Read(e)),
        },
    };
    // Every byte is read, whatever the unpacker made of them, so the
    // ingest sees the whole blob and its digest judges it.
    let drained = io::copy(&mut reader, &mut io::sink());
    (unpacked, drained)
}

/// Labels a committed layer snapshot carries: they mark it for garbage
/// collection once no image needs it.
pub fn layer_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(LAYER_LABEL.to_string(), "true".to_string())])
}
