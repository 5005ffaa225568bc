//! berth-imaged's CRI streaming server (exec, attach, port-forward) end to
//! end, against independent clients: Debian's `python3-kubernetes` (its
//! WebSocket channel client, `kubernetes.stream.ws_client`) and a Go client
//! on moby's spdystream (Debian's golang-github-docker-spdystream-dev, the
//! SPDY/3.1 library kubelet and client-go use), in integration/go/spdyclient.
//!
//! The server runs in-process over [`NetnsBackend`], a backend of real
//! processes: exec runs the command inside a network namespace the test
//! made (`nsenter --net`), with a real pty for tty sessions; attach joins a
//! process the test started there; port-forward connects to a port on that
//! namespace's loopback, where a real HTTP server listens.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_imaged::streaming::{
    AttachRequest, BackendError, Duplex, ExecRequest, PortForwardRequest, SessionIo,
    StreamingBackend, StreamingConfig, StreamingServer,
};
use berth_integration::imaged::TempDir;
use berth_integration::kube::{python, spdy, PYTHON};
use berth_integration::{can_run, missing_prerequisite, text, unique, Helper};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const SPDYSTREAM_SRC: &str = "/usr/share/gocode/src/github.com/docker/spdystream";

/// Everything these tests need besides root.
fn prerequisites() -> bool {
    if !can_run() {
        return false;
    }
    let python = Command::new(PYTHON)
        .args(["-c", "import kubernetes.stream.ws_client"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        return missing_prerequisite("python3-kubernetes (Debian) for the WebSocket client");
    }
    if !Path::new(SPDYSTREAM_SRC).is_dir() || Command::new("go").arg("version").output().is_err() {
        return missing_prerequisite(
            "golang-go and golang-github-docker-spdystream-dev for the SPDY client",
        );
    }
    true
}

/// A network namespace of the test's, loopback up; deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = unique("stream");
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", text(&out));
        };
        ip(&["netns", "add", &name]);
        let netns = Netns { name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    /// `program args…` running inside, stdio closed, killed when dropped.
    fn spawn(&self, program: &str, args: &[&str]) -> Helper {
        let net = format!("--net={}", self.path().display());
        let mut all = vec![net.as_str(), "--", program];
        all.extend_from_slice(args);
        Helper::spawn("nsenter", &all)
    }

    /// Waits until something listens on 127.0.0.1:`port` inside.
    fn wait_listening(&self, port: u16) {
        for _ in 0..300 {
            if connect_in(self.path(), port).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on port {port} in {}", self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// A TCP connection to 127.0.0.1:`port` in the network namespace `netns`,
/// made on a thread of its own: setns changes the calling thread, which is
/// then thrown away rather than returned to a pool.
fn connect_in(netns: PathBuf, port: u16) -> std::io::Result<std::net::TcpStream> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns)?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        std::net::TcpStream::connect(("127.0.0.1", port))
    })
    .join()
    .map_err(|_| std::io::Error::other("connect thread panicked"))?
}

/// The backend: containers and pods are the test's network namespaces.
#[derive(Default)]
struct NetnsBackend {
    /// Processes `attach` joins, by container id (one attach each).
    mains: Mutex<HashMap<String, tokio::process::Child>>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("{what}: {e}"))
}

