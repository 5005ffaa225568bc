//! `containerd-shim-berth-v2`: see the library's documentation
//! (`shim/src/lib.rs`) for what the shim is and where to start reading.

fn main() {
    // A container's init that re-executed itself from this binary (berth
    // ran in the shim's fork, see `berth_fork`) continues as the init.
    berth_shim::berth_fork::resume_handed_over_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match berth_shim::cli::main(&args) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("containerd-shim-berth-v2: {err:#}");
            std::process::exit(1);
        }
    }
}
