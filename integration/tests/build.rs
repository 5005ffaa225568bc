//! `berthctl build` end to end: the real `berthctl` and `berth-imaged`,
//! `RUN` steps in real containers (this workspace's shim and runtime),
//! images checked by running them and by reading the layers `berthctl
//! save` writes. Every test's daemon and containers go when it ends,
//! failing or not.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output};

use berth_integration::imaged::*;
use berth_integration::{target_dir, text, unique};
use berth_proto::v1 as pb;
use serde_json::Value;

const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "rm", "mkdir", "ls", "test", "true", "false", "httpd", "id", "stat",
    "sleep", "ln",
];

const BASE: &str = "busybox:build";

/// A daemon running containers through this workspace's shim and runtime,
/// with the busybox image loaded as [`BASE`], and a context directory.
struct Env {
    daemon: Daemon,
    runtime_root: PathBuf,
    context: Context,
}

/// The build context directory; removed (itself, nothing above it) at the end.
struct Context(PathBuf);

impl Drop for Context {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Env {
    fn start() -> Env {
        Env::start_with(&[])
    }

    /// With more daemon flags (`--insecure-registry HOST`).
    fn start_with(extra: &[&str]) -> Env {
        let runtime_root = std::env::temp_dir().join(unique("berth-build-runtime"));
        let (shim, berth) = (
            target_dir().join("containerd-shim-berth-v2"),
            target_dir().join("berth"),
        );
        let args = [
            "--shim".to_string(),
            shim.display().to_string(),
            "--runtime".to_string(),
            berth.display().to_string(),
            "--runtime-root".to_string(),
            runtime_root.display().to_string(),
        ];
        let mut refs: Vec<&str> = args.iter().map(String::as_str).collect();
        refs.extend_from_slice(extra);
        let context = Context(std::env::temp_dir().join(unique("berth-build-context")));
        std::fs::create_dir_all(&context.0).expect("context dir");
        let env = Env {
            daemon: Daemon::start_with(&refs),
            runtime_root,
            context,
        };
        let archive = busybox_layout("build-busybox", APPLETS, BASE).archive();
        let out = env.ctl_with_input(&["load"], &archive);
        assert!(out.status.success(), "load: {}", text(&out));
        env
    }

    /// Builds may take minutes: five of them before the test fails.
    fn ctl_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_ctl_within(300, &self.daemon.socket, args, stdin)
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with_input(args, b"")
    }

    fn ok(&self, args: &[&str]) -> String {
        ctl_succeeded(&self.daemon, args, &self.ctl(args))
    }

    fn write(&self, rel: &str, data: &str) {
        let path = self.context.0.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, data).expect("write");
    }

    fn context(&self) -> String {
        self.context.0.display().to_string()
    }

    /// `build -t TAG CONTEXT` with `dockerfile` written first.
    fn build(&self, tag: &str, dockerfile: &str) -> Output {
        self.write("Dockerfile", dockerfile);
        let context = self.context();
        self.ctl(&["build", "-t", tag, &context])
    }

    fn snapshot_keys(&self) -> Vec<String> {
        let mut client = self.daemon.snapshots();
        let list = self
            .daemon
            .block_on(client.list(pb::ListSnapshotsRequest {}))
            .expect("list snapshots")
            .into_inner();
        let mut keys: Vec<String> = list.snapshots.into_iter().map(|s| s.name).collect();
        keys.sort();
        keys
    }

    /// The image as `save` writes it: its config, and each layer's entry
    /// names.
    fn saved(&self, name: &str) -> (Value, Vec<Vec<String>>) {
        let out = self.ctl(&["save", name]);
        assert!(out.status.success(), "save: {}", text(&out));
        let blobs = read_tar(&out.stdout);
        let index: Value = serde_json::from_slice(&blobs["index.json"]).expect("index");
        let blob = |digest: &str| {
            let hex = digest.trim_start_matches("sha256:");
            blobs[&format!("blobs/sha256/{hex}")].clone()
        };
        let manifest: Value = serde_json::from_slice(&blob(
            index["manifests"][0]["digest"].as_str().expect("digest"),
        ))
        .expect("manifest");
        let config: Value = serde_json::from_slice(&blob(
            manifest["config"]["digest"].as_str().expect("config"),
        ))
        .expect("config");
        let layers = manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| {
                let gz = blob(l["digest"].as_str().expect("digest"));
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut tar)
                    .expect("gunzip");
                read_tar(&tar).into_keys().collect()
            })
            .collect();
        (config, layers)
    }

    fn layers(&self, name: &str) -> Vec<Vec<String>> {
        self.saved(name).1
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let out = self.ctl(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.ctl(&["rm", "-f", id.trim()]);
        }
        let _ = std::fs::remove_dir_all(&self.runtime_root);
    }
}

/// Entry name → contents of a tar (directories with empty contents).
fn read_tar(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        out.insert(name, data);
    }
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn web_dockerfile(cmd: &str) -> String {
    format!("FROM {BASE}\n# the page\nCOPY index.html /www/index.html\nRUN echo built > /www/built.txt\nEXPOSE 80\n{cmd}\n")
}

