//! What each Dockerfile instruction does to the stage's state
//! ([`Build::step`]): metadata instructions change the config, `COPY`/`ADD`
//! ([`super::copy`]) and `RUN` ([`super::run`]) add a layer.

use std::path::Path;

use serde_json::{json, Value};

use super::cache::{Cache, Entry};
use super::dockerfile::{self, Command, Instruction};
use super::state::State;
use super::{context, internal, Build, Result};

impl Build<'_> {
    pub(super) async fn step(&mut self, i: &Instruction) -> Result<()> {
        self.announce(i);
        let vars = self.vars();
        let lookup = dockerfile::lookup(&vars);
        if i.keyword == "ARG" {
            let declared = dockerfile::pairs(i, &lookup).map_err(|e| self.syntax(e))?;
            for (k, default) in declared {
                let value = self
                    .options
                    .build_args
                    .get(&k)
                    .cloned()
                    .or(default)
                    .or_else(|| self.meta_args.get(&k).cloned())
                    .unwrap_or_default();
                self.current().args.insert(k, value);
            }
        }
        let args = self.current().args.clone();
        let mut inputs: String = args.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let copied = if matches!(i.keyword.as_str(), "COPY" | "ADD") {
            let (layer, sum, dest) = self.copy(i, &lookup).await?;
            inputs.push_str(&sum);
            Some((layer, sum, dest))
        } else {
            None
        };
        let parent = self.current().state.clone();
        let key = Cache::key(&parent.id(), &i.text(), &inputs);
        if !self.options.no_cache {
            if let Some(entry) = self.cache.get(&key, &self.builds.images) {
                self.say(" ---> Using cache\n");
                let state = State {
                    config: entry.config,
                    layers: entry.layers,
                };
                self.finish_step(i, state);
                return Ok(());
            }
        }
        let mut state = parent;
        let nop = |i: &Instruction| format!("/bin/sh -c #(nop)  {}", i.text());
        match i.keyword.as_str() {
            "RUN" => self.run_step(i, &mut state, &args).await?,
            "COPY" | "ADD" => {
                let (layer, sum, dest) = copied.ok_or_else(|| internal("copy lost"))?;
                self.commit_layer(i, &mut state, &layer)?;
                state.history(
                    format!(
                        "/bin/sh -c #(nop) {} dir:{} in {dest} ",
                        i.keyword,
                        &sum[..sum.len().min(64)]
                    ),
                    false,
                );
            }
            "ENV" => {
                for (k, v) in dockerfile::pairs(i, &lookup).map_err(|e| self.syntax(e))? {
                    state.set_env(&k, &v.unwrap_or_default());
                }
                state.history(nop(i), true);
            }
            "ARG" => state.history(nop(i), true),
            "LABEL" => {
                let mut labels = state.get("Labels").as_object().cloned().unwrap_or_default();
                for (k, v) in dockerfile::pairs(i, &lookup).map_err(|e| self.syntax(e))? {
                    labels.insert(k, json!(v.unwrap_or_default()));
                }
                state
                    .settings()
                    .insert("Labels".into(), Value::Object(labels));
                state.history(nop(i), true);
            }
            "MAINTAINER" => {
                state.config["author"] = json!(i.rest);
                state.history(nop(i), true);
            }
            "WORKDIR" => {
                let dir = self.expand(i, &i.rest, &lookup)?;
                let current = state.get("WorkingDir").as_str().unwrap_or("/").to_string();
                let joined = Path::new(if current.is_empty() { "/" } else { &current }).join(&dir);
                let clean = format!(
                    "/{}",
                    context::lexical(&joined.to_string_lossy())
                        .unwrap_or_default()
                        .display()
                );
                state.settings().insert("WorkingDir".into(), json!(clean));
                state.history(nop(i), true);
            }
            "USER" => {
                let user = self.expand(i, &i.rest, &lookup)?;
                state.settings().insert("User".into(), json!(user));
                state.history(nop(i), true);
            }
            "EXPOSE" => {
                let mut ports = state
                    .get("ExposedPorts")
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for w in dockerfile::words(&i.rest, i.escape, &lookup)
                    .map_err(|m| self.syntax(i.error(m)))?
                {
                    let (port, proto) = w.split_once('/').unwrap_or((&w, "tcp"));
                    if port.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(
                            self.syntax(i.error(format!("invalid port {w:?}: use PORT[/tcp|udp]")))
                        );
                    }
                    ports.insert(format!("{port}/{proto}"), json!({}));
                }
                state
                    .settings()
                    .insert("ExposedPorts".into(), Value::Object(ports));
                state.history(nop(i), true);
            }
            "CMD" | "ENTRYPOINT" => {
                let argv = match i.command() {
                    Command::Exec(v) => v,
                    Command::Shell(s) if s.is_empty() => Vec::new(),
                    Command::Shell(s) => {
                        let mut v = state.shell();
                        v.push(s);
                        v
                    }
                };
                let key = if i.keyword == "CMD" {
                    "Cmd"
                } else {
                    "Entrypoint"
                };
                state.settings().insert(key.into(), json!(argv));
                if i.keyword == "CMD" {
                    self.current().cmd_set = true;
                } else if !self.current().cmd_set {
                    state.settings().insert("Cmd".into(), Value::Null);
                }
                state.history(nop(i), true);
            }
            "VOLUME" => {
                let paths = match i.command() {
                    Command::Exec(v) => v,
                    Command::Shell(s) => dockerfile::words(&s, i.escape, &lookup)
                        .map_err(|m| self.syntax(i.error(m)))?,
                };
                let mut volumes = state
                    .get("Volumes")
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for p in paths {
                    volumes.insert(p, json!({}));
                }
                state
                    .settings()
                    .insert("Volumes".into(), Value::Object(volumes));
                state.history(nop(i), true);
            }
            "SHELL" => {
                if let Command::Exec(v) = i.command() {
                    state.settings().insert("Shell".into(), json!(v));
                }
                state.history(nop(i), true);
            }
            "STOPSIGNAL" => {
                let signal = self.expand(i, &i.rest, &lookup)?;
                if crate::tasks::signal_number(&signal).is_none() {
                    return Err(self.syntax(i.error(format!("invalid stop signal {signal:?}"))));
                }
                state.settings().insert("StopSignal".into(), json!(signal));
                state.history(nop(i), true);
            }
            "HEALTHCHECK" => {
                let check = healthcheck(i, &state.shell()).map_err(|e| self.syntax(e))?;
                state.settings().insert("Healthcheck".into(), check);
                state.history(nop(i), true);
            }
            "ONBUILD" => {
                let mut triggers = state.get("OnBuild").as_array().cloned().unwrap_or_default();
                triggers.push(json!(i.rest));
                state
                    .settings()
                    .insert("OnBuild".into(), Value::Array(triggers));
                state.history(nop(i), true);
            }
            other => return Err(self.syntax(i.error(format!("{other} cannot be used here")))),
        }
        self.cache.put(
            &key,
            &Entry {
                config: state.config.clone(),
                layers: state.layers.clone(),
            },
        );
        self.finish_step(i, state);
        Ok(())
    }
}

