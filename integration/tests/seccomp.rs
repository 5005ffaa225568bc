//! Seccomp from inside real containers: the spec's own rules, and the
//! engines' default profile (containers-common's, shipped by Debian)
//! resolved for the container's capabilities.

use berth_integration::*;
use berth_oci::seccomp as engine;
use serde_json::{json, Value};

const ENGINE_PROFILE: &str =
    "/usr/share/gocode/src/github.com/containers/common/pkg/seccomp/seccomp.json";

fn with_profile(name: &str, profile: Value) -> Bundle {
    let mut bundle = Bundle::new(name);
    bundle.config["root"]["readonly"] = json!(false);
    bundle.config["linux"]["seccomp"] = profile;
    bundle
}

fn run(bundle: &Bundle, args: &[&str]) -> std::process::Output {
    let berth = Runtime::berth();
    let mut bundle_config = bundle.config.clone();
    bundle_config["process"]["args"] = json!(args);
    std::fs::write(
        bundle.dir.join("config.json"),
        serde_json::to_vec(&bundle_config).unwrap(),
    )
    .unwrap();
    berth.exec(&[
        "run",
        "--bundle",
        bundle.dir.to_str().unwrap(),
        &unique("sc"),
    ])
}

#[test]
fn an_errno_rule_fails_the_call_with_exactly_that_errno() {
    if !can_run() {
        return;
    }
    for nnp in [true, false] {
        let mut bundle = with_profile(
            "mkdir-eacces",
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
            }),
        );
        bundle.config["process"]["noNewPrivileges"] = json!(nnp);
        let out = run(
            &bundle,
            &[
                "/bin/sh",
                "-c",
                "mkdir /tmp/denied; echo rc=$?; touch /tmp/allowed && echo touched",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stdout.contains("rc=1") && stdout.contains("touched"),
            "nnp={nnp}: {}",
            text(&out)
        );
        assert!(
            stderr.contains("Permission denied"),
            "nnp={nnp}: {}",
            text(&out)
        );
        assert!(!bundle.rootfs().join("tmp/denied").exists());
    }
}

