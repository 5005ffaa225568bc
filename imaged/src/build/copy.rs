//! `COPY` and `ADD`: the layer written straight from the sources (the
//! build context, another stage or image through a read-only [`View`], a
//! heredoc, or a downloaded URL).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dockerfile::{self, Command, Instruction};
use super::state::State;
use super::{context, internal, layer, Build, Error, Result};
use crate::images::{self, Images};

impl Build<'_> {
    /// The layer a `COPY`/`ADD` makes, the sum of its inputs, and its
    /// destination as written in the history.
    pub(super) async fn copy(
        &mut self,
        i: &Instruction,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<(layer::Layer, String, String)> {
        let mut list = match i.command() {
            Command::Exec(v) => v,
            Command::Shell(s) => {
                dockerfile::words(&s, i.escape, lookup).map_err(|m| self.syntax(i.error(m)))?
            }
        };
        let dest = list.pop().unwrap_or_default();
        let mut sources = list;
        let urls = sources.iter().any(|s| s.contains("://"));
        if i.flag("checksum").is_some() && !urls {
            return Err(self.fail(i, "--checksum is for a URL source"));
        }
        // Sources made here rather than taken from the context: heredocs,
        // downloads. Downloads are never unpacked, as docker's.
        let generated = if !i.heredocs.is_empty() {
            let (dir, names) = self.heredoc_files(i, &sources, lookup)?;
            sources = names;
            Some((dir, "heredoc"))
        } else if urls {
            let (dir, names) = self.download(i, &sources).await?;
            sources = names;
            Some((dir, "download"))
        } else {
            None
        };
        if sources.is_empty() {
            return Err(
                self.syntax(i.error(format!("{} needs a source and a destination", i.keyword)))
            );
        }
        let state = self.current().state.clone();
        let workdir = state.get("WorkingDir").as_str().unwrap_or("/").to_string();
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{}/{dest}", workdir.trim_end_matches('/'))
        };
        let dest_rel = context::lexical(&dest_abs).unwrap_or_default();
        let layer_dirs = self.layer_dirs(&state);
        // Into a directory: one named so (`dir/`, `.`), several sources, or
        // a directory the image already has (resolved inside each layer).
        let dest_dir = dest.ends_with('/')
            || dest == "."
            || dest.ends_with("/.")
            || sources.len() > 1
            || sources.iter().any(|s| s.contains(['*', '?']))
            || layer_dirs.iter().any(|l| is_dir_in(l, &dest_rel));
        let owner = match i.flag("chown") {
            Some(user) => {
                let (uid, gid, _) = crate::bundle::resolve_user(user, &layer_dirs)
                    .map_err(|e| self.fail(i, format!("--chown={user}: {e}")))?;
                Some((uid, gid))
            }
            None => None,
        };
        let mode = match i.flag("chmod") {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .map_err(|_| self.syntax(i.error(format!("--chmod={m}: not an octal mode"))))?,
            ),
            None => None,
        };
        // The sources' root: the context, or another stage's (or image's) filesystem.
        let mut view = None;
        let (root, what, strict) = match i.flag("from") {
            Some(from) => {
                let from_state = match self.stage(from) {
                    Some(s) => s.state.clone(),
                    None => self.image(from).await.map_err(|e| self.fail(i, e))?,
                };
                let mounted = View::mount(self, &from_state).map_err(|e| self.fail(i, e))?;
                let root = mounted.path.clone();
                view = Some(mounted);
                (root, "source stage", false)
            }
            None => match &generated {
                Some((dir, what)) => (dir.clone(), *what, true),
                None => (self.context.clone(), "build context", true),
            },
        };
        let path = self.scratch_file("layer");
        let is_add = i.keyword == "ADD" && !urls;
        let fail = |e: String| Error::Step {
            step: self.step,
            instruction: i.text(),
            detail: e,
        };
        let result = tokio::task::spawn_blocking(
            move || -> std::result::Result<(layer::Layer, String), String> {
                let source = context::Source {
                    root: &root,
                    what,
                    strict,
                };
                let mut writer = layer::LayerWriter::create(path).map_err(|e| e.to_string())?;
                let mut copier =
                    context::Copier::new(&mut writer.tar, context::Overrides { owner, mode });
                for pattern in &sources {
                    for (rel, host) in source.resolve(pattern).map_err(|e| e.to_string())? {
                        let is_dir = host.is_dir();
                        let target = if is_dir || !dest_dir {
                            dest_rel.clone()
                        } else {
                            dest_rel.join(rel.file_name().unwrap_or_default())
                        };
                        if is_add
                            && !is_dir
                            && copier
                                .extract(&host, &dest_rel)
                                .map_err(|e| e.to_string())?
                        {
                            continue;
                        }
                        copier.copy(&host, &target).map_err(|e| e.to_string())?;
                    }
                }
                let sum = copier.checksum();
                let layer = writer.finish().map_err(|e| e.to_string())?;
                Ok((layer, sum))
            },
        )
        .await
        .map_err(internal)?;
        drop(view);
        let (layer, sum) = result.map_err(fail)?;
        Ok((layer, sum, dest_abs))
    }

    /// `ADD URL… DEST`: each URL fetched into a scratch directory under
    /// its last path segment (mode 0600, as docker's), checked against
    /// `--checksum=sha256:HEX` when given.
    pub(super) async fn download(
        &mut self,
        i: &Instruction,
        sources: &[String],
    ) -> Result<(PathBuf, Vec<String>)> {
        use sha2::Digest as _;
        use std::os::unix::fs::OpenOptionsExt;
        use tokio::io::AsyncWriteExt;
        if i.keyword != "ADD" {
            return Err(self.fail(i, "COPY takes no URL: use ADD"));
        }
        let want = i.flag("checksum");
        if want.is_some() && sources.len() != 1 {
            return Err(self.fail(i, "--checksum takes exactly one URL source"));
        }
        let dir = self.scratch_file("downloads");
        std::fs::create_dir_all(&dir).map_err(internal)?;
        crate::registry::install_crypto_provider();
        let client = reqwest::Client::builder().build().map_err(internal)?;
        let mut names = Vec::new();
        for url in sources {
            if !url.contains("://") {
                return Err(self.fail(i, format!("{url}: with a URL, every source is a URL")));
            }
            let path_part = url.split(['?', '#']).next().unwrap_or_default();
            let name = path_part
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(_, path)| path.rsplit('/').next())
                .filter(|n| !n.is_empty() && *n != "." && *n != "..")
                .unwrap_or("download")
                .to_string();
            let cannot = |e: &dyn std::fmt::Display| format!("cannot download {url}: {e}");
            let mut response = client
                .get(url.as_str())
                .send()
                .await
                .map_err(|e| self.fail(i, cannot(&e)))?;
            if !response.status().is_success() {
                return Err(self.fail(i, cannot(&response.status())));
            }
            let path = dir.join(&name);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(internal)?;
            let mut file = tokio::fs::File::from_std(file);
            let mut hasher = sha2::Sha256::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.fail(i, cannot(&e)))?
            {
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(internal)?;
            }
            file.flush().await.map_err(internal)?;
            let got = format!("sha256:{:x}", hasher.finalize());
            if let Some(want) = want {
                if want != got {
                    return Err(self.fail(
                        i,
                        format!("checksum of {url} does not match: expected {want}, got {got}"),
                    ));
                }
            }
            names.push(name);
        }
        Ok((dir, names))
    }

    /// `COPY <<EOF /dest`: each here-document written to a file named as
    /// it is, in a scratch directory the copy takes as its sources' root
    /// (so nothing of the context can mix in).
    pub(super) fn heredoc_files(
        &mut self,
        i: &Instruction,
        sources: &[String],
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<(PathBuf, Vec<String>)> {
        if i.flag("from").is_some() {
            return Err(self.fail(i, "heredocs cannot be copied --from another stage"));
        }
        let dir = self.scratch_file("heredocs");
        std::fs::create_dir_all(&dir).map_err(internal)?;
        let mut names = Vec::new();
        for source in sources {
            let marker = source.trim_start_matches("<<").trim_start_matches('-');
            let found = source
                .starts_with("<<")
                .then(|| i.heredocs.iter().find(|h| h.name == marker))
                .flatten();
            let Some(h) = found else {
                return Err(self.fail(
                    i,
                    format!("{source}: with heredocs, every source is a heredoc"),
                ));
            };
            let body = if h.expand {
                dockerfile::expand(&h.body, i.escape, lookup)
                    .map_err(|m| self.syntax(i.error(m)))?
            } else {
                h.body.clone()
            };
            let name = Path::new(&h.name)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| self.fail(i, format!("<<{}: not a file name", h.name)))?;
            let path = dir.join(&name);
            std::fs::write(&path, body).map_err(internal)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(internal)?;
            names.push(name);
        }
        Ok((dir, names))
    }

    /// The upper directories of the state's layers, topmost first (where
    /// `--chown` names are looked up, as a container's would be).
    pub(super) fn layer_dirs(&self, state: &State) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = images::chain_ids(&state.diff_ids())
            .iter()
            .filter_map(|c| self.builds.images.snapshots.upper_dir(c).ok())
            .collect();
        dirs.reverse();
        dirs
    }
}