fn namespace_of(id: &str) -> Result<PathBuf, BackendError> {
    let path = netns_path(id);
    match path.exists() {
        true => Ok(path),
        false => Err(BackendError::NotFound(format!("container {id}"))),
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

async fn pump(
    from: Option<impl tokio::io::AsyncRead + Unpin>,
    to: Option<impl tokio::io::AsyncWrite + Unpin>,
) {
    if let (Some(mut from), Some(mut to)) = (from, to) {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    }
}

#[async_trait]
impl StreamingBackend for NetnsBackend {
    async fn exec(
        &self,
        container_id: &str,
        command: Vec<String>,
        tty: bool,
        io: SessionIo,
    ) -> Result<i32, BackendError> {
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", namespace_of(container_id)?.display()))
            .arg("--")
            .args(&command)
            .kill_on_drop(true);
        if tty {
            return exec_on_pty(cmd, io).await;
        }
        let piped = |wanted: bool| {
            if wanted {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        cmd.stdin(piped(io.stdin.is_some()))
            .stdout(piped(io.stdout.is_some()))
            .stderr(piped(io.stderr.is_some()));
        let mut child = cmd.spawn().map_err(|e| failed("spawn nsenter", e))?;
        let feed = tokio::spawn(pump(io.stdin, child.stdin.take()));
        tokio::join!(
            pump(child.stdout.take(), io.stdout),
            pump(child.stderr.take(), io.stderr)
        );
        let status = child.wait().await.map_err(|e| failed("wait", e))?;
        feed.abort();
        Ok(exit_code(status))
    }

    async fn attach(
        &self,
        container_id: &str,
        _tty: bool,
        io: SessionIo,
    ) -> Result<Option<i32>, BackendError> {
        let taken = self.mains.lock().unwrap().remove(container_id);
        let mut child =
            taken.ok_or_else(|| BackendError::NotFound(format!("container {container_id}")))?;
        let feed = tokio::spawn(pump(io.stdin, child.stdin.take()));
        tokio::join!(
            pump(child.stdout.take(), io.stdout),
            pump(child.stderr.take(), io.stderr)
        );
        let status = child.wait().await.map_err(|e| failed("wait", e))?;
        feed.abort();
        Ok(Some(exit_code(status)))
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: Box<dyn Duplex>,
    ) -> Result<(), BackendError> {
        let netns = namespace_of(pod_sandbox_id)?;
        let tcp = tokio::task::spawn_blocking(move || connect_in(netns, port))
            .await
            .map_err(|e| failed("connect", e))?
            .map_err(|e| failed(&format!("connect to 127.0.0.1:{port}"), e))?;
        tcp.set_nonblocking(true).map_err(|e| failed("socket", e))?;
        let tcp = tokio::net::TcpStream::from_std(tcp).map_err(|e| failed("socket", e))?;
        let (pod_read, pod_write) = tcp.into_split();
        let (client_read, client_write) = tokio::io::split(stream);
        // Until the pod's side closes, as containerd forwards.
        let upstream = tokio::spawn(pump(Some(client_read), Some(pod_write)));
        pump(Some(pod_read), Some(client_write)).await;
        upstream.abort();
        Ok(())
    }
}

/// Runs `cmd` on a new pty: the session's stdin to the master, the master
/// to its stdout, resizes to TIOCSWINSZ.
async fn exec_on_pty(mut cmd: tokio::process::Command, io: SessionIo) -> Result<i32, BackendError> {
    let pty = nix::pty::openpty(None, None).map_err(|e| failed("openpty", e))?;
    let slave = |fd: &OwnedFd| {
        fd.try_clone()
            .map(Stdio::from)
            .map_err(|e| failed("dup", e))
    };
    cmd.stdin(slave(&pty.slave)?)
        .stdout(slave(&pty.slave)?)
        .stderr(slave(&pty.slave)?);
    // SAFETY: setsid and ioctl are async-signal-safe; the child makes the
    // pty (its stdin) its controlling terminal, as a runtime's console does.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| failed("spawn nsenter", e))?;
    drop(cmd);
    drop(pty.slave);
    let master = Arc::new(pty.master);
    if let Some(mut sizes) = io.resize {
        let master = master.clone();
        tokio::spawn(async move {
            while let Some(size) = sizes.recv().await {
                let winsize = libc::winsize {
                    ws_row: size.height,
                    ws_col: size.width,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
                unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
            }
        });
    }
    let file = |fd: &OwnedFd| {
        fd.try_clone()
            .map(|fd| tokio::fs::File::from_std(std::fs::File::from(fd)))
            .map_err(|e| failed("dup", e))
    };
    let feed = tokio::spawn(pump(io.stdin, Some(file(&master)?)));
    // The master reads EIO once the last slave descriptor closed: the end.
    pump(Some(file(&master)?), io.stdout).await;
    let status = child.wait().await.map_err(|e| failed("wait", e))?;
    feed.abort();
    Ok(exit_code(status))
}

/// The server, in a runtime of its own that serves while the test blocks
/// on a client process.
struct Fixture {
    server: StreamingServer,
    backend: Arc<NetnsBackend>,
    rt: tokio::runtime::Runtime,
    netns: Netns,
    /// Status files and web pages.
    tmp: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(StreamingConfig::default())
    }

    fn with(config: StreamingConfig) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let backend = Arc::new(NetnsBackend::default());
        let server = rt
            .block_on(StreamingServer::start(config, backend.clone()))
            .expect("start the streaming server");
        let tmp = TempDir(std::env::temp_dir().join(unique("stream")));
        std::fs::create_dir_all(&tmp.0).expect("temporary directory");
        Fixture {
            server,
            backend,
            rt,
            netns: Netns::new(),
            tmp,
        }
    }

    fn exec(&self, cmd: &[&str], [stdin, stdout, stderr, tty]: [bool; 4]) -> String {
        self.server
            .exec_url(ExecRequest {
                container_id: self.netns.name.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout,
                stderr,
            })
            .expect("exec url")
    }

    /// Starts `script` inside as the process `attach` joins.
    fn attachable(&self, id: &str, script: &str) -> String {
        let _guard = self.rt.enter();
        let child = tokio::process::Command::new("nsenter")
            .arg(format!("--net={}", self.netns.path().display()))
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the attachable process");
        self.backend
            .mains
            .lock()
            .unwrap()
            .insert(id.to_string(), child);
        self.server
            .attach_url(AttachRequest {
                container_id: id.to_string(),
                tty: false,
                stdin: true,
                stdout: true,
                stderr: false,
            })
            .expect("attach url")
    }

    fn port_forward(&self, ports: &[u16]) -> String {
        self.server
            .port_forward_url(PortForwardRequest {
                pod_sandbox_id: self.netns.name.clone(),
                ports: ports.to_vec(),
            })
            .expect("port-forward url")
    }

    /// A real HTTP server on 127.0.0.1:`port` inside, serving a page with
    /// `marker` in it.
    fn http_server(&self, port: u16, marker: &str) -> Helper {
        let dir = self.tmp.0.join("www");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), format!("<p>{marker}</p>\n")).unwrap();
        let port_text = port.to_string();
        let server = self.netns.spawn(
            PYTHON,
            &[
                "-m",
                "http.server",
                &port_text,
                "--bind",
                "127.0.0.1",
                "--directory",
                dir.to_str().unwrap(),
            ],
        );
        self.netns.wait_listening(port);
        server
    }

    /// The Go client's `mode url args…` with `input` on its stdin: its
    /// output, and what the session's error stream carried.
    fn spdy(&self, mode: &str, url: &str, args: &[&str], input: &[u8]) -> (Output, Vec<u8>) {
        let status = self.tmp.0.join("status");
        let _ = std::fs::remove_file(&status);
        let mut all = vec![mode, url, "-status", status.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = spdy(&all, input);
        (out, std::fs::read(&status).unwrap_or_default())
    }
}

/// A v4 status from the error stream.
fn parse_status(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(bytes)))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn websocket_exec_separates_stdout_and_stderr_and_reports_the_exit_code() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    // The process really runs in the test's namespace: only `lo` is there.
    let script =
        "echo out; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo err >&2; exit 3";
    let url = f.exec(&["sh", "-c", script], [false, true, true, false]);
    let result = python("exec", &url, json!({}));
    assert_eq!(result["stdout"], "out\nlo\n", "{result}");
    assert_eq!(result["stderr"], "err\n", "{result}");
    assert_eq!(result["returncode"], 3, "{result}");

    let url = f.exec(&["true"], [false, true, true, false]);
    let result = python("exec", &url, json!({"protocol": "v5.channel.k8s.io"}));
    assert_eq!(result["returncode"], 0, "{result}");
}