#[test]
fn an_argument_rule_blocks_only_the_matching_call() {
    if !can_run() {
        return;
    }
    for arg in [
        json!({"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}),
        // (signal & 0x8) == 0x8: SIGUSR1 (10) matches, signal 0 does not.
        json!({"index": 1, "value": 8, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}),
    ] {
        let bundle = with_profile(
            "kill-usr1",
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": [arg]}]
            }),
        );
        let out = run(
            &bundle,
            &[
                "/bin/sh",
                "-c",
                "kill -0 $$; echo zero=$?; kill -USR1 $$; echo usr1=$?",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("zero=0"), "{}", text(&out));
        assert!(stdout.contains("usr1=1"), "{}", text(&out));
    }
}

fn engine_profile(capabilities: &[&str]) -> Value {
    let text = std::fs::read_to_string(ENGINE_PROFILE).expect(
        "containers-common's seccomp.json (apt install golang-github-containers-common-dev)",
    );
    let profile: Value = serde_json::from_str(&text).unwrap();
    let caps: Vec<String> = capabilities.iter().map(|c| c.to_string()).collect();
    let target = engine::Target {
        capabilities: &caps,
        arch: "amd64",
        kernel: engine::kernel_version(),
    };
    engine::resolve(&profile, &target).unwrap()
}

/// What the init needs up to execve plus what the static checker needs.
const CHECKER_SYSCALLS: &[&str] = &[
    "execve",
    "exit_group",
    "exit",
    "brk",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "mmap",
    "munmap",
    "mprotect",
    "readlinkat",
    "getrandom",
    "rt_sigprocmask",
    "rt_sigaction",
    "uname",
    "getuid",
    "geteuid",
    "getpid",
    "write",
    "read",
    "close",
    "fstat",
    "newfstatat",
    "openat",
    "ioctl",
    "poll",
    "sched_getaffinity",
    "sigaltstack",
    "gettid",
    "readlink",
    "futex",
    "madvise",
    // The init's wait for `start`, which runs under the filter (as runc's
    // wait on its exec fifo does) so that startContainer hooks are filtered.
    "sendmsg",
    "sendto",
    "accept4",
    "recvfrom",
    "recvmsg",
    "fcntl",
    "close_range",
];

#[test]
fn the_engines_default_profile_runs_a_shell_and_denies_what_it_denies() {
    if !can_run() {
        return;
    }
    let mut bundle = with_profile("engine", engine_profile(DOCKER_CAPS));
    let caps = json!(DOCKER_CAPS);
    bundle.config["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    let out = run(&bundle, &[
        "/bin/sh", "-c",
        "mkdir -p /tmp/a && echo x > /tmp/a/f && cat /tmp/a/f && ls /tmp/a && ps >/dev/null && sleep 0 && id -u",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\nf\n0\n");
    // bpf(2) without CAP_SYS_ADMIN: the profile's EPERM.
    let out = run(
        &bundle,
        &["/berth-checker", "--syscall", "321", "0", "0", "0"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "errno 1",
        "{}",
        text(&out)
    );
    // tuxcall(2) is in none of its lists: defaultErrnoRet, ENOSYS.
    let out = run(&bundle, &["/berth-checker", "--syscall", "184"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "errno 38",
        "{}",
        text(&out)
    );
    // unshare is allowed by the profile; the missing capability stops it.
    let out = run(
        &bundle,
        &[
            "/berth-checker",
            "--syscall",
            "272",
            &libc::CLONE_NEWNS.to_string(),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "errno 1",
        "{}",
        text(&out)
    );

    // With CAP_SYS_ADMIN the profile lets bpf(2) through to the kernel.
    let mut admin: Vec<&str> = DOCKER_CAPS.to_vec();
    admin.push("CAP_SYS_ADMIN");
    let mut bundle = with_profile("engine-admin", engine_profile(&admin));
    let caps = json!(admin);
    bundle.config["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    let out = run(
        &bundle,
        &["/berth-checker", "--syscall", "321", "0", "0", "0"],
    );
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer != "errno 1" && answer != "errno 38",
        "{answer}: {}",
        text(&out)
    );
}

#[test]
fn bad_profiles_fail_create_and_leave_nothing() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    for (profile, words) in [
        (json!({"defaultAction": "SCMP_ACT_BOGUS"}), "unknown action"),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_PDP11"]}),
            "unknown architecture",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": "read"}),
            "invalid type",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_SOMETIMES"}]}]}),
            "unknown operator",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
            "needs listenerPath",
        ),
    ] {
        let bundle = with_profile("bad-seccomp", profile);
        bundle.write();
        let id = unique("badsc");
        let out = berth.exec(&["create", "--bundle", bundle.dir.to_str().unwrap(), &id]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(words),
            "{words}: {}",
            text(&out)
        );
        assert!(!berth.root.join(&id).exists());
        assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/pids/berth/{id}")).exists());
    }
}

#[test]
fn every_action_does_what_it_says() {
    if !can_run() {
        return;
    }
    // mkdir under each action; the shell reports how mkdir ended.
    for (action, expected) in [
        ("SCMP_ACT_KILL_PROCESS", "status=159"), // SIGSYS
        ("SCMP_ACT_KILL_THREAD", "status=159"),
        ("SCMP_ACT_KILL", "status=159"),
        ("SCMP_ACT_TRAP", "status=159"),
        ("SCMP_ACT_LOG", "status=0"),   // allowed, and logged
        ("SCMP_ACT_TRACE", "status=1"), // no tracer: the call fails with ENOSYS
        ("SCMP_ACT_ERRNO", "status=1"),
        ("SCMP_ACT_ALLOW", "status=0"),
    ] {
        let bundle = with_profile(
            "actions",
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": action}]
            }),
        );
        let out = run(
            &bundle,
            &["/bin/sh", "-c", "/bin/mkdir /tmp/d; echo status=$?"],
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(expected),
            "{action}: {}",
            text(&out)
        );
    }
}

#[test]
fn a_default_deny_profile_with_an_allow_list_runs_only_what_it_lists() {
    if !can_run() {
        return;
    }
    // Whatever the init needs up to execve plus what `true` needs.
    let bundle = with_profile(
        "allowlist",
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [{"names": CHECKER_SYSCALLS, "action": "SCMP_ACT_ALLOW"}]
        }),
    );
    let out = run(&bundle, &["/berth-checker", "--syscall", "39"]); // getpid: allowed
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        text(&out)
    );
    let out = run(&bundle, &["/berth-checker", "--syscall", "110"]); // getppid: denied
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "errno 1",
        "{}",
        text(&out)
    );
}

