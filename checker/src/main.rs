//! `berth-checker CONFIG`: checks from inside a container that it matches
//! CONFIG, printing TAP. See the library's documentation.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use berth_checker::tap::Report;

/// `berth-checker --syscall NR [ARG...]`: makes one raw syscall and prints
/// `ok` or `errno N`, so tests can probe a seccomp filter for syscalls no
/// busybox applet makes.
fn probe_syscall(args: &[String]) -> ExitCode {
    let numbers: Vec<i64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if numbers.is_empty() || numbers.len() != args.len() || numbers.len() > 7 {
        eprintln!("usage: berth-checker --syscall NR [ARG...] (numbers only)");
        return ExitCode::from(2);
    }
    let arg = |i: usize| numbers.get(i).copied().unwrap_or(0);
    // SAFETY: the caller picks a syscall whose arguments are plain numbers;
    // the probe exists to see what the filter answers.
    let rc = unsafe { libc::syscall(arg(0), arg(1), arg(2), arg(3), arg(4), arg(5), arg(6)) };
    if rc < 0 {
        println!(
            "errno {}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        );
    } else {
        println!("ok");
    }
    ExitCode::SUCCESS
}

/// `berth-checker --int80 NR [ARG1 ARG2 ARG3]`: the same probe through the
/// i386 entry (`int 0x80`), which a 64-bit process may use too: the filter
/// sees the call with the i386 architecture and the i386 number.
fn probe_int80(args: &[String]) -> ExitCode {
    let numbers: Vec<u32> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if numbers.is_empty() || numbers.len() != args.len() || numbers.len() > 4 {
        eprintln!("usage: berth-checker --int80 NR [ARG1 ARG2 ARG3] (numbers only)");
        return ExitCode::from(2);
    }
    let arg = |i: usize| u64::from(numbers.get(i).copied().unwrap_or(0));
    let rc: u64;
    // SAFETY: a raw i386 syscall with plain-number arguments. LLVM owns rbx,
    // so the first argument travels in rdi and is swapped in around the
    // trap; the kernel preserves rdi and rbx and may clobber r8-r11.
    unsafe {
        std::arch::asm!(
            "xchg rbx, rdi",
            "int 0x80",
            "xchg rbx, rdi",
            inout("rax") arg(0) => rc,
            inout("rdi") arg(1) => _,
            in("rcx") arg(2),
            in("rdx") arg(3),
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    let rc = rc as u32 as i32;
    if rc < 0 && rc > -4096 {
        println!("errno {}", -rc);
    } else {
        println!("ok");
    }
    ExitCode::SUCCESS
}

/// `HOST:PORT` with HOST an IPv4 address or a name of `/etc/hosts`, looked
/// up as the resolver's `files` source does (a static libc cannot load its
/// NSS modules in a bare rootfs).
fn resolve(target: &str) -> Option<std::net::SocketAddr> {
    if let Ok(address) = target.parse() {
        return Some(address);
    }
    let (name, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let mut words = line.split('#').next()?.split_whitespace();
        let ip: std::net::Ipv4Addr = words.next()?.parse().ok()?;
        words
            .any(|w| w == name)
            .then_some(std::net::SocketAddr::from((ip, port)))
    })
}

/// `berth-checker --http HOST:PORT`: one HTTP/1.0 GET of `/`, the body on
/// stdout; so tests can reach a container's port, by address or by name,
/// from inside another.
fn probe_http(args: &[String]) -> ExitCode {
    use std::io::Read;
    let Some(address) = args.first().and_then(|a| resolve(a)) else {
        eprintln!("usage: berth-checker --http HOST:PORT (an address, or a name in /etc/hosts)");
        return ExitCode::from(2);
    };
    let timeout = std::time::Duration::from_secs(5);
    let fetched = std::net::TcpStream::connect_timeout(&address, timeout).and_then(|mut s| {
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut response = Vec::new();
        s.read_to_end(&mut response)?;
        Ok(response)
    });
    match fetched {
        Ok(response) => {
            let text = String::from_utf8_lossy(&response);
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            print!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{address}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--syscall") {
        return probe_syscall(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("--int80") {
        return probe_int80(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("--http") {
        return probe_http(&args[2..]);
    }
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
