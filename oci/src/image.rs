//! The OCI image-spec documents berth reads and writes: the `oci-spec`
//! crate's types (the Rust container ecosystem's shared definition), read as
//! Go engines write them.
//!
//! docker and the registry are Go: a list they did not fill arrives as
//! `null` or not at all (`"Env": null`, a `FROM scratch` image's rootfs
//! without `diff_ids`), and Go's decoder matches keys ignoring case. serde
//! refuses both for a required list, so every document goes through
//! [`crate::go_json`] first and gets the zero value of each required list it
//! lacks.

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use oci_spec::image::{
    Config, Descriptor, History, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
    Platform, RootFs,
};

use crate::go_json::GoSchema;

/// A document that is not the image-spec type it should be.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what}: {source}")]
pub struct Error {
    pub what: &'static str,
    pub source: serde_json::Error,
}

fn schema() -> &'static GoSchema {
    static SCHEMA: std::sync::OnceLock<GoSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        GoSchema::new()
            .with::<ImageManifest>()
            .with::<ImageIndex>()
            .with::<Descriptor>()
            .with::<Platform>()
            .with::<ImageConfiguration>()
            .with::<Config>()
            .with::<RootFs>()
            .with::<History>()
    })
}

/// Required fields, each at its path from the document's root: Go's zero
/// value (an empty list, `""`, an empty `rootfs`) where the text has none.
fn fill_required(value: &mut Value, fields: &[&[&str]]) {
    fn fill(node: &mut Value, path: &[&str]) {
        match path {
            [] => {}
            [last] => {
                if let Some(object) = node.as_object_mut() {
                    let zero = match *last {
                        "architecture" | "os" | "type" => Value::String(String::new()),
                        "rootfs" => Value::Object(Default::default()),
                        _ => Value::Array(Vec::new()),
                    };
                    object.entry(last.to_string()).or_insert(zero);
                }
            }
            [first, rest @ ..] => {
                if let Some(next) = node.get_mut(*first) {
                    fill(next, rest);
                }
            }
        }
    }
    for path in fields {
        fill(value, path);
    }
}

fn parse<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    lists: &[&[&str]],
) -> Result<T, Error> {
    let mut value: Value =
        serde_json::from_slice(bytes).map_err(|source| Error { what, source })?;
    schema().normalize(&mut value);
    fill_required(&mut value, lists);
    T::deserialize(value).map_err(|source| Error { what, source })
}

/// An image manifest (OCI or Docker schema 2).
pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, Error> {
    parse(bytes, "image manifest", &[&["layers"]])
}

/// An image index (OCI, or a Docker manifest list).
pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex, Error> {
    parse(bytes, "image index", &[&["manifests"]])
}

/// An image configuration (OCI or Docker).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, Error> {
    parse(
        bytes,
        "image config",
        &[
            &["architecture"],
            &["os"],
            &["rootfs"],
            &["rootfs", "type"],
            &["rootfs", "diff_ids"],
        ],
    )
}

/// The `config` object alone, whatever else the document holds (a config
/// that a build or an old engine wrote without `rootfs` or `architecture`
/// still runs).
pub fn parse_run_config(bytes: &[u8]) -> Result<Config, Error> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|source| Error {
        what: "image config",
        source,
    })?;
    schema().normalize(&mut value);
    match value.get_mut("config").map(Value::take) {
        None | Some(Value::Null) => Ok(Config::default()),
        Some(config) => serde_json::from_value(config).map_err(|source| Error {
            what: "image config's config",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What dockerd 20.10 writes for a `FROM scratch` image with only a
    /// command: nil lists as `null` or left out.
    #[test]
    fn go_nulls_and_missing_lists_are_empty() {
        let config = parse_config(
            br#"{"architecture":"amd64","os":"linux",
                 "config":{"Env":null,"Cmd":["/app"],"Entrypoint":null,"ExposedPorts":null,
                           "Volumes":null,"Labels":null,"OnBuild":null,"User":""},
                 "rootfs":{"type":"layers"},"history":null}"#,
        )
        .unwrap();
        assert!(config.rootfs().diff_ids().is_empty());
        let run = config.config().as_ref().unwrap();
        assert_eq!(run.cmd().as_deref(), Some(&["/app".to_string()][..]));
        assert_eq!(run.env(), &None);
        assert_eq!(run.exposed_ports(), &None);

        let manifest = parse_manifest(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
                 "config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,
                           "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},
                 "layers":null,"annotations":null}"#,
        )
        .unwrap();
        assert!(manifest.layers().is_empty());
        let index = parse_index(br#"{"schemaVersion":2,"manifests":null}"#).unwrap();
        assert!(index.manifests().is_empty());
    }

    /// Go matches keys ignoring case; an engine's `"Rootfs"` or `"DIFF_IDS"`
    /// are the fields, not unknown keys to drop.
    #[test]
    fn keys_match_ignoring_case_as_go_decodes_them() {
        let config = parse_config(
            br#"{"Architecture":"amd64","OS":"linux",
                 "Rootfs":{"Type":"layers","DIFF_IDS":["sha256:aa"]},
                 "config":{"env":["A=1"],"workingdir":"/w","exposedports":{"80/tcp":{}}}}"#,
        )
        .unwrap();
        assert_eq!(config.rootfs().diff_ids(), &["sha256:aa".to_string()]);
        let run = config.config().as_ref().unwrap();
        assert_eq!(run.env().as_deref(), Some(&["A=1".to_string()][..]));
        assert_eq!(run.working_dir().as_deref(), Some("/w"));
        assert_eq!(
            run.exposed_ports().as_deref(),
            Some(&["80/tcp".to_string()][..])
        );
    }

    /// A config with no more than its run settings (older engines, hand
    /// written ones) is an image without layers, as Go reads it.
    #[test]
    fn missing_required_fields_are_zero_values() {
        let config = parse_config(br#"{"config":{"Cmd":["sh"]}}"#).unwrap();
        assert!(config.rootfs().diff_ids().is_empty());
        assert_eq!(config.architecture().to_string(), "");
    }

    #[test]
    fn a_run_config_needs_nothing_else() {
        let run = parse_run_config(br#"{"config":{"Cmd":["sh"],"StopSignal":"SIGINT"}}"#).unwrap();
        assert_eq!(run.stop_signal().as_deref(), Some("SIGINT"));
        assert_eq!(parse_run_config(b"{}").unwrap(), Config::default());
        assert_eq!(
            parse_run_config(br#"{"config":null}"#).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn a_wrong_type_is_a_precise_error() {
        let err = parse_config(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":"x"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.what, "image config");
        assert!(
            err.to_string().contains("diff_ids") || err.to_string().contains("sequence"),
            "{err}"
        );
    }
}
