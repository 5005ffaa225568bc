//! Image builds from a Dockerfile, with the semantics of docker's classic
//! builder: each stage starts at its `FROM`; `RUN`, `COPY` and `ADD` make
//! one layer each, metadata instructions none (an `empty_layer` history
//! entry); every step is looked up in the [`cache`] first.
//!
//! Where to start reading: [`Builds::build`] runs a whole build, in order:
//! 1. [`dockerfile::parse`] the text (errors name the line);
//! 2. the build context (a tar from the client) is unpacked with the
//!    pull's safe unpacker into a private scratch directory;
//! 3. each stage, each instruction ([`Build::step`]): a `RUN` runs in a
//!    real container made by the daemon's own [`Containers`] and [`Tasks`]
//!    (shim and runtime, network `none`) on an active snapshot of the
//!    parent; its overlay upper directory becomes the layer
//!    ([`layer::diff_upper`]); a `COPY` writes its layer tar straight from
//!    the sources ([`context`]); a layer is stored verified in the content
//!    store and unpacked onto a snapshot committed by chain ID, exactly as
//!    a pulled layer is;
//! 4. the image is recorded like a pulled one
//!    ([`Images::unpack_and_record`]), so `run`, `save` and `push` take it.
//!
//! A build holds the garbage collector off (as a pull does) until its
//! image is recorded; a failed step removes its container and snapshot,
//! and so does a build whose client went away (its output channel closes:
//! the running `RUN` is killed, nothing is committed).
//!
//! Also here: heredocs (`RUN <<EOF`, `COPY <<EOF file`, [`dockerfile`]),
//! `ADD` of a URL ([`Build::download`]), the base image's `ONBUILD`
//! triggers (run right after its `FROM`), and [`import`] (`docker
//! import`: a root filesystem tar as a one-layer image, `--change` lines
//! run as this builder's steps).

pub mod cache;
pub mod changes;
pub mod context;
pub mod dockerfile;
pub mod import;
pub mod layer;
pub mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_proto::v1 as pb;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc};

use crate::content::Digest;
use crate::images::{self, Descriptor, ImageRecord, Images, Platform, Resolved};
use crate::metadata::Table;
use crate::tasks::Tasks;
use cache::{Cache, Entry};
use dockerfile::{Command, Instruction};

/// Errors of a build. The message is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {source}")]
    Syntax {
        file: String,
        source: dockerfile::Error,
    },
    #[error("step {step} ({instruction}): {detail}")]
    Step {
        step: usize,
        instruction: String,
        detail: String,
    },
    #[error(
        "step {step} ({instruction}): the command '{command}' returned a non-zero code: {code}"
    )]
    RunFailed {
        step: usize,
        instruction: String,
        command: String,
        code: u32,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("build cancelled at step {step}: the client went away")]
    Cancelled { step: usize },
    #[error("cannot build: {0}")]
    Internal(String),
}

type Result<T> = std::result::Result<T, Error>;

/// What a build is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dockerfile: String,
    pub dockerfile_name: String,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: String,
    pub no_cache: bool,
    pub labels: BTreeMap<String, String>,
}

/// The build service's parts: the daemon's images and tasks, and a
/// directory of its own (cache entries, scratch space of running builds).
pub struct Builds {
    pub images: Arc<Images>,
    pub tasks: Arc<Tasks>,
    pub dir: PathBuf,
}

/// An image being built: its config (as docker writes it) and its layers.
#[derive(Debug, Clone)]
struct State {
    config: Value,
    layers: Vec<Descriptor>,
}

impl State {
    fn scratch() -> State {
        State {
            config: json!({
                "architecture": Platform::host().architecture,
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }),
            layers: Vec::new(),
        }
    }

    /// The image ID: the digest of the config.
    fn id(&self) -> Digest {
        Digest::of(&serde_json::to_vec(&self.config).unwrap_or_default())
    }

