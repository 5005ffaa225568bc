//! Starting shims and talking to them, exactly as containerd 1.6 does:
//! `containerd-shim-berth-v2 -namespace NS -address GRPC -publish-binary BIN
//! -id ID start` with the bundle as working directory, `TTRPC_ADDRESS` in
//! the environment and the runtime options (`containerd.runc.v1.Options`)
//! on stdin; the shim prints its ttrpc address, and the daemon speaks
//! `containerd.task.v2.Task` to it with the namespace in the metadata.
//!
//! The daemon's own containers (not the CRI's, whose pods group under one
//! shim) take a spare shim when one is ready ([`Spare`]): it was started
//! the same way ahead of need, so a container's start skips the shim's
//! process start (about 2 ms here), the largest step after the runtime's.
//! A spare starts at the idle priority ([`crate::idle`]), so that its start
//! does not compete with the container that just started.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::shim::shim_ttrpc_async::TaskClient;

use crate::idle::IdlePriority;
use crate::spawn::{Spawn, Streams};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run the shim {binary}: {source} (is it on the daemon's PATH?)")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("shim {binary} start failed: {detail}")]
    Start { binary: String, detail: String },
    #[error("cannot connect to the shim at {address}: {detail}")]
    Connect { address: String, detail: String },
}

/// How the daemon starts shims.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The shim binary, a path or a name on PATH.
    pub binary: String,
    /// The runtime the shim drives (`binary_name` of the options).
    pub runtime: String,
    /// The runtime's `--root`.
    pub runtime_root: PathBuf,
    pub namespace: String,
    /// The daemon's gRPC socket (`-address`).
    pub grpc_address: PathBuf,
    /// The ttrpc events socket (`TTRPC_ADDRESS`).
    pub events_address: PathBuf,
    /// Asks berth's shim to start each init at Create (one runtime process
    /// less); the daemon then sends no Start for an init without stdin
    /// (`Tasks::start_claimed`). Only where every Create is followed at
    /// once by its Start, as the daemon's own tasks are (not the CRI's,
    /// whose kubelet starts when it chooses), and only with berth's shim:
    /// another ignores it, and its tasks would never be started.
    pub start_at_create: bool,
    /// Where a spare shim waits, if this launcher keeps one.
    pub spare: Option<Arc<Spare>>,
}

/// The shim's environment variable for [`Launcher::start_at_create`].
const START_AT_CREATE_ENV: &str = "BERTH_SHIM_START_AT_CREATE";
/// The shim's environment variable that makes it a spare: it exits when the
/// daemon's connection ends before a container's Create came.
const SPARE_ENV: &str = "BERTH_SHIM_SPARE";

/// One shim started ahead of need, connected and serving nothing. A start
/// takes it and writes its address into the container's bundle; the next
/// is started once that start is done ([`Launcher::refill_spare`]). The
/// daemon holds its only connection: when the daemon goes, even killed,
/// the spare goes too (and one it never connected to, the daemon gone
/// half-way through its start, after a minute).
pub struct Spare {
    /// The working directory of its `start` (which writes the runtime
    /// options and the address there, as into a bundle).
    dir: PathBuf,
    /// The policy a spare started at the idle priority gets back once
    /// connected; `None` where the daemon cannot give it back.
    idle: Option<IdlePriority>,
    slot: Mutex<SpareSlot>,
}

/// A spare ready to be taken, with a pidfd of its process (from its
/// Connect) that tells whether it still lives.
struct Ready {
    shim: Shim,
    process: Option<std::os::fd::OwnedFd>,
}

