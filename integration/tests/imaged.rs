//! berth-imaged end to end: real `docker-registry`s on 127.0.0.1 filled with
//! images built here and pushed with `skopeo`; pulls over the daemon's gRPC
//! socket; root filesystems compared with what `umoci unpack` makes of the
//! same image; hostile layers; corrupt and truncated blobs; authentication;
//! a daemon killed mid-pull.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_integration::imaged::*;
use berth_integration::unique;
use berth_proto::v1 as pb;

/// The applets these tests' busybox image links.
const APPLETS: &[&str] = &["sh", "ls", "cat", "echo", "true"];

fn push_busybox(registry: &Registry, repo: &str) -> Layout {
    let layout = busybox_layout("busybox", APPLETS, "1");
    registry.push(&layout, "1", repo, None);
    layout
}

/// `n` pulls of `reference` at once, each on its own connection.
fn pull_at_once(daemon: &Daemon, reference: &str, n: usize) -> Vec<pb::Image> {
    let pulls: Vec<_> = (0..n)
        .map(|_| pull_on_thread(&daemon.socket, reference))
        .collect();
    pulls
        .into_iter()
        .map(|p| {
            let progress = p
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
            done(&progress)
        })
        .collect()
}

fn assert_same(berth: &[String], umoci: &[String]) {
    let only_berth: Vec<_> = berth.iter().filter(|l| !umoci.contains(l)).collect();
    let only_umoci: Vec<_> = umoci.iter().filter(|l| !berth.contains(l)).collect();
    assert!(
        only_berth.is_empty() && only_umoci.is_empty(),
        "berth and umoci disagree:\nonly berth: {only_berth:#?}\nonly umoci: {only_umoci:#?}"
    );
}

/// The daemon's unpack of `image` has the files umoci unpacks from the
/// layout's tag "1".
fn assert_unpacks_like_umoci(daemon: &Daemon, image: &pb::Image, layout: &Layout) {
    let umoci = layout.umoci_unpack("1");
    assert_same(
        &daemon.image_listing(image),
        &listing(&umoci.0.join("rootfs")),
    );
}

#[test]
fn pull_busybox_unpacks_what_umoci_unpacks() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let layout = push_busybox(&registry, "busybox");
    let daemon = Daemon::start();
    let reference = format!("{}/busybox:1", registry.host());
    let progress = daemon
        .pull_with(&reference, None, None)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let phases: Vec<i32> = progress.iter().map(|p| p.phase).collect();
    use pb::pull_progress::Phase;
    for phase in [
        Phase::Resolving,
        Phase::Resolved,
        Phase::Verified,
        Phase::Unpacked,
        Phase::Done,
    ] {
        assert!(
            phases.contains(&(phase as i32)),
            "{phase:?} missing: {progress:?}"
        );
    }
    let image = done(&progress);
    assert_eq!(image.name, reference);
    assert_eq!(image.platform.as_ref().unwrap().architecture, "amd64");

    assert_unpacks_like_umoci(&daemon, &image, &layout);

    // The static binary resolves names (glibc's NSS, /etc/hosts), and two
    // pulls of one image at once share its layer.
    let by_name = format!("localhost:{}/busybox:1", registry.port);
    for got in pull_at_once(&daemon, &by_name, 2) {
        assert_eq!(got.chain_id, image.chain_id);
        assert_eq!(got.name, by_name);
    }

    // The image is listed; a second pull finds every layer there already.
    let mut images = pb::images_client::ImagesClient::new(daemon.channel());
    let list = daemon
        .block_on(images.list(pb::ListImagesRequest::default()))
        .unwrap()
        .into_inner();
    assert_eq!(list.images.len(), 2, "{list:?}");
    let again = daemon.pull_with(&reference, None, None).unwrap();
    assert!(again.iter().any(|p| p.phase == Phase::AlreadyExists as i32));

    // Removing the image collects its blobs and snapshots.
    daemon
        .block_on(images.remove(pb::RemoveImageRequest {
            name: format!("localhost:{}/busybox:1", registry.port),
        }))
        .unwrap();
    let removed = daemon
        .block_on(images.remove(pb::RemoveImageRequest {
            name: reference.clone(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(removed.removed_blobs.len(), 3, "{removed:?}");
    assert_eq!(removed.removed_snapshots.len(), 1, "{removed:?}");
    assert!(daemon.blobs().is_empty());
}

#[test]
fn pulls_of_one_image_at_once_share_its_layers() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let mut layout = Layout::new("shared");
    let image = layout.image(
        &[
            (debian_base().to_vec(), Compression::Gzip),
            (busybox_layer(APPLETS), Compression::Gzip),
        ],
        ("amd64", ""),
    );
    layout.tag("1", &image);
    registry.push(&layout, "1", "shared", None);
    let daemon = Daemon::start();
    let images = pull_at_once(&daemon, &format!("{}/shared:1", registry.host()), 3);
    assert!(images.iter().all(|i| i.chain_id == images[0].chain_id));
    let mut snaps = daemon.snapshots();
    let all = daemon
        .block_on(snaps.list(pb::ListSnapshotsRequest {}))
        .unwrap()
        .into_inner()
        .snapshots;
    assert_eq!(all.len(), 2, "one snapshot per layer: {all:#?}");
    assert_unpacks_like_umoci(&daemon, &images[0], &layout);
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    if !can_run_images() {
        return;
    }
    let mut daemon = Daemon::start();
    let status = daemon.stop().expect("running");
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(!daemon.socket.exists(), "the socket is removed on shutdown");
}

/// Debian bookworm (debootstrap minbase) as one tar, built once per machine
/// and cached: debootstrap takes about 40 s against a Debian mirror.
fn debian_base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let cache_dir = PathBuf::from("/var/cache/berth-tests");
        let cache = cache_dir.join("debian-bookworm-minbase.tar");
        if !cache.exists() {
            std::fs::create_dir_all(&cache_dir).expect("cache dir");
            let root = cache_dir.join(unique("debootstrap"));
            let mirror = std::env::var("BERTH_DEBIAN_MIRROR")
                .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
            let out = Command::new("debootstrap")
                .args(["--variant=minbase", "bookworm"])
                .arg(&root)
                .arg(&mirror)
                .output()
                .expect("debootstrap");
            assert!(
                out.status.success(),
                "debootstrap: {}",
                berth_integration::text(&out)
            );
            // Test processes of other checkouts may build the cache at the
            // same time: each writes its own file, the rename is atomic.
            let tmp = cache.with_extension(unique("tmp"));
            let out = Command::new("tar")
                .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
                .arg(&root)
                .args(["-cf"])
                .arg(&tmp)
                .arg(".")
                .output()
                .expect("tar");
            assert!(
                out.status.success(),
                "tar: {}",
                berth_integration::text(&out)
            );
            std::fs::rename(&tmp, &cache).expect("rename cache");
            let _ = std::fs::remove_dir_all(&root);
        }
        std::fs::read(&cache).expect("read cached debian tar")
    })
}

