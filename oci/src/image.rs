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
use serde::Deserialize;
use serde_json::Value;

pub use oci_spec::image::{
    Arch, Config, Descriptor, Digest, History, ImageConfiguration, ImageIndex, ImageManifest,
    MediaType, Os, Platform, RootFs,
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
                        "schemaVersion" => Value::from(0),
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

/// The document, and its normalized text for what `oci-spec` loses.
fn parse_raw<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    lists: &[&[&str]],
) -> Result<(T, Value), Error> {
    let mut value: Value =
        serde_json::from_slice(bytes).map_err(|source| Error { what, source })?;
    schema().normalize(&mut value);
    fill_required(&mut value, lists);
    let parsed = T::deserialize(&value).map_err(|source| Error {
        what,
        source: match bad_digest(&value, "") {
            Some(precise) => serde::de::Error::custom(precise),
            None => source,
        },
    })?;
    Ok((parsed, value))
}

/// Which digest of a document is malformed, where and why: the digest
/// type's own error names neither the field nor the text.
fn bad_digest(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Object(object) => object
            .iter()
            .find_map(|(key, item)| match (key.as_str(), item) {
                ("digest", Value::String(text)) => Digest::try_from(text.as_str())
                    .err()
                    .map(|why| format!("{path}'s digest {text:?} is malformed: {why}")),
                _ => bad_digest(
                    item,
                    &format!("{path}{}{key}", if path.is_empty() { "" } else { "." }),
                ),
            }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| bad_digest(item, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// An image manifest (OCI or Docker schema 2).
pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, Error> {
    let (mut manifest, raw) = parse_raw::<ImageManifest>(bytes, "image manifest", MANIFEST)?;
    let mut config = manifest.config().clone();
    restore_armbe(&mut config, &raw["config"]);
    manifest.set_config(config);
    let mut layers = manifest.layers().clone();
    for (layer, raw) in layers.iter_mut().zip(array(&raw["layers"])) {
        restore_armbe(layer, raw);
    }
    manifest.set_layers(layers);
    Ok(manifest)
}

/// An image index (OCI, or a Docker manifest list).
pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex, Error> {
    let (mut index, raw) = parse_raw::<ImageIndex>(bytes, "image index", INDEX)?;
    let mut manifests = index.manifests().clone();
    for (entry, raw) in manifests.iter_mut().zip(array(&raw["manifests"])) {
        restore_armbe(entry, raw);
    }
    index.set_manifests(manifests);
    Ok(index)
}

const MANIFEST: &[&[&str]] = &[&["schemaVersion"], &["layers"]];
const INDEX: &[&[&str]] = &[&["schemaVersion"], &["manifests"]];

/// What a reference or a layout's entry names: an index of platforms'
/// manifests, or one image's manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

impl Document {
    /// The document's own `mediaType` (empty where it names none, as
    /// older Docker manifests and hand-written layouts do).
    pub fn media_type(&self) -> MediaType {
        let media_type = match self {
            Document::Index(index) => index.media_type(),
            Document::Manifest(manifest) => manifest.media_type(),
        };
        media_type
            .clone()
            .unwrap_or_else(|| MediaType::Other(String::new()))
    }
}

/// A manifest or an index, told apart as a registry client must when the
/// `Content-Type` is not at hand: by `mediaType`, else by a `manifests`
/// list.
pub fn parse_document(bytes: &[u8]) -> Result<Document, Error> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|source| Error {
        what: "manifest or index",
        source,
    })?;
    schema().normalize(&mut value);
    let is_index = match value.get("mediaType").and_then(Value::as_str) {
        Some(INDEX_TYPE | DOCKER_LIST_TYPE) => true,
        Some(_) => false,
        None => value.get("manifests").is_some(),
    };
    if is_index {
        parse_index(bytes).map(|index| Document::Index(Box::new(index)))
    } else {
        parse_manifest(bytes).map(|manifest| Document::Manifest(Box::new(manifest)))
    }
}

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn array(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// `oci-spec` reads the GOARCH `armbe` as `arm64be` (and writes `Arch::ARMbe`
/// as `armbe`): a descriptor whose text said `armbe` gets it back.
fn restore_armbe(descriptor: &mut Descriptor, raw: &Value) {
    if let Some(mut platform) = descriptor.platform().clone() {
        restore_platform_armbe(&mut platform, &raw["platform"]);
        descriptor.set_platform(Some(platform));
    }
}

fn restore_platform_armbe(platform: &mut Platform, raw: &Value) {
    if raw["architecture"] == "armbe" {
        platform.set_architecture(Arch::ARMbe);
    }
}

/// The architecture a GOARCH string names, `armbe` included (see
/// [`restore_armbe`]).
pub fn arch(name: &str) -> Arch {
    match name {
        "armbe" => Arch::ARMbe,
        other => Arch::from(other),
    }
}

/// A platform from its three strings (an empty variant is none).
pub fn platform(os: &str, architecture: &str, variant: &str) -> Platform {
    let mut platform = Platform::default();
    platform.set_os(Os::from(os));
    platform.set_architecture(arch(architecture));
    platform.set_variant((!variant.is_empty()).then(|| variant.to_string()));
    platform
}

/// The platform this machine runs containers for, as GOOS/GOARCH/variant.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", "v8"),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" => ("ppc64le", ""),
        "s390x" => ("s390x", ""),
        "riscv64" => ("riscv64", ""),
        other => (other, ""),
    };
    platform("linux", architecture, variant)
}

