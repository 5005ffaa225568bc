//! Talking to a registry (OCI distribution API) through `oci-client`.
//!
//! `oci-client` does the HTTP: manifests by tag or digest, blobs as streams
//! (from an offset, to resume), Basic auth and Bearer token exchange. What is
//! decided here: which registries may be spoken to over plain http (those
//! configured as insecure, and loopback ones), which credentials go to which
//! registry (flags or a docker-style `config.json`, read again whenever the
//! file changes), and how its errors read. A rejected login is an error that
//! says so; it is never retried anonymously.
//!
//! Every connection has a connect timeout and an idle-read timeout
//! ([`Timeouts`]): a registry that stops sending fails the pull with an
//! error naming it and the timeout, instead of holding it for ever.
//! Manifests and indexes are fetched here rather than by `oci-client`,
//! whose manifest call reads any body whole: they are read through a cap
//! ([`MAX_MANIFEST`]) and refused as soon as it is passed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
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
    #[error("cannot pull {reference}: registry {registry} sent nothing for {timeout:?} (its read timeout) while sending {what}; pull again to resume")]
    Stalled {
        reference: String,
        registry: String,
        what: String,
        timeout: Duration,
    },
    #[error("cannot pull {reference}: {what} from {registry} is larger than the {limit}-byte limit for it; refusing to read more")]
    TooLarge {
        reference: String,
        registry: String,
        what: String,
        limit: u64,
    },
    #[error("cannot pull {reference}: {detail}")]
    Http { reference: String, detail: String },
}

type Result<T> = std::result::Result<T, Error>;

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { username: String, password: String },
    Token(String),
}

/// Largest manifest or index read (containerd's limit for both, 4 MiB):
/// real ones are a few KiB, a large multi-platform index some 100 KiB.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// How long a registry may take to accept a connection, and to send the
/// next bytes of a response once it has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Idle time between two reads, not a deadline for the whole body: a
    /// large layer over a slow link takes as long as it takes.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(60),
        }
    }
}

/// How to reach registries.
#[derive(Debug, Default)]
pub struct Options {
    /// Registries (host[:port]) spoken to over plain http.
    pub insecure: Vec<String>,
    /// Credentials by registry host[:port], given directly.
    pub credentials: HashMap<String, Credentials>,
    pub timeouts: Timeouts,
    /// A docker-style `config.json`, read again when it changes.
    docker_config: Option<Mutex<DockerConfig>>,
}

/// The credentials file and what was read from it, with the file's identity
/// at that time (a change of inode, size or mtime means: read it again).
#[derive(Debug)]
struct DockerConfig {
    path: PathBuf,
    stamp: Option<(u64, u64, std::time::SystemTime)>,
    credentials: HashMap<String, Credentials>,
}

fn file_stamp(path: &Path) -> Option<(u64, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.modified().ok()?))
}

impl Options {
    pub fn new(insecure: Vec<String>, timeouts: Timeouts) -> Options {
        Options {
            insecure,
            timeouts,
            ..Default::default()
        }
    }

    /// Takes credentials from the docker-style `config.json` at `path`
    /// (`{"auths": {"host": {"auth": base64("user:pass")}}}`): read now
    /// (an unreadable file is an error at start-up), and again before a
    /// pull whenever the file has changed, so `docker login`-style edits
    /// apply without a restart.
    pub fn watch_docker_config(&mut self, path: &Path) -> Result<()> {
        let stamp = file_stamp(path);
        let credentials = read_docker_config(path)?;
        self.docker_config = Some(Mutex::new(DockerConfig {
            path: path.to_path_buf(),
            stamp,
            credentials,
        }));
        Ok(())
    }

