//! The runtime ↔ container-init protocol.
//!
//! A `SOCK_SEQPACKET` pair carries one message per packet. The phases run in
//! a fixed order, and each end can only send what its role may send:
//!
//! ```text
//! runtime                                init (cloned child)
//!    |                                     | without a user namespace or one joined by
//!    |                                     | path, the init makes its namespaces and the
//!    |                                     | mounts before the first cgroup one meanwhile
//!    | --- Prepared(state JSON) -------->  | id maps written, cgroups ready: the init joins
//!    |     + join files (SCM_RIGHTS)       | those it was not born in (clone3) through the
//!    |                                     | files the runtime opened for it
//!    | --- Start ----------------------->  | `run` without hooks or seccomp agent: at once
//!    | <-- RuntimeHooks -----------------  | namespaces and mounts ready, before pivot_root
//!    | --- RuntimeHooksDone ------------>  | (only when the spec has such hooks)
//!    | <-- SeccompListener(fd) ----------  | filter on; fd is the init's listener
//!    | --- SeccompDone ----------------->  | (only for notifying profiles) agent has it
//!    | <-- Ready ------------------------  | waiting for `start` on start.sock
//!    | --- Start ----------------------->  | (`run` otherwise: released here instead)
//!    | <-- Failed(message) --------------  | at any point; the init then exits
//!    | <-- ExecFailed(errno) ------------  | after the release: the launcher's
//!    |                                     | execve failed (`exec "ARG0": …`)
//! ```
//!
//! After `Ready` the channel's end of file is the news that the init has
//! exec'd the user's process (both ends are close-on-exec). `Ready`, the
//! wait for `Start` and `ExecFailed` may come from the sealed launcher the
//! init executes last (`launcher/launcher.rs`, see `sealed_init`), which
//! speaks these three messages with raw system calls: keep their bytes.
//!
//! `berth start` reads the same encoding on the start connection: end of
//! file when the process runs, else one `Failed` or `ExecFailed`.
//!
//! `exec` speaks the same protocol with its helper and the new process:
//!
//! ```text
//! berth exec                             helper C, then process G
//!    | <-- Pid(G) -----------------------  | C cloned G and exits
//!    | <-- SeccompListener(fd) ----------  | G: as above
//!    | --- SeccompDone ----------------->  |
//!    | <-- Failed(message) --------------  | G could not exec; or EOF: G exec'd
//! ```

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use berth_oci::fd_passing::{receive_fds, Wait, MAX_FDS};

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot create the init channel: {0}")]
    Create(nix::Error),
    #[error("init channel: {0}")]
    Io(nix::Error),
    #[error("the container init exited before it was ready")]
    Closed,
    #[error("unexpected message on the init channel: {0:?}")]
    Unexpected(Vec<u8>),
    #[error("init channel: {0}")]
    Receive(std::io::Error),
    #[error("cannot hand the init {0} descriptors in one message (at most {MAX_FDS})")]
    TooManyDescriptors(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The runtime wrote the id maps and made the cgroups with their
    /// limits, for the init to join; carries the state JSON the init hands
    /// to its hooks.
    Prepared(String),
    RuntimeHooks,
    RuntimeHooksDone,
    Ready,
    Failed(String),
    /// The seccomp listener is descriptor N of the sender (taken with
    /// `pidfd_getfd`: the number travels by `write`, see `seccomp::notify`).
    SeccompListener(i32),
    SeccompDone,
    /// `exec`: the pid of the process the helper cloned.
    Pid(i32),
    /// `run`: exec the user's process now (no start socket).
    Start,
    /// The launcher's execve of the user's process failed with this errno
    /// (it has no text of its own: see [`Message::start_failure`]).
    ExecFailed(i32),
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Prepared(text) => {
                let mut out = vec![b'P'];
                out.extend_from_slice(text.as_bytes());
                out
            }
            Message::RuntimeHooks => vec![b'H'],
            Message::RuntimeHooksDone => vec![b'D'],
            Message::Ready => vec![b'R'],
            Message::Failed(text) => {
                let mut out = vec![b'F'];
                out.extend_from_slice(text.as_bytes());
                out
            }
            Message::SeccompListener(fd) => format!("L{fd}").into_bytes(),
            Message::SeccompDone => vec![b'l'],
            Message::Pid(pid) => format!("p{pid}").into_bytes(),
            Message::Start => vec![b'S'],
            Message::ExecFailed(errno) => format!("E{errno}").into_bytes(),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Message, ChannelError> {
        Ok(match bytes.first() {
            Some(b'P') => Message::Prepared(String::from_utf8_lossy(&bytes[1..]).into_owned()),
            Some(b'H') => Message::RuntimeHooks,
            Some(b'D') => Message::RuntimeHooksDone,
            Some(b'R') => Message::Ready,
            Some(b'F') => Message::Failed(String::from_utf8_lossy(&bytes[1..]).into_owned()),
            Some(b'L') => Message::SeccompListener(number(bytes)?),
            Some(b'l') => Message::SeccompDone,
            Some(b'p') => Message::Pid(number(bytes)?),
            Some(b'S') => Message::Start,
            Some(b'E') => Message::ExecFailed(number(bytes)?),
            _ => return Err(ChannelError::Unexpected(bytes.to_vec())),
        })
    }

    /// What `start` reports for the init's answer to the release: `Failed`'s
    /// text, or for `ExecFailed` the text the init itself would have written
    /// for `program` (`args[0]`), `exec "ARG0": <io::Error>`.
    pub fn start_failure(&self, program: &str) -> String {
        match self {
            Message::Failed(text) => text.clone(),
            Message::ExecFailed(errno) => {
                exec_failure(program, std::io::Error::from_raw_os_error(*errno))
            }
            other => format!("unexpected answer of the container init: {other:?}"),
        }
    }
}

