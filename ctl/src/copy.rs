//! `cp` and `export`: files between a container and the host as tar
//! streams (API: `files.proto`). As docker's CLI does, the client decides
//! where a copy lands (into an existing directory, or as a new name) from
//! what source and destination are; the daemon only reads a path as a tar
//! whose top entry has the name asked for, or unpacks a tar into an existing
//! directory, every path resolved inside the container's root.
//!
//! Host-side, a tar from the daemon is unpacked by the `tar` crate, which
//! keeps every entry under the destination; files belong to the user who
//! runs `cp` (docker's rule). Host files sent into a container become
//! root's there unless `-a`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::chunks::ChunkReader;
use berth_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::{CpArgs, ExportArgs};
use crate::client::{rpc, Daemon};
use crate::exit::Coded;

/// One side of a copy, as docker's CLI tells them apart: a path that is
/// absolute or starts with `.` is the host's, else `NAME:PATH` names a
/// container.
enum Side {
    Host(String),
    Container(String, String),
}

fn side(arg: &str) -> Side {
    if arg.starts_with('/') || arg.starts_with('.') {
        return Side::Host(arg.into());
    }
    match arg.split_once(':') {
        Some((container, path)) => Side::Container(container.into(), path.into()),
        None => Side::Host(arg.into()),
    }
}

/// `cp`; every failure exits 1, as docker's does.
pub async fn cp(d: &Daemon, args: &CpArgs) -> Result<i32> {
    let result = match (side(&args.source), side(&args.destination)) {
        (Side::Container(..), Side::Container(..)) => {
            Err(anyhow!("copying between containers is not supported"))
        }
        (Side::Host(_), Side::Host(_)) => Err(anyhow!(
            "must specify at least one container source (CONTAINER:PATH)"
        )),
        (Side::Container(c, p), Side::Host(h)) => from_container(d, args, &c, &p, &h).await,
        (Side::Host(h), Side::Container(c, p)) => to_container(d, args, &h, &c, &p).await,
    };
    result
        .map(|()| 0)
        .map_err(|error| Coded { code: 1, error }.into())
}

struct Stat {
    name: String,
    is_dir: bool,
    link_target: Option<String>,
}

async fn stat(d: &Daemon, container: &str, path: &str) -> Result<Option<Stat>> {
    match d
        .files()
        .stat(pb::StatPathRequest {
            container: container.into(),
            path: path.into(),
        })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            let kind = r.mode & libc::S_IFMT;
            Ok(Some(Stat {
                name: r.name,
                is_dir: kind == libc::S_IFDIR,
                link_target: (kind == libc::S_IFLNK).then_some(r.link_target),
            }))
        }
        Err(s)
            if s.code() == tonic::Code::NotFound
                && s.message().starts_with("No such container:path") =>
        {
            Ok(None)
        }
        Err(s) => Err(rpc(s)),
    }
}

/// Where a symlink at `path` points, as a path of the same filesystem.
fn link_path(path: &str, target: &str) -> String {
    if target.starts_with('/') {
        return target.into();
    }
    let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
    parent.join(target).display().to_string()
}

/// `dir/.` copies what the directory holds, not the directory.
fn contents_only(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

fn base_name(path: &str) -> Result<String> {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{path}: name a file or directory"))
}

fn parent_of(path: &str) -> String {
    match Path::new(path).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
        _ if path.starts_with('/') => "/".into(),
        _ => ".".into(),
    }
}

/// Where a copy of a source (a directory or not) lands, given what the
/// destination is: (an existing directory, the top entry's name there).
fn landing(
    source: &str,
    source_is_dir: bool,
    source_name: &str,
    destination: &str,
    destination_is_dir: Option<bool>,
) -> Result<(String, String)> {
    match destination_is_dir {
        Some(true) if source_is_dir && contents_only(source) => {
            Ok((destination.into(), ".".into()))
        }
        Some(true) => Ok((destination.into(), source_name.into())),
        Some(false) if source_is_dir => {
            bail!("cannot copy a directory to a file: {destination}")
        }
        _ if destination.ends_with('/') && !source_is_dir => {
            bail!("destination directory {destination} does not exist")
        }
        _ => Ok((parent_of(destination), base_name(destination)?)),
    }
}

