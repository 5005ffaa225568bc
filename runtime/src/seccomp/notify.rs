//! Seccomp user notification: handing the listener to the agent.
//!
//! A profile whose rules say `SCMP_ACT_NOTIFY` makes those calls wait for an
//! agent (a supervisor outside the container) that reads them from the
//! filter's listener and answers each one. The process that installs the
//! filter gets the listener; it writes the descriptor's number to the
//! runtime over its channel (a `write`, which is why a profile may not
//! notify `write`) and waits. The runtime takes the descriptor out of the
//! process (`pidfd_getfd`), connects to `listenerPath` and sends, as runc
//! does, one message: the JSON of [`ContainerProcessState`] with the
//! listener attached (SCM_RIGHTS). Then the process closes its copy and
//! goes on; from then on only the agent holds the listener.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::Serialize;

use super::SeccompError;
use crate::channel::InitEnd;

/// `listenerPath` and `listenerMetadata` of the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub path: PathBuf,
    pub metadata: String,
}

/// The runtime-spec's `ContainerProcessState`, the message the agent reads
/// (field names and order as runc's Go types write them).
#[derive(Debug, Serialize)]
pub struct ContainerProcessState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'static str,
    /// Names of the descriptors sent along, in order.
    pub fds: [&'static str; 1],
    /// The process that installed the filter.
    pub pid: i32,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub metadata: &'a str,
    pub state: ProcessContainerState<'a>,
}

/// The runtime-spec's `State` as it appears in that message.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessContainerState<'a> {
    pub oci_version: &'static str,
    pub id: &'a str,
    pub status: &'static str,
    /// The container's init.
    pub pid: i32,
    pub bundle: &'a std::path::Path,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

/// The name the runtime-spec gives the listener in `fds`.
pub const SECCOMP_FD_NAME: &str = "seccompFd";

/// In the process that becomes the container's (the init, or `exec`'s):
/// installs the filters; a notifying profile's listener goes to the runtime
/// (and from there to the agent) before anything else happens, since from
/// here on a notified call of this process waits for that agent.
pub fn install(compiled: Option<&super::Compiled>, channel: &InitEnd) -> Result<(), String> {
    let Some(compiled) = compiled else {
        return Ok(());
    };
    if let Some(listener) = super::install(compiled).map_err(|e| e.to_string())? {
        channel
            .hand_over_listener(listener)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Duplicates descriptor `fd` of process `pid` into this one.
pub fn take_from(pid: i32, fd: RawFd) -> Result<OwnedFd, SeccompError> {
    let failed = |what: &str| {
        let error = std::io::Error::last_os_error();
        SeccompError::Install(std::io::Error::new(
            error.kind(),
            format!("cannot take the listener from process {pid} ({what}): {error}"),
        ))
    };
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(failed("pidfd_open"));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd returns a new (close-on-exec) descriptor or -1.
    let ours = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if ours < 0 {
        return Err(failed("pidfd_getfd"));
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(ours as RawFd) })
}

/// The runtime's part: takes the listener (descriptor `fd` of process
/// `holder`) and sends it to the agent with the container's state.
pub fn forward(
    listener: Option<&Listener>,
    holder: i32,
    fd: RawFd,
    state: ProcessContainerState,
) -> Result<(), SeccompError> {
    // The profile was checked at compile time: a listener without a path
    // cannot appear, unless the process lies.
    let listener = listener.ok_or_else(|| {
        SeccompError::Invalid(format!(
            "process {holder} sent a seccomp listener the profile did not ask for"
        ))
    })?;
    let fd = take_from(holder, fd)?;
    let message = ContainerProcessState {
        oci_version: crate::OCI_VERSION,
        fds: [SECCOMP_FD_NAME],
        pid: holder,
        metadata: &listener.metadata,
        state,
    };
    hand_over(listener, &fd, &message)
}

/// Sends `state` with the listener to the agent at `listener.path`.
pub fn hand_over(
    listener: &Listener,
    fd: &OwnedFd,
    state: &ContainerProcessState,
) -> Result<(), SeccompError> {
    let agent = |source: std::io::Error| SeccompError::Agent {
        path: listener.path.clone(),
        source,
    };
    let stream = UnixStream::connect(&listener.path).map_err(|e| {
        agent(std::io::Error::new(
            e.kind(),
            format!("failed to connect with seccomp agent specified in the seccomp profile: {e}"),
        ))
    })?;
    let json = serde_json::to_vec(state)
        .map_err(|e| agent(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let fds = [fd.as_raw_fd()];
    let control = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&json)],
            &control,
            MsgFlags::empty(),
            None,
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(agent(e.into())),
            Ok(_) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_reads_as_runcs() {
        let annotations = [("a".to_string(), "b".to_string())].into();
        let state = ContainerProcessState {
            oci_version: "1.0.2",
            fds: [SECCOMP_FD_NAME],
            pid: 42,
            metadata: "m",
            state: ProcessContainerState {
                oci_version: "1.0.2",
                id: "c1",
                status: "creating",
                pid: 42,
                bundle: std::path::Path::new("/b"),
                annotations: &annotations,
            },
        };
        assert_eq!(
            serde_json::to_string(&state).unwrap(),
            r#"{"ociVersion":"1.0.2","fds":["seccompFd"],"pid":42,"metadata":"m","state":{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"/b","annotations":{"a":"b"}}}"#
        );
    }
}