impl Ready {
    /// Whether its process has ended (killed by hand or by the OOM killer):
    /// a pidfd reads as ready once its process exits.
    fn ended(&self) -> bool {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.process else {
            return false;
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }
}

/// A pidfd of `pid`, if the kernel has them.
fn pidfd(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a descriptor the kernel just gave us, owned here alone.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

#[derive(Default)]
struct SpareSlot {
    shim: Option<Ready>,
    /// A spare is being started.
    filling: bool,
    /// The number of the last spare started: each has its own id, hence
    /// its own socket.
    started: u64,
}

impl Spare {
    /// A spare kept in `dir` (made, root's alone, if missing).
    pub fn new(dir: PathBuf) -> std::io::Result<Arc<Spare>> {
        crate::private::create_dir(&dir)?;
        // Numbered on from the daemon's start in microseconds: a daemon
        // started again with the same pid (pid 1 in a container) does not
        // reuse the id, hence the socket, of a spare its earlier life
        // handed to a container that still runs.
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Arc::new(Spare {
            dir,
            idle: IdlePriority::probe(),
            slot: Mutex::new(SpareSlot {
                started: since_epoch.as_micros() as u64,
                ..SpareSlot::default()
            }),
        }))
    }

    /// The id of the next spare: `spare-PID-N`.
    fn next_id(slot: &mut SpareSlot) -> String {
        slot.started += 1;
        format!("spare-{}-{}", std::process::id(), slot.started)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, SpareSlot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spare").field("dir", &self.dir).finish()
    }
}

/// A connected shim.
#[derive(Clone)]
pub struct Shim {
    pub client: TaskClient,
    pub address: String,
}

impl Launcher {
    /// The runtime options, as containerd passes them to `start` and in
    /// each Create.
    pub fn options(&self) -> Any {
        let mut options = Options::new();
        options.binary_name = self.runtime.clone();
        options.root = self.runtime_root.display().to_string();
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = options.write_to_bytes().unwrap_or_default();
        any
    }

    fn command(&self, id: &str, bundle: &Path) -> Spawn {
        let mut command = Spawn::new(&self.binary);
        command
            .arg("-namespace")
            .arg(&self.namespace)
            .arg("-address")
            .arg(&self.grpc_address)
            .arg("-publish-binary")
            .arg(std::env::current_exe().unwrap_or_default())
            .arg("-id")
            .arg(id)
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", &self.events_address);
        if self.start_at_create {
            command.env(START_AT_CREATE_ENV, "1");
        }
        command
    }

    /// A shim for container `id`: the spare if one is ready, else one
    /// started for it.
    pub async fn start(&self, id: &str, bundle: &Path) -> Result<Shim, Error> {
        let taken = self
            .spare
            .as_ref()
            .and_then(|spare| spare.slot().shim.take());
        if let Some(ready) = taken {
            if ready.ended() {
                // Dead (killed by hand, or by the OOM killer): dropped with
                // the socket it could not remove, and the container gets a
                // shim of its own.
                let _ = std::fs::remove_file(ready.shim.address.trim_start_matches("unix://"));
            } else {
                // Its address is the container's from now on: recovery and
                // `shim delete` look for it in the bundle. The runtime
                // options come with the Create. A spare that cannot be
                // handed over is dropped, and its shim goes with the
                // connection.
                let address = bundle.join("address");
                if crate::private::write_file(&address, ready.shim.address.as_bytes()).is_ok() {
                    return Ok(ready.shim);
                }
            }
        }
        self.start_new(id, bundle, None).await
    }

    /// Starts a spare shim in the background unless one is ready or on its
    /// way. Call once a container's start is done, so that the spare's
    /// start does not compete with it for the CPU.
    pub fn refill_spare(&self) {
        let Some(spare) = self.spare.clone() else {
            return;
        };
        let id = {
            let mut slot = spare.slot();
            if slot.shim.is_some() || slot.filling {
                return;
            }
            slot.filling = true;
            Spare::next_id(&mut slot)
        };
        let launcher = self.clone();
        tokio::spawn(async move {
            let ready = match launcher.start_new(&id, &spare.dir, Some(&spare)).await {
                Ok(shim) => launcher.ready(shim, &id, spare.idle).await,
                Err(e) => {
                    eprintln!("berth-imaged: cannot start a spare shim: {e}");
                    None
                }
            };
            let mut slot = spare.slot();
            slot.filling = false;
            slot.shim = ready;
        });
    }