#[test]
fn a_web_image_builds_runs_and_rebuilds_from_the_cache() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.write("index.html", "<h1>hello from berth build</h1>\n");
    let out = env.build(
        "web:1",
        &web_dockerfile(r#"CMD ["httpd", "-f", "-p", "80", "-h", "/www"]"#),
    );
    assert!(
        out.status.success(),
        "build: {}\n{}",
        text(&out),
        env.daemon.log()
    );
    let first = stdout(&out);
    for step in [
        "STEP 1/5: FROM",
        "STEP 2/5: COPY",
        "STEP 3/5: RUN",
        "STEP 5/5: CMD",
    ] {
        assert!(first.contains(step), "{first}");
    }
    assert!(!first.contains("Using cache"), "{first}");
    assert!(first.contains("Successfully tagged web:1"), "{first}");

    let page = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "web:1",
        "cat",
        "/www/index.html",
        "/www/built.txt",
    ]);
    assert_eq!(page, "<h1>hello from berth build</h1>\nbuilt\n");

    // The config and history as docker writes them.
    let (config, layers) = env.saved("web:1");
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"80/tcp": {}})
    );
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["httpd", "-f", "-p", "80", "-h", "/www"])
    );
    let history = config["history"].as_array().expect("history");
    // The test's busybox config has no history of its own: one entry a step.
    let empty: Vec<bool> = history.iter().map(|h| h["empty_layer"] == true).collect();
    assert_eq!(empty, vec![false, false, true, true], "{config}");
    assert!(
        history[3]["created_by"]
            .as_str()
            .unwrap_or("")
            .contains("#(nop)  CMD"),
        "{config}"
    );
    assert_eq!(layers.len(), 3, "busybox, COPY, RUN: {layers:?}");
    assert_eq!(layers[1], vec!["www/index.html"], "{layers:?}");
    assert!(
        layers[2].contains(&"www/built.txt".to_string()),
        "{layers:?}"
    );

    // tag: another name for the same image; history: newest step first.
    env.ok(&["tag", "web:1", "web:tagged"]);
    assert_eq!(env.saved("web:tagged"), (config.clone(), layers.clone()));
    let history = env.ok(&["history", "--no-trunc", "web:1"]);
    let rows: Vec<&str> = history.lines().collect();
    assert_eq!(
        rows.len(),
        6,
        "a header, 4 steps, the base layer: {history}"
    );
    assert!(
        rows[1].starts_with("sha256:") && rows[1].contains("CMD"),
        "{history}"
    );
    assert!(
        rows[2].starts_with("<missing>") && rows[2].contains("EXPOSE 80"),
        "{history}"
    );
    assert!(rows[3].contains("echo built > /www/built.txt"), "{history}");
    assert!(rows[4].contains("COPY"), "{history}");

    // Only the last instruction changed: every earlier step is cached.
    let out = env.build(
        "web:2",
        &web_dockerfile(r#"CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]"#),
    );
    assert!(out.status.success(), "rebuild: {}", text(&out));
    let second = stdout(&out);
    assert_eq!(second.matches("---> Using cache").count(), 3, "{second}");
    let last_step = second.split("STEP 5/5").nth(1).expect("step 5");
    assert!(!last_step.contains("Using cache"), "{second}");
    // The same layers: the cached steps made nothing new.
    assert_eq!(env.layers("web:2"), layers);

    // --no-cache runs every step again.
    let context = env.context();
    let out = env.ctl(&["build", "--no-cache", "-t", "web:3", &context]);
    assert!(out.status.success(), "no-cache: {}", text(&out));
    assert!(!stdout(&out).contains("Using cache"), "{}", stdout(&out));
}

#[test]
fn a_multi_stage_build_keeps_only_the_copied_artefact() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let out = env.build(
        "artefact:1",
        &format!(
            "ARG BASE={BASE}\nFROM ${{BASE}} AS builder\nRUN mkdir -p /out && echo artefact > /out/app && echo junk > /junk\n\nFROM scratch\nCOPY --from=builder --chmod=755 /out/app /app\nCMD [\"/app\"]\n"
        ),
    );
    assert!(
        out.status.success(),
        "build: {}\n{}",
        text(&out),
        env.daemon.log()
    );
    let layers = env.layers("artefact:1");
    assert_eq!(layers, vec![vec!["app".to_string()]]);
    // And the first stage's container and view are gone.
    assert!(
        env.snapshot_keys()
            .iter()
            .all(|k| !k.starts_with("build") && !k.starts_with("container")),
        "{:?}",
        env.snapshot_keys()
    );
}

#[test]
fn run_rm_of_an_earlier_file_is_a_whiteout_and_the_file_is_gone() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let out = env.build(
        "gone:1",
        &format!("FROM {BASE}\nRUN rm /data/seed.txt\nRUN rm -r /data && mkdir -m 700 /data && echo new > /data/x\n"),
    );
    assert!(
        out.status.success(),
        "build: {}\n{}",
        text(&out),
        env.daemon.log()
    );
    let layers = env.layers("gone:1");
    assert!(
        layers[1].contains(&"data/.wh.seed.txt".to_string()),
        "{layers:?}"
    );
    assert!(
        layers[2].contains(&"data/.wh..wh..opq".to_string()),
        "{layers:?}"
    );
    let seen = env.ok(&[
        "run",
        "--rm",
        "gone:1",
        "sh",
        "-c",
        "ls /data; test -e /data/seed.txt || echo no-seed",
    ]);
    assert_eq!(seen, "x\nno-seed\n");
}

#[test]
fn a_syntax_error_names_the_line_and_copy_outside_the_context_is_refused() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let before = env.snapshot_keys();
    let out = env.build("bad:1", &format!("FROM {BASE}\nRUN true\n\nBOGUS thing\n"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 4: unknown instruction: BOGUS"),
        "{}",
        text(&out)
    );

    let out = env.build("bad:1", &format!("FROM {BASE}\nCOPY ../secret /secret\n"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("outside the build context"),
        "{}",
        text(&out)
    );
    // A symlink in the context that points out of it resolves inside it.
    std::os::unix::fs::symlink("/etc", env.context.0.join("etc-link")).expect("symlink");
    let out = env.build(
        "bad:1",
        &format!("FROM {BASE}\nCOPY etc-link/hostname /h\n"),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("no such file"), "{}", text(&out));
    assert_eq!(env.snapshot_keys(), before);
    assert!(env.ctl(&["image", "inspect", "bad:1"]).status.code() != Some(0));
}

#[test]
fn a_failing_run_stops_the_build_with_its_code_and_output_and_leaves_nothing() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let before = env.snapshot_keys();
    let out = env.build(
        "fail:1",
        &format!("FROM {BASE}\nRUN echo before-the-failure && echo to-stderr >&2 && exit 3\nRUN echo never\n"),
    );
    assert!(!out.status.success());
    let all = text(&out);
    assert!(stdout(&out).contains("before-the-failure"), "{all}");
    assert!(stdout(&out).contains("to-stderr"), "{all}");
    assert!(!stdout(&out).contains("STEP 3/3"), "{all}");
    assert!(
        stderr(&out).contains("returned a non-zero code: 3"),
        "{all}"
    );
    assert_eq!(env.snapshot_keys(), before);
    assert_eq!(env.ok(&["ps", "-a", "-q"]), "");
}