/// `exec "ARG0": <error>`: how a failed execve of the user's process reads,
/// whether the init or its launcher tried it.
pub fn exec_failure(program: &str, error: std::io::Error) -> String {
    format!("exec {program:?}: {error}")
}

/// The init's answer on the start connection (`berth start`): none when
/// the connection closed without a word (the process runs).
pub fn start_reply(bytes: &[u8]) -> Result<Option<Message>, ChannelError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    match Message::decode(bytes) {
        Ok(reply @ (Message::Failed(_) | Message::ExecFailed(_))) => Ok(Some(reply)),
        // An init made by a berth before the launcher wrote its reason as
        // plain text.
        _ => Ok(Some(Message::Failed(
            String::from_utf8_lossy(bytes).into_owned(),
        ))),
    }
}

/// Writes `Failed(text)` on the start connection (best effort: `start`
/// reports an init that exited without a word otherwise).
pub fn report_on_connection(connection: &OwnedFd, text: &str) {
    let _ = send(connection, &Message::Failed(text.to_string()));
}

fn number(bytes: &[u8]) -> Result<i32, ChannelError> {
    std::str::from_utf8(&bytes[1..])
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ChannelError::Unexpected(bytes.to_vec()))
}

/// The runtime's end.
pub struct RuntimeEnd(OwnedFd);
/// The container init's end.
pub struct InitEnd(OwnedFd);

/// A connected pair; both ends are close-on-exec.
pub fn pair() -> Result<(RuntimeEnd, InitEnd), ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(ChannelError::Create)?;
    Ok((RuntimeEnd(a), InitEnd(b)))
}

fn send(fd: &OwnedFd, message: &Message) -> Result<(), ChannelError> {
    send_with(fd, message, &[])
}

/// Sends `message` with the descriptors `handed` (`SCM_RIGHTS`).
fn send_with(fd: &OwnedFd, message: &Message, handed: &[OwnedFd]) -> Result<(), ChannelError> {
    if handed.len() > MAX_FDS {
        return Err(ChannelError::TooManyDescriptors(handed.len()));
    }
    let bytes = message.encode();
    let raw: Vec<RawFd> = handed.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let control: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    loop {
        let sent = sendmsg::<()>(
            fd.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            control,
            MsgFlags::empty(),
            None,
        );
        match sent {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(ChannelError::Io(e)),
            Ok(_) => return Ok(()),
        }
    }
}