/// `security.capability` (VFS_CAP_REVISION_2, effective) granting
/// CAP_NET_BIND_SERVICE (10) permitted.
const CAP_NET_BIND_SERVICE: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// The second layer: whiteouts, an opaque directory, hardlinks, setuid and
/// setgid, an owner, a capability, type changes, a device, a fifo, a long name.
fn debian_changes() -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("etc/", 0o755)
        .file("etc/.wh.motd", 0o644, b"")
        .file("etc/.wh.issue", 0o644, b"")
        .dir("etc/issue/", 0o755)
        .file("etc/issue/berth", 0o644, b"a directory where a file was\n")
        .dir("usr/", 0o755)
        .dir("usr/share/", 0o755)
        .dir("usr/share/doc/", 0o755)
        .file("usr/share/doc/.wh.dpkg", 0o644, b"")
        .dir("var/", 0o755)
        .dir("var/log/", 0o755)
        .file("var/log/.wh..wh..opq", 0o644, b"")
        .file("var/log/berth.log", 0o640, b"only this is left\n")
        .file("opt", 0o644, b"a file where a directory was\n")
        .dir("usr/local/", 0o755)
        .dir("usr/local/bin/", 0o755)
        .file("usr/local/bin/tool", 0o755, b"#!/bin/sh\necho tool\n")
        .hardlink("usr/local/bin/tool-link", "usr/local/bin/tool")
        .hardlink("usr/local/bin/tool-link2", "/usr/local/bin/tool")
        .file("usr/local/bin/suid", 0o4755, b"setuid\n")
        .file("usr/local/bin/sgid", 0o2755, b"setgid\n")
        .file_owned("usr/local/bin/owned", 0o600, 1000, 1000, b"owned\n")
        .file_xattrs(
            "usr/local/bin/capped",
            0o755,
            b"capable\n",
            &[
                ("security.capability", &CAP_NET_BIND_SERVICE),
                ("user.berth", b"x"),
            ],
        )
        .dir("srv/sticky/", 0o1777)
        .char_dev("dev/berth-null", 1, 3)
        .fifo("run/berth.fifo")
        .file_long_name(
            &format!("usr/local/share/{}/long-name.txt", "d".repeat(120)),
            b"long\n",
        );
    t.finish()
}

/// The third layer, zstd-compressed.
fn debian_zstd() -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("usr/local/share/berth/", 0o755)
        .file(
            "usr/local/share/berth/zstd.txt",
            0o644,
            b"from a zstd layer\n".repeat(100).as_slice(),
        )
        .file("usr/local/bin/.wh.tool", 0o644, b"")
        .file("usr/local/bin/suid", 0o4711, b"setuid again\n");
    t.finish()
}

fn debian_layout(third: Compression) -> Layout {
    let mut layout = Layout::new("debian");
    let image = layout.image(
        &[
            (debian_base().to_vec(), Compression::Gzip),
            (debian_changes(), Compression::Gzip),
            (debian_zstd(), third),
        ],
        ("amd64", ""),
    );
    layout.tag("12", &image);
    layout
}

#[test]
fn pull_debian_layers_equals_umoci_unpack() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let layout = debian_layout(Compression::Zstd);
    registry.push(&layout, "12", "debian", None);
    let daemon = Daemon::start();
    let image = daemon.pull(&format!("{}/debian:12", registry.host()));
    let berth = daemon.image_listing(&image);

    // umoci unpacks the same tars (the zstd layer as gzip where umoci
    // cannot read zstd: same diff IDs, same content).
    let gzip_only;
    let umoci = if umoci_reads_zstd() {
        layout.umoci_unpack("12")
    } else {
        gzip_only = debian_layout(Compression::Gzip);
        gzip_only.umoci_unpack("12")
    };
    let umoci_list = listing(&umoci.0.join("rootfs"));
    assert_same(&berth, &umoci_list);

    // What the layers promised, seen in the merged view.
    let has = |needle: &str| berth.iter().any(|l| l.starts_with(needle));
    assert!(!has("etc/motd "), "whiteout");
    assert!(has("etc/issue dir "), "file → directory");
    assert!(has("opt file "), "directory → file");
    assert!(!has("usr/share/doc/dpkg"), "directory whiteout");
    assert!(has("var/log/berth.log "));
    assert_eq!(
        berth.iter().filter(|l| l.starts_with("var/log/")).count(),
        1,
        "opaque"
    );
    assert!(has("usr/local/bin/suid file 4711 "));
    assert!(has("usr/local/bin/sgid file 2755 "));
    assert!(has("usr/local/bin/owned file 600 1000:1000 "));
    assert!(has("dev/berth-null char 666 0:0 103 "));
    assert!(has("run/berth.fifo fifo "));
    assert!(!has("usr/local/bin/tool "), "whiteout of one hardlink");
    let capped = berth
        .iter()
        .find(|l| l.starts_with("usr/local/bin/capped "))
        .expect("capped");
    assert!(capped.contains("security.capability"), "{capped}");
    assert!(capped.contains("user.berth"), "{capped}");
    assert!(has(&format!(
        "usr/local/share/{}/long-name.txt",
        "d".repeat(120)
    )));
    assert!(has("usr/local/share/berth/zstd.txt "));
}

