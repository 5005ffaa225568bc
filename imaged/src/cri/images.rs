//! The CRI's view of the daemon's image store. A CRI image is one image
//! config: its id is the config's digest (as containerd's CRI reports it),
//! its repo tags the names that point at it, its repo digests
//! `repository@manifest-digest` of each. Pulls go through the registry
//! mirrors of the daemon's config (`registry.k8s.io` → a local registry)
//! and keep the name they were asked by.

use std::collections::{BTreeMap, BTreeSet};

use k8s_cri::v1 as cri;

use super::{Cri, Error, Result};
use crate::images::{ImageRecord, Progress};
use crate::metadata::Table;
use crate::registry::{self, Credentials};

/// The image `spec` names: a name (`busybox:1`, canonical or not, with a
/// digest or not), an image id (`sha256:…`, the config digest) or a unique
/// prefix of one.
pub fn find(cri: &Cri, spec: &str) -> Result<ImageRecord> {
    if spec.is_empty() {
        return Err(Error::Invalid("no image given".into()));
    }
    if let Ok(record) = cri.images.get(spec) {
        return Ok(record);
    }
    let all = cri
        .images
        .list()
        .map_err(|e| Error::Failed(e.to_string()))?;
    // `repo@sha256:…` pulled under a tag: the manifest's digest decides.
    if let Some((name, digest)) = spec.split_once('@') {
        let repository = repository_of(name);
        if let Some(record) = all
            .iter()
            .find(|r| r.target.digest().as_ref() == digest && repository_of(&r.name) == repository)
        {
            return Ok(record.clone());
        }
    }
    let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
    let by_id: BTreeSet<String> = all
        .iter()
        .map(|r| r.config.digest().to_string())
        .filter(|id| {
            hex.len() >= 6
                && hex.chars().all(|c| c.is_ascii_hexdigit())
                && id
                    .strip_prefix("sha256:")
                    .is_some_and(|h| h.starts_with(hex))
        })
        .collect();
    match by_id.len() {
        1 => all
            .into_iter()
            .find(|r| by_id.contains(r.config.digest().as_ref()))
            .ok_or_else(|| Error::NotFound(format!("image {spec:?}"))),
        0 => Err(Error::NotFound(format!("image {spec:?}"))),
        _ => Err(Error::Invalid(format!(
            "{spec:?} matches more than one image: give more of the id"
        ))),
    }
}

/// `host/repo:tag` or `host/repo@digest` → `host/repo`.
fn repository_of(name: &str) -> String {
    let canonical = crate::images::canonical_name(name).unwrap_or_else(|| name.to_string());
    let no_digest = canonical.split('@').next().unwrap_or_default();
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    match no_digest[last_slash..].rfind(':') {
        Some(i) => no_digest[..last_slash + i].to_string(),
        None => no_digest.to_string(),
    }
}

/// Every CRI image: records grouped by config digest.
pub fn list(cri: &Cri) -> Result<Vec<cri::Image>> {
    let all = cri
        .images
        .list()
        .map_err(|e| Error::Failed(e.to_string()))?;
    let mut by_id: BTreeMap<String, Vec<ImageRecord>> = BTreeMap::new();
    for record in all {
        by_id
            .entry(record.config.digest().to_string())
            .or_default()
            .push(record);
    }
    Ok(by_id
        .into_values()
        .map(|records| to_cri(cri, &records))
        .collect())
}

/// The CRI image of `record` (with every name of its config).
pub fn status(cri: &Cri, record: &ImageRecord) -> Result<cri::Image> {
    let all = cri
        .images
        .list()
        .map_err(|e| Error::Failed(e.to_string()))?;
    let same: Vec<ImageRecord> = all
        .into_iter()
        .filter(|r| r.config.digest() == record.config.digest())
        .collect();
    Ok(to_cri(cri, &same))
}

fn to_cri(cri: &Cri, records: &[ImageRecord]) -> cri::Image {
    let mut tags = BTreeSet::new();
    let mut digests = BTreeSet::new();
    for r in records {
        if !r.name.contains('@') {
            tags.insert(r.name.clone());
        }
        digests.insert(format!("{}@{}", repository_of(&r.name), r.target.digest()));
    }
    let first = &records[0];
    let (uid, username) = image_user(cri, first);
    cri::Image {
        id: first.config.digest().to_string(),
        repo_tags: tags.into_iter().collect(),
        repo_digests: digests.into_iter().collect(),
        size: first.size.max(0) as u64,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: first.config.digest().to_string(),
            ..Default::default()
        }),
        pinned: is_pinned(cri, first.config.digest().as_ref()),
    }
}

/// Whether the image with config digest `id` is one the daemon's
/// `pinned_images` names (by any name, digest or id `find` takes): the
/// sandbox image a cluster configures and the images its operator keeps,
/// which kubelet's image garbage collection then leaves alone.
fn is_pinned(cri: &Cri, id: &str) -> bool {
    cri.pinned
        .iter()
        .filter_map(|name| find(cri, name).ok())
        .any(|record| record.config.digest().as_ref() == id)
}

