//! RFC 3339 timestamps in UTC without a calendar crate: the one date
//! routine of the workspace (the runtime's `created` and log times, the
//! daemon's image history and CRI log lines, berthctl's output).
//!
//! The callers differ only in how they write the fraction of a second,
//! which each one's peer fixes: see [`Fraction`].

use std::time::{SystemTime, UNIX_EPOCH};

/// How the fraction of a second is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    /// None: `2006-01-02T15:04:05Z` (docker's image history).
    Omit,
    /// Always nine digits: `…05.000000000Z` (runc's state and logs).
    Nanos,
    /// Nine digits, or none for a whole second.
    NanosUnlessWhole,
    /// Go's `time.RFC3339Nano`: trailing zeros dropped, none for a whole
    /// second (CRI log lines).
    Trimmed,
}

/// `secs` and `nanos` since the epoch as an RFC 3339 time in UTC.
pub fn rfc3339(secs: i64, nanos: u32, fraction: Fraction) -> String {
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
    let digits = format!("{nanos:09}");
    match fraction {
        Fraction::Omit => {}
        Fraction::Nanos => text.push_str(&format!(".{digits}")),
        Fraction::NanosUnlessWhole if nanos > 0 => text.push_str(&format!(".{digits}")),
        Fraction::Trimmed if nanos > 0 => {
            text.push('.');
            text.push_str(digits.trim_end_matches('0'));
        }
        Fraction::NanosUnlessWhole | Fraction::Trimmed => {}
    }
    text.push('Z');
    text
}

/// The current time, as [`rfc3339`] writes it.
pub fn rfc3339_now(fraction: Fraction) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos(), fraction)
}

/// `CLOCK_MONOTONIC` now as `SECONDS.MICROSECONDS`: the stamp of the
/// runtime's and the daemon's `BERTH_TRACE` lines, one clock and one form
/// so that their lines sort into one timeline.
pub fn monotonic_stamp() -> String {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    format!("{}.{:06}", now.tv_sec, now.tv_nsec / 1000)
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::{rfc3339, Fraction};

    #[test]
    fn formats_known_instants() {
        assert_eq!(
            rfc3339(0, 0, Fraction::Nanos),
            "1970-01-01T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339(1_700_000_000, 5, Fraction::Nanos),
            "2023-11-14T22:13:20.000000005Z"
        );
        assert_eq!(
            rfc3339(951_782_400, 0, Fraction::Nanos),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(rfc3339(-1, 0, Fraction::Omit), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn each_fraction_as_its_peer_writes_it() {
        let t = 1_700_000_000;
        assert_eq!(rfc3339(t, 500, Fraction::Omit), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339(t, 500, Fraction::NanosUnlessWhole),
            "2023-11-14T22:13:20.000000500Z"
        );
        assert_eq!(
            rfc3339(t, 0, Fraction::NanosUnlessWhole),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339(t, 500, Fraction::Trimmed),
            "2023-11-14T22:13:20.0000005Z"
        );
        assert_eq!(rfc3339(t, 0, Fraction::Trimmed), "2023-11-14T22:13:20Z");
    }
}