#[test]
fn rules_repeating_the_default_and_alternatives_on_one_argument() {
    if !can_run() {
        return;
    }
    // A rule with the default action must not turn into an allow.
    let bundle = with_profile(
        "same-as-default",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        }),
    );
    let out = run(&bundle, &["/bin/sh", "-c", "mkdir /tmp/x; echo rc=$?"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=1"),
        "{}",
        text(&out)
    );
    // Default ERRNO(1) plus a rule ERRNO(1) for mkdir: still refused (the
    // bug this guards against turned such rules into allows).
    let bundle = with_profile(
        "errno-default",
        json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": CHECKER_SYSCALLS, "action": "SCMP_ACT_ALLOW"}
            ]
        }),
    );
    let out = run(&bundle, &["/berth-checker", "--syscall", "83", "0", "0"]); // mkdir(NULL)
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "errno 1",
        "{}",
        text(&out)
    );

    // Two conditions on one argument are alternatives (libseccomp, runc).
    let bundle = with_profile(
        "alternatives",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": [
                {"index": 1, "value": 10, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 12, "op": "SCMP_CMP_EQ"}
            ]}]
        }),
    );
    let out = run(&bundle, &["/bin/sh", "-c",
        "trap '' USR1 USR2; kill -USR1 $$; echo usr1=$?; kill -USR2 $$; echo usr2=$?; kill -0 $$; echo zero=$?"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("usr1=1") && stdout.contains("usr2=1") && stdout.contains("zero=0"),
        "{}",
        text(&out)
    );
}

/// A syscall newer than any the profile could name (number 1000 here) fails
/// with ENOSYS, not the profile's default errno, under both runtimes:
/// programs probe new syscalls and fall back only on ENOSYS.
#[test]
fn a_syscall_unknown_to_the_profile_fails_with_enosys() {
    if !can_run() {
        return;
    }
    // The engines' profile (enough for runc's init too), with EPERM as the
    // default errno so that ENOSYS can only come from the unknown-syscall rule.
    let mut profile = engine_profile(DOCKER_CAPS);
    profile["defaultErrnoRet"] = json!(1);
    let mut bundle = with_profile("enosys", profile);
    for rt in [Runtime::berth(), Runtime::runc()] {
        // bpf(2) (321) is denied without CAP_SYS_ADMIN: the default errno.
        for (number, expected) in [("1000", "errno 38"), ("321", "errno 1")] {
            bundle.args(&["/berth-checker", "--syscall", number]);
            let out = rt.run(&bundle, &unique("enosys"));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                expected,
                "{:?} syscall {number}: {}",
                rt.kind,
                text(&out)
            );
        }
    }
}

