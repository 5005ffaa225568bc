//! Helpers for the `berth-imaged` end-to-end tests: a real `docker-registry`
//! on 127.0.0.1 ([`Registry`]), the daemon with private directories
//! ([`Daemon`]), OCI image layouts built from tars made here ([`Layout`],
//! [`LayerTar`]) and pushed with `skopeo`, overlay mounts that unmount
//! themselves ([`Mounted`]), and a listing of a root filesystem that two
//! unpackers can be compared by ([`listing`]).
//!
//! Every guard stops what it started, by pid, and removes its directories
//! when dropped, so a failing test leaves nothing running.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::v1 as pb;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::{target_dir, unique};

pub fn imaged_bin() -> PathBuf {
    target_dir().join("berth-imaged")
}

/// Whether the image tests can run: root, and the peers installed.
pub fn can_run_images() -> bool {
    if !crate::can_run() {
        return false;
    }
    for tool in ["docker-registry", "skopeo", "umoci"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            panic!("{tool} is missing: run ./scripts/setup.sh");
        }
    }
    assert!(
        imaged_bin().exists(),
        "{} is missing: cargo build --workspace first",
        imaged_bin().display()
    );
    true
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(&format!("berth-img-{name}")));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A free port below the kernel's local port range: a port taken from that
/// range could be handed to another program's outgoing connection between
/// this check and the server's bind. Each call in a process moves on from the
/// last, so two servers started at once never get the same port.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("read the local port range");
    let first_local: u32 = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the local port range");
    let span = first_local.saturating_sub(10_000).max(1);
    let start = std::process::id() * 97 % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 10_000 + (start + step) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port below the local port range")
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn terminate(child: &mut Child, signal: i32) {
    // SAFETY: kill on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
    let _ = child.wait();
}