/// Whether an index entry's platform `entry` serves the wanted one: os and
/// architecture equal, and the variant too unless none is wanted; arm64's
/// variant defaults to v8 (containerd's normalization).
pub fn platform_matches(want: &Platform, entry: &Platform) -> bool {
    let variant = |p: &Platform| match (p.architecture(), p.variant().as_deref()) {
        (Arch::ARM64, None | Some("")) => "v8".to_string(),
        (_, variant) => variant.unwrap_or_default().to_string(),
    };
    entry.os() == want.os()
        && entry.architecture() == want.architecture()
        && (want.variant().as_deref().unwrap_or_default().is_empty()
            || variant(entry) == variant(want))
}

/// `os/architecture[/variant]`, as docker and containerd print a platform.
pub fn platform_name(platform: &Platform) -> String {
    let mut name = format!("{}/{}", platform.os(), platform.architecture());
    if let Some(variant) = platform.variant().as_deref().filter(|v| !v.is_empty()) {
        name.push('/');
        name.push_str(variant);
    }
    name
}

/// Reads a platform stored as JSON (serde's `deserialize_with`): what
/// `oci-spec` reads, with `armbe` kept.
pub fn deserialize_platform<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Platform, D::Error> {
    let raw = Value::deserialize(deserializer)?;
    let mut platform = Platform::deserialize(&raw).map_err(serde::de::Error::custom)?;
    restore_platform_armbe(&mut platform, &raw);
    Ok(platform)
}