/// The manifest digest and layer digests of `reference` as skopeo reads
/// them from the registry.
fn skopeo_inspect(reference: &str, creds: Option<&str>) -> (String, Vec<String>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.arg(format!("--creds={c}"));
    }
    let out = cmd
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo inspect: {}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("skopeo JSON");
    let layers = doc["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l.as_str().unwrap_or_default().to_string())
        .collect();
    (
        doc["Digest"].as_str().unwrap_or_default().to_string(),
        layers,
    )
}

#[test]
fn a_pushed_image_is_pulled_by_a_fresh_daemon_with_identical_digests() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::start();
    let host = registry.host();
    let env = Env::start_with(&["--insecure-registry", &host]);
    env.write("app.txt", "pushed by berth\n");
    let name = format!("{host}/app:1");
    let out = env.build(
        &name,
        &format!("FROM {BASE}\nCOPY app.txt /app.txt\nRUN echo layer > /run.txt\nCMD [\"cat\", \"/app.txt\"]\n"),
    );
    assert!(out.status.success(), "build: {}", text(&out));

    let pushed = env.ok(&["push", &name]);
    assert_eq!(
        pushed.matches(": Pushed").count(),
        4,
        "config and 3 layers: {pushed}"
    );
    let digest_line = pushed.lines().last().unwrap_or_default().to_string();
    assert!(
        digest_line.starts_with(&format!("{name}: digest: sha256:")),
        "{pushed}"
    );
    // Again: the registry has every blob (HEAD), none is sent.
    let again = env.ok(&["push", &name]);
    assert_eq!(again.matches("Layer already exists").count(), 4, "{again}");
    assert!(!again.contains(": Pushed"), "{again}");
    // Another repository of the same registry: blobs mounted, not sent.
    let other = format!("{host}/other:1");
    env.ok(&["tag", &name, &other]);
    let mounted = env.ok(&["push", &other]);
    assert_eq!(mounted.matches("Mounted from app").count(), 4, "{mounted}");

    // skopeo reads what was pushed: the manifest digest is berth's.
    let (_, berth_layers) = env.saved(&name);
    let (skopeo_digest, skopeo_layers) = skopeo_inspect(&name, None);
    assert!(
        digest_line.contains(&format!("digest: {skopeo_digest} ")),
        "{digest_line} vs {skopeo_digest}"
    );
    assert_eq!(skopeo_layers.len(), berth_layers.len());

    // search finds both repositories in the registry's catalog.
    let found = env.ok(&["search", &format!("{host}/o")]);
    assert_eq!(found, format!("NAME\n{host}/other\n"));
    let found = env.ok(&["search", &format!("{host}/")]);
    assert_eq!(found, format!("NAME\n{host}/app\n{host}/other\n"));

    // A fresh daemon pulls it: same manifest, same layers, same files.
    let fresh = Env::start_with(&["--insecure-registry", &host]);
    fresh.ok(&["pull", &name]);
    let inspect = |e: &Env| -> Value {
        let out = e.ok(&["image", "inspect", &name]);
        serde_json::from_str::<Value>(&out).expect("inspect JSON")[0].clone()
    };
    let (a, b) = (inspect(&env), inspect(&fresh));
    for key in ["target", "manifest", "config"] {
        assert_eq!(a[key]["digest"], b[key]["digest"], "{key}: {a} vs {b}");
    }
    assert_eq!(a["chainId"], b["chainId"]);
    assert_eq!(env.saved(&name), fresh.saved(&name));
    let seen = fresh.ok(&["run", "--rm", &name]);
    assert_eq!(seen, "pushed by berth\n");
    // umoci unpacks what was pushed into the tree berth mounts.
    let oci = Context(std::env::temp_dir().join(unique("berth-build-oci")));
    std::fs::create_dir_all(oci.0.join("berth")).expect("mount dir");
    let layout = format!("{}/layout:1", oci.0.display());
    let copy = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{layout}"))
        .output()
        .expect("skopeo");
    assert!(copy.status.success(), "skopeo copy: {}", text(&copy));
    let unpack = Command::new("umoci")
        .args(["unpack", "--image", &layout])
        .arg(oci.0.join("bundle"))
        .output()
        .expect("umoci");
    assert!(unpack.status.success(), "umoci unpack: {}", text(&unpack));
    let mount_dir = oci.0.join("berth").display().to_string();
    env.ok(&["image", "mount", &name, &mount_dir]);
    let berth_tree = listing(&oci.0.join("berth"));
    env.ok(&["image", "unmount", &mount_dir]);
    assert_eq!(listing(&oci.0.join("bundle/rootfs")), berth_tree);
}

#[test]
fn push_without_credentials_says_so_and_login_fixes_it() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::with_auth("builder", "s3cret");
    let host = registry.host();
    let env = Env::start_with(&["--insecure-registry", &host]);
    let config_dir = env.context.0.join("docker-config");
    let config = config_dir.display().to_string();
    let name = format!("{host}/private:1");
    let out = env.build(&name, &format!("FROM {BASE}\nRUN echo private > /p.txt\n"));
    assert!(out.status.success(), "build: {}", text(&out));

    let out = env.ctl(&["push", "--config", &config, &name]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("unauthorized"), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("berthctl login {host}")),
        "{}",
        text(&out)
    );

    let login = |password: &str| {
        let args = [
            "login",
            "--config",
            &config,
            "-u",
            "builder",
            "--password-stdin",
            &host,
        ];
        env.ctl_with_input(&args, format!("{password}\n").as_bytes())
    };
    let out = login("wrong");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("unauthorized"), "{}", text(&out));
    assert!(!config_dir.join("config.json").exists());

    let out = login("s3cret");
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("Login Succeeded"));
    let saved: Value = serde_json::from_slice(
        &std::fs::read(config_dir.join("config.json")).expect("config.json"),
    )
    .expect("JSON");
    // docker's format: base64 of user:password under auths.HOST.auth.
    assert_eq!(saved["auths"][&host]["auth"], "YnVpbGRlcjpzM2NyZXQ=");

    let pushed = env.ok(&["push", "--config", &config, &name]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    let (digest, _) = skopeo_inspect(&name, Some("builder:s3cret"));
    assert!(pushed.contains(&digest), "{pushed} vs {digest}");

    env.ok(&["logout", "--config", &config, &host]);
    let out = env.ctl(&["push", "--config", &config, &name]);
    assert!(stderr(&out).contains("unauthorized"), "{}", text(&out));
}