#[test]
fn websocket_exec_carries_stdin() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let url = f.exec(
        &["sh", "-c", "read line; echo got:$line"],
        [true, true, true, false],
    );
    let result = python("exec", &url, json!({"stdin": "hello\n"}));
    assert_eq!(result["stdout"], "got:hello\n", "{result}");
    assert_eq!(result["returncode"], 0, "{result}");
}

/// Waits for the resize, then prints the terminal's size and name.
const SIZE_SCRIPT: &str =
    "while [ \"$(stty size)\" != '40 100' ]; do sleep 0.05; done; echo size $(stty size); tty";

#[test]
fn websocket_exec_with_a_tty_follows_resizes() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let url = f.exec(&["sh", "-c", SIZE_SCRIPT], [true, true, false, true]);
    let resize = json!({"Width": 100, "Height": 40});
    let result = python("exec", &url, json!({"resize": resize}));
    let stdout = result["stdout"].as_str().unwrap_or_default();
    // A terminal turns \n into \r\n.
    assert!(stdout.starts_with("size 40 100\r\n/dev/pts/"), "{result}");
    assert_eq!(result["returncode"], 0, "{result}");
}

#[test]
fn spdy_exec_separates_stdout_and_stderr_and_reports_the_exit_code() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let url = f.exec(
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        [false, true, true, false],
    );
    let (out, status) = f.spdy("exec", &url, &["-stdout", "-stderr"], b"");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).contains("err\n"), "{}", text(&out));
    assert!(stderr(&out).contains("negotiated v4.channel.k8s.io"));
    let value = parse_status(&status);
    assert_eq!(value["status"], "Failure", "{value}");
    assert_eq!(value["reason"], "NonZeroExitCode", "{value}");
    assert_eq!(
        value["details"]["causes"][0]["reason"], "ExitCode",
        "{value}"
    );
    assert_eq!(value["details"]["causes"][0]["message"], "7", "{value}");
}

