//! `docker import`: a tar of a root filesystem (plain, gzip or zstd) as a
//! one-layer image, its config changed by Dockerfile lines (`--change`),
//! its one history entry carrying the message.
//!
//! The tar is rewritten entry by entry into a layer of our own (so its
//! diff ID and digest are those of what is stored), then applied like any
//! layer: the unpacker keeps every entry inside the snapshot. The changes
//! run through the builder's own steps, so `--change 'CMD …'` means what
//! it means in a Dockerfile.

use std::collections::BTreeMap;
use std::io::{self, BufReader};
use std::path::Path;

use serde_json::json;
use tokio::sync::mpsc;

use super::cache::Cache;
use super::dockerfile;
use super::{add_layer, internal, layer, record_image, Build, Builds, Error, Options, Result};
use super::{Stage, State};
use crate::images;

/// The instructions a change may be, as docker's import allows them.
const CHANGES: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Imports the tar at `tar` as `name` (none: the ID alone). Returns the
/// image ID.
pub async fn import(
    builds: &Builds,
    tar: &Path,
    name: &str,
    changes: &[String],
    message: &str,
) -> Result<String> {
    let names = match name {
        "" => Vec::new(),
        n => vec![images::canonical_name(n).ok_or_else(|| {
            Error::Invalid(format!("invalid name {n:?}: use [REGISTRY/]NAME[:TAG]"))
        })?],
    };
    let mut instructions = Vec::new();
    for change in changes {
        let syntax = |source| Error::Syntax {
            file: "--change".into(),
            source,
        };
        for i in dockerfile::parse_instructions(change).map_err(syntax)? {
            if !CHANGES.contains(&i.keyword.as_str()) {
                return Err(Error::Invalid(format!(
                    "{} is not a valid change command (use one of {})",
                    i.keyword,
                    CHANGES.join(", ")
                )));
            }
            instructions.push(i);
        }
    }
    let _working = builds.images.gc_lock.read().await;
    let scratch = builds.dir.join("tmp").join(crate::volumes::random_hex(8));
    std::fs::create_dir_all(&scratch).map_err(internal)?;
    let result = async {
        let path = scratch.join("layer");
        let source = tar.to_path_buf();
        let made = tokio::task::spawn_blocking(move || rewrite(&source, path))
            .await
            .map_err(internal)?
            .map_err(|e| Error::Invalid(format!("cannot import the tar: {e}")))?;
        let mut state = State::scratch();
        add_layer(&builds.images, &mut state, &made)
            .map_err(|e| Error::Invalid(format!("cannot import the tar: {e}")))?;
        let state = apply_changes(builds, &scratch, state, &instructions).await?;
        let mut state = state;
        let comment = if message.is_empty() {
            "Imported from -"
        } else {
            message
        };
        let now = super::now_rfc3339();
        state.config["history"] = json!([{"created": now, "comment": comment}]);
        state.config["created"] = json!(now);
        record_image(&builds.images, &state, &names).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(result?.to_string())
}

/// The changes, each as the builder's step would make it (no cache).
async fn apply_changes(
    builds: &Builds,
    scratch: &Path,
    state: State,
    instructions: &[dockerfile::Instruction],
) -> Result<State> {
    let options = Options {
        dockerfile_name: "--change".into(),
        no_cache: true,
        ..Default::default()
    };
    // Nobody reads the step lines; the receiver lives as long as the build,
    // which would otherwise take itself for cancelled.
    let (out, _lines) = mpsc::unbounded_channel();
    let mut build = Build {
        builds,
        out,
        context: scratch.to_path_buf(),
        scratch: scratch.to_path_buf(),
        options: &options,
        cache: Cache {
            dir: scratch.join("cache"),
        },
        step: 0,
        total: instructions.len(),
        meta_args: BTreeMap::new(),
        stages: vec![Stage {
            name: None,
            state,
            args: BTreeMap::new(),
            cmd_set: false,
        }],
        scratch_files: 0,
    };
    for i in instructions {
        build.step(i).await?;
    }
    build
        .stages
        .pop()
        .map(|s| s.state)
        .ok_or_else(|| internal("the import lost its stage"))
}

/// The tar at `source` written again as a layer: each entry's header and
/// data (long names and link names kept).
fn rewrite(source: &Path, path: std::path::PathBuf) -> io::Result<layer::Layer> {
    let file = std::fs::File::open(source)?;
    let input = crate::unpack::decompress(BufReader::with_capacity(1 << 17, file))?;
    let mut archive = tar::Archive::new(input);
    let mut writer = layer::LayerWriter::create(path).map_err(io::Error::other)?;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        // Absolute names are taken from the root, as the unpacker takes them.
        let name = raw.strip_prefix("/").unwrap_or(&raw).to_path_buf();
        if name.as_os_str().is_empty() {
            continue;
        }
        let mut header = entry.header().clone();
        match entry.link_name()? {
            Some(target) => {
                let target = target.into_owned();
                writer.tar.append_link(&mut header, &name, &target)?;
            }
            None => writer.tar.append_data(&mut header, &name, &mut entry)?,
        }
    }
    writer.finish().map_err(io::Error::other)
}
