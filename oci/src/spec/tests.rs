use super::*;
use serde_json::{json, Value};

/// The smallest config runc runs, with `patch` merged in (objects merge,
/// anything else replaces).
fn config(patch: Value) -> Vec<u8> {
    fn merge(into: &mut Value, patch: Value) {
        match (into, patch) {
            (Value::Object(into), Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(into.entry(key).or_insert(Value::Null), value);
                }
            }
            (into, patch) => *into = patch,
        }
    }
    let mut base = json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["/bin/true"], "cwd": "/"},
        "linux": {"namespaces": [{"type": "mount"}]}
    });
    merge(&mut base, patch);
    serde_json::to_vec(&base).expect("json")
}

fn resources(spec: &Spec) -> &Resources {
    spec.linux().resources.as_ref().expect("resources")
}

/// One row per field whose Go reading differs from serde's: what Go
/// (runc 1.1) makes of the text, checked on the parsed spec.
#[test]
fn config_json_is_read_as_go_reads_it() {
    type Check = fn(&Spec) -> bool;
    let rows: &[(&str, Value, Check)] = &[
        (
            "blockIO.weight 0 is unset (dockerd writes it for every container)",
            json!({"linux": {"resources": {"blockIO": {"weight": 0}}}}),
            |s| {
                resources(s)
                    .block_io
                    .as_ref()
                    .is_some_and(|b| b.weight.is_none())
            },
        ),
        (
            "blockIO.leafWeight 0 is unset",
            json!({"linux": {"resources": {"blockIO": {"leafWeight": 0}}}}),
            |s| {
                resources(s)
                    .block_io
                    .as_ref()
                    .is_some_and(|b| b.leaf_weight.is_none())
            },
        ),
        (
            "blockIO.weightDevice[].weight 0 is unset",
            json!({"linux": {"resources": {"blockIO": {"weightDevice": [
                {"major": 8, "minor": 0, "weight": 0, "leafWeight": 0}]}}}}),
            |s| {
                let d = &resources(s)
                    .block_io
                    .as_ref()
                    .expect("blockIO")
                    .weight_device[0];
                d.weight.is_none() && d.leaf_weight.is_none()
            },
        ),
        (
            "memory limit, reservation, swap 0 are unset; swappiness 0 is kept",
            json!({"linux": {"resources": {"memory": {
                "limit": 0, "reservation": 0, "swap": 0, "swappiness": 0}}}}),
            |s| {
                let m = resources(s).memory.expect("memory");
                m.limit.is_none()
                    && m.reservation.is_none()
                    && m.swap.is_none()
                    && m.swappiness == Some(0)
            },
        ),
        (
            "cpu shares, quota, period, realtime 0 and empty cpus/mems are unset; idle 0 kept",
            json!({"linux": {"resources": {"cpu": {
                "shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0,
                "realtimePeriod": 0, "cpus": "", "mems": "", "idle": 0}}}}),
            |s| {
                let c = resources(s).cpu.as_ref().expect("cpu");
                c.shares.is_none()
                    && c.quota.is_none()
                    && c.period.is_none()
                    && c.realtime_runtime.is_none()
                    && c.realtime_period.is_none()
                    && c.cpus.is_none()
                    && c.mems.is_none()
                    && c.idle == Some(0)
            },
        ),
        (
            "network.classID 0 is unset",
            json!({"linux": {"resources": {"network": {"classID": 0}}}}),
            |s| {
                resources(s)
                    .network
                    .as_ref()
                    .is_some_and(|n| n.class_id.is_none())
            },
        ),
        (
            "pids {} is a limit of 0 (untouched)",
            json!({"linux": {"resources": {"pids": {}}}}),
            |s| resources(s).pids.is_some_and(|p| p.limit == 0),
        ),
        (
            "a device rule without allow denies",
            json!({"linux": {"resources": {"devices": [{"access": "rwm"}]}}}),
            |s| !resources(s).devices[0].allow,
        ),
        (
            "null lists, maps and objects are absent",
            json!({"mounts": null, "annotations": null, "hooks": null,
                   "process": {"env": null, "rlimits": null, "capabilities": null},
                   "linux": {"devices": null, "maskedPaths": null, "sysctl": null,
                             "resources": {"devices": null, "blockIO": null}}}),
            |s| {
                s.mounts.is_empty()
                    && s.annotations.is_empty()
                    && s.process.as_ref().is_some_and(|p| p.env.is_empty())
                    && resources(s).block_io.is_none()
            },
        ),
        (
            "a null annotation is an empty string",
            json!({"annotations": {"Org.Key": null}}),
            |s| s.annotations.get("Org.Key").map(String::as_str) == Some(""),
        ),
        (
            "keys match ignoring case; map keys stay data",
            json!({"process": null, "Process": {"Args": ["/bin/sh"], "CWD": "/tmp"},
                   "linux": null,
                   "LINUX": {"Namespaces": [{"TYPE": "mount"}, {"type": "network"}],
                             "Resources": {"BlockIo": {"Weight": 300}},
                             "sysctl": {"net.ipv4.ip_forward": "1"}}}),
            |s| {
                let p = s.process.as_ref().expect("process");
                p.args == ["/bin/sh"]
                    && p.cwd == "/tmp"
                    && resources(s)
                        .block_io
                        .as_ref()
                        .is_some_and(|b| b.weight == Some(300))
                    && s.linux().sysctl.contains_key("net.ipv4.ip_forward")
            },
        ),
        (
            "seccomp: args null, Go-cased keys",
            json!({"linux": {"seccomp": {"DefaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": null}]}}}),
            |s| {
                let value = s.linux().seccomp.as_ref().expect("seccomp");
                value["defaultAction"] == "SCMP_ACT_ERRNO"
                    && value["syscalls"][0].get("args").is_none()
            },
        ),
    ];
    for (what, patch, check) in rows {
        let spec = Spec::from_slice(&config(patch.clone()))
            .unwrap_or_else(|e| panic!("{what}: refused: {e}"));
        assert!(check(&spec), "{what}: read as {spec:?}");
    }
}