/// A `docker-registry` (distribution 2.8) on 127.0.0.1 with its own config
/// and storage.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(None)
    }

    /// With htpasswd (bcrypt) authentication for `user`/`password`.
    pub fn with_auth(user: &str, password: &str) -> Registry {
        Self::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Registry {
        let dir = temp_dir("registry");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        );
        if let Some((user, password)) = auth {
            let htpasswd = dir.join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbc", htpasswd.to_str().expect("utf8"), user, password])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "{}", crate::text(&out));
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log"))
            .spawn()
            .expect("spawn docker-registry");
        wait_for_port(port, "docker-registry");
        Registry { child, port, dir }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file a blob is stored in (distribution's filesystem layout), for
    /// tests that corrupt what the registry serves.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes the layout's `tag` as `repo:tag` (all platforms of an index).
    pub fn push(&self, layout: &Layout, tag: &str, repo: &str, creds: Option<(&str, &str)>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        if let Some((u, p)) = creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.dir.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host()))
            .output()
            .expect("skopeo");
        assert!(out.status.success(), "skopeo copy: {}", crate::text(&out));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        terminate(&mut self.child, libc::SIGTERM);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A layer tar built entry by entry, including entries the `tar` crate's
/// safe setters would refuse (hostile names are written into raw headers).
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> LayerTar {
        LayerTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, path: &str, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        // Raw bytes: no validation, so `..` and absolute names go through.
        let name = &mut h.as_old_mut().name;
        assert!(path.len() < name.len(), "test paths are short");
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        h
    }

    fn append(&mut self, h: tar::Header, data: &[u8]) -> &mut Self {
        self.builder.append(&h, data).expect("append");
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.append(Self::header(tar::EntryType::Directory, path, mode, 0), &[])
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.file_owned(path, mode, 0, 0, data)
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, path, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.append(h, data)
    }

    /// A file with PAX `SCHILY.xattr.*` records.
    pub fn file_xattrs(
        &mut self,
        path: &str,
        mode: u32,
        data: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        let records: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .expect("pax");
        self.file(path, mode, data)
    }

    /// A file whose name needs a GNU long-name record (over 100 bytes).
    pub fn file_long_name(&mut self, path: &str, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .expect("append long name");
        self
    }

    /// A directory with PAX `SCHILY.xattr.*` records.
    pub fn xattr_on_dir(&mut self, path: &str, xattrs: &[(&str, &[u8])]) -> &mut Self {
        let records: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .expect("pax");
        self.dir(path, 0o755)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, path, 0o777, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.append(h, &[])
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, path, 0o644, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.append(h, &[])
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Char, path, 0o666, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_cksum();
        self.append(h, &[])
    }

    pub fn fifo(&mut self, path: &str) -> &mut Self {
        self.append(Self::header(tar::EntryType::Fifo, path, 0o644, 0), &[])
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish tar")
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
    }
}

/// busybox-static as one layer with `applets` linked in `bin/`, root and
/// nobody in `etc/passwd` and `etc/group`, `tmp/`, and `data/seed.txt`
/// (for volume seeding).
pub fn busybox_layer(applets: &[&str]) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let mut t = LayerTar::new();
    t.dir("bin/", 0o755)
        .file("bin/busybox", 0o755, &busybox)
        .dir("etc/", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
        .dir("tmp/", 0o1777)
        .dir("data/", 0o755)
        .file("data/seed.txt", 0o644, b"from the image\n");
    for applet in applets {
        t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t.finish()
}

/// A layout (directory named after `name`) with the image of one
/// [`busybox_layer`] of `applets` (gzip, amd64) tagged `tag`.
pub fn busybox_layout(name: &str, applets: &[&str], tag: &str) -> Layout {
    let mut layout = Layout::new(name);
    let image = layout.image(
        &[(busybox_layer(applets), Compression::Gzip)],
        ("amd64", ""),
    );
    layout.tag(tag, &image);
    layout
}

/// An OCI image layout directory, as `skopeo` and `umoci` read it.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn new(name: &str) -> Layout {
        let dir = temp_dir(&format!("layout-{name}"));
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("blobs");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir,
            refs: Vec::new(),
        }
    }

    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        std::fs::write(
            self.dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
            bytes,
        )
        .expect("write blob");
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    /// An image manifest of `layers` (tar bytes, each with its compression);
    /// returns its descriptor.
    pub fn image(&self, layers: &[(Vec<u8>, Compression)], platform: (&str, &str)) -> Value {
        self.image_with(layers, platform, json!({"Cmd": ["/bin/sh"]}))
    }

    /// As [`Layout::image`], with `config` as the image config's `config`
    /// object (Cmd, ExposedPorts, …).
    pub fn image_with(
        &self,
        layers: &[(Vec<u8>, Compression)],
        platform: (&str, &str),
        image_config: Value,
    ) -> Value {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, c) in layers {
            let media_type = match c {
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
                Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            descs.push(self.blob(media_type, &compress(tar, *c)));
            diff_ids.push(sha256(tar));
        }
        let (arch, variant) = platform;
        let mut config = json!({
            "architecture": arch,
            "os": "linux",
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if !variant.is_empty() {
            config["variant"] = json!(variant);
        }
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).expect("json"),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": descs,
        });
        let mut desc = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).expect("json"),
        );
        let mut p = json!({"architecture": arch, "os": "linux"});
        if !variant.is_empty() {
            p["variant"] = json!(variant);
        }
        desc["platform"] = p;
        desc
    }

    /// An index of `manifests`; returns its descriptor.
    pub fn index(&self, manifests: &[Value]) -> Value {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).expect("json"),
        )
    }

    /// Names `desc` as `tag` in `index.json`.
    pub fn tag(&mut self, tag: &str, desc: &Value) {
        let mut desc = desc.clone();
        if let Some(d) = desc.as_object_mut() {
            d.remove("platform");
        }
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(desc);
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("index.json");
    }

    /// The layout as a tar archive, what Images.Import and `berthctl load` read.
    pub fn archive(&self) -> Vec<u8> {
        let out = Command::new("tar")
            .arg("-C")
            .arg(&self.dir)
            .args(["-cf", "-", "."])
            .output()
            .expect("tar");
        assert!(out.status.success(), "tar: {}", crate::text(&out));
        out.stdout
    }

    /// `umoci unpack` of `tag` into a fresh bundle; returns the bundle.
    pub fn umoci_unpack(&self, tag: &str) -> TempDir {
        let bundle = TempDir(temp_dir("umoci").join("bundle"));
        let out = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", self.dir.display()))
            .arg(&bundle.0)
            .output()
            .expect("umoci");
        assert!(out.status.success(), "umoci unpack: {}", crate::text(&out));
        bundle
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn ctl_bin() -> PathBuf {
    target_dir().join("berthctl")
}

/// `berthctl --address SOCKET ARGS` with `stdin` typed in, killed after
/// `limit` seconds: a hang fails the test instead of holding it.
pub fn run_ctl_within(
    limit: u32,
    address: impl AsRef<Path>,
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    let mut command = Command::new("timeout");
    command
        .args(["-k5", &limit.to_string()])
        .arg(ctl_bin())
        .arg("--address")
        .arg(address.as_ref())
        .args(args);
    crate::typed_output(command, &[(Duration::ZERO, stdin)], Duration::ZERO)
}

/// [`run_ctl_within`] 90 seconds.
pub fn run_ctl(address: impl AsRef<Path>, args: &[&str], stdin: &[u8]) -> std::process::Output {
    run_ctl_within(90, address, args, stdin)
}

/// The stdout of a `berthctl ARGS` run against `daemon` that had to
/// succeed; otherwise the test fails showing its output and the daemon's log.
pub fn ctl_succeeded(daemon: &Daemon, args: &[&str], out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "berthctl {args:?} failed: {}\n{}",
        crate::text(out),
        daemon.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory inside a unique directory of its own (`unique(..)/leaf`),
/// both removed when dropped. A path directly in the temporary directory
/// (or `/`) removes only itself: the guard never takes `/tmp` with it.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let owned = match self.0.parent() {
            Some(parent) if parent != std::env::temp_dir() && parent.parent().is_some() => parent,
            _ => &self.0,
        };
        let _ = std::fs::remove_dir_all(owned);
    }
}

