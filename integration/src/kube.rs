//! Independent Kubernetes clients for the CRI streaming tests: Debian's
//! `python3-kubernetes`, whose `kubernetes.stream.ws_client` speaks the
//! WebSocket channel protocols (exec, attach, port-forward), and a Go
//! client on moby's spdystream (`integration/go/spdyclient`) for SPDY/3.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::{target_dir, text};

/// The Go SPDY client, built once per test process, offline.
pub fn spdyclient() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let out = target_dir().join("spdyclient-test");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/spdyclient/main.go");
        let build = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(&source)
            .env("GOPATH", "/usr/share/gocode")
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", target_dir().join("go-cache"))
            .output()
            .expect("go build");
        assert!(
            build.status.success(),
            "go build spdyclient: {}",
            text(&build)
        );
        out
    })
}

/// Runs the Go client with `input` on its stdin; a session that hangs
/// fails the test (timeout's 124) instead of hanging it.
pub fn spdy(args: &[&str], input: &[u8]) -> Output {
    spdy_in(None, args, input)
}

/// [`spdy`] inside the network namespace at `netns`.
pub fn spdy_in(netns: Option<&Path>, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut cmd = in_netns(netns);
    cmd.args(["-k5", "120"]).arg(spdyclient()).args(args);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).expect("client stdin");
    }
    child.wait_with_output().expect("client output")
}

/// `timeout`, inside the network namespace at `netns` when given.
fn in_netns(netns: Option<&Path>) -> Command {
    match netns {
        Some(netns) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", netns.display())).arg("timeout");
            cmd
        }
        None => Command::new("timeout"),
    }
}

/// Debian's Python (the one with Debian's modules, whatever PATH says).
pub const PYTHON: &str = "/usr/bin/python3";

/// Runs the Python client in `mode` (`exec`, `portforward`, `handshake`)
/// against `url` with JSON `options`; returns what it printed.
pub fn python(mode: &str, url: &str, options: Value) -> Value {
    python_in(None, mode, url, options)
}

/// [`python`] inside the network namespace at `netns` (where a daemon in a
/// namespace of its own serves its loopback URLs).
pub fn python_in(netns: Option<&Path>, mode: &str, url: &str, options: Value) -> Value {
    let out = in_netns(netns)
        .args(["120", PYTHON, "-c", PY_CLIENT, mode, url])
        .arg(options.to_string())
        .output()
        .expect("python3");
    assert!(out.status.success(), "python client: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// The WebSocket client: kubernetes.stream.ws_client as the Python
/// Kubernetes client uses it (`stream()` builds exactly this WSClient).
pub const PY_CLIENT: &str = r#"
import json, sys
from kubernetes.client import Configuration
from kubernetes.stream.ws_client import WSClient, PortForward, create_websocket
mode, url, opts = sys.argv[1], sys.argv[2].replace("http://", "ws://", 1), json.loads(sys.argv[3])
conf = Configuration()
headers = {"sec-websocket-protocol": opts["protocol"]} if "protocol" in opts else None
if mode == "exec":
    ws = WSClient(conf, url, headers, True)
    if "resize" in opts:
        ws.write_channel(4, json.dumps(opts["resize"]))
    if "stdin" in opts:
        ws.write_stdin(opts["stdin"])
    ws.run_forever(timeout=60)
    print(json.dumps({"stdout": ws.read_channel(1), "stderr": ws.read_channel(2),
                      "returncode": ws.returncode}))
elif mode == "portforward":
    port = opts["port"]
    pf = PortForward(create_websocket(conf, url, headers), [port])
    sock = pf.socket(port)
    sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    print(json.dumps({"data": data.decode(errors="replace"), "error": pf.error(port)}))
elif mode == "handshake":
    try:
        create_websocket(conf, url, headers).close()
        print(json.dumps({"status": 101}))
    except Exception as e:
        print(json.dumps({"status": getattr(e, "status_code", None), "error": str(e)}))
"#;