/// What runc refuses stays refused once zeros and nulls are read as Go does.
#[test]
fn values_runc_refuses_stay_refused() {
    for (what, patch) in [
        (
            "blockIO.weight below 10",
            json!({"linux": {"resources": {"blockIO": {"weight": 5}}}}),
        ),
        ("no args", json!({"process": {"args": null}})),
        ("no root", json!({"root": null})),
        ("relative cwd", json!({"process": {"cwd": ""}})),
        (
            "rlimit without a type",
            json!({"process": {"rlimits": [{"hard": 1}]}}),
        ),
    ] {
        // The runtime's cgroup code refuses the weight
        // (runtime/tests/go_configs.rs); the rest the spec refuses.
        if what.starts_with("blockIO") {
            let spec = Spec::from_slice(&config(patch)).expect("read");
            assert_eq!(
                resources(&spec).block_io.as_ref().and_then(|b| b.weight),
                Some(5)
            );
            continue;
        }
        assert!(
            Spec::from_slice(&config(patch)).is_err(),
            "{what} was accepted"
        );
    }
}

/// A spec written with [`to_json`] reads back as the same spec.
#[test]
fn a_written_spec_reads_back_the_same() {
    let spec = Spec::from_slice(&config(json!({
        "process": {"capabilities": {"bounding": ["CAP_KILL"], "ambient": []}},
        "linux": {"resources": {"memory": {"limit": 1 << 30}, "pids": {"limit": 10}},
                  "namespaces": [{"type": "pid"}, {"type": "mount"}],
                  "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}}
    })))
    .expect("read");
    let text = serde_json::to_vec(&to_json(&spec)).expect("write");
    let again = Spec::from_slice(&text).expect("read back");
    assert_eq!(to_json(&again), to_json(&spec));
    let written: Value = serde_json::from_slice(&text).expect("json");
    assert!(written["linux"]["resources"]["memory"]
        .get("swap")
        .is_none());
    assert_eq!(written["linux"]["resources"]["memory"]["limit"], 1 << 30);
}

/// Why the workspace does not read `config.json` with `oci-spec`: it
/// refuses configs runc runs, and drops Go-cased keys without a word.
#[test]
fn oci_spec_cannot_read_what_runc_accepts() {
    type Theirs = oci_spec::runtime::Spec;
    // runc reads a missing process.user as uid 0.
    let minimal = config(json!({}));
    assert!(Spec::from_slice(&minimal).is_ok());
    assert!(
        serde_json::from_slice::<Theirs>(&minimal).is_err(),
        "oci-spec now reads a config without process.user: reconsider"
    );
    // For runc (and for us) a Go-cased key is the field.
    let text = config(json!({"process": {"user": {"uid": 0, "gid": 0}, "NoNewPrivileges": true}}));
    let ours = Spec::from_slice(&text).expect("read");
    assert!(ours.process.as_ref().is_some_and(|p| p.no_new_privileges));
    let theirs: Theirs = serde_json::from_slice(&text).expect("oci-spec reads it");
    let dropped = theirs
        .process()
        .as_ref()
        .and_then(|p| p.no_new_privileges());
    assert_eq!(
        dropped, None,
        "oci-spec now reads Go-cased keys: reconsider"
    );
}

#[test]
fn no_two_keys_fold_together() {
    assert_eq!(go_schema().ambiguous(), None);
}