async fn from_container(
    d: &Daemon,
    args: &CpArgs,
    container: &str,
    path: &str,
    destination: &str,
) -> Result<()> {
    if destination == "-" {
        let stream = copy_from(d, container, path, "", args.follow_link).await?;
        return write_all(stream, &mut io::stdout().lock()).await;
    }
    let Some(mut source) = stat(d, container, path).await? else {
        bail!("No such container:path: {container}:{path}");
    };
    if let (true, Some(target)) = (args.follow_link, &source.link_target) {
        let name = source.name.clone();
        source = stat(d, container, &link_path(path, target))
            .await?
            .ok_or_else(|| {
                anyhow!("No such container:path: {container}:{path} (a dangling link)")
            })?;
        source.name = name;
    }
    let existing = match fs::metadata(destination) {
        Ok(m) => Some(m.is_dir()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot stat {destination}")),
    };
    let (dir, name) = landing(path, source.is_dir, &source.name, destination, existing)?;
    if !Path::new(&dir).is_dir() {
        bail!("destination directory {dir} does not exist");
    }
    let stream = copy_from(d, container, path, &name, args.follow_link).await?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let target = PathBuf::from(&dir);
    let unpacking = tokio::task::spawn_blocking(move || {
        let mut archive = tar::Archive::new(ChunkReader::new(rx));
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        archive.unpack(&target)
    });
    let received = forward(stream, &tx).await;
    drop(tx);
    let unpacked = unpacking.await.map_err(|e| anyhow!("unpacking: {e}"))?;
    received?;
    unpacked.with_context(|| format!("cannot write into {dir}"))
}

async fn copy_from(
    d: &Daemon,
    container: &str,
    path: &str,
    name: &str,
    follow_link: bool,
) -> Result<tonic::Streaming<pb::TarChunk>> {
    Ok(d.files()
        .copy_from(pb::CopyFromRequest {
            container: container.into(),
            path: path.into(),
            name: name.into(),
            follow_link,
        })
        .await
        .map_err(rpc)?
        .into_inner())
}

async fn forward(
    mut stream: tonic::Streaming<pb::TarChunk>,
    tx: &mpsc::Sender<Vec<u8>>,
) -> Result<()> {
    while let Some(chunk) = stream.message().await.map_err(rpc)? {
        if tx.send(chunk.data).await.is_err() {
            // The unpacker stopped: its error says why.
            break;
        }
    }
    Ok(())
}

async fn write_all(mut stream: tonic::Streaming<pb::TarChunk>, out: &mut impl Write) -> Result<()> {
    while let Some(chunk) = stream.message().await.map_err(rpc)? {
        out.write_all(&chunk.data).context("cannot write the tar")?;
    }
    out.flush().context("cannot write the tar")
}

/// Bytes written here go to the daemon as [`pb::CopyToRequest`]s, the
/// first naming the container and directory.
struct RequestWriter {
    tx: mpsc::Sender<pb::CopyToRequest>,
    first: Option<(String, String)>,
    buf: Vec<u8>,
}

impl RequestWriter {
    fn send(&mut self) -> io::Result<()> {
        let data = std::mem::take(&mut self.buf);
        let (container, directory) = self.first.take().unwrap_or_default();
        self.tx
            .blocking_send(pb::CopyToRequest {
                container,
                directory,
                data,
            })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the daemon ended the copy"))
    }
}

impl Write for RequestWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 << 10 {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() || self.first.is_some() {
            self.send()?;
        }
        Ok(())
    }
}

