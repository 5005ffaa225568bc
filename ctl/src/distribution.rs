//! `tag`, `history`, `push`, `login`, `logout`: naming and sharing images.
//!
//! Credentials live where docker keeps them, in docker's format, so docker,
//! skopeo, podman and berth share one login: `$DOCKER_CONFIG/config.json`,
//! else `$HOME/.docker/config.json` (`--config DIR` overrides), as
//! `{"auths": {"REGISTRY": {"auth": base64("user:password")}}}`; every
//! other key of the file is kept. A push sends the credentials of the
//! image's registry to the daemon with the request.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use berth_proto::v1 as pb;
use serde_json::{json, Value};

use crate::cli::{HistoryArgs, LoginArgs, LogoutArgs, PushArgs, SearchArgs, TagArgs};
use crate::client::{rpc, Daemon};

/// Docker Hub's key in `config.json`.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

fn config_file(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = dir {
        return Ok(dir.join("config.json"));
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow!("HOME is not set: give --config DIR for the credentials file"))?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

fn read_config(path: &Path) -> Result<Value> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Written whole to a temporary file (mode 0600: it holds passwords),
/// then renamed over the old one.
fn write_config(path: &Path, config: &Value) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let bytes = serde_json::to_vec_pretty(config)?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// The `config.json` key of a registry as the user names it.
fn registry_key(registry: &str) -> String {
    let host = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "index.docker.io/v1" => {
            DOCKER_HUB.into()
        }
        other => other.to_string(),
    }
}

/// The registry an image name points at (docker's rule: a first component
/// with a `.` or `:`, or `localhost`, is a registry).
fn registry_of(name: &str) -> String {
    match name.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            registry_key(first)
        }
        _ => DOCKER_HUB.into(),
    }
}

/// The stored credentials of `registry`, if any.
fn stored_auth(config: &Value, registry: &str) -> Option<pb::RegistryAuth> {
    let entry = &config["auths"][registry];
    if let Some(token) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        return Some(pb::RegistryAuth {
            token: token.into(),
            ..Default::default()
        });
    }
    let encoded = entry["auth"].as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(pb::RegistryAuth {
        username: username.into(),
        password: password.into(),
        token: String::new(),
    })
}