fn umoci_reads_zstd() -> bool {
    static ZSTD: OnceLock<bool> = OnceLock::new();
    *ZSTD.get_or_init(|| {
        let mut layout = Layout::new("zstd-probe");
        let mut t = LayerTar::new();
        t.file("x", 0o644, b"x");
        let image = layout.image(&[(t.finish(), Compression::Zstd)], ("amd64", ""));
        layout.tag("1", &image);
        let bundle = std::env::temp_dir().join(unique("umoci-zstd"));
        let ok = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:1", layout.dir.display()))
            .arg(&bundle)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        let _ = std::fs::remove_dir_all(&bundle);
        ok
    })
}

/// Debian's `var/run -> /run`, then a layer writing `var/run/berth.pid`:
/// as with containerd, the new layer's `var/run` is a real directory that
/// hides the symlink, and nothing is written through it into `/run`.
#[test]
fn a_layer_under_an_earlier_symlink_gets_a_real_directory() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let mut layout = Layout::new("varrun");
    let mut t = LayerTar::new();
    t.dir("var/", 0o755)
        .dir("var/run/", 0o755)
        .file("var/run/berth.pid", 0o644, b"1\n");
    let image = layout.image(
        &[
            (debian_base().to_vec(), Compression::Gzip),
            (t.finish(), Compression::Gzip),
        ],
        ("amd64", ""),
    );
    layout.tag("1", &image);
    registry.push(&layout, "1", "varrun", None);
    let daemon = Daemon::start();
    let image = daemon.pull(&format!("{}/varrun:1", registry.host()));
    let list = daemon.image_listing(&image);
    assert!(
        list.iter().any(|l| l.starts_with("var/run dir ")),
        "var/run is a directory"
    );
    assert!(list
        .iter()
        .any(|l| l.starts_with("var/run/berth.pid file ")));
    assert!(!list.iter().any(|l| l.starts_with("run/berth.pid")));
}

#[test]
fn an_index_is_resolved_by_os_architecture_and_variant() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let mut layout = Layout::new("index");
    let marker = |text: &str| {
        let mut t = LayerTar::new();
        t.dir("etc/", 0o755)
            .file("etc/platform", 0o644, text.as_bytes());
        t.finish()
    };
    let manifests: Vec<_> = [("arm", "v6"), ("arm", "v7"), ("arm64", "v8"), ("amd64", "")]
        .iter()
        .map(|&(arch, variant)| {
            layout.image(
                &[
                    (busybox_layer(APPLETS), Compression::Gzip),
                    (marker(&format!("{arch}{variant}")), Compression::None),
                ],
                (arch, variant),
            )
        })
        .collect();
    let index = layout.index(&manifests);
    layout.tag("multi", &index);
    registry.push(&layout, "multi", "multi", None);
    let daemon = Daemon::start();
    let reference = format!("{}/multi:multi", registry.host());
    for (platform, expect) in [
        (None, "amd64"),
        (Some(("arm", "v7")), "armv7"),
        (Some(("arm", "v6")), "armv6"),
        (Some(("arm64", "")), "arm64v8"),
    ] {
        let image = done(&daemon.pull_with(&reference, platform, None).unwrap());
        let list = daemon.image_listing(&image);
        let line = list
            .iter()
            .find(|l| l.starts_with("etc/platform "))
            .expect("marker");
        assert!(
            line.contains(&sha256(expect.as_bytes())),
            "{platform:?}: {line}"
        );
    }
    // The busybox layer is shared by all four platforms: one snapshot.
    let mut snaps = daemon.snapshots();
    let all = daemon
        .block_on(snaps.list(pb::ListSnapshotsRequest {}))
        .unwrap()
        .into_inner()
        .snapshots;
    assert_eq!(all.len(), 5, "{all:#?}");
    // (A failed pull collects what no image uses: the three platforms'
    // layers whose image record the last pull of the name replaced.)
    let err = daemon
        .pull_with(&reference, Some(("riscv64", "")), None)
        .unwrap_err();
    assert!(
        err.message()
            .contains("no manifest for platform linux/riscv64"),
        "{err}"
    );
}

/// Pushes `layers` as `repo:1` and pulls it; the pull's result.
fn pull_layers(
    registry: &Registry,
    daemon: &Daemon,
    repo: &str,
    layers: Vec<Vec<u8>>,
) -> Result<pb::Image, tonic::Status> {
    let mut layout = Layout::new(repo);
    let layers: Vec<_> = layers.into_iter().map(|l| (l, Compression::Gzip)).collect();
    let image = layout.image(&layers, ("amd64", ""));
    layout.tag("1", &image);
    registry.push(&layout, "1", repo, None);
    daemon
        .pull_with(&format!("{}/{repo}:1", registry.host()), None, None)
        .map(|p| done(&p))
}

