//! A process's stdio: the output fifos read into its broadcast (and the
//! init's log), stdin kept for Attach, terminal size, attach and follow.

use super::*;

impl Tasks {
    /// Keeps the write end of a process's stdin fifo, for Attach. Read-write,
    /// so the open never waits for the shim's reader.
    pub(super) fn open_stdin(&self, key: &ProcessKey, path: &Path) {
        let writer = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path)
            .ok()
            .map(|w| Arc::new(tokio::sync::Mutex::new(w)));
        if let Some(p) = self.lock().processes.get_mut(key) {
            p.stdin = writer;
        }
    }

    /// Reads a process's fifos into its output (and, for the init, the log).
    pub(super) fn spawn_copiers(
        &self,
        bundle: &Path,
        readers: OutputReaders,
        output: broadcast::Sender<Chunk>,
        to_log: bool,
    ) {
        let log = to_log.then(|| Arc::new(Mutex::new(LogWriter::new(bundle, self.max_log))));
        // An exec's readers are the sessions that started it.
        let waits = !to_log || self.init_output_waits;
        tokio::spawn(logs::copy_fifo(
            readers.stdout,
            pb::StdioStream::Stdout,
            output.clone(),
            log.clone(),
            waits,
        ));
        if let Some(stderr) = readers.stderr {
            tokio::spawn(logs::copy_fifo(
                stderr,
                pb::StdioStream::Stderr,
                output,
                log,
                waits,
            ));
        }
    }

    pub async fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        shim_rpc!(
            self,
            shim,
            record,
            resize_pty,
            "ResizePty",
            ResizePtyRequest {
                exec_id: exec_id.to_string(),
                width,
                height,
            }
        )?;
        Ok(())
    }

    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let record = self.containers.resolve(id)?;
        let shim = self.running_shim(&record)?;
        if let Some(p) = self
            .lock()
            .processes
            .get_mut(&(record.id.clone(), exec_id.to_string()))
        {
            p.stdin = None;
        }
        shim_rpc!(
            self,
            shim,
            record,
            close_io,
            "CloseIO",
            CloseIORequest {
                exec_id: exec_id.to_string(),
                stdin: true,
            }
        )?;
        Ok(())
    }

    /// Writes to a process's stdin (Attach); waits while the process does
    /// not read, without holding anything else up.
    pub async fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> bool {
        use tokio::io::AsyncWriteExt;
        let writer = self
            .lock()
            .processes
            .get(&(id.to_string(), exec_id.to_string()))
            .and_then(|p| p.stdin.clone());
        match writer {
            Some(writer) => writer.lock().await.write_all(data).await.is_ok(),
            None => false,
        }
    }

    /// The output and exit of a process, for Attach.
    pub fn attach(&self, id: &str, exec_id: &str, before_start: bool) -> Result<Attached> {
        let record = self.containers.resolve(id)?;
        let key = (record.id.clone(), exec_id.to_string());
        if !exec_id.is_empty() && !self.lock().processes.contains_key(&key) {
            return Err(Error::NoExec {
                container: record.name.clone(),
                exec: exec_id.to_string(),
            });
        }
        // Attaching to a stopped init would wait for an exit that came and
        // went (docker refuses it too); a created one is about to start, and
        // so is one whose client says it starts it next (start -a).
        if exec_id.is_empty()
            && !before_start
            && !self.init_alive(&record.id)
            && !self.lock().starting.contains(&record.id)
            && record.status() != pb::container::Status::Created
            && record.status() != pb::container::Status::Restarting
        {
            return Err(Error::NotRunning(record.name.clone()));
        }
        let (output, exit) = self.process(&key);
        let tty = exec_id.is_empty() && record.settings().tty;
        let streams = self
            .lock()
            .processes
            .get(&key)
            .map_or(if tty { 1 } else { 2 }, |p| if tty { 1 } else { p.streams });
        Ok(Attached {
            output: output.subscribe(),
            exit,
            container_id: record.id,
            streams,
        })
    }

    /// The init's live output, for `logs -f`.
    pub fn follow(&self, id: &str) -> (broadcast::Receiver<Chunk>, watch::Receiver<Option<u32>>) {
        let (output, exit) = self.process(&(id.to_string(), String::new()));
        (output.subscribe(), exit)
    }
}

/// The daemon's read ends of one process's output fifos.
pub(super) struct OutputReaders {
    stdout: logs::FifoReader,
    stderr: Option<logs::FifoReader>,
}

impl OutputReaders {
    /// Opens them; done before the shim opens the write ends (see
    /// [`logs::open_reader`]), and dropped if it never does.
    pub(super) fn open(
        container: &str,
        stdout: &Path,
        stderr: Option<&Path>,
    ) -> Result<OutputReaders> {
        let open = |path: &Path| {
            logs::open_reader(path).map_err(|e| Error::Stdio {
                container: container.to_string(),
                detail: format!("cannot open {}: {e}", path.display()),
            })
        };
        Ok(OutputReaders {
            stdout: open(stdout)?,
            stderr: stderr.map(open).transpose()?,
        })
    }
}

/// The fifos of one process in `dir` (`PREFIX-stdout`, `-stderr` unless it
/// has a terminal, `-stdin` when it keeps stdin open).
pub(super) fn make_stdio(
    name: &str,
    dir: &Path,
    prefix: &str,
    tty: bool,
    stdin_open: bool,
) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>)> {
    let fifo = |stream: &str| -> Result<PathBuf> {
        let path = dir.join(format!("{prefix}-{stream}"));
        logs::make_fifo(&path).map_err(|e| Error::Stdio {
            container: name.to_string(),
            detail: format!("{}: {e}", path.display()),
        })?;
        Ok(path)
    };
    let stdout = fifo("stdout")?;
    let stderr = if tty { None } else { Some(fifo("stderr")?) };
    let stdin = if stdin_open {
        Some(fifo("stdin")?)
    } else {
        None
    };
    Ok((stdout, stderr, stdin))
}