#[test]
fn spdy_exec_carries_stdin_to_its_end() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let url = f.exec(&["cat"], [true, true, false, false]);
    let input = b"hello\nworld\n".repeat(10_000);
    let (out, status) = f.spdy("exec", &url, &["-stdin", "-stdout"], &input);
    assert!(out.status.success(), "{}", text(&out));
    // cat exits only at stdin's EOF: the client's FIN reached it.
    assert!(
        out.stdout == input,
        "{} bytes back of {}",
        out.stdout.len(),
        input.len()
    );
    assert_eq!(
        parse_status(&status),
        json!({"metadata": {}, "status": "Success"})
    );
}

#[test]
fn spdy_exec_with_a_tty_follows_resizes() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let url = f.exec(&["sh", "-c", SIZE_SCRIPT], [false, true, false, true]);
    let (out, status) = f.spdy("exec", &url, &["-stdout", "-tty", "-resize", "100x40"], b"");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).starts_with("size 40 100\r\n/dev/pts/"),
        "{}",
        text(&out)
    );
    assert_eq!(parse_status(&status)["status"], "Success");
}

#[test]
fn spdy_attach_joins_the_main_process_and_reports_its_exit() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let url = f.attachable("main-1", "read line; echo attached:$line; exit 4");
    let (out, status) = f.spdy("exec", &url, &["-stdin", "-stdout"], b"hi\n");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), "attached:hi\n");
    let value = parse_status(&status);
    assert_eq!(value["details"]["causes"][0]["message"], "4", "{value}");
}

#[test]
fn websocket_attach_joins_the_main_process_and_reports_its_exit() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let url = f.attachable("main-2", "read line; echo attached:$line; exit 5");
    let result = python("exec", &url, json!({"stdin": "ws\n"}));
    assert_eq!(result["stdout"], "attached:ws\n", "{result}");
    assert_eq!(result["returncode"], 5, "{result}");
}

#[test]
fn spdy_port_forward_fetches_a_page_from_the_pods_namespace() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let marker = unique("page");
    let _server = f.http_server(8080, &marker);
    let request = b"GET /index.html HTTP/1.0\r\n\r\n";
    let forward = |allowed: &[u16], port: &str| {
        let url = f.port_forward(allowed);
        let (out, error) = f.spdy("portforward", &url, &["-port", port], request);
        assert!(out.status.success(), "{}", text(&out));
        (stdout(&out), String::from_utf8_lossy(&error).into_owned())
    };
    let (page, error) = forward(&[], "8080");
    assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    assert!(page.contains(&marker), "{page}");
    assert_eq!(error, "", "nothing on the error stream");

    // Several connections at once over one SPDY connection, paired by
    // requestID, as kubectl port-forward multiplexes them.
    let url = f.port_forward(&[8080]);
    let args = ["-port", "8080", "-connections", "3"];
    let (out, error) = f.spdy("portforward", &url, &args, request);
    assert!(out.status.success(), "{}", text(&out));
    let pages = stdout(&out);
    assert_eq!(pages.matches(&marker).count(), 3, "{pages}");
    assert_eq!(pages.matches("=== connection").count(), 3, "{pages}");
    assert!(error.is_empty(), "{}", String::from_utf8_lossy(&error));

    // Nothing listens on 8081: the failure arrives on the error stream.
    let (_, error) = forward(&[], "8081");
    assert!(
        error.starts_with("error forwarding port 8081 to pod"),
        "{error}"
    );

    // A port the request did not name is refused.
    let (_, error) = forward(&[8080], "8081");
    assert!(error.contains("port 8081 is not among"), "{error}");
}

#[test]
fn websocket_port_forward_fetches_a_page_from_the_pods_namespace() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let marker = unique("page");
    let _server = f.http_server(8080, &marker);
    let url = f.port_forward(&[8080]);
    let result = python("portforward", &url, json!({"port": 8080}));
    let page = result["data"].as_str().unwrap_or_default();
    assert!(page.starts_with("HTTP/1.0 200"), "{result}");
    assert!(page.contains(&marker), "{result}");
    assert!(result["error"].is_null(), "{result}");
}

