//! Image builds from a Dockerfile, with the semantics of docker's classic
//! builder: each stage starts at its `FROM`; `RUN`, `COPY` and `ADD` make
//! one layer each, metadata instructions none (an `empty_layer` history
//! entry); every step is looked up in the [`cache`] first.
//!
//! Where to start reading: [`Builds::build`] runs a whole build, in order:
//! 1. [`dockerfile::parse`] the text (errors name the line);
//! 2. the build context (a tar from the client) is unpacked with the
//!    pull's safe unpacker into a private scratch directory;
//! 3. each stage, each instruction ([`Build::step`], in `steps.rs`): a `RUN` runs in a
//!    real container made by the daemon's own [`Containers`] and [`Tasks`]
//!    (shim and runtime, network `none`) on an active snapshot of the
//!    parent; its overlay upper directory becomes the layer
//!    ([`layer::diff_upper`]); a `COPY` writes its layer tar straight from
//!    the sources (`copy.rs`, [`context`]); a layer is stored verified in the content
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
mod copy;
pub mod dockerfile;
pub mod import;
pub mod layer;
mod run;
pub mod service;
mod state;
mod steps;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::content::Digest;
use crate::images::{self, Images};
use crate::tasks::Tasks;
use cache::Cache;
use dockerfile::Instruction;
use state::{add_layer, now_rfc3339, record_image, State};

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
                    .pull(name, &images::host_platform(), None, true, tx)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Err(e) => return Err(e.to_string()),
        };
        let digest = Digest::parse(record.config.digest().as_ref()).map_err(|e| e.to_string())?;
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

/// The name of `FROM IMAGE AS NAME`.
fn stage_alias(from: &Instruction) -> Option<String> {
    let parts: Vec<&str> = from.rest.split_whitespace().collect();
    (parts.len() == 3).then(|| parts[2].to_string())
}

fn short(d: &Digest) -> String {
    d.hex().chars().take(12).collect()
}
