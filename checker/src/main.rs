//! `berth-checker CONFIG`: checks from inside a container that it matches
//! CONFIG, printing TAP. See the library's documentation.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use berth_checker::tap::Report;

fn main() -> ExitCode {
    let report = match std::env::args_os().nth(1) {
        Some(path) => berth_checker::run(Path::new(&path)),
        None => {
            let mut report = Report::new();
            report.fail(
                "a config path is given",
                "no argument",
                "berth-checker CONFIG",
            );
            report
        }
    };
    let mut stdout = std::io::stdout().lock();
    // With stdout gone there is no one to tell; the exit status still says.
    let _ = stdout.write_all(report.to_tap().as_bytes());
    let _ = stdout.flush();
    if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