#[test]
fn a_used_or_expired_url_is_refused_with_404() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let url = f.exec(&["true"], [false, true, false, false]);
    let (first, _) = f.spdy("exec", &url, &["-stdout"], b"");
    assert!(first.status.success(), "{}", text(&first));
    let (again, _) = f.spdy("exec", &url, &["-stdout"], b"");
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(stdout(&again).starts_with("HTTP 404"));
    // A token is bound to its verb: an exec token does not attach.
    let url = f.exec(&["true"], [false, true, false, false]);
    let (attach, _) = f.spdy(
        "exec",
        &url.replace("/exec/", "/attach/"),
        &["-stdout"],
        b"",
    );
    assert!(stdout(&attach).starts_with("HTTP 404"));
    let used = python("handshake", &url, json!({}));
    assert_eq!(used["status"], 404, "{used}");

    let expired = Fixture::with(StreamingConfig {
        token_ttl: Duration::ZERO,
        ..StreamingConfig::default()
    });
    let url = expired.exec(&["true"], [false, true, false, false]);
    let (out, _) = expired.spdy("exec", &url, &["-stdout"], b"");
    assert!(stdout(&out).starts_with("HTTP 404"), "{}", text(&out));
}

#[test]
fn unknown_protocols_are_refused_as_kubelet_refuses_them() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    // SPDY with a version the server does not speak: 403.
    let url = f.exec(&["true"], [false, true, false, false]);
    let (out, _) = f.spdy(
        "exec",
        &url,
        &["-stdout", "-protocol", "v9.channel.k8s.io"],
        b"",
    );
    assert!(stdout(&out).starts_with("HTTP 403"), "{}", text(&out));
    // WebSocket with an unknown subprotocol: 403.
    let url = f.exec(&["true"], [false, true, false, false]);
    let result = python("handshake", &url, json!({"protocol": "v9.channel.k8s.io"}));
    assert_eq!(result["status"], 403, "{result}");
    // No upgrade at all: 400.
    let url = f.exec(&["true"], [false, true, false, false]);
    let curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "X-Stream-Protocol-Version: v4.channel.k8s.io", &url])
        .output()
        .expect("curl");
    assert_eq!(stdout(&curl), "400");
    // A client that also names an older version gets that one, and its
    // plain-text error stream.
    let url = f.exec(&["sh", "-c", "exit 2"], [false, true, false, false]);
    let offer = "v9.channel.k8s.io,v2.channel.k8s.io";
    let (out, message) = f.spdy("exec", &url, &["-stdout", "-protocol", offer], b"");
    assert!(
        stderr(&out).contains("negotiated v2.channel.k8s.io"),
        "{}",
        text(&out)
    );
    let message = String::from_utf8_lossy(&message);
    assert!(
        message.starts_with("command terminated with non-zero exit code"),
        "{message}"
    );
}

#[test]
fn an_idle_connection_is_closed() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::with(StreamingConfig {
        stream_idle_timeout: Duration::from_secs(1),
        ..StreamingConfig::default()
    });
    // Silent for far longer than the idle timeout: the server hangs up
    // before any status could be written.
    let url = f.exec(&["sleep", "100"], [false, true, false, false]);
    let (out, status) = f.spdy("exec", &url, &["-stdout"], b"");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&status),
        "",
        "no status: the connection was closed"
    );
}

#[test]
fn a_backend_failure_is_an_internal_error_status() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let url = f
        .server
        .exec_url(ExecRequest {
            container_id: "no-such-container".into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .expect("exec url");
    let (out, status) = f.spdy("exec", &url, &["-stdout"], b"");
    assert!(out.status.success(), "{}", text(&out));
    let value = parse_status(&status);
    assert_eq!(value["reason"], "InternalError", "{value}");
    assert_eq!(value["code"], 500, "{value}");
    let message = value["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("container no-such-container not found"),
        "{value}"
    );
}

#[test]
fn bad_requests_get_no_url() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::new();
    let bad = |request: ExecRequest| f.server.exec_url(request).unwrap_err().to_string();
    let base = ExecRequest {
        container_id: f.netns.name.clone(),
        cmd: vec!["true".into()],
        tty: false,
        stdin: false,
        stdout: true,
        stderr: false,
    };
    assert!(bad(ExecRequest {
        cmd: vec![],
        ..base.clone()
    })
    .contains("cmd must not be empty"));
    assert!(bad(ExecRequest {
        tty: true,
        stderr: true,
        ..base.clone()
    })
    .contains("tty and stderr"));
    assert!(bad(ExecRequest {
        stdout: false,
        ..base.clone()
    })
    .contains("one of stdin"));
    assert!(bad(ExecRequest {
        container_id: String::new(),
        ..base
    })
    .contains("container_id"));
}
