//! Images as they are named and shared: [`tag`] (one more name for a
//! stored image), [`history`] (the config's history as `docker history`
//! shows it), [`push::push`] and [`login`] (credentials checked against
//! the registry before the client saves them).

pub mod push;
pub mod service;

use serde_json::Value;

use crate::content::Digest;
use crate::images::{self, Images};
use crate::metadata::Table;
use crate::registry::{self, Credentials};

/// Records the image `source` under `target` as well; returns the name.
pub fn tag(images: &Images, source: &str, target: &str) -> Result<String, String> {
    let mut record = images.get(source).map_err(|e| e.to_string())?;
    let name = images::canonical_name(target)
        .ok_or_else(|| format!("invalid name {target:?}: use [REGISTRY/]NAME[:TAG]"))?;
    record.name = name.clone();
    images
        .db
        .write(|txn| txn.put(Table::Images, &name, &record))
        .map_err(|e: crate::metadata::Error| e.to_string())?;
    Ok(name)
}

/// One line of `history`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub created: String,
    pub created_by: String,
    pub size: i64,
    pub empty_layer: bool,
    pub comment: String,
}

/// The image's history, newest first; each entry that made a layer is
/// given that layer's blob size (the config's history names no layers:
/// they pair up from the newest, skipping `empty_layer` entries, as docker
/// pairs them; older layers with no entry, e.g. a base image built without
/// history, come last).
pub fn history(images: &Images, name: &str) -> Result<(String, Vec<Entry>), images::Error> {
    let record = images.get(name)?;
    let digest = images.parse_digest(name, record.config.digest().as_ref())?;
    let bytes = images.content.read_blob(&digest)?;
    let config: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let mut layers = record.layers.iter().rev();
    let mut out = Vec::new();
    let entries = config["history"].as_array().cloned().unwrap_or_default();
    for h in entries.iter().rev() {
        let empty_layer = h["empty_layer"].as_bool().unwrap_or(false);
        let size = if empty_layer {
            0
        } else {
            layers.next().map_or(0, |l| l.size() as i64)
        };
        let text = |k: &str| h[k].as_str().unwrap_or_default().to_string();
        out.push(Entry {
            created: text("created"),
            created_by: text("created_by"),
            size,
            empty_layer,
            comment: text("comment"),
        });
    }
    // Layers the history does not mention (an image built without one).
    for layer in layers {
        out.push(Entry {
            created: String::new(),
            created_by: String::new(),
            size: layer.size() as i64,
            empty_layer: false,
            comment: String::new(),
        });
    }
    let id = Digest::parse(record.config.digest().as_ref())
        .map(|d| d.to_string())
        .unwrap_or_default();
    Ok((id, out))
}

fn http_client(options: &registry::Options) -> Result<reqwest::Client, String> {
    // Without it, a login or search before any pull or push panics.
    registry::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(options.timeouts.connect)
        .read_timeout(options.timeouts.read)
        .build()
        .map_err(|e| e.to_string())
}

fn with_credentials(
    request: reqwest::RequestBuilder,
    credentials: &Credentials,
) -> reqwest::RequestBuilder {
    match credentials {
        Credentials::Basic { username, password } => request.basic_auth(username, Some(password)),
        Credentials::Token(token) => request.bearer_auth(token),
    }
}

/// The repositories of `registry`'s catalog whose names contain `term`
/// (case-insensitively), as `REGISTRY/REPOSITORY`, sorted; at most `limit`.
/// Only the catalog's first page (1000 repositories, distribution's
/// largest) is read.
pub async fn search(
    options: &registry::Options,
    registry: &str,
    term: &str,
    credentials: Option<Credentials>,
    limit: usize,
) -> Result<Vec<String>, String> {
    let scheme = if options.plain_http(registry) {
        "http"
    } else {
        "https"
    };
    let url = format!("{scheme}://{registry}/v2/_catalog?n=1000");
    let mut request = http_client(options)?.get(&url);
    if let Some(c) = credentials.or_else(|| options.credentials_for(registry)) {
        request = with_credentials(request, &c);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot search {registry}: {e}"))?;
    match response.status().as_u16() {
        200 => {}
        401 => {
            return Err(format!(
                "cannot search {registry}: unauthorized (log in first: berthctl login {registry})"
            ))
        }
        code => {
            return Err(format!(
                "cannot search {registry}: the registry answered {code}"
            ))
        }
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("cannot search {registry}: {e}"))?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("cannot search {registry}: not a catalog: {e}"))?;
    let term = term.to_ascii_lowercase();
    let mut names: Vec<String> = body["repositories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|r| r.to_ascii_lowercase().contains(&term))
        .map(|r| format!("{registry}/{r}"))
        .collect();
    names.sort();
    names.truncate(limit);
    Ok(names)
}

/// Checks `credentials` against `registry` with `GET /v2/`: a registry
/// that answers 401 to them refuses them. Registries that hand out tokens
/// are asked for one.
pub async fn login(
    options: &registry::Options,
    registry: &str,
    credentials: Credentials,
) -> Result<(), String> {
    let scheme = if options.plain_http(registry) {
        "http"
    } else {
        "https"
    };
    let url = format!("{scheme}://{registry}/v2/");
    let response = with_credentials(http_client(options)?.get(&url), &credentials)
        .send()
        .await
        .map_err(|e| format!("cannot reach {registry}: {e}"))?;
    match response.status().as_u16() {
        200..=299 => Ok(()),
        401 => {
            let bearer = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().starts_with("bearer"));
            if !bearer {
                return Err(format!(
                    "login to {registry} failed: unauthorized (wrong username or password?)"
                ));
            }
            // A token registry: the credentials are good if a token is issued.
            let reference = registry::parse_reference(&format!("{registry}/library/login:latest"))?;
            let client = push::client(options, registry);
            client
                .auth(
                    &reference,
                    &push::registry_auth(Some(credentials)),
                    oci_client::RegistryOperation::Pull,
                )
                .await
                .map(|_| ())
                .map_err(|e| format!("login to {registry} failed: {e}"))
        }
        code => Err(format!(
            "login to {registry} failed: the registry answered {code}"
        )),
    }
}
