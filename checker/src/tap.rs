//! The checker's report, printed as TAP (Test Anything Protocol, version 12).
//!
//! Results are collected first and printed at the end, so the plan line
//! (`1..N`) can come first, as the integration tests' parser expects.

use std::fmt::Display;

/// How one check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail {
        got: String,
        want: String,
    },
    /// The check could not be made; a TAP skip counts as a pass.
    Skip(String),
}

/// One TAP line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub description: String,
    pub outcome: Outcome,
}

/// Every check made so far, in order.
#[derive(Debug, Default)]
pub struct Report {
    checks: Vec<Check>,
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    pub fn record(&mut self, description: impl Into<String>, outcome: Outcome) {
        self.checks.push(Check {
            description: description.into(),
            outcome,
        });
    }

    pub fn pass(&mut self, description: impl Into<String>) {
        self.record(description, Outcome::Pass);
    }

    pub fn fail(&mut self, description: impl Into<String>, got: impl Display, want: impl Display) {
        let outcome = Outcome::Fail {
            got: got.to_string(),
            want: want.to_string(),
        };
        self.record(description, outcome);
    }

    pub fn skip(&mut self, description: impl Into<String>, reason: impl Into<String>) {
        self.record(description, Outcome::Skip(reason.into()));
    }

    /// Passes when `got == want`, else fails showing both.
    pub fn compare<T: PartialEq + Display>(
        &mut self,
        description: impl Into<String>,
        got: T,
        want: T,
    ) {
        if got == want {
            self.pass(description);
        } else {
            self.fail(description, got, want);
        }
    }

    /// [`Report::compare`] for a value read from the kernel: a failed read
    /// is a failed check, reported with its error.
    pub fn compare_read<T: PartialEq + Display>(
        &mut self,
        description: impl Into<String>,
        got: Result<T, String>,
        want: T,
    ) {
        match got {
            Ok(got) => self.compare(description, got, want),
            Err(error) => self.fail(description, error, want),
        }
    }

    /// True when no check failed.
    pub fn all_passed(&self) -> bool {
        self.checks
            .iter()
            .all(|check| !matches!(check.outcome, Outcome::Fail { .. }))
    }

    /// The whole report as TAP: the plan, then one line per check.
    pub fn to_tap(&self) -> String {
        let mut out = format!("1..{}\n", self.checks.len());
        for (index, check) in self.checks.iter().enumerate() {
            out.push_str(&tap_line(index + 1, check));
            out.push('\n');
        }
        out
    }
}

fn tap_line(number: usize, check: &Check) -> String {
    let description = escape_description(&check.description);
    match &check.outcome {
        Outcome::Pass => format!("ok {number} - {description}"),
        Outcome::Skip(reason) => {
            format!("ok {number} - {description} # SKIP {}", one_line(reason))
        }
        Outcome::Fail { got, want } => format!(
            "not ok {number} - {description} # got {}, want {}",
            one_line(got),
            one_line(want)
        ),
    }
}

/// A `#` in a description would start a TAP directive, so it is escaped.
fn escape_description(description: &str) -> String {
    one_line(description).replace('#', "\\#")
}

/// A TAP result must stay on one line, whatever a file we read contained.
fn one_line(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_comes_first_and_lines_are_numbered() {
        let mut report = Report::new();
        report.pass("hostname is box");
        report.fail("uid is 0", "uid=1 euid=1", "uid=0 euid=0");
        report.skip("device /dev/fuse mode", "user namespace");
        assert_eq!(
            report.to_tap(),
            "1..3\n\
             ok 1 - hostname is box\n\
             not ok 2 - uid is 0 # got uid=1 euid=1, want uid=0 euid=0\n\
             ok 3 - device /dev/fuse mode # SKIP user namespace\n"
        );
    }

    #[test]
    fn skips_count_as_passes() {
        let mut report = Report::new();
        report.skip("a", "because");
        report.pass("b");
        assert!(report.all_passed());
        report.compare("c", 1, 2);
        assert!(!report.all_passed());
    }

    #[test]
    fn empty_report_has_an_empty_plan() {
        let report = Report::new();
        assert_eq!(report.to_tap(), "1..0\n");
        assert!(report.all_passed());
    }

    #[test]
    fn hashes_and_newlines_cannot_break_a_line() {
        let mut report = Report::new();
        report.fail("file /a#b", "x\ny", "z");
        assert_eq!(
            report.to_tap(),
            "1..1\nnot ok 1 - file /a\\#b # got x\\ny, want z\n"
        );
    }

    #[test]
    fn compare_read_fails_on_a_read_error() {
        let mut report = Report::new();
        report.compare_read("umask", Err::<u32, _>("cannot read".into()), 18);
        assert_eq!(
            report.checks()[0].outcome,
            Outcome::Fail {
                got: "cannot read".into(),
                want: "18".into()
            }
        );
    }
}
