//! The daemon's one reading of the wall clock, in the units its records and
//! messages carry. A clock set before 1970 reads as the epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Seconds since the epoch: what the metadata records keep.
pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}

/// Nanoseconds since the epoch: container log lines.
pub fn now_nanos() -> u128 {
    since_epoch().as_nanos()
}

/// The protobuf timestamp events and exit statuses carry.
pub fn now_timestamp() -> prost_types::Timestamp {
    let d = since_epoch();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