    /// A started spare made ready: a pidfd of its process, its pid from a
    /// Connect (for `id`), and, if it started idle, its threads given the
    /// daemon's policy back. A spare that started idle and cannot be given
    /// it back is dropped (it goes with its connection).
    async fn ready(&self, shim: Shim, id: &str, idle: Option<IdlePriority>) -> Option<Ready> {
        let connect = api::ConnectRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let ctx = context(&self.namespace, Some(std::time::Duration::from_secs(10)));
        let pid = match shim.client.connect(ctx, &connect).await {
            Ok(answer) if answer.shim_pid > 0 => Ok(answer.shim_pid),
            Ok(_) => Err("its Connect named no process".to_string()),
            Err(e) => Err(format!("its Connect failed: {e}")),
        };
        if let Some(idle) = idle {
            let restored = match &pid {
                Ok(pid) => idle.restore(*pid),
                Err(why) => Err(std::io::Error::other(why.clone())),
            };
            if let Err(e) = restored {
                eprintln!("berth-imaged: cannot take a spare shim off the idle priority: {e}");
                return None;
            }
        }
        Some(Ready {
            process: pid.ok().and_then(pidfd),
            shim,
        })
    }

    /// Runs `shim start` and connects to the shim it leaves running; a
    /// spare's start is marked so, at the idle priority where the daemon
    /// can give its own back.
    async fn start_new(
        &self,
        id: &str,
        bundle: &Path,
        spare: Option<&Spare>,
    ) -> Result<Shim, Error> {
        let mut command = self.command(id, bundle);
        if let Some(spare) = spare {
            command.env(SPARE_ENV, "1");
            if spare.idle.is_some() {
                command.idle();
            }
        }
        command.arg("start");
        let options = self.options().write_to_bytes().unwrap_or_default();
        // On a blocking thread: the spawn waits for the child's exec, and
        // the start for the shim's.
        let ran =
            tokio::task::spawn_blocking(move || command.output(Streams::Piped, &options)).await;
        let out = ran
            .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
            .map_err(|source| Error::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Start {
                binary: self.binary.clone(),
                detail: last_line(&stderr).unwrap_or_else(|| format!("exit {}", out.status)),
            });
        }
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        connect(&address).await
    }

    /// `shim delete`: the clean-up containerd runs after every shim
    /// teardown (kills what is left, unmounts, removes the runtime state).
    pub async fn delete(&self, id: &str, bundle: &Path) {
        let mut command = self.command(id, bundle);
        command.arg("-bundle").arg(bundle).arg("delete");
        let _ = tokio::task::spawn_blocking(move || command.output(Streams::Null, &[])).await;
    }
}

fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
}

/// Connects to a shim's ttrpc address (`unix:///path`, or a bare path).
pub async fn connect(address: &str) -> Result<Shim, Error> {
    let url = if address.starts_with("unix://") {
        address.to_string()
    } else {
        format!("unix://{address}")
    };
    let client = ttrpc::r#async::Client::connect(&url)
        .await
        .map_err(|e| Error::Connect {
            address: address.to_string(),
            detail: e.to_string(),
        })?;
    Ok(Shim {
        client: TaskClient::new(client),
        address: address.to_string(),
    })
}

/// A ttrpc context carrying the namespace, with a deadline or none.
pub fn context(namespace: &str, deadline: Option<std::time::Duration>) -> ttrpc::context::Context {
    let nanos = deadline.map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    let mut ctx = ttrpc::context::with_timeout(nanos);
    ctx.add(
        "containerd-namespace-ttrpc".to_string(),
        namespace.to_string(),
    );
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_started_again_does_not_reuse_its_earlier_lifes_spare_ids() {
        let dir = std::env::temp_dir().join(format!("berth-spare-ids-{}", std::process::id()));
        let earlier = Spare::new(dir.clone()).unwrap();
        let ids: Vec<String> = (0..3)
            .map(|_| Spare::next_id(&mut earlier.slot()))
            .collect();
        // The same pid, a moment later.
        std::thread::sleep(std::time::Duration::from_millis(1));
        let later = Spare::new(dir.clone()).unwrap();
        let next = Spare::next_id(&mut later.slot());
        assert!(!ids.contains(&next), "{next} in {ids:?}");
        // `spare-PID-N`, N rising (bench/scale.sh takes the highest for the
        // waiting spare).
        let number = |id: &str| id.rsplit('-').next().unwrap().parse::<u64>().unwrap();
        assert!(ids.windows(2).all(|w| number(&w[0]) < number(&w[1])));
        assert!(next.starts_with(&format!("spare-{}-", std::process::id())));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