/// No snapshot directory holds a path outside the daemon's root, and the
/// host paths a hostile layer aimed at do not exist.
fn assert_untouched(sentinels: &[PathBuf]) {
    for s in sentinels {
        assert!(
            !s.exists(),
            "{} was written outside the snapshot",
            s.display()
        );
    }
}

#[test]
fn hostile_layers_never_write_outside_the_snapshot() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let daemon = Daemon::start();
    let tag = unique("escape");
    let host = |name: &str| PathBuf::from(format!("/tmp/{tag}-{name}"));
    let sentinels: Vec<PathBuf> = ["dotdot", "abs", "sym", "symrel", "planted", "hard"]
        .iter()
        .map(|n| host(n))
        .collect();
    let passwd_links = std::fs::metadata("/etc/passwd").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    });

    // `..` is refused with a clear error.
    let mut t = LayerTar::new();
    t.file(&format!("../../../../../../tmp/{tag}-dotdot"), 0o644, b"x");
    let err = pull_layers(&registry, &daemon, "dotdot", vec![t.finish()]).unwrap_err();
    assert!(err.message().contains("'..' component"), "{err}");

    // Absolute names land inside the snapshot (containerd's behaviour).
    let mut t = LayerTar::new();
    t.file(&format!("/tmp/{tag}-abs"), 0o644, b"x");
    let image = pull_layers(&registry, &daemon, "abs", vec![t.finish()]).unwrap();
    let list = daemon.image_listing(&image);
    assert!(
        list.iter()
            .any(|l| l.starts_with(&format!("tmp/{tag}-abs file"))),
        "{list:?}"
    );

    // A symlink out of the root, then a write through it, in one layer:
    // the symlink resolves inside the snapshot.
    let mut t = LayerTar::new();
    t.dir("tmp/", 0o755)
        .symlink("evil", "/tmp")
        .file(&format!("evil/{tag}-sym"), 0o644, b"x")
        .symlink("up", "../../../../../../..")
        .file(&format!("up/tmp/{tag}-symrel"), 0o644, b"x")
        // A symlink to a directory that does not exist yet: created inside
        // the root (containerd's behaviour), never on the host.
        .symlink("dangling", &format!("/tmp/{tag}-dangling/sub"))
        .file("dangling/inside", 0o644, b"x");
    let image = pull_layers(&registry, &daemon, "sym", vec![t.finish()]).unwrap();
    let list = daemon.image_listing(&image);
    assert!(
        list.iter()
            .any(|l| l.starts_with(&format!("tmp/{tag}-dangling/sub/inside file"))),
        "{list:?}"
    );
    assert!(!host("dangling").exists());
    assert!(
        list.iter()
            .any(|l| l.starts_with(&format!("tmp/{tag}-sym file"))),
        "{list:?}"
    );
    assert!(
        list.iter()
            .any(|l| l.starts_with(&format!("tmp/{tag}-symrel file"))),
        "{list:?}"
    );

    // A symlink planted in one layer, written through in the next: the
    // next layer gets a real directory (as containerd).
    let mut first = LayerTar::new();
    first.symlink("planted", "/tmp");
    let mut second = LayerTar::new();
    second.file(&format!("planted/{tag}-planted"), 0o644, b"x");
    let image = pull_layers(
        &registry,
        &daemon,
        "planted",
        vec![first.finish(), second.finish()],
    )
    .unwrap();
    let list = daemon.image_listing(&image);
    assert!(
        list.iter().any(|l| l.starts_with("planted dir ")),
        "{list:?}"
    );

    // Hardlinks: `..` refused; an absolute or symlinked target resolves
    // inside the snapshot, where it does not exist.
    for (repo, target, words) in [
        (
            "hard-dotdot",
            "../../../../etc/passwd".to_string(),
            "'..' component",
        ),
        ("hard-abs", "/etc/passwd".to_string(), "not in this layer"),
        ("hard-sym", "etcdir/passwd".to_string(), "not in this layer"),
    ] {
        let mut t = LayerTar::new();
        t.symlink("etcdir", "/etc")
            .hardlink(&format!("{tag}-hard"), &target);
        let err = pull_layers(&registry, &daemon, repo, vec![t.finish()]).unwrap_err();
        assert!(err.message().contains(words), "{repo}: {err}");
    }

    // Reserved whiteout names.
    for (repo, name) in [
        ("wh-reserved", ".wh..wh.foo"),
        ("wh-dot", ".wh.."),
        ("wh-dotdot", ".wh..."),
    ] {
        let mut t = LayerTar::new();
        t.file(&format!("etc/{name}"), 0o644, b"");
        let err = pull_layers(&registry, &daemon, repo, vec![t.finish()]).unwrap_err();
        assert!(err.message().contains("reserved whiteout"), "{repo}: {err}");
    }

    // overlayfs's own xattrs are not accepted from a layer.
    let mut t = LayerTar::new();
    t.xattr_on_dir("redirect/", &[("trusted.overlay.redirect", b"/etc")]);
    let err = pull_layers(&registry, &daemon, "redirect", vec![t.finish()]).unwrap_err();
    assert!(err.message().contains("trusted.overlay"), "{err}");

    // Device nodes are made inside the snapshot, as containerd makes them.
    let mut t = LayerTar::new();
    t.char_dev("dev/sda-like", 8, 0)
        .char_dev(&format!("/tmp/{tag}-dev"), 1, 1);
    let image = pull_layers(&registry, &daemon, "devices", vec![t.finish()]).unwrap();
    let list = daemon.image_listing(&image);
    assert!(
        list.iter()
            .any(|l| l.starts_with("dev/sda-like char 666 0:0 800 ")),
        "{list:?}"
    );
    assert!(!host("dev").exists());

    assert_untouched(&sentinels);
    let after = std::fs::metadata("/etc/passwd").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    });
    assert_eq!(
        passwd_links.ok(),
        after.ok(),
        "no hardlink to the host's /etc/passwd"
    );
    // Failed pulls leave no staging snapshot behind.
    let mut snaps = daemon.snapshots();
    let all = daemon
        .block_on(snaps.list(pb::ListSnapshotsRequest {}))
        .unwrap()
        .into_inner()
        .snapshots;
    assert!(
        all.iter()
            .all(|s| !s.labels.contains_key("berth.pull/staging")),
        "{all:#?}"
    );
}

