//! Records the git commit berth is built from, for `berth --version`'s
//! `commit:` line (go-runc reads it as runc's). Outside a git checkout (a
//! source package) the commit is taken from `BERTH_COMMIT`, else "unknown".
//!
//! Builds the sealed launcher (`launcher/launcher.rs`, see its header and
//! `src/sealed_init.rs`) into `OUT_DIR/berth-launch` with the same `rustc`
//! for the same target: no standard library, no C start files, a static
//! executable of a few KiB that `sealed_init` embeds.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=BERTH_COMMIT");
    // Rebuilt when HEAD moves: HEAD itself and the branch it names.
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(file) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let commit = std::env::var("BERTH_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BERTH_COMMIT={commit}");
    build_launcher();
}

fn build_launcher() {
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"));
    let source = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("launcher/launcher.rs");
    println!("cargo:rerun-if-changed={}", source.display());
    let out = PathBuf::from(env("OUT_DIR")).join("berth-launch");
    let mut rustc = Command::new(env("RUSTC"));
    rustc
        .args(["--edition", "2021", "--crate-type", "bin", "--crate-name"])
        .arg("berth_launch")
        .args(["--target", &env("TARGET")])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "opt-level=s",
            "-C",
            "debuginfo=0",
        ])
        .args(["-C", "relocation-model=static", "-C", "strip=symbols"])
        .args(["-C", "target-feature=+crt-static"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args([
            "-C",
            "link-arg=-static",
            "-C",
            "link-arg=-Wl,--build-id=none",
        ])
        // One page-aligned segment less: text and data need not be apart.
        .args(["-C", "link-arg=-Wl,-z,noseparate-code"])
        .arg("-o")
        .arg(&out)
        .arg(&source);
    let status = rustc.status().expect("cannot run rustc for the launcher");
    assert!(status.success(), "building {} failed", source.display());
}
