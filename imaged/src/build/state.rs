//! The image a build makes: its config as docker writes it, its layers,
//! and how it is recorded (content store, snapshots, image record) the
//! way a pulled image is.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{internal, layer, Result};
use crate::content::Digest;
use crate::images::{self, Descriptor, Images, Resolved};

/// An image being built: its config (as docker writes it) and its layers.
#[derive(Debug, Clone)]
pub(super) struct State {
    pub(super) config: Value,
    pub(super) layers: Vec<Descriptor>,
}

impl State {
    pub(super) fn scratch() -> State {
        State {
            config: json!({
                "architecture": images::host_platform().architecture().to_string(),
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }),
            layers: Vec::new(),
        }
    }

    /// The image ID: the digest of the config.
    pub(super) fn id(&self) -> Digest {
        Digest::of(&serde_json::to_vec(&self.config).unwrap_or_default())
    }

    pub(super) fn diff_ids(&self) -> Vec<String> {
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn chain(&self) -> Option<String> {
        images::chain_ids(&self.diff_ids()).pop()
    }

    /// The `config` object (Env, Cmd, …), made if missing.
    pub(super) fn settings(&mut self) -> &mut Map<String, Value> {
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        match &mut self.config["config"] {
            Value::Object(map) => map,
            _ => unreachable!("made an object above"),
        }
    }

    pub(super) fn get(&self, key: &str) -> &Value {
        &self.config["config"][key]
    }

    pub(super) fn env(&self) -> BTreeMap<String, String> {
        self.get("Env")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(super) fn set_env(&mut self, key: &str, value: &str) {
        let mut env: Vec<Value> = self.get("Env").as_array().cloned().unwrap_or_default();
        let prefix = format!("{key}=");
        let entry = Value::String(format!("{key}={value}"));
        match env
            .iter_mut()
            .find(|e| e.as_str().is_some_and(|s| s.starts_with(&prefix)))
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
        self.settings().insert("Env".into(), Value::Array(env));
    }

    pub(super) fn shell(&self) -> Vec<String> {
        match self.get("Shell").as_array() {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }

    pub(super) fn history(&mut self, created_by: String, empty_layer: bool) {
        let mut entry = json!({"created": now_rfc3339(), "created_by": created_by});
        if empty_layer {
            entry["empty_layer"] = json!(true);
        }
        if !self.config["history"].is_array() {
            self.config["history"] = json!([]);
        }
        if let Value::Array(h) = &mut self.config["history"] {
            h.push(entry);
        }
        self.config["created"] = json!(now_rfc3339());
    }

    pub(super) fn push_layer(&mut self, desc: Descriptor, diff_id: String) {
        self.layers.push(desc);
        if let Value::Array(d) = &mut self.config["rootfs"]["diff_ids"] {
            d.push(Value::String(diff_id));
        }
    }
}

/// `2026-12-04T19:57:23Z` for the current time (UTC), as docker writes an
/// image's history.
pub(super) fn now_rfc3339() -> String {
    let secs = crate::clock::now_secs() as i64;
    berth_oci::time::rfc3339(secs, 0, berth_oci::time::Fraction::Omit)
}

/// Stores `layer` (verified), applies it onto the state's chain as a
/// committed snapshot, and adds it to the state.
pub(super) fn add_layer(
    images: &Images,
    state: &mut State,
    layer: &layer::Layer,
) -> std::result::Result<(), layer::Error> {
    let desc = layer.store(&images.content)?;
    let parent = state.chain();
    let mut diff_ids = state.diff_ids();
    diff_ids.push(layer.diff_id.clone());
    let chain = images::chain_ids(&diff_ids).pop().unwrap_or_default();
    layer::apply(
        &images.content,
        &images.snapshots,
        &layer.digest,
        parent.as_deref(),
        &chain,
    )?;
    state.push_layer(desc, layer.diff_id.clone());
    Ok(())
}

/// Writes the state's config and manifest to the content store and records
/// the image under each of `names` (none: under its ID alone), as a pull
/// records one. Returns the image ID.
pub(super) async fn record_image(
    images: &Images,
    state: &State,
    names: &[String],
) -> Result<Digest> {
    let config = serde_json::to_vec(&state.config).map_err(internal)?;
    let config_digest = Digest::of(&config);
    images
        .content
        .write_bytes(&config_digest, &config)
        .map_err(internal)?;
    let (media_type, manifest) = manifest_for(&config_digest, config.len(), &state.layers);
    let bytes = serde_json::to_vec(&manifest).map_err(internal)?;
    let digest = Digest::of(&bytes);
    images
        .content
        .write_bytes(&digest, &bytes)
        .map_err(internal)?;
    let desc = images::descriptor(media_type, &digest, bytes.len() as u64);
    let id_only = [config_digest.to_string()];
    let names = if names.is_empty() {
        &id_only[..]
    } else {
        names
    };
    for name in names {
        let resolved = Resolved {
            reference: name.clone(),
            name: name.clone(),
            target: desc.clone(),
            manifest_desc: desc.clone(),
            manifest: images
                .parse_manifest(name, &digest, &bytes)
                .map_err(internal)?,
            platform: images::host_platform(),
        };
        let (tx, _rx) = mpsc::unbounded_channel();
        images
            .unpack_and_record(resolved, None, true, tx)
            .await
            .map_err(internal)?;
    }
    Ok(config_digest)
}

/// The manifest of a built image, as docker writes one: Docker schema 2
/// with Docker media types, layers from OCI images included (the same
/// bytes, so the same digests; a registry and skopeo refuse a schema 2
/// manifest that names OCI layer types). Layers Docker has no type for
/// (zstd) make it an OCI manifest with OCI types throughout.
pub(super) fn manifest_for(
    config: &Digest,
    config_size: usize,
    layers: &[Descriptor],
) -> (&'static str, Value) {
    const DOCKER: [(&str, &str); 2] = [
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            layer::MEDIA_TYPE,
        ),
        (
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.docker.image.rootfs.diff.tar",
        ),
    ];
    let known = |l: &Descriptor| {
        let media_type = l.media_type().as_ref();
        DOCKER
            .iter()
            .find(|(oci, d)| media_type == *oci || media_type == *d)
    };
    let docker = layers.iter().all(|l| known(l).is_some());
    let convert = |l: &Descriptor| -> Descriptor {
        let mut converted = l.clone();
        if let Some((oci, d)) = known(l) {
            converted.set_media_type(images::MediaType::from(if docker { *d } else { *oci }));
        }
        converted
    };
    let layers: Vec<Descriptor> = layers.iter().map(convert).collect();
    let (media_type, config_type) = if docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
        )
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": config_type,
            "digest": config.to_string(),
            "size": config_size,
        },
        "layers": layers,
    });
    (media_type, manifest)
}
