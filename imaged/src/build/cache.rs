//! The build cache, as docker's classic builder keys it: the parent image
//! (its config digest, which names its layers and settings), the
//! instruction's text, and the content of its inputs (the build arguments;
//! the files a `COPY`/`ADD` reads, summed without their times). A hit gives
//! back the image the step made before, if its layers are still stored;
//! a step whose layers were collected since is simply run again.
//!
//! Entries are small JSON files under `<root>/builds/cache/`, one per key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::content::Digest;
use crate::images::{self, Descriptor, Images};

/// What a step made: the image config and the layers under it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub config: serde_json::Value,
    pub layers: Vec<Descriptor>,
}

pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    pub fn key(parent: &Digest, instruction: &str, inputs: &str) -> String {
        Digest::of(format!("{parent}\n{instruction}\n{inputs}").as_bytes())
            .hex()
            .to_string()
    }

    /// The entry of `key` whose layers are all stored and unpacked.
    pub fn get(&self, key: &str, images: &Images) -> Option<Entry> {
        let bytes = std::fs::read(self.dir.join(format!("{key}.json"))).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        let diff_ids: Vec<String> = entry.config["rootfs"]["diff_ids"]
            .as_array()?
            .iter()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        if diff_ids.len() != entry.layers.len() {
            return None;
        }
        for layer in &entry.layers {
            if !images
                .content
                .exists(&Digest::parse(layer.digest().as_ref()).ok()?)
            {
                return None;
            }
        }
        match images::chain_ids(&diff_ids).last() {
            Some(chain) if !images.snapshots.exists(chain).ok()? => None,
            _ => Some(entry),
        }
    }

    /// Records `entry` for `key`; a cache that cannot be written only
    /// makes the next build slower.
    pub fn put(&self, key: &str, entry: &Entry) {
        let Ok(bytes) = serde_json::to_vec(entry) else {
            return;
        };
        let _ = std::fs::create_dir_all(&self.dir);
        let tmp = self.dir.join(format!(".{key}.tmp"));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join(format!("{key}.json")));
        }
    }
}