    /// The credentials for `registry`: given directly, else from the
    /// credentials file as it is now. A file that became unreadable keeps
    /// what was read last, and says so on stderr.
    pub fn credentials_for(&self, registry: &str) -> Option<Credentials> {
        if let Some(c) = self.credentials.get(registry) {
            return Some(c.clone());
        }
        let mut file = self
            .docker_config
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let stamp = file_stamp(&file.path);
        if stamp != file.stamp {
            file.stamp = stamp;
            match read_docker_config(&file.path) {
                Ok(credentials) => file.credentials = credentials,
                Err(e) if stamp.is_none() => {
                    eprintln!("berth-imaged: {e}: no credentials from it until it is back");
                    file.credentials.clear();
                }
                Err(e) => eprintln!("berth-imaged: {e}: keeping the credentials read before"),
            }
        }
        file.credentials.get(registry).cloned()
    }
}

/// The `auths` of a docker-style `config.json`.
fn read_docker_config(path: &Path) -> Result<HashMap<String, Credentials>> {
    let mut out = HashMap::new();
    let err = |detail: String| Error::Credentials {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Ok(out);
    };
    for (host, entry) in auths {
        let host = host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        if let Some(token) = entry.get("identitytoken").and_then(|t| t.as_str()) {
            out.insert(host, Credentials::Token(token.to_string()));
        } else if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .map_err(|e| err(format!("{host}: {e}")))?;
            let decoded = String::from_utf8(decoded).map_err(|e| err(format!("{host}: {e}")))?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or_else(|| err(format!("{host}: auth is not user:password")))?;
            out.insert(
                host,
                Credentials::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                },
            );
        }
    }
    Ok(out)
}

impl Options {
    pub(crate) fn plain_http(&self, registry: &str) -> bool {
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

/// Whether `e` or one of its causes is a timeout (reqwest's own, or an
/// I/O one wrapped in `oci-client`'s stream errors).
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_timeout)
    {
        return true;
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::TimedOut {
            return true;
        }
        // An io::Error's source() skips the error it wraps.
        if let Some(inner) = io.get_ref() {
            return is_timeout(inner);
        }
    }
    e.source().is_some_and(is_timeout)
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
    /// For manifests, read through a cap (see the module's comment).
    http: reqwest::Client,
    scheme: &'static str,
    /// The bearer token `oci-client` obtained, for our own requests.
    token: Option<String>,
    reference: Reference,
    auth: RegistryAuth,
    timeouts: Timeouts,
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

/// rustls needs one process-wide crypto provider, installed before any
/// client is made (pull, push, login, search); ring keeps the build free of
/// cmake and C++ (aws-lc).
pub(crate) fn install_crypto_provider() {
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
        let plain_http = options.plain_http(&registry);
        let protocol = if plain_http {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let timeouts = options.timeouts;
        let client = Client::new(ClientConfig {
            protocol,
            platform_resolver: None,
            read_timeout: Some(timeouts.read),
            connect_timeout: Some(timeouts.connect),
            ..Default::default()
        });
        let http = reqwest::Client::builder()
            .read_timeout(timeouts.read)
            .connect_timeout(timeouts.connect)
            .user_agent(concat!("berth-imaged/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http {
                reference: reference.to_string(),
                detail: format!("cannot make an HTTP client: {}", with_causes(&e)),
            })?;
        let credentials = auth.or_else(|| options.credentials_for(&registry));
        let auth = match credentials {
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username, password)
            }
            Some(Credentials::Token(token)) => RegistryAuth::Bearer(token),
            None => RegistryAuth::Anonymous,
        };
        let mut remote = Remote {
            client,
            http,
            scheme: if plain_http { "http" } else { "https" },
            token: None,
            reference: parsed,
            auth,
            timeouts,
            name: reference.to_string(),
        };
        remote.token = remote
            .client
            .auth(&remote.reference, &remote.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| remote.error(e))?;
        Ok(remote)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry's host[:port].
    pub fn registry(&self) -> &str {
        self.reference.resolve_registry()
    }