#[test]
fn commit_makes_a_containers_changes_an_image_and_diff_lists_them() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let script = "echo committed > /data/new.txt; rm /data/seed.txt; mkdir /made";
    env.ok(&["run", "--name", "writer", BASE, "sh", "-c", script]);
    assert_eq!(env.ok(&["wait", "writer"]), "0\n");

    let diff = env.ok(&["diff", "writer"]);
    let lines: Vec<&str> = diff.lines().collect();
    for change in ["C /data", "A /data/new.txt", "D /data/seed.txt", "A /made"] {
        assert!(lines.contains(&change), "{change} in {diff}");
    }
    assert!(
        !diff.contains("/etc/hosts"),
        "mount points are not changes: {diff}"
    );

    let id = env.ok(&["commit", "-m", "wrote a file", "writer", "committed:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    let seen = env.ok(&[
        "run",
        "--rm",
        "committed:1",
        "sh",
        "-c",
        "cat /data/new.txt; test -e /data/seed.txt || echo gone",
    ]);
    assert_eq!(seen, "committed\ngone\n");
    let (config, layers) = env.saved("committed:1");
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert!(
        layers[1].contains(&"data/.wh.seed.txt".to_string()),
        "{layers:?}"
    );
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["sh", "-c", script])
    );
    assert!(env.ok(&["history", "committed:1"]).contains("wrote a file"));

    let out = env.ctl(&["commit", "no-such-container", "x:1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-container"), "{}", text(&out));
}

#[test]
fn inspect_format_prints_the_pid_and_other_fields() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.ok(&["run", "-d", "--name", "sleeper", BASE, "sleep", "300"]);
    let pid = env.ok(&["inspect", "--format", "{{.State.Pid}}", "sleeper"]);
    let pid: u32 = pid.trim().parse().expect("a pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the process exists");
    assert!(cmdline.starts_with(b"sleep\x00300"), "{cmdline:?}");
    let shown = env.ok(&[
        "inspect",
        "-f",
        "{{.Name}} {{if .State.Running}}up{{else}}down{{end}} {{json .config.args}}",
        "sleeper",
    ]);
    assert_eq!(shown, "sleeper up [\"sleep\",\"300\"]\n");
    // top: the same process, from the daemon's pids.
    let top = env.ok(&["top", "sleeper"]);
    let row = top.lines().nth(1).unwrap_or_default().to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[1], &cols[3..]),
        ("0", pid.to_string().as_str(), &["sleep", "300"][..]),
        "{top}"
    );
    env.ok(&["rm", "-f", "sleeper"]);
}

#[test]
fn workdir_copy_into_it_and_run_there() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.write("app.txt", "in the workdir\n");
    let out = env.build(
        "workdir:1",
        &format!("FROM {BASE}\nWORKDIR /app/sub\nCOPY app.txt .\nCOPY app.txt /data\nRUN pwd > /pwd.txt\nWORKDIR /made/by/workdir\nRUN pwd > /pwd2.txt\nCMD [\"cat\", \"app.txt\"]\n"),
    );
    assert!(
        out.status.success(),
        "build: {}\n{}",
        text(&out),
        env.daemon.log()
    );
    let seen = env.ok(&[
        "run",
        "--rm",
        "workdir:1",
        "sh",
        "-c",
        "cat /app/sub/app.txt /data/app.txt /pwd.txt /pwd2.txt",
    ]);
    assert_eq!(
        seen,
        "in the workdir\nin the workdir\n/app/sub\n/made/by/workdir\n"
    );
    let (config, _) = env.saved("workdir:1");
    assert_eq!(config["config"]["WorkingDir"], "/made/by/workdir");
}

#[test]
fn instructions_args_ignore_files_add_archives_and_metadata() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.write(
        ".dockerignore",
        "# not sent\nsecret.txt\nlogs/\n!logs/keep.log\n",
    );
    env.write("secret.txt", "never sent\n");
    env.write("logs/a.log", "left out\n");
    env.write("logs/keep.log", "kept\n");
    env.write("src/a.txt", "a\n");
    // A tar for ADD to unpack.
    let mut t = LayerTar::new();
    t.dir("pkg/", 0o755)
        .file("pkg/inside.txt", 0o600, b"from the archive\n");
    std::fs::write(env.context.0.join("pkg.tar"), t.finish()).expect("tar");
    let dockerfile = format!(
        r#"ARG BASE={BASE}
FROM ${{BASE}}
ARG WHO=nobody
ENV GREETING="hello ${{WHO}}" \
    HOME_DIR=/home/${{WHO:-x}}
LABEL org.example.who=$WHO version="1.0"
COPY --chown=nobody:nogroup --chmod=640 src/ /src/
COPY . /ctx/
ADD pkg.tar /opt/
RUN echo "$GREETING $WHO" > /greeting.txt
EXPOSE 8080/udp 80
VOLUME ["/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --retries=3 CMD ["true"]
ONBUILD RUN echo triggered
ENTRYPOINT ["sh", "-c"]
USER nobody
"#
    );
    env.write("Dockerfile", &dockerfile);
    let context = env.context();
    let out = env.ctl(&[
        "build",
        "--build-arg",
        "WHO=builder",
        "--label",
        "extra=yes",
        "-t",
        "meta:1",
        &context,
    ]);
    assert!(
        out.status.success(),
        "build: {}\n{}",
        text(&out),
        env.daemon.log()
    );

    let seen = env.ok(&[
        "run", "--rm", "--user", "0", "--entrypoint", "sh", "meta:1", "-c",
        "cat /greeting.txt /opt/pkg/inside.txt /ctx/logs/keep.log; ls /ctx; ls /ctx/logs; stat -c '%U:%G %a' /src/a.txt",
    ]);
    assert_eq!(
        seen,
        "hello builder builder\nfrom the archive\nkept\nDockerfile\nlogs\npkg.tar\nsrc\nkeep.log\nnobody:nogroup 640\n",
        "secret.txt and logs/a.log stay out; .dockerignore itself is sent"
    );
    let (config, _) = env.saved("meta:1");
    let c = &config["config"];
    let env_list: Vec<&str> = c["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env_list.contains(&"GREETING=hello builder"), "{c}");
    assert!(env_list.contains(&"HOME_DIR=/home/builder"), "{c}");
    assert_eq!(c["Labels"]["org.example.who"], "builder");
    assert_eq!(c["Labels"]["version"], "1.0");
    assert_eq!(c["Labels"]["extra"], "yes");
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"8080/udp": {}, "80/tcp": {}})
    );
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({"Test": ["CMD", "true"], "Interval": 30_000_000_000u64, "Retries": 3})
    );
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo triggered"]));
    assert_eq!(c["Entrypoint"], serde_json::json!(["sh", "-c"]));
    assert_eq!(c["Cmd"], Value::Null, "an ENTRYPOINT clears the base's CMD");
    assert_eq!(c["User"], "nobody");
}

