//! Image commands: `pull`, `images`, `rmi`, `save`, `load`, `image mount`
//! and `image unmount`, `image inspect`. Archives stream through in chunks
//! both ways; nothing holds a whole image in memory.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::{Format, ImagesArgs, LoadArgs, MountArgs, PullArgs, SaveArgs, UnmountArgs};
use crate::client::{rpc, Daemon};
use crate::output;
use crate::progress::Progress;

pub async fn pull(d: &Daemon, args: &PullArgs) -> Result<()> {
    let platform = match &args.platform {
        None => None,
        Some(p) => {
            let parts: Vec<&str> = p.split('/').collect();
            let (os, architecture, variant) = match parts.as_slice() {
                [os, arch] => (*os, *arch, ""),
                [os, arch, variant] => (*os, *arch, *variant),
                _ => {
                    bail!("invalid --platform value {p:?}: os/arch[/variant], e.g. linux/arm64/v8")
                }
            };
            Some(pb::Platform {
                os: os.into(),
                architecture: architecture.into(),
                variant: variant.into(),
            })
        }
    };
    let mut progress = Progress::new(args.quiet);
    let mut stream = d
        .images()
        .pull(pb::PullRequest {
            reference: args.image.clone(),
            platform,
            auth: crate::distribution::auth_for(args.config.as_deref(), &args.image)?,
            skip_unpack: false,
        })
        .await
        .map_err(|e| pull_error(&args.image, e))?
        .into_inner();
    let mut image = None;
    loop {
        match stream.message().await {
            Ok(Some(p)) => {
                progress.update(&p);
                if let Some(i) = p.image {
                    image = Some(i);
                }
            }
            Ok(None) => break,
            Err(e) => {
                progress.finish();
                return Err(pull_error(&args.image, e));
            }
        }
    }
    progress.finish();
    let image = image.ok_or_else(|| {
        anyhow!(
            "cannot pull {}: the daemon ended the pull without the image (see its log)",
            args.image
        )
    })?;
    let digest = image.target.as_ref().map_or("", |t| t.digest.as_str());
    if args.quiet {
        println!("{digest}");
    } else {
        println!("pulled {} ({digest})", image.name);
    }
    Ok(())
}

/// The daemon's pull errors already begin "cannot pull REF: "; the rest
/// (a connection lost, say) get that prefix here.
fn pull_error(image: &str, status: tonic::Status) -> anyhow::Error {
    let named = status.message().starts_with("cannot pull ");
    let error = rpc(status);
    if named {
        error
    } else {
        error.context(format!("cannot pull {image}"))
    }
}

pub async fn list(d: &Daemon, args: &ImagesArgs) -> Result<()> {
    let images = d
        .images()
        .list(pb::ListImagesRequest {
            prefix: args.prefix.clone().unwrap_or_default(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .images;
    if args.format.format == Format::Json {
        output::print_json(&serde_json::Value::Array(
            images.iter().map(output::image).collect(),
        ));
        return Ok(());
    }
    if args.quiet {
        for i in &images {
            println!("{}", i.name);
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            let (repo, tag) = split_name(&i.name);
            vec![
                repo.to_string(),
                tag.to_string(),
                output::short_digest(i.target.as_ref().map_or("", |t| t.digest.as_str()))
                    .to_string(),
                output::ago(i.created.as_ref()),
                output::size(i.size.max(0) as u64),
            ]
        })
        .collect();
    output::table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
    Ok(())
}

/// `host:5000/repo:tag` → (`host:5000/repo`, `tag`); a digest reference
/// keeps its digest as the tag.
fn split_name(name: &str) -> (&str, &str) {
    if let Some((repo, digest)) = name.split_once('@') {
        return (repo, digest);
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], &name[i + 1..]),
        _ => (name, "<none>"),
    }
}

pub async fn remove(d: &Daemon, names: &[String]) -> Result<bool> {
    let mut ok = true;
    for name in names {
        match d
            .images()
            .remove(pb::RemoveImageRequest { name: name.clone() })
            .await
        {
            Ok(r) => {
                println!("Untagged: {name}");
                for blob in r.into_inner().removed_blobs {
                    println!("Deleted: {blob}");
                }
            }
            Err(e) => {
                eprintln!("berthctl: cannot remove image {name}: {}", rpc(e));
                ok = false;
            }
        }
    }
    Ok(ok)
}

pub async fn save(d: &Daemon, args: &SaveArgs) -> Result<()> {
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an image archive to a terminal: use -o FILE or redirect stdout");
            }
            Box::new(std::io::stdout().lock())
        }
    };
    let mut stream = d
        .images()
        .export(pb::ExportRequest {
            names: args.images.clone(),
            platform: None,
        })
        .await
        .map_err(rpc)
        .context("cannot save")?
        .into_inner();
    let result = async {
        while let Some(chunk) = stream.message().await.map_err(rpc)? {
            out.write_all(&chunk.data)
                .context("cannot write the archive")?;
        }
        out.flush().context("cannot write the archive")
    }
    .await;
    if result.is_err() {
        if let Some(path) = &args.output {
            // A truncated archive must not look like a good one.
            let _ = std::fs::remove_file(path);
        }
    }
    result.context("cannot save")
}