/// An image configuration (OCI or Docker).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, Error> {
    let (mut config, raw) = parse_raw::<ImageConfiguration>(
        bytes,
        "image config",
        &[
            &["architecture"],
            &["os"],
            &["rootfs"],
            &["rootfs", "type"],
            &["rootfs", "diff_ids"],
        ],
    )?;
    if raw["architecture"] == "armbe" {
        config.set_architecture(Arch::ARMbe);
    }
    Ok(config)
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

    /// Every GOOS and GOARCH Go knows, the empty string and names no list
    /// has: each reads and writes back as the same string (through `Other`
    /// where `oci-spec` has no variant), `armbe` included.
    #[test]
    fn every_os_and_architecture_string_round_trips() {
        let goos = [
            "aix",
            "android",
            "darwin",
            "dragonfly",
            "freebsd",
            "hurd",
            "illumos",
            "ios",
            "js",
            "linux",
            "nacl",
            "netbsd",
            "openbsd",
            "plan9",
            "solaris",
            "wasip1",
            "windows",
            "zos",
            "",
            "Linux",
            "berthos",
        ];
        let goarch = [
            "386",
            "amd64",
            "amd64p32",
            "arm",
            "armbe",
            "arm64",
            "arm64be",
            "loong64",
            "mips",
            "mipsle",
            "mips64",
            "mips64le",
            "mips64p32",
            "mips64p32le",
            "ppc",
            "ppc64",
            "ppc64le",
            "riscv",
            "riscv64",
            "s390",
            "s390x",
            "sparc",
            "sparc64",
            "wasm",
            "",
            "x86_64",
            "AMD64",
            "loongarch64",
        ];
        for os in goos {
            for architecture in goarch {
                let text = format!(
                    r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"m","size":1,
                        "digest":"sha256:{}","platform":{{"os":"{os}","architecture":"{architecture}"}}}}]}}"#,
                    "0".repeat(64)
                );
                let index = parse_index(text.as_bytes()).unwrap();
                let read = index.manifests()[0].platform().clone().unwrap();
                assert_eq!(read, platform(os, architecture, ""), "{os}/{architecture}");
                assert_eq!(platform_name(&read), format!("{os}/{architecture}"));
                let written = serde_json::to_value(&read).unwrap();
                assert_eq!(written["os"], os);
                assert_eq!(written["architecture"], architecture);
                let stored: Stored =
                    serde_json::from_value(serde_json::json!({ "platform": written })).unwrap();
                assert_eq!(stored.platform, read);
            }
        }
        let config =
            parse_config(br#"{"architecture":"armbe","os":"linux","rootfs":{"type":"layers"}}"#)
                .unwrap();
        assert_eq!(config.architecture().to_string(), "armbe");
    }

    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(deserialize_with = "deserialize_platform")]
        platform: Platform,
    }

    #[test]
    fn platforms_match_with_variants_and_arm64_defaults_to_v8() {
        let arm_v7 = platform("linux", "arm", "v7");
        assert!(platform_matches(&arm_v7, &arm_v7.clone()));
        assert!(!platform_matches(&arm_v7, &platform("linux", "arm", "v6")));
        assert!(platform_matches(&platform("linux", "arm", ""), &arm_v7));
        let arm64 = platform("linux", "arm64", "");
        let arm64_v8 = platform("linux", "arm64", "v8");
        assert!(platform_matches(&arm64_v8, &arm64));
        assert!(platform_matches(&arm64, &arm64_v8));
        assert!(!platform_matches(
            &arm64_v8,
            &platform("linux", "arm64", "v9")
        ));
        assert!(!platform_matches(&arm64, &platform("windows", "arm64", "")));
        assert_eq!(platform_name(&arm64_v8), "linux/arm64/v8");
        assert_eq!(
            platform_name(&platform("linux", "amd64", "")),
            "linux/amd64"
        );
        assert_eq!(
            platform_name(&host_platform()).split('/').next(),
            Some("linux")
        );
    }

    /// A registry's digest that is no digest fails the document's read,
    /// saying which digest and why, before anything is fetched by it.
    #[test]
    fn a_malformed_digest_is_a_precise_error() {
        for (digest, why) in [
            ("sha256:abc", "Invalid digest length 3 expected 64"),
            ("../blobs:x", "Empty algorithm component"),
            ("nocolon", "missing ':' in digest"),
        ] {
            let text = format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"c","size":1,"digest":"{digest}"}},"layers":[]}}"#
            );
            let err = parse_manifest(text.as_bytes()).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "invalid image manifest: config's digest {digest:?} is malformed: {why}"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn documents_are_told_apart_by_media_type_or_their_manifests() {
        let digest = format!("sha256:{}", "0".repeat(64));
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","size":1,"digest":"{digest}"}},"layers":[]}}"#
        );
        let Document::Manifest(_) = parse_document(manifest.as_bytes()).unwrap() else {
            panic!("a manifest")
        };
        let document = parse_document(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert!(matches!(document, Document::Index(_)));
        assert_eq!(document.media_type().to_string(), "");
        let list = parse_document(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":null}"#,
        )
        .unwrap();
        assert!(matches!(list, Document::Index(_)));
        assert_eq!(
            list.media_type().to_string(),
            "application/vnd.docker.distribution.manifest.list.v2+json"
        );
        // A manifest without its config says so.
        let err = parse_document(br#"{"schemaVersion":2,"layers":[]}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `config`"), "{err}");
    }
}
