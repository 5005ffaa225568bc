//! Independent Kubernetes clients for the CRI streaming tests: Debian's
//! `python3-kubernetes`, whose `kubernetes.stream.ws_client` speaks the
//! WebSocket channel protocols (exec, attach, port-forward).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::text;

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
    let mut cmd = match netns {
        Some(netns) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", netns.display())).arg("timeout");
            cmd
        }
        None => Command::new("timeout"),
    };
    let out = cmd
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
