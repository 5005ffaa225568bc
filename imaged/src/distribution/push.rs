//! Pushing an image to a registry, as `docker push` does: every blob the
//! registry lacks (asked with `HEAD`), mounted from another repository of
//! the same registry when an image stored here came from there (no bytes
//! sent), else streamed from the content store; then the manifest, byte
//! for byte as stored, so the registry serves the same digest.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::content::Digest;
use crate::images::{self, Images};
use crate::registry::{self, Credentials};

/// Errors of a push; the message is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Images(#[from] images::Error),
    #[error("cannot push {name}: {detail}")]
    Reference { name: String, detail: String },
    #[error(
        "cannot push {name}: unauthorized: {detail} (log in first: berthctl login {registry})"
    )]
    Unauthorized {
        name: String,
        registry: String,
        detail: String,
    },
    #[error("cannot push {name}: {what} {digest}: {detail}")]
    Blob {
        name: String,
        what: &'static str,
        digest: String,
        detail: String,
    },
}

type Result<T> = std::result::Result<T, Error>;

/// One step of a push, for the client's progress lines.
#[derive(Debug, Clone)]
pub struct Step {
    pub digest: String,
    pub status: &'static str,
    pub from: String,
    pub size: i64,
    pub manifest_digest: String,
}

fn step(digest: &str, status: &'static str, size: i64) -> Step {
    Step {
        digest: digest.to_string(),
        status,
        from: String::new(),
        size,
        manifest_digest: String::new(),
    }
}

/// Whether a registry error means the credentials were missing or wrong.
fn is_auth(e: &OciDistributionError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    matches!(
        e,
        OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. }
    ) || text.contains("unauthorized")
        || text.contains("401")
        || text.contains("denied")
}

/// An oci-client for `registry` as the pull side makes one (plain http
/// for the insecure registries).
pub(crate) fn client(options: &registry::Options, registry: &str) -> Client {
    registry::install_crypto_provider();
    let protocol = if options.plain_http(registry) {
        ClientProtocol::HttpsExcept(vec![registry.to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        read_timeout: Some(options.timeouts.read),
        connect_timeout: Some(options.timeouts.connect),
        ..Default::default()
    })
}

pub(crate) fn registry_auth(credentials: Option<Credentials>) -> RegistryAuth {
    match credentials {
        Some(Credentials::Basic { username, password }) => RegistryAuth::Basic(username, password),
        Some(Credentials::Token(token)) => RegistryAuth::Bearer(token),
        None => RegistryAuth::Anonymous,
    }
}

/// Pushes the stored image `name`; returns the manifest digest.
pub async fn push(
    images: &Images,
    name: &str,
    auth: Option<Credentials>,
    progress: mpsc::UnboundedSender<Step>,
) -> Result<String> {
    let record = images.get(name)?;
    let reference = registry::parse_reference(&record.name).map_err(|detail| Error::Reference {
        name: name.to_string(),
        detail,
    })?;
    let registry_host = reference.resolve_registry().to_string();
    let client = client(&images.registry, &registry_host);
    let auth = registry_auth(auth.or_else(|| images.registry.credentials_for(&registry_host)));
    let fail = |what: &'static str, digest: &str, e: OciDistributionError| {
        if is_auth(&e) {
            Error::Unauthorized {
                name: name.to_string(),
                registry: registry_host.clone(),
                detail: e.to_string(),
            }
        } else {
            Error::Blob {
                name: name.to_string(),
                what,
                digest: digest.to_string(),
                detail: e.to_string(),
            }
        }
    };
    client
        .auth(&reference, &auth, RegistryOperation::Push)
        .await
        .map_err(|e| fail("authentication for", &registry_host, e))?;
    let mut blobs = vec![("config", record.config.clone())];
    blobs.extend(record.layers.iter().map(|l| ("layer", l.clone())));
    let sources = mount_sources(images, &reference);
    for (what, desc) in blobs {
        let exists = client
            .blob_exists(&reference, desc.digest().as_ref())
            .await
            .map_err(|e| fail(what, desc.digest().as_ref(), e))?;
        if exists {
            let _ = progress.send(step(desc.digest().as_ref(), "exists", desc.size() as i64));
            continue;
        }
        let mut mounted = false;
        for source in sources
            .iter()
            .filter(|(_, digests)| digests.contains(desc.digest().as_ref()))
        {
            if client
                .mount_blob(&reference, &source.0, desc.digest().as_ref())
                .await
                .is_ok()
                && client
                    .blob_exists(&reference, desc.digest().as_ref())
                    .await
                    .unwrap_or(false)
            {
                let mut s = step(desc.digest().as_ref(), "mounted", desc.size() as i64);
                s.from = source.0.repository().to_string();
                let _ = progress.send(s);
                mounted = true;
                break;
            }
        }
        if mounted {
            continue;
        }
        let _ = progress.send(step(desc.digest().as_ref(), "pushing", desc.size() as i64));
        let digest = Digest::parse(desc.digest().as_ref()).map_err(images::Error::from)?;
        let file = tokio::fs::File::from_std(
            images
                .content
                .open_blob(&digest)
                .map_err(images::Error::from)?,
        );
        let stream = futures_util::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), file))
                }
                Err(e) => Some((Err(OciDistributionError::IoError(e)), file)),
            }
        })
        .boxed();
        client
            .push_blob_stream(
                &reference,
                stream,
                desc.digest().as_ref(),
                Some(desc.size()),
            )
            .await
            .map_err(|e| fail(what, desc.digest().as_ref(), e))?;
        let _ = progress.send(step(desc.digest().as_ref(), "pushed", desc.size() as i64));
    }
    let manifest_digest =
        Digest::parse(record.manifest.digest().as_ref()).map_err(images::Error::from)?;
    let bytes = images
        .content
        .read_blob(&manifest_digest)
        .map_err(images::Error::from)?;
    let media_type = match record.manifest.media_type().as_ref() {
        "" => "application/vnd.oci.image.manifest.v1+json",
        recorded => recorded,
    };
    let content_type = media_type.parse().map_err(|_| Error::Reference {
        name: name.to_string(),
        detail: format!("invalid media type {media_type:?}"),
    })?;
    client
        .push_manifest_raw(&reference, bytes.clone(), content_type)
        .await
        .map_err(|e| fail("manifest", record.manifest.digest().as_ref(), e))?;
    let mut done = step(
        record.manifest.digest().as_ref(),
        "done",
        bytes.len() as i64,
    );
    done.manifest_digest = record.manifest.digest().to_string();
    let _ = progress.send(done);
    Ok(record.manifest.digest().to_string())
}

/// Other repositories of the same registry that images stored here came
/// from, with the blobs each holds: candidates for a cross-repository
/// mount.
fn mount_sources(images: &Images, target: &Reference) -> Vec<(Reference, BTreeSet<String>)> {
    let Ok(all) = images.list() else {
        return Vec::new();
    };
    let mut out: Vec<(Reference, BTreeSet<String>)> = Vec::new();
    for image in all {
        let Ok(r) = registry::parse_reference(&image.name) else {
            continue;
        };
        if r.resolve_registry() != target.resolve_registry()
            || r.repository() == target.repository()
        {
            continue;
        }
        let mut digests: BTreeSet<String> = image
            .layers
            .iter()
            .map(|l| l.digest().to_string())
            .collect();
        digests.insert(image.config.digest().to_string());
        match out
            .iter_mut()
            .find(|(o, _)| o.repository() == r.repository())
        {
            Some((_, d)) => d.extend(digests),
            None => out.push((r, digests)),
        }
    }
    out
}