#[test]
fn a_corrupt_or_truncated_blob_is_never_committed() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let layout = push_busybox(&registry, "busybox");
    let digest = layout.layer_digest("1", 0);
    let stored = registry.blob_file(&digest);
    let good = std::fs::read(&stored).unwrap();
    let daemon = Daemon::start();
    let reference = format!("{}/busybox:1", registry.host());

    // Same length, one byte changed: the registry serves it as is.
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&stored, &bad).unwrap();
    let err = daemon.pull_with(&reference, None, None).unwrap_err();
    assert!(err.message().contains(&digest), "{err}");
    assert!(
        !daemon.blobs().contains(&digest),
        "a corrupt blob was committed"
    );

    // Truncated.
    std::fs::write(&stored, &good[..good.len() / 3]).unwrap();
    let err = daemon.pull_with(&reference, None, None).unwrap_err();
    assert!(err.message().contains(&digest), "{err}");
    assert!(
        !daemon.blobs().contains(&digest),
        "a truncated blob was committed"
    );

    // Repaired: the pull completes, and the image equals umoci's.
    std::fs::write(&stored, &good).unwrap();
    let image = daemon.pull(&reference);
    assert!(daemon.blobs().contains(&digest));
    assert_unpacks_like_umoci(&daemon, &image, &layout);
}

#[test]
fn wrong_credentials_are_an_authentication_error() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::with_auth("berth", "s3cret");
    let mut layout = Layout::new("auth");
    let image = layout.image(
        &[(busybox_layer(APPLETS), Compression::Gzip)],
        ("amd64", ""),
    );
    layout.tag("1", &image);
    registry.push(&layout, "1", "private", Some(("berth", "s3cret")));
    let reference = format!("{}/private:1", registry.host());
    let daemon = Daemon::start();

    let err = daemon
        .pull_with(&reference, None, Some(("berth", "wrong")))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("authentication failed"), "{err}");
    assert!(err.message().contains("rejected the credentials"), "{err}");

    let err = daemon.pull_with(&reference, None, None).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("no credentials"), "{err}");

    let progress = daemon
        .pull_with(&reference, None, Some(("berth", "s3cret")))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    done(&progress);

    // Credentials from a docker-style config.json.
    let config = daemon.root.join("docker-config.json");
    let auth = base64_encode(b"berth:s3cret");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let other = Daemon::start_with(&["--registry-config", config.to_str().unwrap()]);
    done(&other.pull_with(&reference, None, None).unwrap());
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_stalled_registry_fails_its_pull_in_time_while_a_good_one_serves_the_same_image() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let (layout, _) = noise_layout("stall", 4);
    registry.push(&layout, "1", "noise", None);
    let digest = layout.layer_digest("1", 0);
    let hostile = HostileRegistry::stalling(&layout, 1 << 20);
    const TIMEOUT: u64 = 10;
    let daemon = Daemon::start_with(&["--registry-read-timeout", &TIMEOUT.to_string()]);

    let stalled = pull_on_thread(&daemon.socket, &format!("{}/noise:1", hostile.host()));
    assert!(
        hostile.wait_stalled(),
        "the pull never reached the stall: {}",
        daemon.log()
    );
    let stalled_at = Instant::now();

    // The same image (the same blobs) from a good registry meanwhile.
    let image = daemon.pull(&format!("{}/noise:1", registry.host()));
    assert!(
        !stalled.is_finished(),
        "the stalled pull ended before the good one did"
    );
    assert!(daemon.blobs().contains(&digest));

    let err = stalled
        .join()
        .expect("pull thread")
        .expect_err("a stalled pull cannot succeed");
    let waited = stalled_at.elapsed();
    eprintln!("the stalled pull failed {waited:?} after the stall (read timeout {TIMEOUT} s)");
    assert!(
        waited < Duration::from_secs(TIMEOUT + 30),
        "failed only after {waited:?}"
    );
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    for part in [
        hostile.host(),
        format!("sent nothing for {TIMEOUT}s (its read timeout)"),
        digest.clone(),
    ] {
        assert!(err.message().contains(&part), "{part:?} not in {err}");
    }
    // The pull that timed out closed its connection.
    assert!(hostile.wait_closed());
    assert!(daemon
        .image_listing(&image)
        .iter()
        .any(|l| l.starts_with("data/noise file")));
}

#[test]
fn an_image_removal_waiting_for_a_stalled_pull_holds_back_no_other_pull() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    push_busybox(&registry, "first");
    let (other, _) = noise_layout("other", 1);
    registry.push(&other, "1", "other", None);
    let (layout, _) = noise_layout("stall", 4);
    let hostile = HostileRegistry::stalling(&layout, 1 << 20);
    let daemon = Daemon::start_with(&["--registry-read-timeout", "20"]);
    daemon.pull(&format!("{}/first:1", registry.host()));

    let stalled = pull_on_thread(&daemon.socket, &format!("{}/noise:1", hostile.host()));
    assert!(
        hostile.wait_stalled(),
        "the pull never reached the stall: {}",
        daemon.log()
    );
    // Removal collects garbage, which waits until no pull runs...
    let socket = daemon.socket.clone();
    let name = format!("{}/first:1", registry.host());
    let removal = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let ch = berth_proto::connect(&socket).await.unwrap();
            pb::images_client::ImagesClient::new(ch)
                .remove(pb::RemoveImageRequest { name })
                .await
        })
    });
    // (A moment for it to start waiting: if it has not, this proves less,
    // but never fails wrongly.)
    std::thread::sleep(Duration::from_millis(300));
    // ...but does not queue new pulls behind the stalled one.
    let other_pull = pull_on_thread(&daemon.socket, &format!("{}/other:1", registry.host()));
    let start = Instant::now();
    while !other_pull.is_finished() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        other_pull.is_finished(),
        "a pull from a good registry waited behind the removal: {}",
        daemon.log()
    );
    done(&other_pull.join().unwrap().unwrap());
    assert!(!stalled.is_finished(), "the stalled pull ended too soon");
    stalled.join().unwrap().unwrap_err();
    removal.join().unwrap().unwrap();
}

