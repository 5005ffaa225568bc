//! What ties the runtime to the shared `config.json` types in berth-oci:
//! the seccomp keys the spec declares for Go's case folding are exactly the
//! runtime's profile fields, and values only the runtime's cgroup code
//! refuses stay refused.

use berth_oci::go_json::field_names;
use berth_runtime::seccomp::{ArgRule, Profile, SyscallRule};
use berth_runtime::spec::{Spec, SECCOMP_KEYS};

#[test]
fn the_spec_declares_every_seccomp_key_the_runtime_reads() {
    for key in field_names::<Profile>()
        .iter()
        .chain(field_names::<SyscallRule>())
        .chain(field_names::<ArgRule>())
    {
        assert!(
            SECCOMP_KEYS.contains(key),
            "{key} is missing from SECCOMP_KEYS"
        );
    }
}

#[test]
fn a_block_io_weight_below_ten_is_refused_as_runc_refuses_it() {
    let text = br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"args":["sh"],"cwd":"/"},
        "linux":{"resources":{"blockIO":{"weight":5}}}}"#;
    let spec = Spec::from_slice(text).expect("read");
    let resources = spec.linux().resources.clone().unwrap_or_default();
    assert!(berth_runtime::cgroups::validate_resources(&resources).is_err());
}
