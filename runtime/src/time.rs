//! The runtime's timestamps: RFC 3339 with nine digits of nanoseconds, as
//! runc writes them (berth-oci's date routine).

use berth_oci::time::{self, Fraction};

/// `now` as `2006-01-02T15:04:05.999999999Z`, the format runc writes.
pub fn rfc3339_now() -> String {
    time::rfc3339_now(Fraction::Nanos)
}