fn receive(fd: &OwnedFd) -> Result<Message, ChannelError> {
    // Descriptors nobody asked for close with the vector.
    receive_with(fd).map(|(message, _)| message)
}

/// The next message and the descriptors it carries (close-on-exec).
fn receive_with(fd: &OwnedFd) -> Result<(Message, Vec<OwnedFd>), ChannelError> {
    // Room for the largest message (a state JSON), left unwritten: zeroing
    // 64 KiB touched 16 fresh pages, about 20 µs of the init's critical
    // path, where messages are a few hundred bytes.
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut reset = false;
    loop {
        match receive_fds(fd, buf.spare_capacity_mut(), Wait::Block) {
            // The peer closed with a message of ours unread (an init that
            // failed before it read `Prepared`): the kernel says so once,
            // before what the peer sent first is read.
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) && !reset => reset = true,
            Err(e) => return Err(ChannelError::Receive(e)),
            Ok((0, _)) => return Err(ChannelError::Closed),
            Ok((read, handed)) => {
                // SAFETY: the kernel initialised the first `read` bytes.
                unsafe { buf.set_len(read) };
                return Ok((Message::decode(&buf)?, handed));
            }
        }
    }
}

impl RuntimeEnd {
    /// `Prepared`, handing the init `handed` (see `container::create`).
    pub fn prepared(&self, state_json: &str, handed: &[OwnedFd]) -> Result<(), ChannelError> {
        send_with(&self.0, &Message::Prepared(state_json.to_string()), handed)
    }

    pub fn runtime_hooks_done(&self) -> Result<(), ChannelError> {
        send(&self.0, &Message::RuntimeHooksDone)
    }

    pub fn seccomp_done(&self) -> Result<(), ChannelError> {
        send(&self.0, &Message::SeccompDone)
    }

    /// Releases a ready init and waits until it has exec'd the user's
    /// process (end of file) or says why it could not (see
    /// [`Message::start_failure`]; `program` is the process's `args[0]`).
    pub fn start(&self, program: &str) -> Result<Result<(), String>, ChannelError> {
        self.send_start()?;
        self.started(program)
    }

    /// Releases the init ahead of its `Ready`: it executes the process as
    /// soon as it is ready, with nothing more to hear from the runtime
    /// (`run`, see `container::create::build`).
    pub fn send_start(&self) -> Result<(), ChannelError> {
        send(&self.0, &Message::Start)
    }

    /// [`RuntimeEnd::start`] once `Start` is sent.
    pub fn started(&self, program: &str) -> Result<Result<(), String>, ChannelError> {
        match receive(&self.0) {
            Err(ChannelError::Closed) => Ok(Ok(())),
            Ok(m @ (Message::Failed(_) | Message::ExecFailed(_))) => {
                Ok(Err(m.start_failure(program)))
            }
            Ok(other) => Err(ChannelError::Unexpected(other.encode())),
            Err(e) => Err(e),
        }
    }

    /// The next message of the init: `RuntimeHooks`, `Ready` or `Failed`.
    pub fn receive(&self) -> Result<Message, ChannelError> {
        receive(&self.0)
    }
}

impl InitEnd {
    /// The init's end as a sealed init image inherited it.
    pub fn from_fd(fd: OwnedFd) -> InitEnd {
        InitEnd(fd)
    }

    pub fn runtime_hooks(&self) -> Result<(), ChannelError> {
        send(&self.0, &Message::RuntimeHooks)
    }

    pub fn ready(&self) -> Result<(), ChannelError> {
        send(&self.0, &Message::Ready)
    }

    /// `exec`'s helper: the pid of the process it cloned.
    pub fn pid(&self, pid: i32) -> Result<(), ChannelError> {
        send(&self.0, &Message::Pid(pid))
    }