    fn diff_ids(&self) -> Vec<String> {
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn chain(&self) -> Option<String> {
        images::chain_ids(&self.diff_ids()).pop()
    }

    /// The `config` object (Env, Cmd, …), made if missing.
    fn settings(&mut self) -> &mut Map<String, Value> {
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        match &mut self.config["config"] {
            Value::Object(map) => map,
            _ => unreachable!("made an object above"),
        }
    }

    fn get(&self, key: &str) -> &Value {
        &self.config["config"][key]
    }

    fn env(&self) -> BTreeMap<String, String> {
        self.get("Env")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set_env(&mut self, key: &str, value: &str) {
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

    fn shell(&self) -> Vec<String> {
        match self.get("Shell").as_array() {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }

    fn history(&mut self, created_by: String, empty_layer: bool) {
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

    fn push_layer(&mut self, desc: Descriptor, diff_id: String) {
        self.layers.push(desc);
        if let Value::Array(d) = &mut self.config["rootfs"]["diff_ids"] {
            d.push(Value::String(diff_id));
        }
    }
}

/// `2026-12-04T19:57:23Z` for the current time (UTC, civil calendar from
/// days since the epoch).
fn now_rfc3339() -> String {
    let secs = crate::clock::now_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Days since 1970-01-01 to year/month/day (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A stage: its name (`AS NAME`), its state, and the `ARG`s it declared.
struct Stage {
    name: Option<String>,
    state: State,
    args: BTreeMap<String, String>,
    /// Whether this stage set CMD (an ENTRYPOINT clears an inherited one).
    cmd_set: bool,
}

/// One running build.
struct Build<'a> {
    builds: &'a Builds,
    out: mpsc::UnboundedSender<String>,
    context: PathBuf,
    scratch: PathBuf,
    options: &'a Options,
    cache: Cache,
    step: usize,
    total: usize,
    meta_args: BTreeMap<String, String>,
    stages: Vec<Stage>,
    scratch_files: u64,
}

impl Builds {
    /// Runs the build of `options` over the context tar at `context_tar`;
    /// the output goes to `out`. Returns the image's ID.
    pub async fn build(
        &self,
        options: &Options,
        context_tar: &Path,
        out: mpsc::UnboundedSender<String>,
    ) -> Result<String> {
        let instructions =
            dockerfile::parse(&options.dockerfile).map_err(|source| Error::Syntax {
                file: options.dockerfile_name.clone(),
                source,
            })?;
        for tag in &options.tags {
            if images::canonical_name(tag).is_none() {
                return Err(Error::Invalid(format!(
                    "invalid tag {tag:?}: use NAME[:TAG], e.g. myapp:1"
                )));
            }
        }
        let _working = self.images.gc_lock.read().await;
        let scratch = self.dir.join("tmp").join(crate::volumes::random_hex(8));
        crate::private::create_dir(&self.dir).map_err(internal)?;
        std::fs::create_dir_all(&scratch).map_err(internal)?;
        let context = scratch.join("context");
        std::fs::create_dir_all(&context).map_err(internal)?;
        let result = async {
            let (ctx, tar) = (context.clone(), context_tar.to_path_buf());
            tokio::task::spawn_blocking(move || -> Result<()> {
                let file = std::fs::File::open(&tar).map_err(internal)?;
                crate::unpack::apply(&ctx, std::io::BufReader::new(file))
                    .map(|_| ())
                    .map_err(|e| Error::Invalid(format!("cannot read the build context: {e}")))
            })
            .await
            .map_err(internal)??;
            let mut build = Build {
                builds: self,
                out,
                context: context.clone(),
                scratch: scratch.clone(),
                options,
                cache: Cache {
                    dir: self.dir.join("cache"),
                },
                step: 0,
                total: 0,
                meta_args: BTreeMap::new(),
                stages: Vec::new(),
                scratch_files: 0,
            };
            build.run(instructions).await
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch);
        result
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

impl Build<'_> {
    fn say(&self, text: impl Into<String>) {
        let _ = self.out.send(text.into());
    }

    fn fail(&self, i: &Instruction, detail: impl std::fmt::Display) -> Error {
        Error::Step {
            step: self.step,
            instruction: i.text(),
            detail: detail.to_string(),
        }
    }

    async fn run(&mut self, instructions: Vec<Instruction>) -> Result<String> {
        // ARGs before the first FROM: usable in FROM lines only.
        let mut iter = instructions.into_iter().peekable();
        while let Some(i) = iter.next_if(|i| i.keyword == "ARG") {
            let vars = self.meta_args.clone();
            let lookup = dockerfile::lookup(&vars);
            for (k, default) in dockerfile::pairs(&i, &lookup).map_err(|e| self.syntax(e))? {
                let value = self
                    .options
                    .build_args
                    .get(&k)
                    .cloned()
                    .or(default)
                    .unwrap_or_default();
                self.meta_args.insert(k, value);
            }
        }
        let mut stages: Vec<(Instruction, Vec<Instruction>)> = Vec::new();
        for i in iter {
            if i.keyword == "FROM" {
                stages.push((i, Vec::new()));
            } else if let Some(last) = stages.last_mut() {
                last.1.push(i);
            }
        }
        if !self.options.target.is_empty() {
            let found = stages.iter().position(|(from, _)| {
                stage_alias(from).is_some_and(|a| a.eq_ignore_ascii_case(&self.options.target))
            });
            match found {
                Some(n) => stages.truncate(n + 1),
                None => {
                    return Err(Error::Invalid(format!(
                        "target stage {:?} could not be found in {}",
                        self.options.target, self.options.dockerfile_name
                    )))
                }
            }
        }
        self.total = stages.iter().map(|(_, body)| 1 + body.len()).sum();
        for (from, body) in stages {
            self.cancelled()?;
            self.from(&from).await?;
            for i in body {
                self.cancelled()?;
                self.step(&i).await?;
            }
        }
        self.cancelled()?;
        let mut last = self
            .stages
            .pop()
            .ok_or_else(|| Error::Invalid("no stage to build".into()))?;
        if !self.options.labels.is_empty() {
            let mut labels = last
                .state
                .get("Labels")
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (k, v) in &self.options.labels {
                labels.insert(k.clone(), json!(v));
            }
            last.state
                .settings()
                .insert("Labels".into(), Value::Object(labels));
        }
        self.record(&last.state).await
    }

    /// A build whose client left (Ctrl-C, a dropped stream) stops before
    /// its next step: the service closes the output channel then.
    fn cancelled(&self) -> Result<()> {
        if self.out.is_closed() {
            return Err(Error::Cancelled { step: self.step });
        }
        Ok(())
    }

    fn syntax(&self, e: dockerfile::Error) -> Error {
        Error::Syntax {
            file: self.options.dockerfile_name.clone(),
            source: e,
        }
    }

    fn announce(&mut self, i: &Instruction) {
        self.step += 1;
        self.say(format!("STEP {}/{}: {}\n", self.step, self.total, i.text()));
    }

    async fn from(&mut self, i: &Instruction) -> Result<()> {
        self.announce(i);
        let vars = self.meta_args.clone();
        let lookup = dockerfile::lookup(&vars);
        let base = dockerfile::expand(
            i.rest.split_whitespace().next().unwrap_or_default(),
            i.escape,
            &lookup,
        )
        .map_err(|m| self.syntax(i.error(m)))?;
        let state = if base.eq_ignore_ascii_case("scratch") {
            State::scratch()
        } else if let Some(stage) = self.stage(&base) {
            stage.state.clone()
        } else {
            self.image(&base).await.map_err(|e| self.fail(i, e))?
        };
        let mut state = state;
        // Triggers are the base's: they run now, in this stage, and are
        // not inherited by what is built on it.
        let triggers: Vec<String> = state
            .settings()
            .remove("OnBuild")
            .and_then(|t| t.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        self.say(format!(" ---> {}\n", short(&state.id())));
        self.stages.push(Stage {
            name: stage_alias(i),
            state,
            args: BTreeMap::new(),
            cmd_set: false,
        });
        if !triggers.is_empty() {
            let s = if triggers.len() == 1 { "" } else { "s" };
            self.say(format!("# Executing {} build trigger{s}\n", triggers.len()));
        }
        for text in triggers {
            let parsed = dockerfile::parse_instructions(&text)
                .map_err(|e| self.fail(i, format!("the base's ONBUILD {text:?}: {}", e.message)))?;
            for trigger in parsed {
                self.total += 1;
                self.cancelled()?;
                self.step(&trigger).await?;
            }
        }
        Ok(())
    }

    /// A previous stage by name or index.
    fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages
            .iter()
            .find(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .or_else(|| name.parse::<usize>().ok().and_then(|n| self.stages.get(n)))
    }

    /// An image's state: stored, else pulled.
    async fn image(&self, name: &str) -> std::result::Result<State, String> {
        let images = &self.builds.images;
        let record = match images.get(name) {
            Ok(r) => r,
            Err(images::Error::NotFound(_)) => {
                self.say(format!("Pulling {name}\n"));
                let (tx, _rx) = mpsc::unbounded_channel();
                images
                    .pull(name, &Platform::host(), None, true, tx)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Err(e) => return Err(e.to_string()),
        };
        let digest = Digest::parse(&record.config.digest).map_err(|e| e.to_string())?;
        let bytes = images
            .content
            .read_blob(&digest)
            .map_err(|e| e.to_string())?;
        let config: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{name}: invalid image config: {e}"))?;
        Ok(State {
            config,
            layers: record.layers,
        })
    }

    fn current(&mut self) -> &mut Stage {
        self.stages
            .last_mut()
            .expect("a FROM starts every stage before its instructions")
    }

    /// Variables an instruction's arguments see: the stage's ENV over its ARGs.
    fn vars(&mut self) -> BTreeMap<String, String> {
        let stage = self.current();
        let mut vars = stage.args.clone();
        vars.extend(stage.state.env());
        vars
    }

    async fn step(&mut self, i: &Instruction) -> Result<()> {
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

    fn finish_step(&mut self, _i: &Instruction, state: State) {
        self.say(format!(" ---> {}\n", short(&state.id())));
        self.current().state = state;
    }

    fn expand(
        &self,
        i: &Instruction,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String> {
        dockerfile::expand(text.trim(), i.escape, lookup).map_err(|m| self.syntax(i.error(m)))
    }

    /// Stores `layer`, applies it onto the state's chain, adds it.
    fn commit_layer(&self, i: &Instruction, state: &mut State, layer: &layer::Layer) -> Result<()> {
        add_layer(&self.builds.images, state, layer).map_err(|e| self.fail(i, e))
    }

    fn scratch_file(&mut self, what: &str) -> PathBuf {
        self.scratch_files += 1;
        self.scratch.join(format!("{what}-{}", self.scratch_files))
    }

    /// The layer a `COPY`/`ADD` makes, the sum of its inputs, and its
    /// destination as written in the history.
    async fn copy(
        &mut self,
        i: &Instruction,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<(layer::Layer, String, String)> {
        let mut list = match i.command() {
            Command::Exec(v) => v,
            Command::Shell(s) => {
                dockerfile::words(&s, i.escape, lookup).map_err(|m| self.syntax(i.error(m)))?
            }
        };
        let dest = list.pop().unwrap_or_default();
        let mut sources = list;
        let urls = sources.iter().any(|s| s.contains("://"));
        if i.flag("checksum").is_some() && !urls {
            return Err(self.fail(i, "--checksum is for a URL source"));
        }
        // Sources made here rather than taken from the context: heredocs,
        // downloads. Downloads are never unpacked, as docker's.
        let generated = if !i.heredocs.is_empty() {
            let (dir, names) = self.heredoc_files(i, &sources, lookup)?;
            sources = names;
            Some((dir, "heredoc"))
        } else if urls {
            let (dir, names) = self.download(i, &sources).await?;
            sources = names;
            Some((dir, "download"))
        } else {
            None
        };
        if sources.is_empty() {
            return Err(
                self.syntax(i.error(format!("{} needs a source and a destination", i.keyword)))
            );
        }
        let state = self.current().state.clone();
        let workdir = state.get("WorkingDir").as_str().unwrap_or("/").to_string();
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{}/{dest}", workdir.trim_end_matches('/'))
        };
        let dest_rel = context::lexical(&dest_abs).unwrap_or_default();
        let layer_dirs = self.layer_dirs(&state);
        // Into a directory: one named so (`dir/`, `.`), several sources, or
        // a directory the image already has (resolved inside each layer).
        let dest_dir = dest.ends_with('/')
            || dest == "."
            || dest.ends_with("/.")
            || sources.len() > 1
            || sources.iter().any(|s| s.contains(['*', '?']))
            || layer_dirs.iter().any(|l| is_dir_in(l, &dest_rel));
        let owner = match i.flag("chown") {
            Some(user) => {
                let (uid, gid, _) = crate::bundle::resolve_user(user, &layer_dirs)
                    .map_err(|e| self.fail(i, format!("--chown={user}: {e}")))?;
                Some((uid, gid))
            }
            None => None,
        };
        let mode = match i.flag("chmod") {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .map_err(|_| self.syntax(i.error(format!("--chmod={m}: not an octal mode"))))?,
            ),
            None => None,
        };
        // The sources' root: the context, or another stage's (or image's) filesystem.
        let mut view = None;
        let (root, what, strict) = match i.flag("from") {
            Some(from) => {
                let from_state = match self.stage(from) {
                    Some(s) => s.state.clone(),
                    None => self.image(from).await.map_err(|e| self.fail(i, e))?,
                };
                let mounted = View::mount(self, &from_state).map_err(|e| self.fail(i, e))?;
                let root = mounted.path.clone();
                view = Some(mounted);
                (root, "source stage", false)
            }
            None => match &generated {
                Some((dir, what)) => (dir.clone(), *what, true),
                None => (self.context.clone(), "build context", true),
            },
        };
        let path = self.scratch_file("layer");
        let is_add = i.keyword == "ADD" && !urls;
        let fail = |e: String| Error::Step {
            step: self.step,
            instruction: i.text(),
            detail: e,
        };
        let result = tokio::task::spawn_blocking(
            move || -> std::result::Result<(layer::Layer, String), String> {
                let source = context::Source {
                    root: &root,
                    what,
                    strict,
                };
                let mut writer = layer::LayerWriter::create(path).map_err(|e| e.to_string())?;
                let mut copier =
                    context::Copier::new(&mut writer.tar, context::Overrides { owner, mode });
                for pattern in &sources {
                    for (rel, host) in source.resolve(pattern).map_err(|e| e.to_string())? {
                        let is_dir = host.is_dir();
                        let target = if is_dir || !dest_dir {
                            dest_rel.clone()
                        } else {
                            dest_rel.join(rel.file_name().unwrap_or_default())
                        };
                        if is_add
                            && !is_dir
                            && copier
                                .extract(&host, &dest_rel)
                                .map_err(|e| e.to_string())?
                        {
                            continue;
                        }
                        copier.copy(&host, &target).map_err(|e| e.to_string())?;
                    }
                }
                let sum = copier.checksum();
                let layer = writer.finish().map_err(|e| e.to_string())?;
                Ok((layer, sum))
            },
        )
        .await
        .map_err(internal)?;
        drop(view);
        let (layer, sum) = result.map_err(fail)?;
        Ok((layer, sum, dest_abs))
    }

    /// `ADD URL… DEST`: each URL fetched into a scratch directory under
    /// its last path segment (mode 0600, as docker's), checked against
    /// `--checksum=sha256:HEX` when given.
    async fn download(
        &mut self,
        i: &Instruction,
        sources: &[String],
    ) -> Result<(PathBuf, Vec<String>)> {
        use sha2::Digest as _;
        use std::os::unix::fs::OpenOptionsExt;
        use tokio::io::AsyncWriteExt;
        if i.keyword != "ADD" {
            return Err(self.fail(i, "COPY takes no URL: use ADD"));
        }
        let want = i.flag("checksum");
        if want.is_some() && sources.len() != 1 {
            return Err(self.fail(i, "--checksum takes exactly one URL source"));
        }
        let dir = self.scratch_file("downloads");
        std::fs::create_dir_all(&dir).map_err(internal)?;
        crate::registry::install_crypto_provider();
        let client = reqwest::Client::builder().build().map_err(internal)?;
        let mut names = Vec::new();
        for url in sources {
            if !url.contains("://") {
                return Err(self.fail(i, format!("{url}: with a URL, every source is a URL")));
            }
            let path_part = url.split(['?', '#']).next().unwrap_or_default();
            let name = path_part
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(_, path)| path.rsplit('/').next())
                .filter(|n| !n.is_empty() && *n != "." && *n != "..")
                .unwrap_or("download")
                .to_string();
            let cannot = |e: &dyn std::fmt::Display| format!("cannot download {url}: {e}");
            let mut response = client
                .get(url.as_str())
                .send()
                .await
                .map_err(|e| self.fail(i, cannot(&e)))?;
            if !response.status().is_success() {
                return Err(self.fail(i, cannot(&response.status())));
            }
            let path = dir.join(&name);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(internal)?;
            let mut file = tokio::fs::File::from_std(file);
            let mut hasher = sha2::Sha256::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.fail(i, cannot(&e)))?
            {
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(internal)?;
            }
            file.flush().await.map_err(internal)?;
            let got = format!("sha256:{:x}", hasher.finalize());
            if let Some(want) = want {
                if want != got {
                    return Err(self.fail(
                        i,
                        format!("checksum of {url} does not match: expected {want}, got {got}"),
                    ));
                }
            }
            names.push(name);
        }
        Ok((dir, names))
    }

    /// `COPY <<EOF /dest`: each here-document written to a file named as
    /// it is, in a scratch directory the copy takes as its sources' root
    /// (so nothing of the context can mix in).
    fn heredoc_files(
        &mut self,
        i: &Instruction,
        sources: &[String],
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<(PathBuf, Vec<String>)> {
        if i.flag("from").is_some() {
            return Err(self.fail(i, "heredocs cannot be copied --from another stage"));
        }
        let dir = self.scratch_file("heredocs");
        std::fs::create_dir_all(&dir).map_err(internal)?;
        let mut names = Vec::new();
        for source in sources {
            let marker = source.trim_start_matches("<<").trim_start_matches('-');
            let found = source
                .starts_with("<<")
                .then(|| i.heredocs.iter().find(|h| h.name == marker))
                .flatten();
            let Some(h) = found else {
                return Err(self.fail(
                    i,
                    format!("{source}: with heredocs, every source is a heredoc"),
                ));
            };
            let body = if h.expand {
                dockerfile::expand(&h.body, i.escape, lookup)
                    .map_err(|m| self.syntax(i.error(m)))?
            } else {
                h.body.clone()
            };
            let name = Path::new(&h.name)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| self.fail(i, format!("<<{}: not a file name", h.name)))?;
            let path = dir.join(&name);
            std::fs::write(&path, body).map_err(internal)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(internal)?;
            names.push(name);
        }
        Ok((dir, names))
    }

    /// The upper directories of the state's layers, topmost first (where
    /// `--chown` names are looked up, as a container's would be).
    fn layer_dirs(&self, state: &State) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = images::chain_ids(&state.diff_ids())
            .iter()
            .filter_map(|c| self.builds.images.snapshots.upper_dir(c).ok())
            .collect();
        dirs.reverse();
        dirs
    }

    /// Runs a `RUN` in a container on the state and commits what it changed.
    async fn run_step(
        &mut self,
        i: &Instruction,
        state: &mut State,
        args: &BTreeMap<String, String>,
    ) -> Result<()> {
        let (argv, created_by) = match i.command() {
            Command::Exec(v) => {
                let shown = v.join(" ");
                (v, shown)
            }
            Command::Shell(s) => {
                let mut v = state.shell();
                v.push(s);
                let shown = v.join(" ");
                (v, shown)
            }
        };
        // Build arguments reach the command as variables, under its ENV.
        let env_now = state.env();
        let env: Vec<String> = args
            .iter()
            .filter(|(k, _)| !env_now.contains_key(*k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let container =
            Container::create(self, state, argv.clone(), env).map_err(|e| self.fail(i, e))?;
        let outcome = container.run(self).await;
        let result = match outcome {
            Ok(0) => {
                let path = self.scratch_file("layer");
                let upper = container.upper.clone();
                tokio::task::spawn_blocking(move || -> std::result::Result<layer::Layer, String> {
                    let mut writer = layer::LayerWriter::create(path).map_err(|e| e.to_string())?;
                    layer::diff_upper(&upper, &mut writer.tar).map_err(|e| e.to_string())?;
                    writer.finish().map_err(|e| e.to_string())
                })
                .await
                .map_err(internal)
                .and_then(|r| r.map_err(|e| self.fail(i, e)))
            }
            Ok(code) => Err(Error::RunFailed {
                step: self.step,
                instruction: i.text(),
                command: created_by.clone(),
                code,
            }),
            Err(_) if self.out.is_closed() => Err(Error::Cancelled { step: self.step }),
            Err(e) => Err(self.fail(i, e)),
        };
        // Force: a cancelled step's process is still running; it is killed.
        container.remove(&self.builds.tasks).await;
        self.cancelled()?;
        let layer = result?;
        self.commit_layer(i, state, &layer)?;
        state.history(created_by, false);
        Ok(())
    }

    /// Writes config and manifest, and records the image under each tag
    /// (or its ID alone).
    async fn record(&self, state: &State) -> Result<String> {
        let names: Vec<String> = self
            .options
            .tags
            .iter()
            .filter_map(|t| images::canonical_name(t))
            .collect();
        let id = record_image(&self.builds.images, state, &names).await?;
        self.say(format!("Successfully built {}\n", short(&id)));
        for t in &self.options.tags {
            self.say(format!("Successfully tagged {t}\n"));
        }
        Ok(id.to_string())
    }
}

/// Stores `layer` (verified), applies it onto the state's chain as a
/// committed snapshot, and adds it to the state.
fn add_layer(
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
async fn record_image(images: &Images, state: &State, names: &[String]) -> Result<Digest> {
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
    let desc = Descriptor {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size: bytes.len() as i64,
        platform: None,
        annotations: BTreeMap::new(),
    };
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
            platform: Platform::host(),
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
fn manifest_for(
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
    let docker = layers.iter().all(|l| {
        DOCKER
            .iter()
            .any(|(oci, d)| l.media_type == *oci || l.media_type == *d)
    });
    let convert = |l: &Descriptor| -> Descriptor {
        let media_type = DOCKER
            .iter()
            .find(|(oci, d)| l.media_type == *oci || l.media_type == *d)
            .map_or(l.media_type.clone(), |(oci, d)| {
                if docker {
                    d.to_string()
                } else {
                    oci.to_string()
                }
            });
        Descriptor {
            media_type,
            ..l.clone()
        }
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

/// Whether `rel` is a directory in the layer directory `root`, resolved
/// with `root` as `/` (a layer's symlinks never reach the host).
fn is_dir_in(root: &Path, rel: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(dir) = std::fs::File::open(root) else {
        return false;
    };
    berth_oci::safe_path::open_in_root(dir.as_raw_fd(), rel, libc::O_PATH | libc::O_DIRECTORY)
        .is_ok()
}

/// The name of `FROM IMAGE AS NAME`.
fn stage_alias(from: &Instruction) -> Option<String> {
    let parts: Vec<&str> = from.rest.split_whitespace().collect();
    (parts.len() == 3).then(|| parts[2].to_string())
}

fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
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

/// A state's filesystem mounted read-only (a view snapshot), for
/// `COPY --from`; unmounted and removed when dropped.
struct View {
    path: PathBuf,
    key: Option<String>,
    images: Arc<Images>,
}

impl View {
    fn mount(build: &mut Build<'_>, state: &State) -> std::result::Result<View, String> {
        let path = build.scratch_file("from");
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        let images = build.builds.images.clone();
        let Some(chain) = state.chain() else {
            return Ok(View {
                path,
                key: None,
                images,
            });
        };
        let key = format!("build-view-{}", crate::volumes::random_hex(8));
        let mounts = images
            .snapshots
            .view(&key, Some(&chain), BTreeMap::new())
            .map_err(|e| e.to_string())?;
        let view = View {
            path,
            key: Some(key),
            images,
        };
        crate::containers::mount_rootfs("build", &mounts, &view.path).map_err(|e| e.to_string())?;
        Ok(view)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            crate::containers::unmount(&self.path);
            let _ = self.images.snapshots.remove(key);
        }
    }
}

/// The container a `RUN` runs in.
struct Container {
    id: String,
    upper: PathBuf,
}

impl Container {
    /// A container on the state's layers: its config goes in as a
    /// short-lived image record (the containers service makes containers
    /// of images), removed as soon as the container exists.
    fn create(
        build: &Build<'_>,
        state: &State,
        argv: Vec<String>,
        env: Vec<String>,
    ) -> std::result::Result<Container, String> {
        let images = &build.builds.images;
        let config = serde_json::to_vec(&state.config).map_err(|e| e.to_string())?;
        let digest = Digest::of(&config);
        images
            .content
            .write_bytes(&digest, &config)
            .map_err(|e| e.to_string())?;
        let desc = Descriptor {
            media_type: "application/vnd.docker.container.image.v1+json".into(),
            digest: digest.to_string(),
            size: config.len() as i64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let name = format!("berth-build/{}", crate::volumes::random_hex(8));
        let record = ImageRecord {
            name: name.clone(),
            target: desc.clone(),
            manifest: desc.clone(),
            config: desc,
            platform: Platform::host(),
            layers: state.layers.clone(),
            chain_ids: images::chain_ids(&state.diff_ids()),
            size: 0,
            created: 0,
        };
        images
            .db
            .write(|txn| txn.put(Table::Images, &name, &record))
            .map_err(|e: crate::metadata::Error| e.to_string())?;
        let settings = pb::ContainerConfig {
            image: name.clone(),
            entrypoint_set: true,
            args: argv,
            env,
            network: "none".into(),
            ..Default::default()
        };
        let labels = BTreeMap::from([("berth.build".to_string(), "true".to_string())]);
        let created = build.builds.tasks.containers.create("", settings, labels);
        let _ = images
            .db
            .write(|txn| txn.delete(Table::Images, &name).map(|_| ()));
        let record = created.map_err(|e| e.to_string())?;
        let upper = images
            .snapshots
            .upper_dir(&record.snapshot_key)
            .map_err(|e| e.to_string())?;
        Ok(Container {
            id: record.id,
            upper,
        })
    }

    /// Starts it, forwards its output, and returns its exit status.
    async fn run(&self, build: &Build<'_>) -> std::result::Result<u32, String> {
        let tasks = &build.builds.tasks;
        let attached = tasks
            .attach(&self.id, "", true)
            .map_err(|e| e.to_string())?;
        tasks.start(&self.id, "").await.map_err(|e| e.to_string())?;
        let mut output = attached.output;
        let mut exit = attached.exit;
        let mut ended = 0;
        loop {
            tokio::select! {
                chunk = output.recv() => match chunk {
                    Ok(chunk) if chunk.data.is_empty() => {
                        ended += 1;
                        if ended >= attached.streams && exit.borrow().is_some() {
                            break;
                        }
                    }
                    Ok(chunk) => build.say(String::from_utf8_lossy(&chunk.data).into_owned()),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                changed = exit.changed() => {
                    if changed.is_err() || (exit.borrow().is_some() && ended >= attached.streams) {
                        break;
                    }
                }
                () = build.out.closed() => return Err("the client went away".into()),
            }
        }
        tasks.wait(&self.id, "").await.map_err(|e| e.to_string())
    }

    async fn remove(&self, tasks: &Arc<Tasks>) {
        if let Err(e) = tasks.delete_container(&self.id, true, true).await {
            eprintln!("berth-imaged: removing build container {}: {e}", self.id);
        }
    }
}