/// The image's `User` as CRI reports it: a numeric uid, or a name.
fn image_user(cri: &Cri, record: &ImageRecord) -> (Option<i64>, String) {
    let Ok(digest) = crate::content::Digest::parse(record.config.digest().as_ref()) else {
        return (None, String::new());
    };
    let Ok(blob) = cri.images.content.read_blob(&digest) else {
        return (None, String::new());
    };
    let config: serde_json::Value = serde_json::from_slice(&blob).unwrap_or_default();
    let user = config["config"]["User"].as_str().unwrap_or_default();
    let user = user.split(':').next().unwrap_or_default();
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) if user.is_empty() => (Some(0), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

/// The credentials of a PullImage request.
pub fn credentials(auth: Option<&cri::AuthConfig>) -> Result<Option<Credentials>> {
    use base64::Engine as _;
    let Some(auth) = auth else {
        return Ok(None);
    };
    if !auth.registry_token.is_empty() {
        return Ok(Some(Credentials::Token(auth.registry_token.clone())));
    }
    if !auth.identity_token.is_empty() {
        return Ok(Some(Credentials::Token(auth.identity_token.clone())));
    }
    if !auth.username.is_empty() {
        return Ok(Some(Credentials::Basic {
            username: auth.username.clone(),
            password: auth.password.clone(),
        }));
    }
    if !auth.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Error::Invalid("auth is not base64 of user:password".into()))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| Error::Invalid("auth is not base64 of user:password".into()))?;
        return Ok(Some(Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    Ok(None)
}

/// The references to try for `reference`: through each mirror of its
/// registry, then the registry itself.
pub fn candidates(
    mirrors: &BTreeMap<String, Vec<String>>,
    reference: &str,
) -> Result<(String, Vec<String>)> {
    let parsed = registry::parse_reference(reference)
        .map_err(|e| Error::Invalid(format!("invalid image reference {reference:?}: {e}")))?;
    let canonical = parsed.whole();
    let host = parsed.registry().to_string();
    let mut out: Vec<String> = mirrors
        .get(&host)
        .into_iter()
        .flatten()
        .map(|mirror| format!("{mirror}{}", &canonical[host.len()..]))
        .collect();
    out.push(canonical.clone());
    Ok((canonical, out))
}

/// Pulls `reference` (through the mirrors), recording it under its own
/// canonical name; the image id.
pub async fn pull(cri: &Cri, reference: &str, auth: Option<Credentials>) -> Result<String> {
    let (canonical, candidates) = candidates(&cri.mirrors, reference)?;
    let mut last_error = String::new();
    for candidate in &candidates {
        let existed = cri.images.get(candidate).is_ok();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let pulled = cri
            .images
            .pull(
                candidate,
                &crate::images::host_platform(),
                auth.clone(),
                true,
                tx,
            )
            .await;
        let _ = drain.await;
        match pulled {
            Ok(record) => {
                if record.name != canonical {
                    rename(cri, record.clone(), &canonical, !existed)?;
                }
                return Ok(record.config.digest().to_string());
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(Error::Failed(format!(
        "cannot pull {reference}: {last_error}"
    )))
}

/// Records a mirror's pull under the name it was asked by; the mirror's
/// name goes unless it was there before.
fn rename(cri: &Cri, mut record: ImageRecord, name: &str, drop_mirror_name: bool) -> Result<()> {
    let mirror_name = record.name.clone();
    record.name = name.to_string();
    cri.images.db.write(|txn| {
        txn.put(Table::Images, name, &record)?;
        if drop_mirror_name {
            txn.delete(Table::Images, &mirror_name)?;
        }
        Ok::<_, crate::metadata::Error>(())
    })?;
    Ok(())
}

/// Removes every name of the image `spec` names (kubelet removes by id);
/// an image that is not there is no error.
pub async fn remove(cri: &Cri, spec: &str) -> Result<()> {
    let record = match find(cri, spec) {
        Ok(record) => record,
        Err(Error::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let names: Vec<String> = if spec.contains(':') && !spec.starts_with("sha256:") {
        // A name removes that name only; the image goes with its last name.
        vec![record.name.clone()]
    } else {
        cri.images
            .list()
            .map_err(|e| Error::Failed(e.to_string()))?
            .into_iter()
            .filter(|r| r.config.digest() == record.config.digest())
            .map(|r| r.name)
            .collect()
    };
    let images = cri.images.clone();
    tokio::task::spawn_blocking(move || {
        for name in names {
            match images.remove(&name) {
                Ok(_) | Err(crate::images::Error::NotFound(_)) => {}
                Err(e) => return Err(Error::Failed(e.to_string())),
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Failed(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_first_and_keep_the_path() {
        let mirrors = BTreeMap::from([(
            "registry.k8s.io".to_string(),
            vec!["127.0.0.1:5000".to_string()],
        )]);
        let (canonical, tries) = candidates(&mirrors, "registry.k8s.io/pause:3.9").unwrap();
        assert_eq!(canonical, "registry.k8s.io/pause:3.9");
        assert_eq!(
            tries,
            vec!["127.0.0.1:5000/pause:3.9", "registry.k8s.io/pause:3.9"]
        );
        let (_, tries) = candidates(&mirrors, "busybox").unwrap();
        assert_eq!(tries, vec!["docker.io/library/busybox:latest"]);
        assert!(candidates(&mirrors, "UPPER/case").is_err());
    }

    #[test]
    fn repositories_drop_tags_and_digests_but_not_ports() {
        assert_eq!(repository_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app");
        assert_eq!(
            repository_of("127.0.0.1:5000/app@sha256:abc"),
            "127.0.0.1:5000/app"
        );
        assert_eq!(repository_of("busybox"), "docker.io/library/busybox");
    }

    #[test]
    fn credentials_from_each_field() {
        use base64::Engine as _;
        assert!(credentials(None).unwrap().is_none());
        let basic = cri::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p"),
            ..Default::default()
        };
        assert!(matches!(
            credentials(Some(&basic)).unwrap(),
            Some(Credentials::Basic { username, password }) if username == "u" && password == "p"
        ));
        let bad = cri::AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(credentials(Some(&bad)).is_err());
    }
}
