//! `berthctl build`: reads the Dockerfile, streams the context directory to
//! the daemon as a tar (without what `.dockerignore` excludes), and prints
//! the build's output as it comes. The daemon does the building.
//!
//! `.dockerignore` as docker reads it: one pattern a line, `#` comments,
//! `!` for exceptions, the last matching line wins; `*` and `?` within a
//! path component, `**` across any number of them; a pattern that matches
//! a directory excludes what is under it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::BuildArgs;
use crate::client::{rpc, Daemon};

/// The patterns of a `.dockerignore`.
#[derive(Debug, Default)]
pub struct Ignore {
    /// (pattern split at `/`, is an exception).
    patterns: Vec<(Vec<String>, bool)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let parts: Vec<String> = pattern
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .map(str::to_string)
                .collect();
            if !parts.is_empty() {
                patterns.push((parts, exception));
            }
        }
        Ignore { patterns }
    }

    /// Whether the relative path `rel` (`/`-separated) is left out.
    pub fn ignored(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        let mut ignored = false;
        for (pattern, exception) in &self.patterns {
            // A match of the path or of one of its parent directories.
            let hit = (1..=parts.len()).any(|n| matches(pattern, &parts[..n]));
            if hit {
                ignored = !exception;
            }
        }
        ignored
    }

    /// Whether an exception could re-include something under `rel`: then
    /// an ignored directory is still walked.
    fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|(_, e)| *e)
    }
}

fn matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|n| matches(rest, &path[n..])),
        Some((p, rest)) => match path.split_first() {
            Some((first, tail)) => component(p, first) && matches(rest, tail),
            None => false,
        },
    }
}

/// `*`, `?` and `[...]` within one path component.
fn component(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some(('[', rest)) => {
                let Some(close) = rest.iter().position(|&c| c == ']') else {
                    return n.first() == Some(&'[') && go(rest, &n[1..]);
                };
                let (class, after) = (&rest[..close], &rest[close + 1..]);
                let Some(&c) = n.first() else { return false };
                let (negate, class) = match class.split_first() {
                    Some(('^' | '!', tail)) => (true, tail),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(after, &n[1..])
            }
            Some(('\\', rest)) if !rest.is_empty() => {
                n.first() == Some(&rest[0]) && go(&rest[1..], &n[1..])
            }
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Writes what it is given as context chunks.
struct ChunkWriter {
    tx: mpsc::Sender<pb::BuildRequest>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let context = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(pb::BuildRequest {
                options: None,
                context,
            })
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the daemon went away")
            })
    }
}

/// Appends `dir` (relative `rel` inside the context) to the tar, without
/// what `ignore` leaves out; symlinks are sent as symlinks.
fn add_dir(
    tar: &mut tar::Builder<ChunkWriter>,
    root: &Path,
    rel: &Path,
    ignore: &Ignore,
) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = rel.join(entry.file_name());
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .is_dir();
        let skip = ignore.ignored(&name.to_string_lossy());
        if skip && !(is_dir && ignore.has_exceptions()) {
            continue;
        }
        if !skip {
            tar.append_path_with_name(&path, &name)
                .with_context(|| format!("cannot send {}", path.display()))?;
        }
        if is_dir {
            add_dir(tar, root, &name, ignore)?;
        }
    }
    Ok(())
}

fn key_values(list: &[String], what: &str, from_env: bool) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for item in list {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            None if from_env && !item.is_empty() => {
                if let Ok(v) = std::env::var(item) {
                    out.insert(item.clone(), v);
                }
            }
            _ => bail!("{what} {item:?}: use KEY=VALUE"),
        }
    }
    Ok(out)
}

pub async fn build(d: &Daemon, args: &BuildArgs) -> Result<i32> {
    let context = args.context.clone();
    if !context.is_dir() {
        bail!(
            "cannot build: the context {} is not a directory",
            context.display()
        );
    }
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let dockerfile = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the Dockerfile {}", file.display()))?;
    let ignore = match std::fs::read_to_string(context.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(anyhow!("cannot read .dockerignore: {e}")),
    };
    let options = pb::BuildOptions {
        dockerfile,
        dockerfile_name: file
            .strip_prefix(&context)
            .unwrap_or(&file)
            .display()
            .to_string(),
        tags: args.tags.clone(),
        build_args: key_values(&args.build_args, "--build-arg", true)?,
        target: args.target.clone().unwrap_or_default(),
        no_cache: args.no_cache,
        labels: key_values(&args.labels, "--label", false)?,
    };
    let (tx, rx) = mpsc::channel::<pb::BuildRequest>(4);
    tx.send(pb::BuildRequest {
        options: Some(options),
        context: Vec::new(),
    })
    .await
    .map_err(|_| anyhow!("cannot send the build options"))?;
    let root: PathBuf = context.clone();
    let sender = std::thread::spawn(move || -> Result<()> {
        let mut tar = tar::Builder::new(ChunkWriter {
            tx,
            buf: Vec::new(),
        });
        tar.follow_symlinks(false);
        add_dir(&mut tar, &root, Path::new(""), &ignore)?;
        let mut writer = tar.into_inner().context("cannot finish the context")?;
        writer.flush().context("cannot send the context")?;
        Ok(())
    });
    let response = d.builds().build(ReceiverStream::new(rx)).await;
    let mut stream = match response {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let _ = sender.join();
            return Err(rpc(status)).context("cannot build");
        }
    };
    let mut stdout = std::io::stdout();
    let mut image = String::new();
    let result = loop {
        match stream.message().await {
            Ok(Some(progress)) => {
                if !progress.output.is_empty() {
                    if args.quiet {
                        continue;
                    }
                    let _ = stdout.write_all(progress.output.as_bytes());
                    let _ = stdout.flush();
                }
                if !progress.image_id.is_empty() {
                    image = progress.image_id;
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(rpc(status)),
        }
    };
    match sender.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) if result.is_ok() => return Err(e),
        _ => {}
    }
    result?;
    if image.is_empty() {
        bail!("cannot build: the daemon ended the build without an image (see its log)");
    }
    if args.quiet {
        println!("{image}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_patterns() {
        let ignore = Ignore::parse("# comment\n*.log\nsecret/\n!keep.log\n**/tmp\nbuild/[ab]*\n");
        assert!(ignore.ignored("x.log"));
        assert!(!ignore.ignored("keep.log"));
        assert!(!ignore.ignored("dir/x.log"));
        assert!(ignore.ignored("secret"));
        assert!(ignore.ignored("secret/key"));
        assert!(ignore.ignored("a/b/tmp"));
        assert!(ignore.ignored("tmp/x"));
        assert!(ignore.ignored("build/abc"));
        assert!(!ignore.ignored("build/cde"));
        assert!(!ignore.ignored("Dockerfile"));
    }
}
