//! Talking to a registry (OCI distribution API) through `oci-client`.
//!
//! `oci-client` does the HTTP: manifests by tag or digest, blobs as streams
//! (from an offset, to resume), Basic auth and Bearer token exchange. What is
//! decided here: which registries may be spoken to over plain http (those
//! configured as insecure, and loopback ones), which credentials go to which
//! registry (flags or a docker-style `config.json`), and how its errors read.
//! A rejected login is an error that says so; it is never retried
//! anonymously.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use futures_util::stream::BoxStream;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::content::Digest;

/// Errors talking to a registry; each names the reference.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {detail}")]
    Reference { reference: String, detail: String },
    #[error("cannot pull {reference}: authentication failed at {registry} ({detail}); check the username and password")]
    Auth {
        reference: String,
        registry: String,
        detail: String,
    },
    #[error("cannot pull {reference}: manifest unknown (is the tag right?)")]
    NotFound { reference: String },
    #[error("cannot pull {reference}: {detail}")]
    Registry {
        reference: String,
        /// The error with its causes ("connection refused" hides two levels
        /// down in reqwest's errors).
        detail: String,
        source: OciDistributionError,
    },
    #[error("cannot read registry credentials {path}: {detail}")]
    Credentials { path: String, detail: String },
}

type Result<T> = std::result::Result<T, Error>;

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { username: String, password: String },
    Token(String),
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Registries (host[:port]) spoken to over plain http.
    pub insecure: Vec<String>,
    /// Credentials by registry host[:port].
    pub credentials: HashMap<String, Credentials>,
}

impl Options {
    /// Adds the `auths` of a docker-style `config.json`
    /// (`{"auths": {"host": {"auth": base64("user:pass")}}}`).
    pub fn load_docker_config(&mut self, path: &Path) -> Result<()> {
        let err = |detail: String| Error::Credentials {
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
            return Ok(());
        };
        for (host, entry) in auths {
            let host = host
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
            if let Some(token) = entry.get("identitytoken").and_then(|t| t.as_str()) {
                self.credentials
                    .insert(host, Credentials::Token(token.to_string()));
            } else if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth)
                    .map_err(|e| err(format!("{host}: {e}")))?;
                let decoded =
                    String::from_utf8(decoded).map_err(|e| err(format!("{host}: {e}")))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| err(format!("{host}: auth is not user:password")))?;
                self.credentials.insert(
                    host,
                    Credentials::Basic {
                        username: username.to_string(),
                        password: password.to_string(),
                    },
                );
            }
        }
        Ok(())
    }

    fn plain_http(&self, registry: &str) -> bool {
        let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                registry
            }
        });
        self.insecure.iter().any(|r| r == registry)
            || host == "localhost"
            || host == "[::1]"
            || host.starts_with("127.")
    }
}

/// `e: cause: cause…`, each cause once (some errors repeat theirs).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// One repository of one registry, authenticated.
pub struct Remote {
    client: Client,
    reference: Reference,
    auth: RegistryAuth,
    /// The reference as the user wrote it, for messages.
    name: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("name", &self.name).finish()
    }
}

/// Media types a manifest request accepts: OCI and Docker schema 2,
/// single-platform manifests and indexes / manifest lists.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// rustls needs one process-wide crypto provider; ring keeps the build free
/// of cmake and C++ (aws-lc).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses an image reference the way docker normalises it
/// (`busybox` → `docker.io/library/busybox:latest`), without the `regex`
/// crate: `Reference`'s own parser compiles a Unicode regular expression
/// into about 7 MB that the process then keeps for ever, more than the
/// whole idle daemon.
pub fn parse_reference(text: &str) -> std::result::Result<Reference, String> {
    if text.is_empty() || text.len() > 512 {
        return Err("a reference is a name of 1 to 512 characters".into());
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    // A tag follows the last ':' after the last '/' (a port comes before it).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), path.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let registry = if registry == "index.docker.io" {
        "docker.io".to_string()
    } else {
        registry
    };
    let repository = if registry == "docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    let host_ok = registry.split(':').next().is_some_and(|h| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    }) && registry
        .split_once(':')
        .is_none_or(|(_, port)| !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()));
    if !host_ok {
        return Err(format!("invalid registry {registry:?}"));
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
    };
    if !repository.split('/').all(component_ok) || registry.len() + repository.len() > 255 {
        return Err(format!(
            "invalid repository {repository:?} (lowercase letters, digits and . _ - between them)"
        ));
    }
    if let Some(tag) = tag {
        let ok = tag.len() <= 128
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(format!("invalid tag {tag:?}"));
        }
    }
    if let Some(digest) = digest {
        let ok = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '_' | '-'))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(format!("invalid digest {digest:?}"));
        }
    }
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
            registry,
            repository,
            tag.to_string(),
            digest.to_string(),
        ),
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.to_string()),
        (tag, None) => {
            Reference::with_tag(registry, repository, tag.unwrap_or("latest").to_string())
        }
    })
}

