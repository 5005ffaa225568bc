//! A container's changes: [`commit`] makes them a new image (`docker
//! commit`), [`diff`] lists them (`docker diff`). Both read the overlay
//! upper directory of the container's snapshot, as a `RUN` step does.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{add_layer, internal, layer, record_image, Builds, Error, Result, State};
use crate::content::Digest;
use crate::images::{self, ImageRecord};

/// The container's record and the image it was made from.
fn container_image(
    builds: &Builds,
    container: &str,
) -> Result<(crate::containers::ContainerRecord, ImageRecord)> {
    let record = builds
        .tasks
        .containers
        .resolve(container)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let images = &builds.images;
    let by_name = images
        .get(&record.settings().image)
        .ok()
        .filter(|i| i.manifest.digest().as_ref() == record.image_digest);
    let image = match by_name {
        Some(i) => i,
        None => images
            .list()
            .map_err(internal)?
            .into_iter()
            .find(|i| i.manifest.digest().as_ref() == record.image_digest)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the image of container {} ({}) is no longer stored",
                    record.name, record.image_digest
                ))
            })?,
    };
    Ok((record, image))
}

/// Commits the container's changes on top of its image as `name` (none:
/// the ID alone); the config takes the container's command, environment,
/// working directory and user. Returns the image ID.
pub async fn commit(
    builds: &Builds,
    container: &str,
    name: &str,
    message: &str,
    author: &str,
) -> Result<String> {
    let names = if name.is_empty() {
        Vec::new()
    } else {
        vec![images::canonical_name(name).ok_or_else(|| {
            Error::Invalid(format!("invalid name {name:?}: use [REGISTRY/]NAME[:TAG]"))
        })?]
    };
    let _working = builds.images.gc_lock.read().await;
    let (record, image) = container_image(builds, container)?;
    let images = &builds.images;
    let digest = Digest::parse(image.config.digest().as_ref()).map_err(internal)?;
    let config: Value =
        serde_json::from_slice(&images.content.read_blob(&digest).map_err(internal)?)
            .map_err(internal)?;
    let mut state = State {
        config,
        layers: image.layers.clone(),
    };
    let settings = record.settings();
    if settings.entrypoint_set {
        state
            .settings()
            .insert("Entrypoint".into(), json!(settings.entrypoint));
    }
    if !settings.args.is_empty() {
        state.settings().insert("Cmd".into(), json!(settings.args));
    }
    for e in &settings.env {
        if let Some((k, v)) = e.split_once('=') {
            state.set_env(k, v);
        }
    }
    if !settings.working_dir.is_empty() {
        state
            .settings()
            .insert("WorkingDir".into(), json!(settings.working_dir));
    }
    if !settings.user.is_empty() {
        state.settings().insert("User".into(), json!(settings.user));
    }
    let upper = images
        .snapshots
        .upper_dir(&record.snapshot_key)
        .map_err(internal)?;
    let dir = builds.dir.join("tmp");
    std::fs::create_dir_all(&dir).map_err(internal)?;
    let path = dir.join(format!("commit-{}", crate::volumes::random_hex(8)));
    let made = tokio::task::spawn_blocking(move || -> std::result::Result<layer::Layer, String> {
        let mut writer = layer::LayerWriter::create(path).map_err(|e| e.to_string())?;
        layer::diff_upper(&upper, &mut writer.tar).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    })
    .await
    .map_err(internal)?
    .map_err(|e| Error::Invalid(format!("cannot commit {}: {e}", record.name)))?;
    add_layer(images, &mut state, &made)
        .map_err(|e| Error::Invalid(format!("cannot commit {}: {e}", record.name)))?;
    let command: Vec<String> = settings
        .entrypoint
        .iter()
        .chain(&settings.args)
        .cloned()
        .collect();
    let mut entry = json!({"created": super::now_rfc3339(), "created_by": command.join(" ")});
    if !message.is_empty() {
        entry["comment"] = json!(message);
    }
    if let Value::Array(h) = &mut state.config["history"] {
        h.push(entry);
    } else {
        state.config["history"] = json!([entry]);
    }
    state.config["created"] = json!(super::now_rfc3339());
    if !author.is_empty() {
        state.config["author"] = json!(author);
    }
    let id = record_image(images, &state, &names).await?;
    Ok(id.to_string())
}

/// One change of `docker diff`: `A` added, `C` changed, `D` deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: char,
    pub path: String,
}

/// The container's changes to its image's files, in path order.
pub fn diff(builds: &Builds, container: &str) -> Result<Vec<Change>> {
    let (record, image) = container_image(builds, container)?;
    let snapshots = &builds.images.snapshots;
    let upper = snapshots
        .upper_dir(&record.snapshot_key)
        .map_err(internal)?;
    let mut lowers: Vec<PathBuf> = image
        .chain_ids
        .iter()
        .filter_map(|c| snapshots.upper_dir(c).ok())
        .collect();
    lowers.reverse();
    let mut out = Vec::new();
    walk(&upper, Path::new(""), &lowers, &mut out).map_err(internal)?;
    Ok(out)
}

fn walk(
    upper: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    out: &mut Vec<Change>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut names: Vec<_> = std::fs::read_dir(upper.join(rel))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let path = rel.join(&name);
        let meta = std::fs::symlink_metadata(upper.join(&path))?;
        let shown = format!("/{}", path.display());
        let in_lower = lowers
            .iter()
            .any(|l| l.join(&path).symlink_metadata().is_ok());
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            out.push(Change {
                kind: 'D',
                path: shown,
            });
            continue;
        }
        // What the runtime made to mount on, not what the container did.
        let p = path.to_string_lossy();
        let mount_point =
            (meta.is_file() && meta.len() == 0 && layer::MOUNT_POINTS.contains(&p.as_ref()))
                || (meta.is_dir()
                    && layer::MOUNT_DIRS.contains(&p.as_ref())
                    && std::fs::read_dir(upper.join(&path)).is_ok_and(|mut d| d.next().is_none()));
        if mount_point && !in_lower {
            continue;
        }
        out.push(Change {
            kind: if in_lower { 'C' } else { 'A' },
            path: shown,
        });
        if meta.is_dir() {
            walk(upper, &path, lowers, out)?;
        }
    }
    Ok(())
}
