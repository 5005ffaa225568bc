//! The cgroup v2 device filter: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` that the kernel runs on every open and
//! mknod of a device node by a task in the cgroup.
//!
//! Threat: cgroup v2 has no devices controller, so without this program a
//! container with `CAP_MKNOD` (or a bind of a host device) could read and
//! write any block device of the host. berth refuses to start a container
//! on a v2 host unless the program is loaded and attached.
//!
//! The program is generated from the normalised allow-list
//! ([`super::device_rules`]) with v1's meaning: rules apply in order and a
//! later rule overrides an earlier one, so the program tests them from the
//! last to the first and the first match decides. An allow rule matches
//! when it grants every requested access bit; a deny rule when it names any.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::{DeviceAccess, ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("bpf(BPF_PROG_LOAD) refused the device program: {source}{}", verifier_text(.log))]
    Load { source: std::io::Error, log: String },
    #[error("bpf(BPF_PROG_ATTACH) of the device program to the container's cgroup: {0}")]
    Attach(std::io::Error),
}

fn verifier_text(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (verifier: {})", log.trim())
    }
}

/// One eBPF instruction, as `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes (class | op | source) of the few instructions the filter needs.
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54; // dst &= imm
const ALU32_RSH_K: u8 = 0x74; // dst >>= imm
const ALU32_MOV_X: u8 = 0xbc; // dst = src
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const JMP_JEQ_K: u8 = 0x15; // if dst == imm: pc += off
const JMP_JNE_K: u8 = 0x55; // if dst != imm: pc += off
const JMP_EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }:
// access_type is (access << 16) | type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;
const R_SCRATCH: u8 = 6;

/// A compiled device program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program(pub Vec<Insn>);

impl Program {
    pub fn compile(rules: &[DeviceAccess]) -> Program {
        let mut code = vec![
            insn(LDX_MEM_W, R_TYPE, 1, 0, 0),
            insn(ALU32_AND_K, R_TYPE, 0, 0, 0xffff),
            insn(LDX_MEM_W, R_ACCESS, 1, 0, 0),
            insn(ALU32_RSH_K, R_ACCESS, 0, 0, 16),
            insn(LDX_MEM_W, R_MAJOR, 1, 4, 0),
            insn(LDX_MEM_W, R_MINOR, 1, 8, 0),
        ];
        for rule in rules.iter().rev() {
            let block = rule_block(rule);
            let unconditional = block.len() == 2;
            code.extend(block);
            // Earlier rules can never be reached (the verifier refuses
            // unreachable code).
            if unconditional {
                return Program(code);
            }
        }
        // Nothing matched: deny.
        code.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
        code.push(insn(JMP_EXIT, 0, 0, 0, 0));
        Program(code)
    }

    /// Loads the program into the kernel.
    pub fn load(&self) -> Result<OwnedFd, FilterError> {
        match load(&self.0, false) {
            Ok(fd) => Ok(fd),
            // Again with the verifier's log, to say why.
            Err(_) => load(&self.0, true),
        }
    }
}