pub async fn tag(d: &Daemon, args: &TagArgs) -> Result<i32> {
    d.distribution()
        .tag(pb::TagRequest {
            source: args.source.clone(),
            target: args.target.clone(),
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("cannot tag {}", args.source))?;
    Ok(0)
}

fn human_size(n: i64) -> String {
    let n = n as f64;
    if n < 1000.0 {
        format!("{n}B")
    } else if n < 1e6 {
        format!("{:.3}kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.3}MB", n / 1e6)
    } else {
        format!("{:.3}GB", n / 1e9)
    }
}

pub async fn history(d: &Daemon, args: &HistoryArgs) -> Result<i32> {
    let entries = d
        .distribution()
        .history(pb::HistoryRequest {
            name: args.image.clone(),
        })
        .await
        .map_err(rpc)
        .with_context(|| format!("cannot show the history of {}", args.image))?
        .into_inner()
        .entries;
    if args.quiet {
        for e in &entries {
            println!("{}", short_id(&e.id, args.no_trunc));
        }
        return Ok(0);
    }
    println!(
        "{:<14}{:<22}{:<47}{:<11}COMMENT",
        "IMAGE", "CREATED", "CREATED BY", "SIZE"
    );
    for e in entries {
        let mut by = e.created_by.replace('\t', " ");
        if !args.no_trunc && by.chars().count() > 44 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        println!(
            "{:<14}{:<22}{:<47}{:<11}{}",
            short_id(&e.id, args.no_trunc),
            if e.created.is_empty() {
                "-"
            } else {
                e.created.as_str()
            },
            by,
            human_size(e.size),
            e.comment
        );
    }
    Ok(0)
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if id.is_empty() {
        return "<missing>".into();
    }
    if no_trunc {
        return id.into();
    }
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// The credentials `login` stored for the registry of the image `name`
/// (none stored, or no config file: the daemon's own, if any).
pub fn auth_for(config_dir: Option<&Path>, name: &str) -> Result<Option<pb::RegistryAuth>> {
    let Ok(path) = config_file(config_dir) else {
        return Ok(None);
    };
    Ok(stored_auth(&read_config(&path)?, &registry_of(name)))
}

pub async fn push(d: &Daemon, args: &PushArgs) -> Result<i32> {
    let config = read_config(&config_file(args.config.as_deref())?)?;
    let auth = stored_auth(&config, &registry_of(&args.image));
    let mut stream = d
        .distribution()
        .push(pb::PushRequest {
            name: args.image.clone(),
            auth,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let short = |digest: &str| -> String {
        digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect()
    };
    let mut done = false;
    loop {
        let step = match stream.message().await {
            Ok(Some(step)) => step,
            Ok(None) if done => return Ok(0),
            Ok(None) => bail!(
                "cannot push {}: the daemon ended the push unfinished (see its log)",
                args.image
            ),
            Err(status) => return Err(rpc(status)),
        };
        done |= step.status == "done";
        if args.quiet && step.status != "done" {
            continue;
        }
        match step.status.as_str() {
            "pushing" => println!("{}: Pushing", short(&step.digest)),
            "pushed" => println!("{}: Pushed", short(&step.digest)),
            "exists" => println!("{}: Layer already exists", short(&step.digest)),
            "mounted" => println!("{}: Mounted from {}", short(&step.digest), step.from),
            "done" => println!(
                "{}: digest: {} size: {}",
                args.image, step.manifest_digest, step.size
            ),
            other => println!("{}: {other}", short(&step.digest)),
        }
    }
}

pub async fn login(d: &Daemon, args: &LoginArgs) -> Result<i32> {
    let username = match &args.username {
        Some(u) => u.clone(),
        None => bail!("login needs --username (-u)"),
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the password from stdin")?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => {
            if std::io::stdin().is_terminal() {
                bail!("give the password with --password-stdin (or -p)");
            }
            bail!("login needs --password-stdin or --password (-p)")
        }
    };
    let registry = registry_key(&args.registry);
    let host = if registry == DOCKER_HUB {
        "registry-1.docker.io".to_string()
    } else {
        registry.clone()
    };
    d.distribution()
        .login(pb::LoginRequest {
            registry: host,
            auth: Some(pb::RegistryAuth {
                username: username.clone(),
                password: password.clone(),
                token: String::new(),
            }),
        })
        .await
        .map_err(rpc)?;
    let path = config_file(args.config.as_deref())?;
    let mut config = read_config(&path)?;
    if !config.is_object() {
        config = json!({});
    }
    if !config["auths"].is_object() {
        config["auths"] = json!({});
    }
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    config["auths"][&registry] = json!({ "auth": encoded });
    write_config(&path, &config)?;
    println!("Login Succeeded");
    Ok(0)
}

pub async fn search(d: &Daemon, args: &SearchArgs) -> Result<i32> {
    let (registry, term) = match args.term.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => (String::new(), args.term.clone()),
    };
    let config = read_config(&config_file(args.config.as_deref())?)?;
    let names = d
        .distribution()
        .search(pb::SearchRequest {
            auth: stored_auth(&config, &registry_key(&registry)),
            registry,
            term,
            limit: args.limit,
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .names;
    println!("NAME");
    for n in names {
        println!("{n}");
    }
    Ok(0)
}

pub fn logout(args: &LogoutArgs) -> Result<i32> {
    let registry = registry_key(&args.registry);
    let path = config_file(args.config.as_deref())?;
    let mut config = read_config(&path)?;
    let removed = config["auths"]
        .as_object_mut()
        .and_then(|auths| auths.remove(&registry))
        .is_some();
    if !removed {
        bail!("not logged in to {registry}");
    }
    write_config(&path, &config)?;
    println!("Removing login credentials for {registry}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_names_and_stored_credentials() {
        assert_eq!(registry_of("busybox"), DOCKER_HUB);
        assert_eq!(registry_of("library/busybox:1"), DOCKER_HUB);
        assert_eq!(registry_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_key("docker.io"), DOCKER_HUB);
        let config = json!({"auths": {"r:5000": {"auth": "dXNlcjpwYTpzcw=="}}});
        let auth = stored_auth(&config, "r:5000").expect("stored");
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("user", "pa:ss")
        );
        assert!(stored_auth(&config, "other").is_none());
    }
}
