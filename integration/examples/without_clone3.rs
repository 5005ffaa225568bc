//! `without_clone3 PROGRAM [ARGS...]`: runs PROGRAM with `clone3`
//! answering ENOSYS, as under docker's default seccomp profile (a real
//! seccomp filter: `berth_integration::without_clone3`). berth then clones
//! its init and exec's helper the old way and they join their cgroups
//! themselves: `BERTH_PREFIX=.../without_clone3 bench/runtime-steps.sh`
//! times that fallback beside the clone3 path.

use std::os::unix::process::CommandExt;
use std::process::Command;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: without_clone3 PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let mut command = Command::new(&program);
    command.args(args);
    berth_integration::without_clone3(&mut command);
    let error = command.exec();
    eprintln!("without_clone3: {}: {error}", program.to_string_lossy());
    std::process::exit(127);
}