/// The instructions of one rule: tests that skip the rest of the block when
/// the device or the access does not match, then the verdict.
fn rule_block(rule: &DeviceAccess) -> Vec<Insn> {
    let all = ACCESS_READ | ACCESS_WRITE | ACCESS_MKNOD;
    // (register, value) pairs that must be equal; `None` skips the test.
    let mut tests: Vec<(u8, i32)> = Vec::new();
    if let Some(kind) = rule.kind {
        tests.push((R_TYPE, if kind == 'b' { DEV_BLOCK } else { DEV_CHAR }));
    }
    if let Some(major) = rule.major {
        tests.push((R_MAJOR, major as i32));
    }
    if let Some(minor) = rule.minor {
        tests.push((R_MINOR, minor as i32));
    }
    // The access test: an allow must cover every requested bit, a deny
    // must name one of them. Full rules need no test.
    let access_test: Option<(u8, i32)> = match (rule.allow, rule.access & all) {
        (_, a) if a == all => None,
        (true, a) => Some((JMP_JNE_K, i32::from(!a & all))),
        (false, a) => Some((JMP_JEQ_K, i32::from(a))),
    };
    let tail = [
        insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow)),
        insn(JMP_EXIT, 0, 0, 0, 0),
    ];
    let length = tests.len() + access_test.map_or(0, |_| 3) + tail.len();
    let mut block = Vec::with_capacity(length);
    for (register, value) in tests {
        let skip = (length - block.len() - 1) as i16;
        block.push(insn(JMP_JNE_K, register, 0, skip, value));
    }
    if let Some((jump, mask)) = access_test {
        block.push(insn(ALU32_MOV_X, R_SCRATCH, R_ACCESS, 0, 0));
        block.push(insn(ALU32_AND_K, R_SCRATCH, 0, 0, mask));
        let skip = (length - block.len() - 1) as i16;
        block.push(insn(jump, R_SCRATCH, 0, skip, 0));
    }
    block.extend(tail);
    block
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD.
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The leading fields of `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn load(code: &[Insn], with_log: bool) -> Result<OwnedFd, FilterError> {
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; if with_log { 64 * 1024 } else { 0 }];
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"berth_dev");
    let attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(with_log),
        log_size: log.len() as u32,
        log_buf: if with_log { log.as_mut_ptr() as u64 } else { 0 },
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..LoadAttr::default()
    };
    // SAFETY: attr points at a live, initialised bpf_attr prefix whose
    // pointers (instructions, license, log buffer) outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const LoadAttr,
            std::mem::size_of::<LoadAttr>(),
        )
    };
    if fd < 0 {
        let source = std::io::Error::last_os_error();
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        return Err(FilterError::Load {
            source,
            log: String::from_utf8_lossy(&log[..end]).into_owned(),
        });
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches a loaded program to the cgroup open at `cgroup_fd`, beside any
/// programs of the cgroup's ancestors (all of them must allow an access).
pub fn attach(program: &OwnedFd, cgroup_fd: RawFd) -> Result<(), FilterError> {
    use std::os::fd::AsRawFd;
    let attr = AttachAttr {
        target_fd: cgroup_fd as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..AttachAttr::default()
    };
    // SAFETY: attr is a live, initialised bpf_attr prefix.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const AttachAttr,
            std::mem::size_of::<AttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(FilterError::Attach(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{device_rules, hierarchies};
    use crate::spec::DeviceRule;

    fn rule(allow: bool, kind: &str, major: i64, minor: i64, access: &str) -> DeviceRule {
        DeviceRule {
            allow,
            kind: Some(kind.into()),
            major: Some(major),
            minor: Some(minor),
            access: Some(access.into()),
        }
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let rules =
            device_rules(&[rule(true, "c", 1, -1, "r"), rule(false, "b", 8, 0, "w")]).unwrap();
        let program = Program::compile(&rules);
        for (at, insn) in program.0.iter().enumerate() {
            if matches!(insn.code, JMP_JEQ_K | JMP_JNE_K) {
                let target = at as i64 + 1 + i64::from(insn.off);
                assert!(target > at as i64 && (target as usize) < program.0.len());
                // Each skip lands on the start of the next rule's block or
                // the final deny, never on a verdict.
                assert_ne!(program.0[target as usize].code, JMP_EXIT);
            }
        }
        assert_eq!(program.0.last().unwrap().code, JMP_EXIT);
        // The leading deny-all is the last block and ends the program.
        assert_eq!(
            program.0[program.0.len() - 2],
            insn(ALU64_MOV_K, 0, 0, 0, 0)
        );
        // An allow-all in the middle hides what comes before it.
        let privileged = device_rules(&[DeviceRule {
            allow: true,
            kind: None,
            major: None,
            minor: None,
            access: None,
        }])
        .unwrap();
        let short = Program::compile(&privileged);
        assert!(short.0.len() < program.0.len());
        assert_eq!(short.0[short.0.len() - 2], insn(ALU64_MOV_K, 0, 0, 0, 1));
    }

    /// Runs `script` with `sh` in a fresh cgroup under the host's unified
    /// hierarchy that has the program for `rules` attached.
    fn run_filtered(rules: &[DeviceRule], script: &str) -> Option<String> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: needs root");
            return None;
        }
        let unified = hierarchies().into_iter().find(|h| h.is_unified())?;
        let dir = unified.mount_point.join(format!(
            "berth-devfilter-test-{}-{}",
            std::process::id(),
            script.len()
        ));
        std::fs::create_dir(&dir).unwrap();
        let program = Program::compile(&device_rules(rules).unwrap());
        let loaded = program.load().unwrap();
        let handle = std::fs::File::open(&dir).unwrap();
        use std::os::fd::AsRawFd;
        attach(&loaded, handle.as_raw_fd()).unwrap();
        let procs = dir.join("cgroup.procs");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("echo $$ > {}; {script}", procs.display()))
            .output()
            .unwrap();
        let _ = std::fs::remove_dir(&dir);
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn the_kernel_enforces_the_program() {
        let script = "(: < /dev/null) 2>/dev/null && echo null-read; \
                      (: < /dev/zero) 2>/dev/null && echo zero-read; \
                      (: > /dev/zero) 2>/dev/null && echo zero-write; \
                      (: < /dev/kmsg) 2>/dev/null && echo kmsg-read";
        // Only the defaults: null and zero, not kmsg (1:11).
        let Some(out) = run_filtered(&[], script) else {
            return;
        };
        assert_eq!(out, "null-read\nzero-read\nzero-write\n");
        // A spec rule grants kmsg reads, not writes.
        let out = run_filtered(
            &[rule(true, "c", 1, 11, "r")],
            &format!("{script}; (: > /dev/kmsg) 2>/dev/null && echo kmsg-write"),
        )
        .unwrap();
        assert_eq!(out, "null-read\nzero-read\nzero-write\nkmsg-read\n");
    }
}
