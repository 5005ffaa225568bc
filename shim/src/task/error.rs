//! What can go wrong in a Task RPC, and the ttrpc code containerd sees for it.

use std::path::PathBuf;

use ttrpc::proto::Code;

use crate::console::ConsoleError;
use crate::mount::MountError;
use crate::options::OptionsError;
use crate::runtime::RuntimeError;
use crate::stats::StatsError;
use crate::stdio::StdioError;
use crate::wire::RpcError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0} is not created in this shim")]
    NoTask(String),
    #[error("task {0} already exists in this shim")]
    Exists(String),
    #[error("bundle {0} has no config.json")]
    NoConfig(PathBuf),
    #[error("exec {exec_id:?} not found in task {id}")]
    NoExec { id: String, exec_id: String },
    #[error("exec {exec_id:?} already exists in task {id}")]
    ExecExists { id: String, exec_id: String },
    #[error("task {0} is not running")]
    NotRunning(String),
    #[error("process {0:?} must be stopped before it is deleted")]
    StillRunning(String),
    #[error("process {0:?} already started")]
    AlreadyStarted(String),
    #[error("process already finished")]
    Finished,
    #[error("process {0:?} has no terminal")]
    NoTerminal(String),
    #[error("cannot read pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        source: protobuf::Error,
    },
    #[error("cannot encode the response: {0}")]
    Encode(protobuf::Error),
    #[error("checkpoint is not supported by berth's shim")]
    Checkpoint,
    #[error("this shim is shutting down")]
    Leaving,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Stats(#[from] StatsError),
}

impl From<TaskError> for RpcError {
    fn from(err: TaskError) -> RpcError {
        let code = match &err {
            TaskError::NoTask(_) | TaskError::NoExec { .. } | TaskError::Finished => {
                Code::NOT_FOUND
            }
            TaskError::Exists(_) | TaskError::ExecExists { .. } => Code::ALREADY_EXISTS,
            TaskError::NoConfig(_)
            | TaskError::NotRunning(_)
            | TaskError::StillRunning(_)
            | TaskError::AlreadyStarted(_)
            | TaskError::NoTerminal(_)
            | TaskError::Leaving => Code::FAILED_PRECONDITION,
            TaskError::Decode { .. } => Code::INVALID_ARGUMENT,
            TaskError::Checkpoint => Code::UNIMPLEMENTED,
            TaskError::Encode(_) => Code::INTERNAL,
            _ => Code::UNKNOWN,
        };
        RpcError::new(code, err.to_string())
    }
}