#[test]
fn a_daemon_killed_mid_pull_recovers_and_resumes() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let (layout, noise) = noise_layout("big", 48);
    registry.push(&layout, "1", "big", None);
    let digest = layout.layer_digest("1", 0);

    let proxy = SlowProxy::start(registry.port, 8 << 20);
    let reference = format!("127.0.0.1:{}/big:1", proxy.port);
    let mut daemon = Daemon::start();
    let pid = daemon.pid();
    let socket = daemon.socket.clone();
    let pulling = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ch = berth_proto::connect(&socket).await.unwrap();
            let mut c = pb::images_client::ImagesClient::new(ch);
            let stream = c
                .pull(pb::PullRequest {
                    reference,
                    ..Default::default()
                })
                .await;
            if let Ok(s) = stream {
                let mut s = s.into_inner();
                while let Ok(Some(_)) = s.message().await {}
            }
        })
    });
    // Kill once a good part of the layer is in the ingest.
    let start = Instant::now();
    let mut content = daemon.content();
    loop {
        let ingests = daemon
            .block_on(content.list_ingests(pb::ListIngestsRequest {}))
            .unwrap()
            .into_inner()
            .ingests;
        if ingests.iter().any(|i| i.offset > 8 << 20) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pull did not progress"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(daemon.pid(), pid);
    daemon.restart();
    let _ = pulling.join();
    drop(proxy);

    // After the restart: the staging snapshot is gone, the partial ingest
    // is kept and nothing unverified is a blob.
    let mut snaps = daemon.snapshots();
    let all = daemon
        .block_on(snaps.list(pb::ListSnapshotsRequest {}))
        .unwrap()
        .into_inner()
        .snapshots;
    assert!(all.is_empty(), "{all:#?}");
    assert!(!daemon.blobs().contains(&digest));
    let mut content = daemon.content();
    let ingests = daemon
        .block_on(content.list_ingests(pb::ListIngestsRequest {}))
        .unwrap()
        .into_inner()
        .ingests;
    let kept = ingests
        .iter()
        .find(|i| i.expected == digest)
        .expect("ingest kept");
    assert!(kept.offset > 0);

    // The pull completes, resuming the download where it stopped.
    let progress = daemon
        .pull_with(&format!("{}/big:1", registry.host()), None, None)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let first = progress
        .iter()
        .find(|p| p.phase == pb::pull_progress::Phase::Downloading as i32)
        .expect("downloading");
    assert!(
        first.offset >= kept.offset,
        "resumed at {} < {}",
        first.offset,
        kept.offset
    );
    let image = done(&progress);
    assert!(daemon.blobs().contains(&digest));
    // What a pull committed survives a restart's recovery.
    daemon.restart();
    let list = daemon.image_listing(&image);
    assert!(list
        .iter()
        .any(|l| l.starts_with(&format!("data/noise file 644 0:0 {}", sha256(&noise)))));
}

#[test]
fn images_move_between_daemons_as_oci_archives() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let layout = push_busybox(&registry, "busybox");
    let reference = format!("{}/busybox:1", registry.host());
    let first = Daemon::start();
    let image = first.pull(&reference);
    let archive = first.export(&[&reference]).expect("export");
    drop(registry);

    // Another daemon, no registry anywhere: the archive alone.
    let second = Daemon::start();
    let imported = second.import(&archive, None).expect("import");
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, reference);
    assert_eq!(imported[0].chain_id, image.chain_id);
    assert_eq!(
        second.image_listing(&imported[0]),
        first.image_listing(&image)
    );

    // The archive is an OCI layout other tools read.
    let guard = TempDir(std::env::temp_dir().join(unique("exported")).join("layout"));
    let dir = guard.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("archive.tar"), &archive).unwrap();
    let out = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-xf")
        .arg(dir.join("archive.tar"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", berth_integration::text(&out));
    let bundle = dir.join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{reference}", dir.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", berth_integration::text(&out));
    let umoci = layout.umoci_unpack("1");
    assert_eq!(
        listing(&bundle.join("rootfs")),
        listing(&umoci.0.join("rootfs"))
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A corrupt archive is refused and commits nothing.
    let mut bad = archive.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0xff;
    let third = Daemon::start();
    let err = third.import(&bad, None).unwrap_err();
    assert!(
        err.message().contains("failed verification") || err.message().contains("corrupt"),
        "{err}"
    );
}

#[test]
fn docker_save_tarballs_import_without_a_registry() {
    if !can_run_images() {
        return;
    }
    let layer = busybox_layer(APPLETS);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256(&config).trim_start_matches("sha256:"));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["busybox:saved"],
        "Layers": ["0123abcd/layer.tar"],
    }]);
    let mut save = tar::Builder::new(Vec::new());
    for (path, bytes) in [
        ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
        (config_name.as_str(), config.clone()),
        ("0123abcd/layer.tar", layer.clone()),
        ("0123abcd/VERSION", b"1.0".to_vec()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        save.append_data(&mut h, path, bytes.as_slice()).unwrap();
    }
    let save = save.into_inner().unwrap();

    let daemon = Daemon::start();
    let imported = daemon.import(&save, None).expect("import docker save");
    assert_eq!(imported[0].name, "docker.io/library/busybox:saved");
    let mut layout = Layout::new("saved");
    let image = layout.image(&[(layer, Compression::None)], ("amd64", ""));
    layout.tag("1", &image);
    assert_unpacks_like_umoci(&daemon, &imported[0], &layout);
}