pub async fn load(d: &Daemon, args: &LoadArgs) -> Result<()> {
    let input: Box<dyn Read + Send> = match &args.input {
        Some(path) => Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no archive on stdin: use -i FILE or redirect an archive to stdin");
            }
            Box::new(std::io::stdin())
        }
    };
    let name = args.name.clone().unwrap_or_default();
    let (rx, reader) = send_chunks(input, move |first, data| pb::ImportChunk {
        name: if first { name.clone() } else { String::new() },
        data,
    });
    let result = d.images().import(rx).await;
    let read = reader
        .join()
        .map_err(|_| anyhow!("the archive reader panicked"))?;
    read.context("cannot read the archive")?;
    let images = result
        .map_err(rpc)
        .context("cannot load")?
        .into_inner()
        .images;
    for image in images {
        if args.quiet {
            println!("{}", image.name);
        } else {
            let digest = image.target.as_ref().map_or("", |t| t.digest.as_str());
            println!("Loaded image: {} ({digest})", image.name);
        }
    }
    Ok(())
}

/// Reads `input` on a thread of its own (stdin and files block) and makes
/// each 1 MiB of it a message (`first` for the first one, which is sent
/// even when the input is empty), for a client-streaming call.
pub fn send_chunks<M: Send + 'static>(
    mut input: Box<dyn Read + Send>,
    message: impl Fn(bool, Vec<u8>) -> M + Send + 'static,
) -> (
    ReceiverStream<M>,
    std::thread::JoinHandle<std::io::Result<()>>,
) {
    let (tx, rx) = mpsc::channel::<M>(4);
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = read_full(&mut input, &mut buf)?;
            if n == 0 && !first {
                return Ok(());
            }
            buf.truncate(n);
            let chunk = message(first, buf);
            first = false;
            if tx.blocking_send(chunk).is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    (ReceiverStream::new(rx), reader)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The view snapshot `image mount` makes for `dir`: derived from the
/// directory, so `image unmount DIR` finds it without any state file.
fn view_key(dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.as_os_str().as_bytes() {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("berthctl-mount-{hash:016x}")
}

pub async fn mount(d: &Daemon, args: &MountArgs) -> Result<()> {
    let image = d
        .images()
        .get(pb::GetImageRequest {
            name: args.image.clone(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if image.chain_id.is_empty() {
        bail!("image {} has no layers to mount", image.name);
    }
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.canonicalize()
                .with_context(|| format!("cannot resolve {}", dir.display()))?
        }
        None => {
            let template = std::env::temp_dir().join("berthctl-mount.XXXXXX");
            nix::unistd::mkdtemp(&template)
                .with_context(|| format!("cannot create a directory like {}", template.display()))?
        }
    };
    let key = view_key(&dir);
    let mounts = d
        .snapshots()
        .view(pb::ViewSnapshotRequest {
            key: key.clone(),
            parent: image.chain_id.clone(),
            labels: [("berthctl.mount".to_string(), dir.display().to_string())].into(),
        })
        .await
        .map_err(rpc)
        .with_context(|| {
            format!(
                "cannot make a view of {} for {} (is something mounted there already? `berthctl image unmount {}`)",
                image.name,
                dir.display(),
                dir.display()
            )
        })?
        .into_inner()
        .mounts;
    if let Err(e) = apply_read_only(&mounts, &dir) {
        let _ = d
            .snapshots()
            .remove(pb::RemoveSnapshotRequest { key })
            .await;
        return Err(e);
    }
    println!("{}", dir.display());
    Ok(())
}

/// Mounts the snapshot's mounts on `dir`, read-only whatever they say, and
/// nosuid,nodev: an image's setuid programs and device nodes are not for
/// whoever can reach the mount point on the host.
fn apply_read_only(mounts: &[pb::Mount], dir: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let [m] = mounts else {
        bail!(
            "the daemon returned {} mounts for one view; expected one",
            mounts.len()
        );
    };
    if m.r#type == "bind" {
        mount(
            Some(m.source.as_str()),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("cannot bind {} on {}", m.source, dir.display()))?;
        // A bind ignores MS_RDONLY until it is remounted.
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .with_context(|| format!("cannot make {} read-only", dir.display()))?;
        return Ok(());
    }
    let data = m.options.join(",");
    // Relative lowerdirs (long chains) are relative to workdir_base: the
    // kernel resolves them against the caller's working directory.
    let previous = std::env::current_dir().ok();
    if !m.workdir_base.is_empty() {
        std::env::set_current_dir(&m.workdir_base)
            .with_context(|| format!("cannot enter {}", m.workdir_base))?;
    }
    let result = mount(
        Some(m.source.as_str()),
        dir,
        Some(m.r#type.as_str()),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    );
    if let Some(previous) = previous {
        let _ = std::env::set_current_dir(previous);
    }
    result.with_context(|| format!("cannot mount {} on {} ({data})", m.r#type, dir.display()))
}

pub async fn unmount(d: &Daemon, args: &UnmountArgs) -> Result<()> {
    let dir: PathBuf = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let key = view_key(&dir);
    let view = d
        .snapshots()
        .stat(pb::StatSnapshotRequest { key: key.clone() })
        .await;
    if view.is_err() {
        bail!(
            "{} was not mounted by `berthctl image mount` (no view {key})",
            dir.display()
        );
    }
    match nix::mount::umount2(&dir, nix::mount::MntFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot unmount {} (is a process using it?)", dir.display())
            })
        }
    }
    d.snapshots()
        .remove(pb::RemoveSnapshotRequest { key })
        .await
        .map_err(rpc)
        .context("cannot remove the view")?;
    if dir.starts_with(std::env::temp_dir())
        && dir
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b"berthctl-mount."))
    {
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(())
}

pub async fn get(d: &Daemon, name: &str) -> std::result::Result<pb::Image, tonic::Status> {
    d.images()
        .get(pb::GetImageRequest {
            name: name.to_string(),
        })
        .await
        .map(|r| r.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            split_name("127.0.0.1:5000/busybox:1"),
            ("127.0.0.1:5000/busybox", "1")
        );
        assert_eq!(
            split_name("127.0.0.1:5000/busybox"),
            ("127.0.0.1:5000/busybox", "<none>")
        );
        assert_eq!(split_name("a/b@sha256:ab"), ("a/b", "sha256:ab"));
    }

    #[test]
    fn a_directory_always_gets_the_same_view() {
        assert_eq!(view_key(Path::new("/mnt/a")), view_key(Path::new("/mnt/a")));
        assert_ne!(view_key(Path::new("/mnt/a")), view_key(Path::new("/mnt/b")));
    }
}