async fn to_container(
    d: &Daemon,
    args: &CpArgs,
    source: &str,
    container: &str,
    path: &str,
) -> Result<()> {
    let mut destination = stat(d, container, path).await?;
    let mut path = path.to_string();
    if let Some(Stat {
        link_target: Some(target),
        ..
    }) = &destination
    {
        // A destination symlink is followed once, as docker's CLI does.
        path = link_path(&path, target);
        destination = stat(d, container, &path).await?;
    }
    let (tx, rx) = mpsc::channel::<pb::CopyToRequest>(4);
    let writer = |directory: String| RequestWriter {
        tx: tx.clone(),
        first: Some((container.to_string(), directory)),
        buf: Vec::new(),
    };
    let producing = if source == "-" {
        if destination.as_ref().is_some_and(|d| !d.is_dir) || destination.is_none() {
            bail!(
                "destination {container}:{path} must be an existing directory to unpack a tar into"
            );
        }
        let mut out = writer(path.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            io::copy(&mut io::stdin().lock(), &mut out).context("cannot read stdin")?;
            out.flush().context("cannot send the tar")
        })
    } else {
        let meta = if args.follow_link {
            fs::metadata(source)
        } else {
            fs::symlink_metadata(source)
        }
        .with_context(|| format!("cannot read {source}"))?;
        let (dir, name) = landing(
            source,
            meta.is_dir(),
            &base_name(source)?,
            &path,
            destination.as_ref().map(|d| d.is_dir),
        )?;
        let mut out = writer(dir);
        let (source, archive, follow) = (PathBuf::from(source), args.archive, args.follow_link);
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut tar = tar::Builder::new(&mut out);
            append(&mut tar, &source, Path::new(&name), archive, follow)
                .with_context(|| format!("cannot read {}", source.display()))?;
            tar.into_inner()
                .and_then(|w| w.flush())
                .context("cannot send the tar")
        })
    };
    drop(tx);
    let sent = d.files().copy_to(ReceiverStream::new(rx)).await;
    let produced = producing
        .await
        .map_err(|e| anyhow!("reading the source: {e}"))?;
    sent.map_err(rpc)?;
    produced
}

/// Appends the host file or tree at `path` as `name`; `follow` follows a
/// symlink at `path` itself (-L), never below it.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    archive: bool,
    follow: bool,
) -> io::Result<()> {
    let meta = if follow {
        fs::metadata(path)?
    } else {
        fs::symlink_metadata(path)?
    };
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    if !archive {
        h.set_uid(0);
        h.set_gid(0);
    }
    let kind = meta.file_type();
    if kind.is_dir() {
        h.set_size(0);
        tar.append_data(&mut h, name, io::empty())?;
        let mut children: Vec<_> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        children.sort();
        for child in children {
            append(tar, &path.join(&child), &name.join(&child), archive, false)?;
        }
        Ok(())
    } else if kind.is_symlink() {
        h.set_size(0);
        tar.append_link(&mut h, name, fs::read_link(path)?)
    } else if kind.is_file() {
        tar.append_data(&mut h, name, fs::File::open(path)?)
    } else {
        h.set_size(0);
        tar.append_data(&mut h, name, io::empty())
    }
}

/// `export`: the container's filesystem as a tar.
pub async fn export(d: &Daemon, args: &ExportArgs) -> Result<i32> {
    use std::io::IsTerminal;
    let stream = d
        .files()
        .export(pb::ExportContainerRequest {
            container: args.container.clone(),
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("cannot export {}", args.container))?
        .into_inner();
    match &args.output {
        Some(path) => {
            let file = fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let written = write_all(stream, &mut io::BufWriter::new(file)).await;
            if written.is_err() {
                // A truncated archive must not look like a good one.
                let _ = fs::remove_file(path);
            }
            written?;
        }
        None => {
            if io::stdout().is_terminal() {
                bail!("refusing to write a tar to a terminal: use -o FILE or redirect stdout");
            }
            write_all(stream, &mut io::stdout().lock()).await?;
        }
    }
    Ok(0)
}
