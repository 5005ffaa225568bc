//! Exit codes, as docker's: the container's own status when it ran; 125
//! when berthctl or the daemon failed; 126 when the command could not be
//! invoked; 127 when it does not exist.

/// An error with the exit code it calls for.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct Coded {
    pub code: i32,
    pub error: anyhow::Error,
}

/// berthctl's own failures.
pub const FAILED: i32 = 125;

pub fn code_of(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Coded>())
        .map_or(FAILED, |c| c.code)
}
