//! Id-mapped bind mounts (runtime-spec 1.1 mount `uidMappings`/`gidMappings`,
//! runc 1.2's `idmap`/`ridmap` options), driven through `berth run` alone:
//! Debian's runc 1.1.5 (spec 1.0.2) has no id-mapped mounts to compare with.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_integration::*;
use serde_json::{json, Value};

const MAPPING: &str = r#"[{"containerID": 0, "hostID": 100000, "size": 65536}]"#;

/// A container in its own user namespace (root inside = 100000 outside).
fn user_namespace_bundle(name: &str) -> Bundle {
    let mut bundle = Bundle::new(name);
    let c = &mut bundle.config;
    c["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "user"}));
    let mapping: Value = serde_json::from_str(MAPPING).expect("mapping");
    c["linux"]["uidMappings"] = mapping.clone();
    c["linux"]["gidMappings"] = mapping;
    // The host's devices and cgroups are not the mapped root's to use.
    c["linux"]
        .as_object_mut()
        .expect("linux")
        .remove("resources");
    c["mounts"]
        .as_array_mut()
        .expect("mounts")
        .retain(|m| m["type"] != "cgroup");
    c["root"]["readonly"] = json!(false);
    bundle
}

fn bind(bundle: &mut Bundle, source: &Path, destination: &str, extra: Value) {
    let mut mount = json!({"destination": destination, "type": "bind",
        "source": source, "options": ["bind"]});
    if let (Some(mount), Some(extra)) = (mount.as_object_mut(), extra.as_object()) {
        mount.extend(extra.clone());
    }
    bundle.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(mount);
}

/// A host directory beside the bundle's rootfs (removed with it), with a
/// file owned by root and one owned by 1000.
fn volume(bundle: &Bundle) -> PathBuf {
    let path = bundle.dir.join("volume");
    std::fs::create_dir(&path).expect("volume");
    std::fs::write(path.join("owned-by-root"), b"r").expect("write");
    std::fs::write(path.join("owned-by-1000"), b"u").expect("write");
    std::os::unix::fs::chown(path.join("owned-by-1000"), Some(1000), Some(1000)).expect("chown");
    path
}

/// Inside, the container's mappings on a mount show the host's owners as
/// they are (root is root, 1000 is 1000) and what root writes lands on the
/// host as root; without them the same directory shows nobody; a mount's
/// own mappings (host 0 seen as 101000 = 1000 inside) are its own.
#[test]
fn a_bind_mount_shows_the_hosts_owners_through_its_mappings() {
    if !can_run() {
        return;
    }
    let berth = Runtime::berth();
    let mut bundle = user_namespace_bundle("idmap");
    let data = volume(&bundle);
    for dir in ["mapped", "plain", "other"] {
        std::fs::create_dir(bundle.rootfs().join(dir)).expect("mount point");
    }
    let mapping: Value = serde_json::from_str(MAPPING).expect("mapping");
    bind(
        &mut bundle,
        &data,
        "/mapped",
        json!({"uidMappings": mapping, "gidMappings": mapping,
               "options": ["rbind", "rprivate"]}),
    );
    bind(&mut bundle, &data, "/plain", json!({}));
    let other = json!([{"containerID": 0, "hostID": 101000, "size": 1}]);
    bind(
        &mut bundle,
        &data,
        "/other",
        json!({"uidMappings": other, "gidMappings": other, "options": ["bind", "idmap"]}),
    );
    bundle.args(&[
        "/bin/sh",
        "-c",
        "cat /proc/self/uid_map; id -u; \
         stat -c '%n %u %g' /mapped/owned-by-root /mapped/owned-by-1000 \
           /plain/owned-by-root /other/owned-by-root /other/owned-by-1000; \
         touch /mapped/made-inside && echo made; \
         touch /plain/made-plain 2>/dev/null || echo plain refused",
    ]);
    let out = berth.run(&bundle, &unique("idmap"));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"], "{stdout}");
    assert_eq!(
        &lines[1..],
        [
            "0",
            "/mapped/owned-by-root 0 0",
            "/mapped/owned-by-1000 1000 1000",
            "/plain/owned-by-root 65534 65534",
            "/other/owned-by-root 1000 1000",
            "/other/owned-by-1000 65534 65534",
            "made",
            "plain refused",
        ],
        "{}",
        text(&out)
    );
    let made = std::fs::metadata(data.join("made-inside")).expect("made inside");
    assert_eq!((made.uid(), made.gid()), (0, 0));
    assert!(!data.join("made-plain").exists());
}

/// `berth features` says so, as runc 1.2's does.
#[test]
fn the_features_document_lists_id_mapped_mounts() {
    if !can_run() {
        return;
    }
    let out = Runtime::berth().exec(&["features"]);
    assert!(out.status.success(), "{}", text(&out));
    let features: Value = serde_json::from_slice(&out.stdout).expect("features json");
    assert_eq!(
        features["linux"]["mountExtensions"]["idmap"]["enabled"],
        true
    );
    let options = features["mountOptions"].as_array().expect("mountOptions");
    for option in ["idmap", "ridmap"] {
        assert!(options.contains(&json!(option)), "{option}");
    }
}

/// What cannot be id-mapped is refused by name, and leaves no container:
/// a tmpfs mount (not a bind), a lone uidMappings, `idmap` in a container
/// without mappings, and a filesystem the kernel cannot id-map (sysfs).
#[test]
fn what_cannot_be_id_mapped_is_refused_by_name() {
    if !can_run() {
        return;
    }
    let scratch = Bundle::new("idmap-bad");
    let data = volume(&scratch);
    let mapping: Value = serde_json::from_str(MAPPING).expect("mapping");
    let cases: [(&str, Value, bool, &str); 4] = [
        (
            "tmpfs",
            json!({"destination": "/t", "type": "tmpfs", "source": "tmpfs",
                   "options": ["idmap"]}),
            true,
            "only bind mounts can be id-mapped",
        ),
        (
            "uid-only",
            json!({"destination": "/t", "type": "bind", "source": data,
                   "options": ["bind"], "uidMappings": mapping}),
            true,
            "uidMappings and gidMappings must be given together",
        ),
        (
            "no-userns",
            json!({"destination": "/t", "type": "bind", "source": data,
                   "options": ["bind", "idmap"]}),
            false,
            "takes the container's own, and it has none",
        ),
        (
            "sysfs",
            json!({"destination": "/t", "type": "bind", "source": "/sys/kernel",
                   "options": ["rbind", "ridmap"]}),
            true,
            "its filesystem (sysfs) (or a filesystem mounted under it) cannot be id-mapped",
        ),
    ];
    for (name, mount, userns, expected) in cases {
        let berth = Runtime::berth();
        let mut bundle = if userns {
            user_namespace_bundle(name)
        } else {
            Bundle::new(name)
        };
        std::fs::create_dir(bundle.rootfs().join("t")).expect("mount point");
        bundle.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(mount);
        bundle.args(&["/bin/sh", "-c", "echo RAN"]);
        let id = unique(name);
        let out = berth.run(&bundle, &id);
        assert!(!out.status.success(), "{name}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{name}: {}", text(&out));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("RAN"));
        assert_eq!(berth.state(&id), None, "{name}: a container was left");
    }
}

/// A container in its own user namespace joining a network namespace of
/// the host's user namespace (as a CRI pod's) may not mount a sysfs: berth
/// gives it the host's /sys, read-only. (Debian's runc 1.1.5 fails such a
/// container: "mount sysfs … operation not permitted".)
#[test]
fn a_user_namespace_joining_a_hosts_network_namespace_gets_sys_read_only() {
    if !can_run() {
        return;
    }
    let netns = berth_integration::netns::Netns::new();
    let berth = Runtime::berth();
    let mut bundle = user_namespace_bundle("userns-sys");
    let namespaces = bundle.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces");
    namespaces.retain(|n| n["type"] != "network");
    namespaces.push(json!({"type": "network", "path": netns.path}));
    bundle.args(&[
        "/bin/sh",
        "-c",
        "while read dev mnt type opts rest; do \
           [ \"$mnt\" = /sys ] && { echo ${opts%%,*}; break; }; done < /proc/self/mounts; \
         test -e /sys/class/net/lo && echo host-sys; touch /sys/x 2>/dev/null || echo refused",
    ]);
    let out = berth.run(&bundle, &unique("userns-sys"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ro\nhost-sys\nrefused\n",
        "{}",
        text(&out)
    );
}