/// A host directory of the test's own; removed at the end.
fn host_dir(env: &Env, name: &str) -> PathBuf {
    let dir = env.context.0.join(name);
    std::fs::create_dir_all(&dir).expect("host dir");
    dir
}

fn path_arg(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[test]
fn cp_copies_both_ways_for_running_and_stopped_containers() {
    use std::os::unix::fs::MetadataExt;
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.ok(&[
        "run", "-d", "--name", "box", "-v", "/vol", BASE, "sleep", "300",
    ]);
    env.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "mkdir -p /data/sub && echo one > /data/a.txt && echo two > /data/sub/b.txt && ln -s /etc /data/etc-link",
    ]);
    let host = host_dir(&env, "cp-host");

    // Container to host: a file as a new name, a directory into an
    // existing one (a symlink copied as a link), a directory's contents.
    let a_copy = host.join("a-copy.txt");
    env.ok(&["cp", "box:/data/a.txt", &path_arg(&a_copy)]);
    assert_eq!(std::fs::read_to_string(&a_copy).expect("a-copy"), "one\n");
    env.ok(&["cp", "box:/data", &format!("{}/", host.display())]);
    assert_eq!(
        std::fs::read_to_string(host.join("data/sub/b.txt")).expect("b"),
        "two\n"
    );
    assert_eq!(
        std::fs::read_link(host.join("data/etc-link")).expect("a link"),
        PathBuf::from("/etc")
    );
    let contents = host.join("contents");
    env.ok(&["cp", "box:/data/.", &path_arg(&contents)]);
    assert_eq!(
        std::fs::read_to_string(contents.join("a.txt")).expect("a"),
        "one\n"
    );
    // To stdout: a tar whose top entry is the source's name, as docker's.
    let out = env.ctl(&["cp", "box:/data", "-"]);
    assert!(out.status.success(), "{}", text(&out));
    let entries = read_tar(&out.stdout);
    assert_eq!(entries["data/sub/b.txt"], b"two\n");
    assert!(
        entries.contains_key("data/etc-link"),
        "{:?}",
        entries.keys()
    );

    // Host to container: owners become root's, or stay with -a.
    let src = host.join("in");
    std::fs::create_dir_all(&src).expect("in");
    std::fs::write(src.join("x.txt"), "from the host\n").expect("x");
    std::os::unix::fs::chown(src.join("x.txt"), Some(1234), Some(1234)).expect("chown");
    env.ok(&["cp", &path_arg(&src), "box:/data/"]);
    env.ok(&["cp", "-a", &path_arg(&src), "box:/data/kept"]);
    let seen = env.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cat /data/in/x.txt; stat -c %u:%g /data/in/x.txt /data/kept/x.txt",
    ]);
    assert_eq!(seen, "from the host\n0:0\n1234:1234\n");
    // A tar on stdin, unpacked into a directory.
    let mut t = LayerTar::new();
    t.file("fromtar.txt", 0o644, b"streamed\n");
    let out = env.ctl_with_input(&["cp", "-", "box:/data"], &t.finish());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.ok(&["exec", "box", "cat", "/data/fromtar.txt"]),
        "streamed\n"
    );

    // A running container's volume is where the container has it.
    env.ok(&["cp", &path_arg(&a_copy), "box:/vol/"]);
    assert_eq!(env.ok(&["exec", "box", "cat", "/vol/a-copy.txt"]), "one\n");
    env.ok(&["exec", "box", "sh", "-c", "echo in the volume > /vol/v.txt"]);
    let from_volume = host.join("v.txt");
    env.ok(&["cp", "box:/vol/v.txt", &path_arg(&from_volume)]);
    assert_eq!(
        std::fs::read_to_string(&from_volume).expect("v"),
        "in the volume\n"
    );

    // A stopped container: both ways still.
    env.ok(&["stop", "-t", "1", "box"]);
    std::fs::write(host.join("late.txt"), "after the stop\n").expect("late");
    env.ok(&[
        "cp",
        &path_arg(&host.join("late.txt")),
        "box:/data/late.txt",
    ]);
    let back = host.join("late-back.txt");
    env.ok(&["cp", "box:/data/late.txt", &path_arg(&back)]);
    assert_eq!(
        std::fs::read_to_string(&back).expect("back"),
        "after the stop\n"
    );

    // Errors: docker's words, exit 1, nothing written.
    let out = env.ctl(&["cp", "box:/no/such", &path_arg(&host.join("nope"))]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("No such container:path: box:/no/such"),
        "{}",
        text(&out)
    );
    assert!(!host.join("nope").exists());
    let out = env.ctl(&["cp", "box:/data", &path_arg(&a_copy)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("cannot copy a directory to a file"),
        "{}",
        text(&out)
    );
    let out = env.ctl(&["cp", &path_arg(&a_copy), &path_arg(&back)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("at least one container"),
        "{}",
        text(&out)
    );
    let out = env.ctl(&["cp", "nobox:/data", &path_arg(&host)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("no such container: nobox"),
        "{}",
        text(&out)
    );
    // Out of the container, files belong to the user who copies.
    let kept = host.join("kept.txt");
    env.ok(&["cp", "box:/data/kept/x.txt", &path_arg(&kept)]);
    assert_eq!(std::fs::metadata(&kept).expect("kept").uid(), 0);
}

#[test]
fn cp_resolves_every_path_inside_the_container_and_never_reaches_the_host() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let host = host_dir(&env, "cp-escape");
    // A host file the container's links name, and a host directory they
    // point into: neither may be read or written through the container.
    let secret = host.join("secret.txt");
    std::fs::write(&secret, "host secret\n").expect("secret");
    let target = host_dir(&env, "cp-escape-target");
    let (secret_s, target_s) = (path_arg(&secret), path_arg(&target));
    let up = "../../../../../../../../..";
    env.ok(&["run", "-d", "--name", "evil", BASE, "sleep", "300"]);
    env.ok(&[
        "exec",
        "evil",
        "sh",
        "-c",
        &format!(
            "mkdir -p /links {target_s} && ln -s {secret_s} /links/secret && ln -s {up}{secret_s} /links/secret-up && ln -s {target_s} /links/dir && ln -s {up} /links/up"
        ),
    ]);
    let out_file = host.join("out.txt");
    for source in [
        "evil:/links/secret".to_string(),
        "evil:/links/secret-up".to_string(),
        format!("evil:/links/up{secret_s}"),
        format!("evil:/links/../../..{secret_s}"),
    ] {
        let out = env.ctl(&["cp", "-L", &source, &path_arg(&out_file)]);
        assert_eq!(out.status.code(), Some(1), "{source}: {}", text(&out));
        assert!(
            stderr(&out).contains("No such container:path"),
            "{source}: {}",
            text(&out)
        );
        assert!(!out_file.exists(), "{source} read the host's file");
    }
    // Writes through the links land in the container's own directories.
    let payload = host.join("payload.txt");
    std::fs::write(&payload, "payload\n").expect("payload");
    for dest in [
        "evil:/links/dir".to_string(),
        format!("evil:/links/up{target_s}/"),
        format!("evil:/../../..{target_s}/"),
    ] {
        env.ok(&["cp", &path_arg(&payload), &dest]);
        assert!(
            !target.join("payload.txt").exists(),
            "{dest} wrote into the host's {target_s}"
        );
    }
    let seen = env.ok(&["exec", "evil", "cat", &format!("{target_s}/payload.txt")]);
    assert_eq!(seen, "payload\n");
    // A tar whose entries climb or plant a link stays inside the container too.
    let mut t = LayerTar::new();
    t.symlink("hop", &target_s)
        .file("hop/planted.txt", 0o644, b"planted\n");
    let out = env.ctl_with_input(&["cp", "-", "evil:/links"], &t.finish());
    assert!(!target.join("planted.txt").exists(), "{}", text(&out));
}

#[test]
fn export_writes_the_container_filesystem_and_rename_renames() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.ok(&[
        "run",
        "--name",
        "exported",
        BASE,
        "sh",
        "-c",
        "echo mine > /mine.txt",
    ]);
    assert_eq!(env.ok(&["wait", "exported"]), "0\n");
    let out = env.ctl(&["export", "exported"]);
    assert!(out.status.success(), "{}", text(&out));
    let entries = read_tar(&out.stdout);
    assert_eq!(entries["mine.txt"], b"mine\n");
    assert!(entries.contains_key("bin/sh"), "{:?}", entries.keys());
    assert!(entries
        .keys()
        .all(|k| !k.starts_with('/') && !k.starts_with("./")));
    let file = env.context.0.join("exported.tar");
    env.ok(&["export", "-o", &path_arg(&file), "exported"]);
    assert_eq!(std::fs::read(&file).expect("tar"), out.stdout);
    let out = env.ctl(&["export", "missing"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such container: missing"),
        "{}",
        text(&out)
    );

    env.ok(&["rename", "exported", "renamed"]);
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.Name}}", "renamed"]),
        "renamed\n"
    );
    assert!(!env.ctl(&["inspect", "exported"]).status.success());
    env.ok(&["run", "--name", "other", BASE, "true"]);
    for (to, says) in [
        ("other", "already in use"),
        ("bad/name", "invalid container name"),
    ] {
        let out = env.ctl(&["rename", "renamed", to]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(stderr(&out).contains(says), "{}", text(&out));
    }
    let out = env.ctl(&["rename", "missing", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// The command line of the process `pid`, if it runs.
fn cmdline(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .filter(|c| !c.is_empty())
}

#[test]
fn a_build_whose_client_leaves_is_cancelled_and_leaves_nothing() {
    use std::io::BufRead;
    use std::process::Stdio;
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let snapshots_before = env.snapshot_keys();
    env.write(
        "Dockerfile",
        &format!("FROM {BASE}\nRUN echo step-running && sleep 2999\nRUN echo never\n"),
    );
    let mut client = Command::new("timeout")
        .args(["-k5", "300"])
        .arg(ctl_bin())
        .arg("--address")
        .arg(&env.daemon.socket)
        .args(["build", "-t", "cancelled:1", &env.context()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("berthctl build");
    let mut lines = std::io::BufReader::new(client.stdout.take().expect("stdout")).lines();
    let mut shown = String::new();
    for line in lines.by_ref() {
        let line = line.expect("output");
        shown.push_str(&line);
        shown.push('\n');
        if line.contains("step-running") {
            break;
        }
    }
    assert!(
        shown.contains("step-running"),
        "{shown}\n{}",
        env.daemon.log()
    );
    let ids = env.ok(&["ps", "-a", "-q", "--no-trunc"]);
    assert_eq!(ids.lines().count(), 1, "the RUN's container: {ids}");
    // The RUN's `sleep 2999`, found by its command line (a number no other
    // test sleeps).
    let find = || {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .find(|pid| cmdline(*pid).as_deref() == Some(&b"sleep\x002999\x00"[..]))
    };
    // `echo` ran; `sleep` follows it: a bounded wait.
    let pid: u32 = (0..200)
        .find_map(|_| {
            find().or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                None
            })
        })
        .unwrap_or_else(|| panic!("the RUN's sleep runs\n{}", env.daemon.log()));
    let running = cmdline(pid).expect("still running");
    let gone = || cmdline(pid).as_ref() != Some(&running);

    // Ctrl-C: `timeout` hands the SIGINT to berthctl, which dies of it;
    // its gRPC stream drops.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = client.wait().expect("wait");
    assert!(!status.success());

    // Bounded wait for the daemon to notice and clean up.
    let mut cleaned = false;
    for _ in 0..240 {
        if env.ok(&["ps", "-a", "-q"]).trim().is_empty() && gone() {
            cleaned = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        cleaned,
        "the RUN's container and process are gone: {}\n{}",
        env.ok(&["ps", "-a"]),
        env.daemon.log()
    );
    assert_eq!(
        env.snapshot_keys(),
        snapshots_before,
        "no layer, no snapshot left"
    );
    assert!(!env
        .ctl(&["image", "inspect", "cancelled:1"])
        .status
        .success());
    // The daemon builds on: the same Dockerfile, shortened, succeeds.
    let out = env.build("after:1", &format!("FROM {BASE}\nRUN echo fine\n"));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn pull_uses_login_credentials_and_a_pushed_build_runs_by_digest_elsewhere() {
    if !can_run_images() {
        return;
    }
    let registry = Registry::with_auth("puller", "pa55");
    let host = registry.host();
    let env = Env::start_with(&["--insecure-registry", &host]);
    let config = path_arg(&env.context.0.join("docker-config"));
    let empty = path_arg(&host_dir(&env, "no-credentials"));
    let name = format!("{host}/pulled:1");
    let out = env.build(
        &name,
        &format!("FROM {BASE}\nRUN echo built here > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n"),
    );
    assert!(out.status.success(), "build: {}", text(&out));
    let login = [
        "login",
        "--config",
        &config,
        "-u",
        "puller",
        "--password-stdin",
        &host,
    ];
    let out = env.ctl_with_input(&login, b"pa55\n");
    assert!(out.status.success(), "{}\n{}", text(&out), env.daemon.log());
    let pushed = env.ok(&["push", "--config", &config, &name]);
    let digest = pushed
        .lines()
        .last()
        .and_then(|l| l.split("digest: ").nth(1))
        .and_then(|d| d.split_whitespace().next())
        .expect("the pushed digest")
        .to_string();

    let fresh = Env::start_with(&["--insecure-registry", &host]);
    let by_digest = format!("{host}/pulled@{digest}");
    let out = fresh.ctl(&["pull", "--config", &empty, &by_digest]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        text(&out)
    );
    let out = fresh.ctl(&["pull", "--config", &config, &by_digest]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        fresh.daemon.log()
    );
    let seen = fresh.ok(&["run", "--rm", &by_digest]);
    assert_eq!(seen, "built here\n");
    let inspected = fresh.ok(&["image", "inspect", &by_digest]);
    assert!(inspected.contains(&digest), "{inspected}");
}

#[test]
fn attach_reaches_a_running_container_detaches_and_returns_its_exit_code() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let script = r#"while read l; do echo "echo:$l"; if [ "$l" = bye ]; then exit 7; fi; done"#;
    env.ok(&[
        "run", "-d", "-i", "--name", "talker", BASE, "sh", "-c", script,
    ]);
    // The detach keys end the session with docker's words and status 1;
    // the container runs on.
    let out = env.ctl_with_input(
        &["attach", "--detach-keys", "ctrl-x", "talker"],
        b"one\n\x18",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("read escape sequence"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.State.Running}}", "talker"]),
        "true\n"
    );
    // Attached again: what it prints from now on, and its exit status.
    let out = env.ctl_with_input(&["attach", "talker"], b"two\nbye\n");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert_eq!(stdout(&out), "echo:two\necho:bye\n");
    let out = env.ctl(&["attach", "talker"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("You cannot attach to a stopped container"),
        "{}",
        text(&out)
    );
    // A terminal container wants a terminal's input, as docker says.
    env.ok(&["create", "-t", "-i", "--name", "tty", BASE, "sh"]);
    env.ok(&["start", "tty"]);
    let out = env.ctl_with_input(&["attach", "tty"], b"exit\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("the input device is not a TTY"),
        "{}",
        text(&out)
    );
    let out = env.ctl(&["attach", "--detach-keys", "ctrl-1", "talker"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid detach keys"),
        "{}",
        text(&out)
    );
}

#[test]
fn import_makes_an_exported_filesystem_an_image_with_changes() {
    use std::io::Write;
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.ok(&[
        "run",
        "--name",
        "source",
        BASE,
        "sh",
        "-c",
        "echo exported > /mine.txt",
    ]);
    assert_eq!(env.ok(&["wait", "source"]), "0\n");
    let out = env.ctl(&["export", "source"]);
    assert!(out.status.success(), "{}", text(&out));
    let tar = out.stdout;
    let args = [
        "import",
        "-c",
        r#"CMD ["cat", "/mine.txt"]"#,
        "--change",
        "ENV WHO=imported",
        "-m",
        "from an export",
        "-",
        "imported:1",
    ];
    let out = env.ctl_with_input(&args, &tar);
    assert!(out.status.success(), "{}\n{}", text(&out), env.daemon.log());
    assert!(stdout(&out).starts_with("sha256:"), "{}", text(&out));
    assert_eq!(env.ok(&["run", "--rm", "imported:1"]), "exported\n");
    let who = env.ok(&["run", "--rm", "imported:1", "sh", "-c", "echo $WHO"]);
    assert_eq!(who, "imported\n");
    let (config, layers) = env.saved("imported:1");
    assert_eq!(layers.len(), 1, "one layer");
    assert_eq!(
        config["history"].as_array().map(Vec::len),
        Some(1),
        "{config}"
    );
    assert_eq!(config["history"][0]["comment"], "from an export");

    // A gzip'd tar from a file, no name: the ID alone.
    let file = env.context.0.join("rootfs.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    std::fs::write(&file, gz.finish().expect("gzip")).expect("write");
    let id = env.ok(&["import", &path_arg(&file)]);
    let seen = env.ok(&["run", "--rm", id.trim(), "cat", "/mine.txt"]);
    assert_eq!(seen, "exported\n");

    // A change that is no config change is refused, and nothing is made.
    let out = env.ctl_with_input(&["import", "-c", "RUN true", "-", "bad:1"], &tar);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("RUN is not a valid change command"),
        "{}",
        text(&out)
    );
    assert!(!env.ctl(&["image", "inspect", "bad:1"]).status.success());
}

#[test]
fn heredocs_run_scripts_and_copy_files() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let dockerfile = format!(
        "FROM {BASE}\n\
         RUN <<EOF\n\
         echo first > /one.txt\n\
         echo second >> /one.txt\n\
         EOF\n\
         RUN cat > /two.txt <<-'END'\n\
         \t$NOT_EXPANDED\n\
         \tEND\n\
         ARG WHO=heredoc\n\
         COPY <<EOF /three.txt\n\
         made by ${{WHO}}\n\
         EOF\n\
         COPY <<a.txt <<b.txt /docs/\n\
         A\n\
         a.txt\n\
         B\n\
         b.txt\n\
         CMD [\"sh\", \"-c\", \"cat /one.txt /two.txt /three.txt /docs/a.txt /docs/b.txt\"]\n"
    );
    let out = env.build("heredocs:1", &dockerfile);
    assert!(
        out.status.success(),
        "build: {}\n{}",
        text(&out),
        env.daemon.log()
    );
    let seen = env.ok(&["run", "--rm", "heredocs:1"]);
    assert_eq!(
        seen,
        "first\nsecond\n$NOT_EXPANDED\nmade by heredoc\nA\nB\n"
    );
    // A document that never ends names its instruction's line.
    let out = env.build("broken:1", &format!("FROM {BASE}\nRUN <<EOF\necho never\n"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Dockerfile line 2: unterminated heredoc <<EOF"),
        "{}",
        text(&out)
    );
}

#[test]
fn onbuild_triggers_run_in_the_child_build_and_are_not_inherited() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    env.write("app.txt", "copied by a trigger\n");
    let out = env.build(
        "onbuild-base:1",
        &format!("FROM {BASE}\nONBUILD RUN echo triggered > /trigger.txt\nONBUILD COPY app.txt /app.txt\n"),
    );
    assert!(out.status.success(), "build: {}", text(&out));
    let out = env.build(
        "onbuild-child:1",
        "FROM onbuild-base:1\nCMD [\"cat\", \"/trigger.txt\", \"/app.txt\"]\n",
    );
    assert!(
        out.status.success(),
        "build: {}\n{}",
        text(&out),
        env.daemon.log()
    );
    assert!(
        stdout(&out).contains("# Executing 2 build triggers"),
        "{}",
        text(&out)
    );
    let seen = env.ok(&["run", "--rm", "onbuild-child:1"]);
    assert_eq!(seen, "triggered\ncopied by a trigger\n");
    let (config, layers) = env.saved("onbuild-child:1");
    assert_eq!(config["config"]["OnBuild"], Value::Null, "not inherited");
    assert_eq!(
        layers.len(),
        3,
        "busybox, the RUN and the COPY of the triggers"
    );
}

#[test]
fn volumes_from_shares_another_containers_volumes_and_binds() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let bind = host_dir(&env, "shared-bind");
    std::fs::write(bind.join("h.txt"), "h\n").expect("bind file");
    let bind_arg = format!("{}:/bind", bind.display());
    let volume = unique("shared");
    let named = format!("{volume}:/named");
    env.ok(&[
        "run",
        "--name",
        "vsrc",
        "-v",
        "/anon",
        "-v",
        &named,
        "-v",
        &bind_arg,
        BASE,
        "sh",
        "-c",
        "echo a > /anon/a.txt; echo n > /named/n.txt",
    ]);
    assert_eq!(env.ok(&["wait", "vsrc"]), "0\n");
    let seen = env.ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "vsrc",
        BASE,
        "sh",
        "-c",
        "cat /anon/a.txt /named/n.txt /bind/h.txt; echo w > /anon/w.txt",
    ]);
    assert_eq!(seen, "a\nn\nh\n");
    // What one wrote, the next sees: the same anonymous volume.
    let seen = env.ok(&[
        "run",
        "--rm",
        "--volumes-from",
        "vsrc:ro",
        BASE,
        "cat",
        "/anon/w.txt",
    ]);
    assert_eq!(seen, "w\n");
    let out = env.ctl(&[
        "run",
        "--rm",
        "--volumes-from",
        "vsrc:ro",
        BASE,
        "sh",
        "-c",
        "echo x > /named/x.txt",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        text(&out)
    );
    let out = env.ctl(&["run", "--rm", "--volumes-from", "missing", BASE, "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such container: missing"),
        "{}",
        text(&out)
    );
    env.ok(&["rm", "-v", "vsrc"]);
    let _ = env.ctl(&["volume", "rm", &volume]);
}

/// A one-file HTTP server on 127.0.0.1: `GET /files/page.txt` is `body`,
/// anything else 404. It serves for at most two minutes.
fn serve_page(body: &'static [u8]) -> u16 {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let mut reader = std::io::BufReader::new(&stream);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                    break;
                }
            }
            let mut out = &stream;
            let reply = if request.starts_with("GET /files/page.txt ") {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                [head.as_bytes(), body].concat()
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = out.write_all(&reply);
        }
    });
    port
}