#[test]
fn snapshots_prepare_write_commit_view_and_refuse_removing_parents() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let _layout = push_busybox(&registry, "busybox");
    let daemon = Daemon::start();
    let image = daemon.pull(&format!("{}/busybox:1", registry.host()));
    let mut snaps = daemon.snapshots();

    // A writable snapshot on the image: an overlay whose upper dir takes
    // the writes, and whose lower dir (the image) does not change.
    let mounts = daemon
        .block_on(snaps.prepare(pb::PrepareSnapshotRequest {
            key: "rw".into(),
            parent: image.chain_id.clone(),
            labels: Default::default(),
        }))
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(mounts[0].r#type, "overlay", "{mounts:?}");
    {
        let rw = Mounted::new_rw(&mounts);
        assert!(rw.target.join("bin/busybox").is_file());
        std::fs::write(rw.target.join("etc/written"), b"hello").unwrap();
        std::fs::remove_file(rw.target.join("etc/passwd")).unwrap();
    }
    let usage = daemon
        .block_on(snaps.usage(pb::UsageRequest { key: "rw".into() }))
        .unwrap()
        .into_inner();
    assert!(usage.inodes >= 3, "{usage:?}");
    daemon
        .block_on(snaps.commit(pb::CommitSnapshotRequest {
            name: "committed".into(),
            key: "rw".into(),
            labels: Default::default(),
        }))
        .unwrap();
    let view = daemon
        .block_on(snaps.view(pb::ViewSnapshotRequest {
            key: "view".into(),
            parent: "committed".into(),
            labels: Default::default(),
        }))
        .unwrap()
        .into_inner()
        .mounts;
    {
        let ro = Mounted::new(&view);
        assert_eq!(
            std::fs::read(ro.target.join("etc/written")).unwrap(),
            b"hello"
        );
        assert!(
            !ro.target.join("etc/passwd").exists(),
            "the deletion is a whiteout"
        );
        assert!(
            std::fs::write(ro.target.join("x"), b"").is_err(),
            "a view is read-only"
        );
    }
    // The image itself is unchanged.
    assert!(daemon
        .image_listing(&image)
        .iter()
        .any(|l| l.starts_with("etc/passwd ")));

    let err = daemon
        .block_on(snaps.remove(pb::RemoveSnapshotRequest {
            key: "committed".into(),
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let err = daemon
        .block_on(snaps.prepare(pb::PrepareSnapshotRequest {
            key: "on-active".into(),
            parent: "view".into(),
            labels: Default::default(),
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    for key in ["view", "committed"] {
        daemon.remove_snapshot(key);
    }
}

#[test]
fn pull_errors_say_what_failed() {
    if !can_run_images() {
        return;
    }
    let daemon = Daemon::start();
    let err = daemon
        .pull_with("127.0.0.1:1/nothing:1", None, None)
        .unwrap_err();
    assert!(err.message().contains("Connection refused"), "{err}");

    let registry = Registry::start();
    let _layout = push_busybox(&registry, "busybox");
    let err = daemon
        .pull_with(&format!("{}/busybox:nope", registry.host()), None, None)
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(
        err.message()
            .contains("manifest unknown (is the tag right?)"),
        "{err}"
    );

    let err = daemon.pull_with("Not A Reference", None, None).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

#[test]
fn oversized_manifests_lying_sizes_and_too_many_layers_are_refused() {
    if !can_run_images() {
        return;
    }
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    let layout = busybox_layout("caps", APPLETS, "1");
    let mut content = HostileContent::of(&layout);
    let good: serde_json::Value =
        serde_json::from_slice(&content.blobs[&content.tags["1"].1]).unwrap();
    let mut huge = good.clone();
    huge["annotations"] = serde_json::json!({"padding": "x".repeat(5 << 20)});
    content.manifest("huge", MANIFEST, serde_json::to_vec(&huge).unwrap());
    let mut lying = good.clone();
    let size = lying["layers"][0]["size"].as_i64().unwrap();
    lying["layers"][0]["size"] = serde_json::json!(size + 1);
    content.manifest("lying", MANIFEST, serde_json::to_vec(&lying).unwrap());
    let mut tall = good.clone();
    tall["layers"] = (0..1000)
        .map(|i: u32| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256(&i.to_le_bytes()),
                "size": 4,
            })
        })
        .collect();
    content.manifest("tall", MANIFEST, serde_json::to_vec(&tall).unwrap());
    let mut malformed = good.clone();
    malformed["config"]["digest"] = serde_json::json!("sha256:../../../etc/passwd");
    content.manifest(
        "malformed",
        MANIFEST,
        serde_json::to_vec(&malformed).unwrap(),
    );
    let hostile = HostileRegistry::start(content);
    let daemon = Daemon::start();
    let at = |tag: &str| format!("{}/caps:{tag}", hostile.host());

    let err = daemon.pull_with(&at("huge"), None, None).unwrap_err();
    assert!(
        err.message()
            .contains("is larger than the 4194304-byte limit"),
        "{err}"
    );
    // The true image, stored; then a manifest that lies about a stored blob.
    daemon.pull(&at("1"));
    let err = daemon.pull_with(&at("lying"), None, None).unwrap_err();
    assert!(
        err.message().contains(&format!(
            "the descriptor says {} bytes but the blob has {size}",
            size + 1
        )),
        "{err}"
    );
    let err = daemon.pull_with(&at("tall"), None, None).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(
        err.message()
            .contains("too many layers: the image has 1000, berth mounts at most 128"),
        "{err}"
    );
    // A digest that is none fails the manifest's read, saying which.
    let err = daemon.pull_with(&at("malformed"), None, None).unwrap_err();
    assert!(
        err.message().contains(
            r#"invalid image manifest: config's digest "sha256:../../../etc/passwd" is malformed: Invalid encoded value"#
        ),
        "{err}"
    );
}

#[test]
fn a_failed_pull_leaves_no_orphan_blobs() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let mut second = LayerTar::new();
    second.dir("data/", 0o755).file("data/x", 0o644, b"second");
    let mut layout = Layout::new("orphans");
    let image = layout.image(
        &[
            (busybox_layer(APPLETS), Compression::Gzip),
            (second.finish(), Compression::Gzip),
        ],
        ("amd64", ""),
    );
    layout.tag("1", &image);
    registry.push(&layout, "1", "orphans", None);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout.dir.join("blobs/sha256").join(
                image["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    // The second layer is corrupt; the first, the config and the manifest
    // are fine and get stored before the pull fails.
    let stored = registry.blob_file(manifest["layers"][1]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();

    let daemon = Daemon::start();
    daemon
        .pull_with(&format!("{}/orphans:1", registry.host()), None, None)
        .unwrap_err();
    // Collected as the pull ends, on a thread of the daemon's.
    let start = Instant::now();
    while !daemon.blobs().is_empty() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(daemon.blobs(), Vec::<String>::new());
}

#[test]
fn registry_credentials_are_read_again_when_their_file_changes() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::with_auth("berth", "s3cret");
    let layout = busybox_layout("creds", APPLETS, "1");
    registry.push(&layout, "1", "private", Some(("berth", "s3cret")));
    let reference = format!("{}/private:1", registry.host());
    let dir = TempDir(std::env::temp_dir().join(unique("berth-creds")).join("d"));
    std::fs::create_dir_all(&dir.0).unwrap();
    let config = dir.0.join("config.json");
    let write = |password: &str| {
        let auth = base64_encode(format!("berth:{password}").as_bytes());
        let tmp = dir.0.join("config.json.new");
        std::fs::write(
            &tmp,
            format!(
                r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
                registry.host()
            ),
        )
        .unwrap();
        std::fs::rename(&tmp, &config).unwrap();
    };
    write("outdated");
    let daemon = Daemon::start_with(&["--registry-config", config.to_str().unwrap()]);
    let err = daemon.pull_with(&reference, None, None).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    // A login elsewhere rewrites the file: no restart needed.
    write("s3cret");
    done(
        &daemon
            .pull_with(&reference, None, None)
            .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log())),
    );
}

/// `tar --sparse` of a 64 MiB file with data at 1 MiB and at its end, in
/// GNU tar's `format` (pax: GNU sparse 1.0 records; gnu: old 'S' entries).
fn gnu_sparse_layer(format: &str) -> Vec<u8> {
    let dir = TempDir(std::env::temp_dir().join(unique("berth-sparse")).join("d"));
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    let file = std::fs::File::create(dir.0.join("data/sparse")).unwrap();
    file.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"in the middle", 1 << 20).unwrap();
    file.write_all_at(b"end", (64 << 20) - 3).unwrap();
    let out = Command::new("tar")
        .args([
            "--sparse",
            &format!("--format={format}"),
            "--owner=0",
            "--group=0",
        ])
        .arg("-C")
        .arg(&dir.0)
        .args(["-cf", "-", "data"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn sparse_files_stay_sparse_and_unpack_as_umoci_unpacks_them() {
    if !can_run_images() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let registry = Registry::start();
    let daemon = Daemon::start();
    for format in ["pax", "gnu"] {
        let tar = gnu_sparse_layer(format);
        let mut layout = Layout::new(&format!("sparse-{format}"));
        let image = layout.image(&[(tar.clone(), Compression::Gzip)], ("amd64", ""));
        layout.tag("1", &image);
        registry.push(&layout, "1", &format!("sparse-{format}"), None);
        let image = daemon.pull(&format!("{}/sparse-{format}:1", registry.host()));
        if format == "pax" {
            assert_unpacks_like_umoci(&daemon, &image, &layout);
        } else {
            // umoci refuses type 'S' entries: GNU tar itself is the reference.
            let dir = TempDir(std::env::temp_dir().join(unique("berth-untar")).join("d"));
            std::fs::create_dir_all(&dir.0).unwrap();
            let mut untar = Command::new("tar")
                .arg("-C")
                .arg(&dir.0)
                .args(["--sparse", "-xpf", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            untar.stdin.take().unwrap().write_all(&tar).unwrap();
            assert!(untar.wait().unwrap().success());
            assert_same(&daemon.image_listing(&image), &listing(&dir.0));
        }
        let mounted = daemon.mount_image(&image, &format!("view-{format}"));
        let meta = std::fs::metadata(mounted.target.join("data/sparse")).unwrap();
        assert_eq!(meta.len(), 64 << 20, "{format}");
        eprintln!(
            "{format}: 64 MiB sparse file, {} bytes allocated",
            meta.blocks() * 512
        );
        assert!(
            meta.blocks() * 512 <= 64 << 10,
            "{format}: {} bytes allocated for 16 bytes of data",
            meta.blocks() * 512
        );
        drop(mounted);
        daemon.remove_snapshot(&format!("view-{format}"));
    }
}
