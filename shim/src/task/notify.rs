//! What the shim tells others: `/tasks/*` events to the daemon (through
//! the [`Publisher`]) and the answers to parked `Wait`s, which the server's
//! loop sends after each round. Both are queued in the order things happen.

use std::time::Duration;

use containerd_shim_protos::api::WaitResponse;
use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::protobuf::Message;

use super::process::Process;
use crate::events::{Event, Publisher};

/// Where a parked reply goes: connection token and ttrpc stream id.
pub type ReplyTo = (u64, u32);

pub struct Notify {
    events: Publisher,
    /// Answers to parked Waits, for the loop to send.
    answers: Vec<(ReplyTo, Vec<u8>)>,
}

impl Notify {
    pub fn new(events: Publisher) -> Notify {
        Notify {
            events,
            answers: Vec::new(),
        }
    }

    pub fn publish(&self, event: Event) {
        self.events.publish(event);
    }

    /// Answers `process`'s parked Waits with its exit as it stands.
    pub fn answer_waits(&mut self, process: &mut Process) {
        if process.waiters.is_empty() {
            return;
        }
        let payload = wait_response(process);
        self.answers
            .extend(process.waiters.drain(..).map(|w| (w, payload.clone())));
    }

    /// `process` of container `container_id` exited: its Waits are answered
    /// and its exit published.
    pub fn exited(&mut self, container_id: &str, process: &mut Process) {
        self.answer_waits(process);
        let mut event = TaskExit::new();
        event.container_id = container_id.to_string();
        event.id = if process.exec_id.is_empty() {
            container_id.to_string()
        } else {
            process.exec_id.clone()
        };
        event.pid = process.pid;
        (event.exit_status, event.exited_at) = process.exit();
        self.events.publish(Event::Exit(event));
    }

    /// Answers for parked Waits, to send now.
    pub fn take_answers(&mut self) -> Vec<(ReplyTo, Vec<u8>)> {
        std::mem::take(&mut self.answers)
    }

    /// Waits for the queued events to go out (before the shim exits).
    pub fn flush(&self) {
        self.events.flush(Duration::from_secs(5));
    }
}

/// An encoded WaitResponse with `process`'s exit (0 and no time if none).
pub fn wait_response(process: &Process) -> Vec<u8> {
    let mut response = WaitResponse::new();
    (response.exit_status, response.exited_at) = process.exit();
    response.write_to_bytes().unwrap_or_default()
}