#[test]
fn add_fetches_a_url_and_checks_its_checksum() {
    if !can_run_images() {
        return;
    }
    let env = Env::start();
    let body: &'static [u8] = b"served over http\n";
    let port = serve_page(body);
    let url = format!("http://127.0.0.1:{port}/files/page.txt");
    let sum = sha256(body);
    let out = env.build(
        "added:1",
        &format!(
            "FROM {BASE}\nADD {url} /www/\nADD --checksum={sum} {url} /checked.txt\nCMD [\"sh\", \"-c\", \"cat /www/page.txt /checked.txt; stat -c %a /www/page.txt\"]\n"
        ),
    );
    assert!(
        out.status.success(),
        "build: {}\n{}",
        text(&out),
        env.daemon.log()
    );
    let seen = env.ok(&["run", "--rm", "added:1"]);
    assert_eq!(seen, "served over http\nserved over http\n600\n");

    let wrong = sha256(b"something else");
    let out = env.build(
        "wrong:1",
        &format!("FROM {BASE}\nADD --checksum={wrong} {url} /checked.txt\n"),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not match"), "{}", text(&out));
    let out = env.build(
        "missing:1",
        &format!("FROM {BASE}\nADD http://127.0.0.1:{port}/nothing.txt /x\n"),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("404"), "{}", text(&out));
    let out = env.build("copy-url:1", &format!("FROM {BASE}\nCOPY {url} /x\n"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("COPY takes no URL: use ADD"),
        "{}",
        text(&out)
    );
}