/// `berth-imaged` with a private root and socket.
pub struct Daemon {
    child: Option<Child>,
    pub root: PathBuf,
    pub socket: PathBuf,
    extra: Vec<String>,
    /// The network namespace it runs in (a pin); `None`: the test's.
    netns: Option<PathBuf>,
    rt: tokio::runtime::Runtime,
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    /// A daemon with `extra` flags. Its containers have no network but
    /// loopback unless `extra` says otherwise: the tests that make bridges
    /// run the daemon in a namespace of their own ([`Daemon::start_in`]).
    pub fn start_with(extra: &[&str]) -> Daemon {
        Self::start_in(None, extra)
    }

    /// A daemon in the network namespace pinned at `netns`, whose bridges,
    /// veths and NAT rules therefore live there.
    pub fn start_in(netns: Option<&Path>, extra: &[&str]) -> Daemon {
        let root = temp_dir("daemon");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|a| a == "--default-network") {
            extra.extend(["--default-network".into(), "none".into()]);
        }
        // Its own state directory: a daemon removes at its start the
        // bundles there that its records do not name.
        if !extra.iter().any(|a| a == "--state") {
            let state = root.join("state").display().to_string();
            extra.extend(["--state".into(), state]);
        }
        let mut d = Daemon {
            child: None,
            socket: root.join("run/berth.sock"),
            root,
            netns: netns.map(Path::to_path_buf),
            extra,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio"),
        };
        d.spawn();
        d
    }

    /// Starts the daemon (again, after [`Daemon::kill9`] or [`Daemon::stop`]).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("daemon.log"))
            .expect("log");
        let mut command = Command::new(imaged_bin());
        if let Some(netns) = &self.netns {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let ns = std::fs::File::open(netns).expect("the test's network namespace");
            // SAFETY: setns is async-signal-safe; the descriptor stays open
            // in the closure until the exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .arg("--root")
            .arg(self.root.join("lib"))
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth-imaged");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.health() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "berth-imaged did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn health(&self) -> bool {
        if !self.socket.exists() {
            return false;
        }
        self.rt.block_on(async {
            let Ok(ch) = berth_proto::connect(&self.socket).await else {
                return false;
            };
            pb::version_client::VersionClient::new(ch)
                .health(pb::HealthRequest {})
                .await
                .is_ok()
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, libc::SIGKILL);
        }
    }

    /// SIGTERM; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill on our own unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().ok()
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn channel(&self) -> tonic::transport::Channel {
        self.rt
            .block_on(berth_proto::connect(&self.socket))
            .expect("connect")
    }

    /// Images.Pull; all progress messages, or the error status.
    pub fn pull_with(
        &self,
        reference: &str,
        platform: Option<(&str, &str)>,
        auth: Option<(&str, &str)>,
    ) -> Result<Vec<pb::PullProgress>, tonic::Status> {
        let ch = self.channel();
        self.rt.block_on(async move {
            let mut client = pb::images_client::ImagesClient::new(ch);
            let req = pb::PullRequest {
                reference: reference.to_string(),
                platform: platform.map(|(arch, variant)| pb::Platform {
                    os: "linux".into(),
                    architecture: arch.into(),
                    variant: variant.into(),
                }),
                auth: auth.map(|(u, p)| pb::RegistryAuth {
                    username: u.into(),
                    password: p.into(),
                    token: String::new(),
                }),
                skip_unpack: false,
            };
            let mut stream = client.pull(req).await?.into_inner();
            let mut all = Vec::new();
            while let Some(msg) = stream.message().await? {
                all.push(msg);
            }
            Ok(all)
        })
    }

    /// Pulls and returns the image, panicking with the daemon's log on error.
    pub fn pull(&self, reference: &str) -> pb::Image {
        let progress = self
            .pull_with(reference, None, None)
            .unwrap_or_else(|e| panic!("pull {reference}: {e}\n{}", self.log()));
        done(&progress)
    }

    /// Images.Import of an archive's bytes, in chunks.
    pub fn import(
        &self,
        archive: &[u8],
        name: Option<&str>,
    ) -> Result<Vec<pb::Image>, tonic::Status> {
        let ch = self.channel();
        let mut chunks: Vec<pb::ImportChunk> = archive
            .chunks(1 << 20)
            .map(|c| pb::ImportChunk {
                name: String::new(),
                data: c.to_vec(),
            })
            .collect();
        if let (Some(first), Some(name)) = (chunks.first_mut(), name) {
            first.name = name.to_string();
        }
        self.rt.block_on(async move {
            let mut client = pb::images_client::ImagesClient::new(ch);
            let stream = tokio_stream_iter(chunks);
            Ok(client.import(stream).await?.into_inner().images)
        })
    }

    /// Images.Export of `names`: the archive's bytes.
    pub fn export(&self, names: &[&str]) -> Result<Vec<u8>, tonic::Status> {
        let ch = self.channel();
        self.rt.block_on(async move {
            let mut client = pb::images_client::ImagesClient::new(ch);
            let mut stream = client
                .export(pb::ExportRequest {
                    names: names.iter().map(|n| n.to_string()).collect(),
                    platform: None,
                })
                .await?
                .into_inner();
            let mut out = Vec::new();
            while let Some(chunk) = stream.message().await? {
                out.extend_from_slice(&chunk.data);
            }
            Ok(out)
        })
    }

    pub fn snapshots(&self) -> pb::snapshots_client::SnapshotsClient<tonic::transport::Channel> {
        pb::snapshots_client::SnapshotsClient::new(self.channel())
    }

    pub fn content(&self) -> pb::content_client::ContentClient<tonic::transport::Channel> {
        pb::content_client::ContentClient::new(self.channel())
    }

    /// A read-only view of the image's top layer, mounted, as `key`.
    pub fn mount_image(&self, image: &pb::Image, key: &str) -> Mounted {
        let key = key.to_string();
        let mut snaps = self.snapshots();
        let mounts = self
            .block_on(snaps.view(pb::ViewSnapshotRequest {
                key: key.clone(),
                parent: image.chain_id.clone(),
                labels: Default::default(),
            }))
            .expect("view")
            .into_inner()
            .mounts;
        Mounted::new(&mounts)
    }

    /// The image's root filesystem listed through a view snapshot, which is
    /// removed again.
    pub fn image_listing(&self, image: &pb::Image) -> Vec<String> {
        let key = unique("view");
        let list = {
            let mounted = self.mount_image(image, &key);
            listing(&mounted.target)
        };
        self.remove_snapshot(&key);
        list
    }

    pub fn remove_snapshot(&self, key: &str) {
        let mut snaps = self.snapshots();
        self.block_on(snaps.remove(pb::RemoveSnapshotRequest {
            key: key.to_string(),
        }))
        .expect("remove snapshot");
    }

    /// Blobs in the daemon's content store.
    pub fn blobs(&self) -> Vec<String> {
        let mut c = self.content();
        self.block_on(c.list(pb::ListContentRequest {}))
            .expect("content list")
            .into_inner()
            .blobs
            .into_iter()
            .map(|b| b.digest)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
        self.remove_leftovers();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Daemon {
    /// The bundles of its containers: kept ones under its root, those of
    /// containers removed at their exit in its state directory.
    pub fn bundles(&self) -> Vec<PathBuf> {
        ["lib/bundles", "state/bundles"]
            .iter()
            .filter_map(|dir| std::fs::read_dir(self.root.join(dir)).ok())
            .flat_map(|entries| entries.flatten().map(|e| e.path()))
            .collect()
    }

    /// Shims survive their daemon, as containerd's do: a test that failed
    /// before removing its containers, or whose daemon could not start
    /// again to end them, leaves their shims, their containers' processes,
    /// cgroups and rootfs mounts. Each shim addressed at this daemon is
    /// killed after the processes it started (its containers' inits); then
    /// the mounts under the daemon's directory go, and the cgroups named
    /// after its bundles.
    fn remove_leftovers(&self) {
        let socket = self.socket.to_string_lossy().into_owned();
        let shims = crate::shims_where(|args| {
            args.windows(2)
                .any(|w| w[0] == "-address" && w[1] == socket)
        });
        for &shim in &shims {
            for child in crate::children_of(shim) {
                // SAFETY: kill on a pid of a process our daemon's shim
                // started, read from /proc just now.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
            // SAFETY: as above, our daemon's shim.
            unsafe { libc::kill(shim, libc::SIGKILL) };
        }
        let root = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        // The last made first.
        for point in crate::mounts_under(&root).iter().rev() {
            if let Ok(point) = CString::new(point.as_os_str().as_bytes()) {
                // SAFETY: a NUL-terminated path.
                unsafe { libc::umount2(point.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let ids: Vec<_> = self
            .bundles()
            .iter()
            .filter_map(|bundle| bundle.file_name().map(ToOwned::to_owned))
            .collect();
        let parents: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path().join("berth-imaged"))
            .chain([PathBuf::from("/sys/fs/cgroup/berth-imaged")])
            .collect();
        for id in &ids {
            for dir in parents.iter().map(|p| p.join(id)).filter(|d| d.exists()) {
                // Killed processes leave their cgroup a moment later; one
                // with cgroups of its own below is left as it is.
                let start = Instant::now();
                while std::fs::remove_dir(&dir).is_err()
                    && start.elapsed() < Duration::from_secs(2)
                    && !std::fs::read_dir(&dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// The last progress message of a pull, which carries the image.
pub fn done(progress: &[pb::PullProgress]) -> pb::Image {
    let last = progress.last().expect("progress");
    assert_eq!(last.phase, pb::pull_progress::Phase::Done as i32);
    last.image.clone().expect("image")
}

/// Snapshot mounts applied to a temporary directory; unmounted when dropped.
pub struct Mounted {
    pub target: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// Read-only, as a view's mounts are used.
    pub fn new(mounts: &[pb::Mount]) -> Mounted {
        Self::mount(mounts, true)
    }

    /// Writable (an active snapshot).
    pub fn new_rw(mounts: &[pb::Mount]) -> Mounted {
        Self::mount(mounts, false)
    }

    fn mount(mounts: &[pb::Mount], ro: bool) -> Mounted {
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        let m = &mounts[0];
        let target = temp_dir("mnt");
        let mut cmd = Command::new("mount");
        if m.r#type == "bind" {
            cmd.args(["--bind", "-o", if ro { "ro" } else { "rw" }])
                .arg(&m.source);
        } else {
            cmd.args(["-t", &m.r#type, "-o", &m.options.join(","), &m.source]);
        }
        if !m.workdir_base.is_empty() {
            cmd.current_dir(&m.workdir_base);
        }
        let out = cmd.arg(&target).output().expect("mount");
        assert!(out.status.success(), "mount {m:?}: {}", crate::text(&out));
        Mounted {
            target,
            mounted: true,
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.target).status();
        }
        let _ = std::fs::remove_dir(&self.target);
    }
}

/// One line per entry under `root` (not the root itself), sorted: path,
/// type, mode, owner, link target or device, xattrs, content hash.
pub fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn xattrs(path: &Path) -> BTreeMap<String, String> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut names = vec![0u8; 4096];
    // SAFETY: valid C string and buffer of the length passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cname = CString::new(name).expect("name");
        let mut value = vec![0u8; 4096];
        // SAFETY: valid C strings and buffer of the length passed.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            out.insert(
                String::from_utf8_lossy(name).into_owned(),
                hex::encode(&value[..len as usize]),
            );
        }
    }
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        let ft = meta.file_type();
        let rel = path
            .strip_prefix(root)
            .expect("prefix")
            .display()
            .to_string();
        let (kind, extra) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&path)
                    .expect("readlink")
                    .display()
                    .to_string(),
            )
        } else if ft.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            ("file", sha256(&bytes))
        } else if ft.is_char_device() {
            ("char", format!("{:x}", meta.rdev()))
        } else if ft.is_block_device() {
            ("block", format!("{:x}", meta.rdev()))
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("socket", String::new())
        };
        out.push(format!(
            "{rel} {kind} {:o} {}:{} {extra} {:?}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            xattrs(&path)
        ));
        if ft.is_dir() {
            walk(root, &path, out);
        }
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to `upstream` and sends the
/// responses at about `bytes_per_sec`, so a test can act in mid-download.
/// Stops accepting when dropped.
pub struct SlowProxy {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowProxy {
    pub fn start(upstream: u16, bytes_per_sec: usize) -> SlowProxy {
        use std::io::Read;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stopping.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let stopping = stopping.clone();
                std::thread::spawn(move || {
                    let chunk = (bytes_per_sec / 20).max(1);
                    let mut buf = vec![0u8; chunk];
                    while !stopping.load(Ordering::SeqCst) {
                        match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c_write.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowProxy { port, stop }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A stream of the given items, for client-streaming calls.
fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl futures_core::Stream<Item = T> + Send {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    // Never pinned structurally: the iterator moves freely.
    impl<T> Unpin for Iter<T> {}
    Iter(items.into_iter())
}

/// What a [`HostileRegistry`] saw.
#[derive(Debug, Default)]
pub struct HostileLog {
    /// Connections now held silent after part of the stalled blob.
    pub stalled: std::sync::atomic::AtomicUsize,
    /// Of those, how many the client closed.
    pub closed: std::sync::atomic::AtomicUsize,
    /// The start offsets of every ranged blob request (resumed downloads).
    pub ranges: std::sync::Mutex<Vec<u64>>,
}

/// The deliberately misbehaving peer: a registry on 127.0.0.1 written by
/// hand over HTTP/1.1 that serves a [`Layout`]'s manifests (by tag or
/// digest) and blobs, plus any extra manifests a test makes up, but sends
/// only the first `stall_after` bytes of the blob `stall` and then goes
/// silent, holding the connection until the client closes it. A ranged
/// request for that blob (a resume) is answered in full. Everything it saw
/// is in [`HostileRegistry::log`]. Stops accepting when dropped.
pub struct HostileRegistry {
    pub port: u16,
    pub log: std::sync::Arc<HostileLog>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The bytes a [`HostileRegistry`] serves and how it misbehaves.
#[derive(Debug, Clone, Default)]
pub struct HostileContent {
    /// Blobs (manifests too) by digest.
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// Tags: manifest media type and digest.
    pub tags: BTreeMap<String, (String, String)>,
    /// The blob whose plain requests stall, and after how many bytes.
    pub stall: Option<(String, usize)>,
}

impl HostileContent {
    /// Every blob and tag of `layout`.
    pub fn of(layout: &Layout) -> HostileContent {
        let mut content = HostileContent::default();
        let blobs = layout.dir.join("blobs/sha256");
        for entry in std::fs::read_dir(&blobs).expect("layout blobs").flatten() {
            let hex = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).expect("blob");
            content.blobs.insert(format!("sha256:{hex}"), bytes);
        }
        let index: Value = serde_json::from_slice(
            &std::fs::read(layout.dir.join("index.json")).expect("index.json"),
        )
        .expect("index json");
        for m in index["manifests"].as_array().into_iter().flatten() {
            if let Some(tag) = m["annotations"]["org.opencontainers.image.ref.name"].as_str() {
                content.tags.insert(
                    tag.to_string(),
                    (
                        m["mediaType"].as_str().unwrap_or_default().to_string(),
                        m["digest"].as_str().unwrap_or_default().to_string(),
                    ),
                );
            }
        }
        content
    }

    /// Adds a manifest of `media_type` under `tag`; returns its digest.
    pub fn manifest(&mut self, tag: &str, media_type: &str, bytes: Vec<u8>) -> String {
        let digest = sha256(&bytes);
        self.blobs.insert(digest.clone(), bytes);
        self.tags
            .insert(tag.to_string(), (media_type.to_string(), digest.clone()));
        digest
    }
}

impl HostileRegistry {
    /// Serves `layout`, stalling after `after` bytes of the first layer of
    /// its tag "1".
    pub fn stalling(layout: &Layout, after: usize) -> HostileRegistry {
        let mut content = HostileContent::of(layout);
        content.stall = Some((layout.layer_digest("1", 0), after));
        HostileRegistry::start(content)
    }

    pub fn start(content: HostileContent) -> HostileRegistry {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hostile registry");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(HostileLog::default());
        let content = Arc::new(content);
        let (stopping, seen) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stopping.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let (content, seen) = (content.clone(), seen.clone());
                std::thread::spawn(move || serve_hostile(client, &content, &seen));
            }
        });
        HostileRegistry { port, log, stop }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections held silent so far.
    pub fn stalls(&self) -> usize {
        self.log.stalled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stalled connections their client closed so far.
    pub fn closes(&self) -> usize {
        self.log.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (up to a minute) until a pull has reached the stall.
    pub fn wait_stalled(&self) -> bool {
        Self::wait(|| self.stalls() >= 1, Duration::from_secs(60))
    }

    /// Waits (up to 30 s) until the client has closed a stalled connection.
    pub fn wait_closed(&self) -> bool {
        Self::wait(|| self.closes() >= 1, Duration::from_secs(30))
    }

    fn wait(done: impl Fn() -> bool, limit: Duration) -> bool {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One client connection of a [`HostileRegistry`]: requests in turn
/// (keep-alive), until the client closes or a stall ends it.
fn serve_hostile(mut client: TcpStream, content: &HostileContent, log: &HostileLog) {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let _ = client.set_nonblocking(false);
    // Never hold a thread for ever, whatever the client does.
    let _ = client.set_read_timeout(Some(Duration::from_secs(300)));
    let mut pending = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut buf = [0u8; 4096];
            match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end + 4);
        let mut lines = head.lines();
        let request = lines.next().unwrap_or_default().to_string();
        let range: Option<u64> = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
            .and_then(|(_, v)| {
                v.trim()
                    .strip_prefix("bytes=")?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()
            });
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let found = if path == "/v2/" || path == "/v2" {
            Some((
                "application/json".to_string(),
                String::new(),
                b"{}".to_vec(),
            ))
        } else if let Some((_, reference)) = path.split_once("/manifests/") {
            let digest = content
                .tags
                .get(reference)
                .map(|(_, d)| d.clone())
                .unwrap_or_else(|| reference.to_string());
            let media_type = content
                .tags
                .values()
                .find(|(_, d)| *d == digest)
                .map(|(m, _)| m.clone())
                .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
            content
                .blobs
                .get(&digest)
                .map(|b| (media_type, digest.clone(), b.clone()))
        } else if let Some((_, digest)) = path.split_once("/blobs/") {
            content.blobs.get(digest).map(|b| {
                (
                    "application/octet-stream".to_string(),
                    digest.to_string(),
                    b.clone(),
                )
            })
        } else {
            None
        };
        let Some((media_type, digest, body)) = found else {
            let body = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}"#;
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            if client.write_all(head.as_bytes()).is_err() || client.write_all(body).is_err() {
                return;
            }
            continue;
        };
        let start = range.unwrap_or(0).min(body.len() as u64) as usize;
        let status = if range.is_some() {
            log.ranges.lock().expect("log").push(start as u64);
            format!(
                "206 Partial Content\r\nContent-Range: bytes {start}-{}/{}",
                body.len().saturating_sub(1),
                body.len()
            )
        } else {
            "200 OK".to_string()
        };
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\n",
            body.len() - start
        );
        if !digest.is_empty() {
            head.push_str(&format!("Docker-Content-Digest: {digest}\r\n"));
        }
        head.push_str("\r\n");
        if client.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method == "HEAD" {
            continue;
        }
        match &content.stall {
            Some((stalled, after)) if *stalled == digest && range.is_none() => {
                let _ = client.write_all(&body[..(*after).min(body.len())]);
                let _ = client.flush();
                log.stalled.fetch_add(1, Ordering::SeqCst);
                // Silent from now on; the client's close ends the read.
                let mut buf = [0u8; 4096];
                loop {
                    match client.read(&mut buf) {
                        Ok(0) => {
                            log.closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            return
                        }
                        Err(_) => {
                            log.closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
            _ => {
                if client.write_all(&body[start..]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Images.Pull of `reference` on a thread of its own (its own runtime and
/// connection), so a test can act while it runs.
pub fn pull_on_thread(
    socket: &Path,
    reference: &str,
) -> std::thread::JoinHandle<Result<Vec<pb::PullProgress>, tonic::Status>> {
    let (socket, reference) = (socket.to_path_buf(), reference.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        rt.block_on(async move {
            let ch = berth_proto::connect(&socket)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut client = pb::images_client::ImagesClient::new(ch);
            let mut stream = client
                .pull(pb::PullRequest {
                    reference,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut all = Vec::new();
            while let Some(msg) = stream.message().await? {
                all.push(msg);
            }
            Ok(all)
        })
    })
}

impl Layout {
    /// The digest of layer `index` of the image tagged `tag`.
    pub fn layer_digest(&self, tag: &str, index: usize) -> String {
        let read = |digest: &str| -> Value {
            let path = self
                .dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            serde_json::from_slice(&std::fs::read(path).expect("blob")).expect("json")
        };
        let index_json: Value = serde_json::from_slice(
            &std::fs::read(self.dir.join("index.json")).expect("index.json"),
        )
        .expect("json");
        let manifest = index_json["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .and_then(|m| m["digest"].as_str())
            .unwrap_or_else(|| panic!("no tag {tag} in the layout"))
            .to_string();
        read(&manifest)["layers"][index]["digest"]
            .as_str()
            .expect("layer digest")
            .to_string()
    }
}

/// Bytes that do not compress, so a blob is as large as its content.
pub fn noise(len: usize) -> Vec<u8> {
    let mut noise = vec![0u8; len];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    noise
}

/// An image tagged "1" of one layer holding `mib` MiB of [`noise`] as
/// `data/noise`; the layout and the noise.
pub fn noise_layout(name: &str, mib: usize) -> (Layout, Vec<u8>) {
    let noise = noise(mib << 20);
    let mut t = LayerTar::new();
    t.dir("data/", 0o755).file("data/noise", 0o644, &noise);
    let mut layout = Layout::new(name);
    let image = layout.image(&[(t.finish(), Compression::Gzip)], ("amd64", ""));
    layout.tag("1", &image);
    (layout, noise)
}