/// Whether `rel` is a directory in the layer directory `root`, resolved
/// with `root` as `/` (a layer's symlinks never reach the host).
pub(super) fn is_dir_in(root: &Path, rel: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(dir) = std::fs::File::open(root) else {
        return false;
    };
    berth_oci::safe_path::open_in_root(dir.as_raw_fd(), rel, libc::O_PATH | libc::O_DIRECTORY)
        .is_ok()
}

/// A state's filesystem mounted read-only (a view snapshot), for
/// `COPY --from`; unmounted and removed when dropped.
pub(super) struct View {
    path: PathBuf,
    key: Option<String>,
    images: Arc<Images>,
}

impl View {
    fn mount(build: &mut Build<'_>, state: &State) -> std::result::Result<View, String> {
        let path = build.scratch_file("from");
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        let images = build.builds.images.clone();
        let Some(chain) = state.chain() else {
            return Ok(View {
                path,
                key: None,
                images,
            });
        };
        let key = format!("build-view-{}", crate::volumes::random_hex(8));
        let mounts = images
            .snapshots
            .view(&key, Some(&chain), BTreeMap::new())
            .map_err(|e| e.to_string())?;
        let view = View {
            path,
            key: Some(key),
            images,
        };
        crate::containers::mount_rootfs("build", &mounts, &view.path).map_err(|e| e.to_string())?;
        Ok(view)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            crate::containers::unmount(&self.path);
            let _ = self.images.snapshots.remove(key);
        }
    }
}
