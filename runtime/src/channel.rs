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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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
    #[error("a message on the init channel carried more descriptors than room for them")]
    TooManyDescriptors,
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
fn send_with(fd: &OwnedFd, message: &Message, handed: &[RawFd]) -> Result<(), ChannelError> {
    let bytes = message.encode();
    let rights = [ControlMessage::ScmRights(handed)];
    let control: &[ControlMessage] = if handed.is_empty() { &[] } else { &rights };
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
    // u64s: aligned as the kernel's control headers want.
    let mut control = [0u64; CONTROL_WORDS];
    let mut reset = false;
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.capacity(),
        };
        // SAFETY: a zeroed msghdr is valid (no name, no control) until set.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg(2) writes at most the capacity into the vector's
        // spare room and the control buffer's size into `control`.
        let read = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC) };
        if read < 0 {
            match nix::Error::last() {
                nix::Error::EINTR => continue,
                // The peer closed with a message of ours unread (an init that
                // failed before it read `Prepared`): the kernel says so once,
                // before what the peer sent first is read.
                nix::Error::ECONNRESET if !reset => {
                    reset = true;
                    continue;
                }
                e => return Err(ChannelError::Io(e)),
            }
        }
        // Owned first, so that they close whatever comes next.
        // SAFETY: the header is the one recvmsg filled in.
        let handed = unsafe { rights(&header) };
        if header.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(ChannelError::TooManyDescriptors);
        }
        if read == 0 {
            return Err(ChannelError::Closed);
        }
        // SAFETY: the kernel initialised the first `read` bytes.
        unsafe { buf.set_len(read as usize) };
        return Ok((Message::decode(&buf)?, handed));
    }
}

/// The most descriptors one message carries: `Prepared` hands the init a
/// join file per cgroup hierarchy (a dozen on a v1 host).
const MAX_HANDED: usize = 64;
/// The control buffer for [`MAX_HANDED`] descriptors, in u64s:
/// `CMSG_SPACE` is a header of 16 bytes and the data rounded up to 8.
const CONTROL_WORDS: usize = 2 + MAX_HANDED * std::mem::size_of::<libc::c_int>() / 8;

/// The descriptors of the `SCM_RIGHTS` messages `header` holds.
///
/// # Safety
/// `header` is what a successful recvmsg(2) filled in, its control buffer
/// still alive.
unsafe fn rights(header: &libc::msghdr) -> Vec<OwnedFd> {
    let mut handed = Vec::new();
    let mut cmsg = libc::CMSG_FIRSTHDR(header);
    while !cmsg.is_null() {
        if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
            let data = libc::CMSG_DATA(cmsg);
            let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
            for i in 0..len / std::mem::size_of::<libc::c_int>() {
                let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                handed.push(OwnedFd::from_raw_fd(fd));
            }
        }
        cmsg = libc::CMSG_NXTHDR(header, cmsg);
    }
    handed
}

impl RuntimeEnd {
    /// `Prepared`, handing the init `handed` (see `container::create`).
    pub fn prepared(&self, state_json: &str, handed: &[RawFd]) -> Result<(), ChannelError> {
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

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn close_on_exec(fd: &OwnedFd) -> bool {
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD)
            .is_ok_and(|flags| flags & libc::FD_CLOEXEC != 0)
    }

    #[test]
    fn prepared_hands_the_init_its_descriptors_close_on_exec() {
        let (runtime, init) = pair().unwrap();
        let files = [null(), null(), null()];
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        runtime.prepared("{\"id\":\"x\"}", &raw).unwrap();
        let (state, handed) = init.wait_prepared().unwrap();
        assert_eq!(state, "{\"id\":\"x\"}");
        assert_eq!(handed.len(), 3);
        for fd in &handed {
            // New numbers for the same open files, none of them leaking
            // into what the init executes.
            assert!(!raw.contains(&fd.as_raw_fd()));
            assert!(close_on_exec(fd));
            assert!(nix::sys::stat::fstat(fd.as_raw_fd()).is_ok());
        }
        // Without descriptors, the message reads as before.
        runtime.prepared("{}", &[]).unwrap();
        let (state, handed) = init.wait_prepared().unwrap();
        assert_eq!((state.as_str(), handed.len()), ("{}", 0));
    }

    #[test]
    fn more_descriptors_than_room_is_an_error_and_leaks_none() {
        let (runtime, init) = pair().unwrap();
        let files: Vec<OwnedFd> = (0..MAX_HANDED + 1).map(|_| null()).collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        runtime.prepared("{}", &raw).unwrap();
        drop(files);
        // Counted in a child of its own: the tests' other threads open and
        // close descriptors meanwhile.
        // SAFETY: the child only counts, receives and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let open = || std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
            let before = open();
            let refused = matches!(init.wait_prepared(), Err(ChannelError::TooManyDescriptors));
            // What did arrive closed with the error.
            let status = if refused && open() == before { 0 } else { 1 };
            // SAFETY: leaving the forked child without the harness.
            unsafe { libc::_exit(status) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