impl Remote {
    /// Parses `reference` and authenticates for pulling from its repository
    /// with `auth`, or the configured credentials of its registry.
    pub async fn connect(
        reference: &str,
        options: &Options,
        auth: Option<Credentials>,
    ) -> Result<Remote> {
        install_crypto_provider();
        let parsed = parse_reference(reference).map_err(|detail| Error::Reference {
            reference: reference.to_string(),
            detail,
        })?;
        let registry = parsed.resolve_registry().to_string();
        let protocol = if options.plain_http(&registry) {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            platform_resolver: None,
            ..Default::default()
        });
        let credentials = auth.or_else(|| options.credentials.get(&registry).cloned());
        let auth = match credentials {
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username, password)
            }
            Some(Credentials::Token(token)) => RegistryAuth::Bearer(token),
            None => RegistryAuth::Anonymous,
        };
        let remote = Remote {
            client,
            reference: parsed,
            auth,
            name: reference.to_string(),
        };
        remote
            .client
            .auth(&remote.reference, &remote.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| remote.error(e))?;
        Ok(remote)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fully qualified name the image is recorded under.
    pub fn canonical_name(&self) -> String {
        self.reference.whole()
    }

    fn error(&self, e: OciDistributionError) -> Error {
        let registry = self.reference.resolve_registry().to_string();
        match e {
            OciDistributionError::UnauthorizedError { url } => Error::Auth {
                reference: self.name.clone(),
                registry,
                detail: match self.auth {
                    RegistryAuth::Anonymous => format!("no credentials given, {url} needs them"),
                    _ => format!("{url} rejected the credentials"),
                },
            },
            OciDistributionError::AuthenticationFailure(detail) => Error::Auth {
                reference: self.name.clone(),
                registry,
                detail,
            },
            OciDistributionError::ImageManifestNotFoundError(_) => Error::NotFound {
                reference: self.name.clone(),
            },
            OciDistributionError::RegistryError { ref envelope, .. }
                if envelope
                    .errors
                    .iter()
                    .any(|e| format!("{:?}", e.code).contains("ManifestUnknown")) =>
            {
                Error::NotFound {
                    reference: self.name.clone(),
                }
            }
            source => Error::Registry {
                reference: self.name.clone(),
                detail: with_causes(&source),
                source,
            },
        }
    }

    /// The manifest (or index) the reference's tag or digest names, with
    /// its digest (checked against the body by `oci-client`).
    pub async fn manifest(&self, digest: Option<&Digest>) -> Result<(Vec<u8>, String)> {
        let reference = match digest {
            Some(d) => Reference::with_digest(
                self.reference.resolve_registry().to_string(),
                self.reference.repository().to_string(),
                d.to_string(),
            ),
            None => self.reference.clone(),
        };
        let (body, digest) = self
            .client
            .pull_manifest_raw(&reference, &self.auth, MANIFEST_TYPES)
            .await
            .map_err(|e| self.error(e))?;
        Ok((body.to_vec(), digest))
    }

    /// The blob `digest` from byte `offset`. The flag says whether the
    /// registry honoured the offset; if not the stream starts at 0.
    pub async fn blob(
        &self,
        digest: &Digest,
        offset: u64,
    ) -> Result<(BoxStream<'static, std::io::Result<bytes::Bytes>>, bool)> {
        let desc = oci_client::client::LayerDescriptor {
            digest: digest.as_str(),
            urls: &None,
        };
        if offset == 0 {
            let stream = self
                .client
                .pull_blob_stream(&self.reference, &desc)
                .await
                .map_err(|e| self.error(e))?;
            return Ok((stream.stream, false));
        }
        match self
            .client
            .pull_blob_stream_partial(&self.reference, &desc, offset, None)
            .await
            .map_err(|e| self.error(e))?
        {
            BlobResponse::Full(s) => Ok((s.stream, false)),
            BlobResponse::Partial(s) => Ok((s.stream, true)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_normalise_as_docker_does_without_regex() {
        let whole = |t: &str| parse_reference(t).map(|r| r.whole());
        assert_eq!(
            whole("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(whole("busybox:1").unwrap(), "docker.io/library/busybox:1");
        assert_eq!(whole("index.docker.io/x/y:2").unwrap(), "docker.io/x/y:2");
        assert_eq!(
            whole("127.0.0.1:5000/app").unwrap(),
            "127.0.0.1:5000/app:latest"
        );
        assert_eq!(whole("localhost/a/b:c").unwrap(), "localhost/a/b:c");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            whole(&format!("reg.lan:5000/app@{digest}")).unwrap(),
            format!("reg.lan:5000/app@{digest}")
        );
        // Agrees with oci-client's own (regex) parser where both accept.
        for text in [
            "busybox",
            "a/b/c:1.0",
            "127.0.0.1:5000/x/y:z",
            "docker.io/library/debian:bookworm",
        ] {
            let ours = parse_reference(text).unwrap();
            let theirs: Reference = text.parse().unwrap();
            assert_eq!(ours.whole(), theirs.whole(), "{text}");
        }
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "x:",
            "a:b:c/d",
            "app@sha256:xyz",
            "-a",
            "reg:port/x",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn loopback_and_configured_registries_speak_http() {
        let options = Options {
            insecure: vec!["registry.lan:5000".into()],
            ..Default::default()
        };
        assert!(options.plain_http("127.0.0.1:5000"));
        assert!(options.plain_http("localhost"));
        assert!(options.plain_http("registry.lan:5000"));
        assert!(!options.plain_http("registry.lan"));
        assert!(!options.plain_http("docker.io"));
    }
}