    /// What a failed read of `what` from this registry means: a timeout
    /// becomes [`Error::Stalled`], naming the registry and the timeout.
    pub fn read_error(&self, what: &str, e: &(dyn std::error::Error + 'static)) -> Error {
        if is_timeout(e) {
            return Error::Stalled {
                reference: self.name.clone(),
                registry: self.registry().to_string(),
                what: what.to_string(),
                timeout: self.timeouts.read,
            };
        }
        Error::Http {
            reference: self.name.clone(),
            detail: format!("{what} from {}: {}", self.registry(), with_causes(e)),
        }
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
    /// its digest (of the bytes; checked against the digest asked for and
    /// the one the registry announces). At most [`MAX_MANIFEST`] bytes are
    /// read: a larger body is refused, not buffered.
    pub async fn manifest(&self, digest: Option<&Digest>) -> Result<(Vec<u8>, String)> {
        let registry = self.registry();
        let wanted = digest
            .map(Digest::to_string)
            .or_else(|| self.reference.digest().map(str::to_string));
        let tag_or_digest = wanted
            .clone()
            .or_else(|| self.reference.tag().map(str::to_string))
            .unwrap_or_else(|| "latest".to_string());
        let url = format!(
            "{}://{registry}/v2/{}/manifests/{tag_or_digest}",
            self.scheme,
            self.reference.repository()
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "));
        request = match (&self.token, &self.auth) {
            (Some(token), _) | (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        let what = match &wanted {
            Some(digest) => format!("the manifest {digest}"),
            None => format!("the manifest of tag {tag_or_digest}"),
        };
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() || e.is_connect() {
                self.read_error(&what, &e)
            } else {
                self.error(OciDistributionError::from(e))
            }
        })?;
        let status = response.status();
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let limit = if status.is_success() {
            MAX_MANIFEST
        } else {
            64 << 10
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(self.too_large(&what, limit));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.read_error(&what, &e))?;
            if body.len() as u64 + chunk.len() as u64 > limit {
                if !status.is_success() {
                    break;
                }
                return Err(self.too_large(&what, limit));
            }
            body.extend_from_slice(&chunk);
        }
        match status.as_u16() {
            200..=299 => {}
            401 => {
                return Err(self.error(OciDistributionError::UnauthorizedError { url }));
            }
            404 => {
                return Err(Error::NotFound {
                    reference: self.name.clone(),
                })
            }
            _ => {
                let text = String::from_utf8_lossy(&body);
                if text.contains("MANIFEST_UNKNOWN") {
                    return Err(Error::NotFound {
                        reference: self.name.clone(),
                    });
                }
                return Err(Error::Http {
                    reference: self.name.clone(),
                    detail: format!("{url}: HTTP {status}: {}", text.trim()),
                });
            }
        }
        let actual = Digest::of(&body);
        for expected in wanted.iter().chain(announced.iter()) {
            if *expected != actual.to_string() {
                return Err(Error::Http {
                    reference: self.name.clone(),
                    detail: format!("{url}: the manifest's digest is {actual}, not {expected}"),
                });
            }
        }
        Ok((body, actual.to_string()))
    }

    fn too_large(&self, what: &str, limit: u64) -> Error {
        Error::TooLarge {
            reference: self.name.clone(),
            registry: self.registry().to_string(),
            what: what.to_string(),
            limit,
        }
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
    fn the_credentials_file_is_read_again_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("berth-registry-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        let write = |user: &str| {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
            // Through a rename, as editors and `docker login` write it.
            let tmp = dir.join("config.json.tmp");
            std::fs::write(
                &tmp,
                format!(r#"{{"auths": {{"reg:5000": {{"auth": "{auth}"}}}}}}"#),
            )
            .unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write("old");
        let mut options = Options::default();
        options.watch_docker_config(&path).unwrap();
        let user = |options: &Options| match options.credentials_for("reg:5000") {
            Some(Credentials::Basic { username, .. }) => username,
            other => format!("{other:?}"),
        };
        assert_eq!(user(&options), "old");
        write("new");
        assert_eq!(user(&options), "new");
        // A broken file keeps what was read; a removed one gives nothing.
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(user(&options), "new");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(user(&options), "None");
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