/// i386 calls (`int 0x80`) and x32 calls (bit 30) of a 64-bit process,
/// filtered by the profile's `architectures` as libseccomp filters them:
/// a listed ABI by its own numbers, an unlisted one kills the caller
/// (SIGSYS, status 159). Each row under runc and berth, same answers.
#[test]
fn i386_and_x32_calls_follow_the_profiles_architectures_as_under_runc() {
    if !can_run() {
        return;
    }
    let x32 = |nr: u32| (nr | 0x4000_0000).to_string();
    let only_64: &[&str] = &["SCMP_ARCH_X86_64"];
    let with_i386: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"];
    let all: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
    // (architectures, probe, expected stdout, expected status)
    let rows: Vec<(&[&str], Vec<String>, &str, i32)> = vec![
        (&[], vec!["--int80".into(), "20".into()], "", 159),
        (only_64, vec!["--int80".into(), "20".into()], "", 159),
        (only_64, vec!["--syscall".into(), x32(39)], "", 159),
        (
            only_64,
            vec!["--syscall".into(), "110".into()],
            "errno 13",
            0,
        ),
        (with_i386, vec!["--int80".into(), "20".into()], "ok", 0),
        (
            with_i386,
            vec!["--int80".into(), "64".into()],
            "errno 13",
            0,
        ),
        (
            with_i386,
            vec!["--int80".into(), "999".into()],
            "errno 38",
            0,
        ),
        (with_i386, vec!["--syscall".into(), x32(39)], "", 159),
        // Allowed by the filter: the kernel answers ("errno 38" where it
        // has no x32 ABI, as here; "ok" where it has).
        (all, vec!["--syscall".into(), x32(39)], "allowed", 0),
        (all, vec!["--syscall".into(), x32(110)], "errno 13", 0),
        (all, vec!["--int80".into(), "64".into()], "errno 13", 0),
    ];
    for (arches, probe, expected, status) in rows {
        // getppid is denied by name: 110 on x86_64, 64 on i386, 110|x32 on x32.
        let mut bundle = with_profile(
            "abis",
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": arches,
                "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
            }),
        );
        let mut args = vec!["/berth-checker"];
        args.extend(probe.iter().map(String::as_str));
        bundle.args(&args);
        for rt in [Runtime::berth(), Runtime::runc()] {
            let out = rt.run(&bundle, &unique("abis"));
            let what = format!("{:?} {arches:?} {probe:?}: {}", rt.kind, text(&out));
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if expected == "allowed" {
                assert!(stdout == "ok" || stdout == "errno 38", "{what}");
            } else {
                assert_eq!(stdout, expected, "{what}");
            }
            assert_eq!(out.status.code(), Some(status), "{what}");
        }
    }
}

/// Rules of different actions on one syscall, under runc and berth: the
/// verdict is libseccomp's (the first unconditional rule decides, an
/// earlier broader rule covers a narrower later one, the rule on the higher
/// argument is tested first), not the most restrictive action; a broader rule after a narrower one of another
/// action is refused by both.
#[test]
fn mixed_action_rules_give_libseccomps_verdict_as_under_runc() {
    if !can_run() {
        return;
    }
    let eq = |index: u64, value: u64| json!({"index": index, "value": value, "op": "SCMP_CMP_EQ"});
    let mut bundle = with_profile(
        "mixed",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["mkdir"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5, "args": [eq(0, 1)]},
                {"names": ["getppid"], "action": "SCMP_ACT_TRAP", "args": [eq(0, 1), eq(1, 2)]},
                {"names": ["sched_yield"], "action": "SCMP_ACT_TRAP", "args": [eq(0, 3)]},
                {"names": ["sched_yield"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5, "args": [eq(1, 10)]}
            ]
        }),
    );
    // (probe, stdout, status): mkdir(NULL) and getppid with arguments.
    let rows: &[(&[&str], &str, i32)] = &[
        (&["83", "0", "0"], "errno 13", 0),
        (&["110", "1", "2"], "errno 5", 0),
        (&["110", "1", "3"], "errno 5", 0),
        (&["110", "0", "2"], "ok", 0),
        // sched_yield: where both hold, the rule on the higher argument decides.
        (&["24", "3", "10"], "errno 5", 0),
        (&["24", "3", "0"], "", 159),
        (&["24", "0", "0"], "ok", 0),
    ];
    for (probe, expected, status) in rows {
        let mut args = vec!["/berth-checker", "--syscall"];
        args.extend_from_slice(probe);
        bundle.args(&args);
        for rt in [Runtime::berth(), Runtime::runc()] {
            let out = rt.run(&bundle, &unique("mixed"));
            let what = format!("{:?} {probe:?}: {}", rt.kind, text(&out));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                *expected,
                "{what}"
            );
            assert_eq!(out.status.code(), Some(*status), "{what}");
        }
    }
    // The same conditions under two actions: libseccomp says EEXIST.
    let mut bundle = with_profile(
        "mixed-refused",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "args": [eq(0, 1)]},
                {"names": ["getppid"], "action": "SCMP_ACT_KILL", "args": [eq(0, 1)]}
            ]
        }),
    );
    bundle.args(&["/bin/true"]);
    for rt in [Runtime::berth(), Runtime::runc()] {
        let id = unique("mixed-refused");
        let out = rt.run(&bundle, &id);
        assert!(!out.status.success(), "{:?}: {}", rt.kind, text(&out));
        assert!(rt.state(&id).is_none(), "{:?}: {id} left behind", rt.kind);
    }
}
