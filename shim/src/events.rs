//! Task events forwarded to the daemon: `Events/Forward` on `TTRPC_ADDRESS`.
//!
//! One publisher thread sends them in the order they were queued (create,
//! start, exit, delete: the loop queues them in that order), so a daemon
//! that is restarting delays the events but never the RPCs. Each event is
//! retried for a while, then dropped with a note on stderr (the daemon
//! reconciles through `State` when it comes back).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;

use crate::wire::{Client, WireError};

const SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
/// How long one event is retried while the daemon is away.
const RETRY_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("cannot start the events thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot encode event {topic}: {source}")]
    Encode {
        topic: &'static str,
        source: protobuf::Error,
    },
}

/// A task event, as the runc shim sends them.
#[derive(Debug, Clone)]
pub enum Event {
    Create(TaskCreate),
    Start(TaskStart),
    Exit(TaskExit),
    Delete(TaskDelete),
    Oom(TaskOOM),
    ExecAdded(TaskExecAdded),
    ExecStarted(TaskExecStarted),
    Paused(TaskPaused),
    Resumed(TaskResumed),
}

impl Event {
    pub fn topic(&self) -> &'static str {
        match self {
            Event::Create(_) => "/tasks/create",
            Event::Start(_) => "/tasks/start",
            Event::Exit(_) => "/tasks/exit",
            Event::Delete(_) => "/tasks/delete",
            Event::Oom(_) => "/tasks/oom",
            Event::ExecAdded(_) => "/tasks/exec-added",
            Event::ExecStarted(_) => "/tasks/exec-started",
            Event::Paused(_) => "/tasks/paused",
            Event::Resumed(_) => "/tasks/resumed",
        }
    }

    /// The event as an `Any`; containerd's type URLs carry no
    /// `type.googleapis.com/` prefix.
    pub fn to_any(&self) -> Result<Any, EventsError> {
        let (name, value) = match self {
            Event::Create(e) => ("TaskCreate", e.write_to_bytes()),
            Event::Start(e) => ("TaskStart", e.write_to_bytes()),
            Event::Exit(e) => ("TaskExit", e.write_to_bytes()),
            Event::Delete(e) => ("TaskDelete", e.write_to_bytes()),
            Event::Oom(e) => ("TaskOOM", e.write_to_bytes()),
            Event::ExecAdded(e) => ("TaskExecAdded", e.write_to_bytes()),
            Event::ExecStarted(e) => ("TaskExecStarted", e.write_to_bytes()),
            Event::Paused(e) => ("TaskPaused", e.write_to_bytes()),
            Event::Resumed(e) => ("TaskResumed", e.write_to_bytes()),
        };
        let mut any = Any::new();
        any.type_url = format!("containerd.events.{name}");
        any.value = value.map_err(|source| EventsError::Encode {
            topic: self.topic(),
            source,
        })?;
        Ok(any)
    }
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Vec<u8>>,
    /// Events taken by the thread and not yet answered.
    in_flight: usize,
}

/// Queues events for the publisher thread.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<(Mutex<Queue>, Condvar)>,
    namespace: String,
}

impl Publisher {
    /// Starts the thread that forwards to `address` (nothing is sent when it is empty).
    pub fn start(address: String, namespace: String) -> Result<Publisher, EventsError> {
        let shared: Arc<(Mutex<Queue>, Condvar)> = Arc::default();
        let publisher = Publisher {
            shared: shared.clone(),
            namespace: namespace.clone(),
        };
        std::thread::Builder::new()
            .name("events".into())
            .stack_size(64 << 10)
            .spawn(move || forward_loop(&shared, &address, &namespace))
            .map_err(EventsError::Thread)?;
        Ok(publisher)
    }

    pub fn publish(&self, event: Event) {
        let request = match envelope(&event, &self.namespace) {
            Ok(request) => request,
            Err(err) => {
                crate::log(&err);
                return;
            }
        };
        let (lock, cond) = &*self.shared;
        if let Ok(mut queue) = lock.lock() {
            queue.pending.push_back(request);
            cond.notify_all();
        }
    }

    /// Waits (up to `timeout`) until every queued event is delivered or dropped.
    pub fn flush(&self, timeout: Duration) {
        let (lock, cond) = &*self.shared;
        let deadline = Instant::now() + timeout;
        let Ok(mut queue) = lock.lock() else { return };
        while !queue.pending.is_empty() || queue.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match cond.wait_timeout(queue, left) {
                Ok((q, _)) => queue = q,
                Err(_) => return,
            }
        }
    }
}

fn envelope(event: &Event, namespace: &str) -> Result<Vec<u8>, EventsError> {
    let mut envelope = Envelope::new();
    envelope.timestamp = MessageField::some(Timestamp::now());
    envelope.namespace = namespace.to_string();
    envelope.topic = event.topic().to_string();
    envelope.event = MessageField::some(event.to_any()?);
    let mut request = ForwardRequest::new();
    request.envelope = MessageField::some(envelope);
    request
        .write_to_bytes()
        .map_err(|source| EventsError::Encode {
            topic: event.topic(),
            source,
        })
}

fn forward_loop(shared: &(Mutex<Queue>, Condvar), address: &str, namespace: &str) {
    let (lock, cond) = shared;
    let mut client: Option<Client> = None;
    loop {
        let request = {
            let Ok(mut queue) = lock.lock() else { return };
            loop {
                if let Some(request) = queue.pending.pop_front() {
                    queue.in_flight += 1;
                    break request;
                }
                queue = match cond.wait(queue) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        };
        if !address.is_empty() {
            if let Err(err) = send(&mut client, address, namespace, request) {
                crate::log(format_args!("event dropped: {err}"));
            }
        }
        if let Ok(mut queue) = lock.lock() {
            queue.in_flight -= 1;
            cond.notify_all();
        }
    }
}

fn send(
    client: &mut Option<Client>,
    address: &str,
    namespace: &str,
    request: Vec<u8>,
) -> Result<(), WireError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(20);
    loop {
        match try_send(client, address, namespace, &request) {
            Ok(()) => return Ok(()),
            // The daemon answered: retrying would get the same answer.
            Err(err @ WireError::Status { .. }) => return Err(err),
            Err(err) => {
                *client = None;
                if started.elapsed() > RETRY_FOR {
                    return Err(err);
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn try_send(
    client: &mut Option<Client>,
    address: &str,
    namespace: &str,
    request: &[u8],
) -> Result<(), WireError> {
    let connected = match client {
        Some(c) => c,
        None => client.insert(Client::connect(address, Duration::from_secs(5))?),
    };
    connected
        .call(
            SERVICE,
            "Forward",
            request.to_vec(),
            &[("containerd-namespace-ttrpc", namespace)],
        )
        .map(|_| ())
}