    /// Tells the runtime where the seccomp listener is and waits until the
    /// agent has it; the caller's copy closes here.
    pub fn hand_over_listener(&self, listener: OwnedFd) -> Result<(), ChannelError> {
        send(&self.0, &Message::SeccompListener(listener.as_raw_fd()))?;
        self.expect(Message::SeccompDone)?;
        drop(listener);
        Ok(())
    }

    pub fn failed(&self, text: &str) {
        // Best effort: the runtime reports "exited before it was ready" otherwise.
        let _ = send(&self.0, &Message::Failed(text.to_string()));
    }

    /// The process's execve (or one it would have met the same way) failed
    /// with `errno`; best effort, as `failed`.
    pub fn exec_failed(&self, errno: i32) {
        let _ = send(&self.0, &Message::ExecFailed(errno));
    }

    /// Waits for `Prepared` and returns its state JSON and the descriptors
    /// it hands over.
    pub fn wait_prepared(&self) -> Result<(String, Vec<OwnedFd>), ChannelError> {
        match receive_with(&self.0)? {
            (Message::Prepared(state), handed) => Ok((state, handed)),
            (other, _) => Err(ChannelError::Unexpected(other.encode())),
        }
    }

    /// Waits for `expected` from the runtime.
    pub fn expect(&self, expected: Message) -> Result<(), ChannelError> {
        match receive(&self.0)? {
            m if m == expected => Ok(()),
            other => Err(ChannelError::Unexpected(other.encode())),
        }
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl RuntimeEnd {
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod start_reply_tests {
    use super::*;

    #[test]
    fn the_plain_text_a_pre_launcher_init_wrote_to_start_reads_as_that_text() {
        // Before the launcher, the init wrote why the process could not
        // start to `berth start`'s connection as plain text (no `F`). A
        // container created by that berth and started by this one must
        // still read so, not as "unexpected message on the init channel:
        // [101, 120, …]".
        let text = "exec \"/x\": No such file or directory (os error 2)";
        assert_eq!(
            start_reply(text.as_bytes()).ok(),
            Some(Some(Message::Failed(text.into())))
        );
    }
}

#[cfg(test)]
mod handover_tests {
    use super::*;

    fn close_on_exec(fd: &OwnedFd) -> bool {
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD)
            .is_ok_and(|flags| flags & libc::FD_CLOEXEC != 0)
    }

    #[test]
    fn prepared_hands_the_init_its_descriptors_close_on_exec() {
        let (runtime, init) = pair().unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let writer = OwnedFd::from(writer);
        let files: Vec<OwnedFd> = (0..3).map(|_| writer.try_clone().unwrap()).collect();
        runtime.prepared("{\"id\":\"x\"}", &files).unwrap();
        drop((files, writer));
        let (state, handed) = init.wait_prepared().unwrap();
        assert_eq!(state, "{\"id\":\"x\"}");
        assert_eq!(handed.len(), 3);
        // The same pipe, and none of them would leak into what the init
        // executes.
        assert!(handed.iter().all(close_on_exec));
        let mut first = std::fs::File::from(handed.into_iter().next().unwrap());
        std::io::Write::write_all(&mut first, b"x").unwrap();
        drop(first);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut &reader, &mut got).unwrap();
        assert_eq!(got, "x");
        // Without descriptors, the message reads as before.
        runtime.prepared("{}", &[]).unwrap();
        let (state, handed) = init.wait_prepared().unwrap();
        assert_eq!((state.as_str(), handed.len()), ("{}", 0));
    }

    #[test]
    fn the_runtime_refuses_to_hand_more_than_a_message_takes() {
        let (runtime, _init) = pair().unwrap();
        let files: Vec<OwnedFd> = (0..=MAX_FDS)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        assert!(matches!(
            runtime.prepared("{}", &files),
            Err(ChannelError::TooManyDescriptors(n)) if n == MAX_FDS + 1
        ));
    }
}