/// `HEALTHCHECK [OPTIONS] CMD …` or `HEALTHCHECK NONE` as the config's
/// `Healthcheck` (durations in nanoseconds, as docker stores them).
fn healthcheck(i: &Instruction, shell: &[String]) -> std::result::Result<Value, dockerfile::Error> {
    if i.rest.trim().eq_ignore_ascii_case("NONE") {
        return Ok(json!({"Test": ["NONE"]}));
    }
    let (word, rest) = i
        .rest
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or((i.rest.trim(), ""));
    if !word.eq_ignore_ascii_case("CMD") {
        return Err(i.error("HEALTHCHECK takes NONE or [OPTIONS] CMD COMMAND"));
    }
    let inner = Instruction {
        rest: rest.trim().to_string(),
        ..i.clone()
    };
    let test = match inner.command() {
        Command::Exec(v) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v);
            t
        }
        Command::Shell(s) => {
            let _ = shell;
            vec!["CMD-SHELL".to_string(), s]
        }
    };
    let mut check = json!({"Test": test});
    for (flag, key) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(v) = i.flag(flag) {
            let ns = duration_ns(v)
                .ok_or_else(|| i.error(format!("--{flag}={v}: use e.g. 30s, 1m30s")))?;
            check[key] = json!(ns);
        }
    }
    if let Some(v) = i.flag("retries") {
        let n: u32 = v
            .parse()
            .map_err(|_| i.error(format!("--retries={v}: not a number")))?;
        check["Retries"] = json!(n);
    }
    Ok(check)
}

/// `1m30s`, `500ms`, `2h` in nanoseconds.
fn duration_ns(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += (value * scale) as u64;
        rest = &rest[unit_len..];
    }
    Some(total)
}
