//! Container networks end to end: the real `berthctl` against a real
//! `berth-imaged` that runs in a network namespace each test makes, so the
//! bridges, veths, NAT rules and leases it makes through Debian's CNI
//! plugins live there and the machine's own network is never touched.
//! Traffic goes only to addresses inside that namespace. Every test removes
//! its containers, its daemon and its namespace, failing or not.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use berth_integration::imaged::*;
use berth_integration::netns::Netns;
use berth_integration::{target_dir, text, tools_installed, unique, Helper};
use serde_json::{json, Value};

const APPLETS: &[&str] = &[
    "sh", "httpd", "echo", "cat", "ip", "hostname", "sleep", "mkdir", "true", "grep",
];

/// Whether the network tests can run: the image tests' prerequisites and
/// the CNI plugins, iproute2 and curl.
fn can_run_networks() -> bool {
    if !can_run_images() {
        return false;
    }
    tools_installed(&[
        (
            "the CNI plugins (containernetworking-plugins)",
            "/usr/lib/cni/bridge",
        ),
        ("ip (iproute2)", "/usr/bin/ip"),
        ("curl", "/usr/bin/curl"),
        ("iptables", "/usr/sbin/iptables"),
    ])
}

/// A daemon in a namespace of its own, its containers on `bridge` unless
/// they say otherwise, and the images the tests use loaded.
struct Net {
    daemon: Daemon,
    netns: Netns,
    runtime_root: PathBuf,
}

impl Net {
    fn start() -> Net {
        let netns = Netns::new();
        let runtime_root = std::env::temp_dir().join(unique("berth-net-runtime"));
        let shim = target_dir().join("containerd-shim-berth-v2");
        let berth = target_dir().join("berth");
        let args = [
            "--shim".to_string(),
            shim.display().to_string(),
            "--runtime".to_string(),
            berth.display().to_string(),
            "--runtime-root".to_string(),
            runtime_root.display().to_string(),
            "--default-network".to_string(),
            "bridge".to_string(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let net = Net {
            daemon: Daemon::start_in(Some(&netns.path), &refs),
            netns,
            runtime_root,
        };
        net.load_web_image();
        net
    }

    /// `web:1`: busybox with a page in /www, exposing 80/tcp.
    fn load_web_image(&self) {
        let mut page = LayerTar::new();
        // The checker's --http reaches a published port from inside.
        let checker = std::fs::read(berth_integration::checker_bin()).expect("checker");
        page.dir("www/", 0o755)
            .file("www/index.html", 0o644, b"hello from berth\n")
            .dir("bin/", 0o755)
            .file("bin/fetch", 0o755, &checker);
        let mut layout = Layout::new("net-web");
        let image = layout.image_with(
            &[
                (busybox_layer(APPLETS), Compression::Gzip),
                (page.finish(), Compression::Gzip),
            ],
            ("amd64", ""),
            json!({"Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"], "ExposedPorts": {"80/tcp": {}}}),
        );
        layout.tag("web:1", &image);
        let out = self.ctl_with_input(&["load"], &layout.archive());
        assert!(out.status.success(), "load: {}", text(&out));
    }

    fn ctl_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_ctl(&self.daemon.socket, args, stdin)
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with_input(args, b"")
    }

    fn ok(&self, args: &[&str]) -> String {
        ctl_succeeded(&self.daemon, args, &self.ctl(args))
    }

    /// `berthctl ARGS` must fail as docker fails a bad request: 125, and
    /// stderr holding `words`.
    fn refused(&self, args: &[&str], words: &str) {
        self.refused_with(125, args, words);
    }

    /// As [`Net::refused`], with docker's status for the command (`network
    /// rm` fails with 1, as docker's does).
    fn refused_with(&self, code: i32, args: &[&str], words: &str) {
        let out = self.ctl(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words), "{args:?}: expected {words:?} in {err}");
    }

    fn inspect(&self, name: &str) -> Value {
        let docs: Value = serde_json::from_str(&self.ok(&["inspect", name])).expect("json");
        docs[0].clone()
    }

    /// The container's address on its network.
    fn address(&self, name: &str) -> String {
        self.inspect(name)["networkSettings"]["ipAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `url` serves the page.
    fn page(&self, url: &str) -> String {
        let mut last = String::new();
        for _ in 0..50 {
            match self.netns.curl(url) {
                Ok(page) => return page,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{url} never answered: {last}\n{}", self.daemon.log());
    }

    /// Leases host-local holds for `network`.
    fn leases(&self, network: &str) -> usize {
        let dir = self.daemon.root.join("run/net/ipam").join(network);
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name().to_string_lossy().contains('.')
                            && !e.file_name().to_string_lossy().starts_with("last_")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Network namespaces the daemon has pinned.
    fn pins(&self) -> usize {
        std::fs::read_dir(self.daemon.root.join("run/net/netns"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn assert_nothing_left(&self) {
        assert!(self.ok(&["ps", "-a", "-q"]).trim().is_empty());
        assert_eq!(self.netns.links("veth"), Vec::<String>::new(), "veths left");
        assert_eq!(self.netns.container_rules(), 0, "NAT rules left");
        assert_eq!(self.leases("bridge"), 0, "leases left");
        assert_eq!(self.pins(), 0, "namespaces left");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let out = self.ctl(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.ctl(&["rm", "-f", id.trim()]);
        }
        let _ = self.daemon.stop();
        // Pins a failing test left: unmounted before the daemon's root goes.
        if let Ok(pins) = std::fs::read_dir(self.daemon.root.join("run/net/netns")) {
            for pin in pins.flatten() {
                let _ = nix::mount::umount2(&pin.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.runtime_root);
    }
}

#[test]
fn published_ports_serve_the_host_the_bridge_and_other_containers() {
    if !can_run_networks() {
        return;
    }
    let net = Net::start();
    net.ok(&["run", "-d", "--name", "web", "-p", "18080:80", "web:1"]);
    assert_eq!(net.page("http://127.0.0.1:18080/"), "hello from berth\n");
    let settings = &net.inspect("web")["networkSettings"];
    let gateway = settings["gateway"].as_str().unwrap().to_string();
    assert_eq!(settings["network"], "bridge");
    assert_eq!(settings["ports"][0]["hostPort"], 18080);
    // The host's address on the bridge, and the container's own.
    assert_eq!(
        net.page(&format!("http://{gateway}:18080/")),
        "hello from berth\n"
    );
    let ip = net.address("web");
    assert_eq!(net.page(&format!("http://{ip}:80/")), "hello from berth\n");
    assert_eq!(net.ok(&["port", "web"]), "80/tcp -> 0.0.0.0:18080\n");
    // Hairpin: the container itself, and another one, through the host port.
    let through_host = format!("{gateway}:18080");
    assert_eq!(
        net.ok(&["exec", "web", "fetch", "--http", &through_host]),
        "hello from berth\n"
    );
    assert_eq!(
        net.ok(&["run", "--rm", "web:1", "fetch", "--http", &through_host]),
        "hello from berth\n"
    );
    assert_eq!(net.ok(&["port", "web", "80"]), "0.0.0.0:18080\n");

    // -P: every exposed port on a random host port, which `port` reports.
    net.ok(&["run", "-d", "--name", "any", "-P", "web:1"]);
    let line = net.ok(&["port", "any", "80/tcp"]);
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(
        net.page(&format!("http://127.0.0.1:{port}/")),
        "hello from berth\n"
    );

    // The host port is held: a second container cannot have it.
    net.refused(
        &["run", "-d", "--name", "twice", "-p", "18080:80", "web:1"],
        "port is already allocated",
    );
    net.ok(&["rm", "-f", "web", "any", "twice"]);
    assert!(
        net.netns.curl("http://127.0.0.1:18080/").is_err(),
        "still served after rm"
    );
    // `run --rm -p` answers once the port is free again: back to back, each
    // run gets it.
    for _ in 0..3 {
        net.ok(&["run", "--rm", "-p", "18080:80", "web:1", "true"]);
    }
    net.assert_nothing_left();
}

/// The seeds' first job: build a web image from a Dockerfile (a page
/// copied in, `EXPOSE 80`, httpd as its command), run it with `-p`, fetch
/// the page from the host.
#[test]
fn a_built_web_image_runs_with_a_published_port_and_serves_its_page() {
    if !can_run_networks() {
        return;
    }
    let net = Net::start();
    let context = std::env::temp_dir().join(unique("berth-net-build"));
    std::fs::create_dir_all(&context).expect("context");
    let _context = TempDir(context.clone());
    let marker = unique("built-page");
    std::fs::write(context.join("index.html"), format!("{marker}\n")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM web:1\nCOPY index.html /built/index.html\nEXPOSE 80\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/built\"]\n",
    )
    .unwrap();
    net.ok(&["build", "-t", "built:1", &context.display().to_string()]);
    net.ok(&["run", "-d", "--name", "built", "-p", "18081:80", "built:1"]);
    assert_eq!(net.page("http://127.0.0.1:18081/"), format!("{marker}\n"));
    assert_eq!(net.ok(&["port", "built"]), "80/tcp -> 0.0.0.0:18081\n");
    net.ok(&["rm", "-f", "built"]);
    net.assert_nothing_left();
}

#[test]
fn containers_get_their_own_address_names_and_files_or_share_or_have_none() {
    if !can_run_networks() {
        return;
    }
    let net = Net::start();
    let out = net.ok(&[
        "run",
        "--rm",
        "-h",
        "web1",
        "--add-host",
        "db:10.1.2.3",
        "--dns",
        "10.0.0.53",
        "web:1",
        "sh",
        "-c",
        "hostname; ip -o -4 addr show eth0; cat /etc/hosts /etc/resolv.conf",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("web1"));
    let eth0 = lines.next().unwrap_or_default();
    let address = eth0
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string();
    assert!(address.starts_with("172."), "{out}");
    assert!(out.contains("10.1.2.3\tdb\n"), "{out}");
    assert!(out.contains(&format!("{address}\tweb1\n")), "{out}");
    assert!(out.contains("nameserver 10.0.0.53\n"), "{out}");

    // --network none: loopback only.
    let out = net.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "web:1",
        "ip",
        "-o",
        "link",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(": lo:"), "{out}");

    // container:NAME: the same namespace, the same address.
    net.ok(&["run", "-d", "--name", "owner", "web:1"]);
    let owner = net.address("owner");
    let out = net.ok(&[
        "run",
        "--rm",
        "--network",
        "container:owner",
        "web:1",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(out.contains(&format!("inet {owner}/")), "{out}");
    net.ok(&["rm", "-f", "owner"]);
    net.assert_nothing_left();
}

#[test]
fn user_networks_have_their_own_bridge_and_subnet_and_many_distinct_addresses() {
    if !can_run_networks() {
        return;
    }
    let net = Net::start();
    let id = net.ok(&["network", "create", "--subnet", "10.90.0.0/24", "back"]);
    assert_eq!(id.trim().len(), 64);
    let listed = net.ok(&["network", "ls"]);
    assert!(
        listed.contains("back") && listed.contains("10.90.0.0/24"),
        "{listed}"
    );
    let bridge = format!("br-{}", &id.trim()[..12]);
    let mut names = Vec::new();
    let runs: Vec<_> = (0..50)
        .map(|i| {
            let name = format!("c{i}");
            names.push(name.clone());
            name
        })
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|chunk| chunk.to_vec())
        .collect();
    std::thread::scope(|s| {
        for chunk in &runs {
            let net = &net;
            s.spawn(move || {
                for name in chunk {
                    net.ok(&[
                        "run",
                        "-d",
                        "--name",
                        name,
                        "--network",
                        "back",
                        "web:1",
                        "sleep",
                        "600",
                    ]);
                }
            });
        }
    });
    let mut addresses: Vec<String> = names.iter().map(|n| net.address(n)).collect();
    assert!(
        addresses.iter().all(|a| a.starts_with("10.90.0.")),
        "{addresses:?}"
    );
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 50, "addresses shared");
    assert!(net.netns.links(&bridge).len() == 1, "no bridge {bridge}");
    // A chosen address: given, then refused to a second container (the
    // plugin's own words), and outside user networks.
    net.ok(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "back",
        "--ip",
        "10.90.0.200",
        "web:1",
    ]);
    assert_eq!(net.address("fixed"), "10.90.0.200");
    net.refused(
        &[
            "run",
            "-d",
            "--name",
            "clash",
            "--network",
            "back",
            "--ip",
            "10.90.0.200",
            "web:1",
        ],
        "10.90.0.200",
    );
    net.refused(
        &[
            "run",
            "--rm",
            "--network",
            "back",
            "--ip",
            "10.91.0.5",
            "web:1",
            "true",
        ],
        "not a free host address",
    );
    net.refused(
        &["run", "--rm", "--ip", "172.17.0.9", "web:1", "true"],
        "user-defined networks only",
    );
    net.ok(&["rm", "-f", "fixed", "clash"]);
    net.refused_with(
        1,
        &["network", "rm", "back"],
        "has active endpoints (c0, c1, c10, c11, c12 and 45 more)",
    );
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    net.ok(&rm);
    assert_eq!(net.leases("back"), 0, "leases left on back");
    let rules = |table: &str| {
        String::from_utf8_lossy(&net.netns.run("iptables", &["-t", table, "-S"]).stdout)
            .into_owned()
    };
    assert!(rules("nat").contains("berth:back") && rules("filter").contains("berth:back"));
    net.ok(&["network", "rm", "back"]);
    assert!(net.netns.links(&bridge).is_empty(), "bridge {bridge} left");
    assert!(!rules("nat").contains("berth:back") && !rules("filter").contains("berth:back"));
    net.assert_nothing_left();
}

#[test]
fn bad_network_requests_are_refused_and_leave_nothing() {
    if !can_run_networks() {
        return;
    }
    let net = Net::start();
    net.refused(&["run", "--rm", "-p", "70000:80", "web:1", "true"], "70000");
    net.refused(
        &["run", "--rm", "--network", "nowhere", "web:1", "true"],
        "network nowhere not found",
    );
    net.refused(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-p",
            "80",
            "web:1",
            "true",
        ],
        "published on a network",
    );
    net.ok(&["network", "create", "--subnet", "10.91.0.0/24", "front"]);
    net.refused(
        &["network", "create", "--subnet", "10.91.0.128/25", "overlap"],
        "overlaps network front",
    );
    net.refused(&["network", "create", "front"], "already exists");
    net.refused_with(1, &["network", "rm", "bridge"], "pre-defined");
    net.ok(&["create", "--name", "user", "--network", "front", "web:1"]);
    net.refused_with(
        1,
        &["network", "rm", "front"],
        "has active endpoints (user)",
    );
    net.ok(&["rm", "user"]);
    // A host port something else holds in the namespace.
    let netns_flag = format!("--net={}", net.netns.path.display());
    let holder = Helper::spawn(
        "nsenter",
        &[&netns_flag, "busybox", "nc", "-l", "-p", "18081"],
    );
    std::thread::sleep(Duration::from_millis(300));
    net.refused(
        &["run", "-d", "--name", "busy", "-p", "18081:80", "web:1"],
        "port is already allocated",
    );
    drop(holder);
    net.ok(&["rm", "-f", "busy"]);
    net.ok(&["network", "rm", "front"]);
    net.assert_nothing_left();
}

#[test]
fn a_daemon_killed_with_sigkill_keeps_published_ports_working_and_leaks_nothing() {
    if !can_run_networks() {
        return;
    }
    let mut net = Net::start();
    net.ok(&["run", "-d", "--name", "web", "-p", "18082:80", "web:1"]);
    net.ok(&["run", "-d", "--name", "brief", "web:1", "sleep", "1"]);
    assert_eq!(net.page("http://127.0.0.1:18082/"), "hello from berth\n");
    net.daemon.kill9();
    // brief ends while the daemon is away; web keeps serving.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(net.page("http://127.0.0.1:18082/"), "hello from berth\n");
    net.daemon.spawn();
    assert_eq!(net.page("http://127.0.0.1:18082/"), "hello from berth\n");
    // brief's namespace, veth, lease and rules went at the restart.
    assert_eq!(net.pins(), 1, "only web's namespace is left");
    assert_eq!(net.netns.links("veth").len(), 1);
    // The port is still held for web.
    net.refused(
        &["run", "-d", "--name", "twice", "-p", "18082:80", "web:1"],
        "port is already allocated",
    );
    net.ok(&["rm", "-f", "web", "brief", "twice"]);
    net.assert_nothing_left();
}

#[test]
fn containers_on_a_user_network_find_each_other_by_name_and_alias() {
    if !can_run_networks() {
        return;
    }
    let net = Net::start();
    net.ok(&["network", "create", "apps"]);
    net.ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "apps",
        "--network-alias",
        "database",
        "web:1",
    ]);
    net.ok(&[
        "run",
        "-d",
        "--name",
        "cache",
        "-h",
        "redis1",
        "--network",
        "apps",
        "web:1",
    ]);
    let db = net.address("db");
    let cache = net.address("cache");
    let hosts = |name: &str| net.ok(&["exec", name, "cat", "/etc/hosts"]);
    // The names a hosts file gives an address ("" for every address).
    let names_of = |hosts: &str, ip: &str| -> Vec<String> {
        hosts
            .lines()
            .filter(|l| ip.is_empty() || l.split_whitespace().next() == Some(ip))
            .flat_map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let seen_by_cache = hosts("cache");
    let db_names = names_of(&seen_by_cache, &db);
    // Its name, its host name (its short id), its alias, as docker's DNS.
    assert_eq!(db_names[0], "db", "{seen_by_cache}");
    assert!(
        db_names.contains(&"database".to_string()),
        "{seen_by_cache}"
    );
    assert_eq!(
        names_of(&seen_by_cache, &cache),
        ["redis1"],
        "{seen_by_cache}"
    );
    let seen_by_db = hosts("db");
    assert_eq!(
        names_of(&seen_by_db, &cache),
        ["cache", "redis1"],
        "{seen_by_db}"
    );
    // And they reach each other so: by name and by alias.
    for target in ["db:80", "database:80"] {
        assert_eq!(
            net.ok(&["exec", "cache", "fetch", "--http", target]),
            "hello from berth\n",
            "{target}"
        );
    }
    assert_eq!(
        net.ok(&["exec", "db", "fetch", "--http", "redis1:80"]),
        "hello from berth\n"
    );
    // A container on the default network is not named, as with docker.
    net.ok(&["run", "-d", "--name", "outsider", "web:1"]);
    // (By whole names: a short id may hold "db".)
    let names = |hosts: &str| names_of(hosts, "");
    assert!(
        !names(&hosts("outsider")).contains(&"db".to_string()),
        "{}",
        hosts("outsider")
    );
    assert!(!names(&hosts("db")).contains(&"outsider".to_string()));
    // One that leaves is forgotten by the others.
    net.ok(&["rm", "-f", "cache"]);
    assert!(
        !names(&hosts("db")).contains(&"redis1".to_string()),
        "{}",
        hosts("db")
    );
    net.ok(&["rm", "-f", "db", "outsider"]);
    net.ok(&["network", "rm", "apps"]);
    net.assert_nothing_left();
}

#[test]
fn network_connect_adds_an_interface_now_and_at_each_start_and_disconnect_removes_it() {
    if !can_run_networks() {
        return;
    }
    let net = Net::start();
    net.ok(&["network", "create", "--subnet", "10.92.0.0/24", "front"]);
    net.ok(&["network", "create", "--subnet", "10.93.0.0/24", "back"]);
    net.ok(&["run", "-d", "--name", "api", "--network", "front", "web:1"]);
    net.ok(&["run", "-d", "--name", "db", "--network", "back", "web:1"]);
    net.ok(&[
        "network",
        "connect",
        "--alias",
        "gateway",
        "--ip",
        "10.93.0.50",
        "back",
        "api",
    ]);
    let addresses = |name: &str| net.ok(&["exec", name, "ip", "-o", "-4", "addr"]);
    let api = addresses("api");
    assert!(
        api.contains("eth0") && api.contains("inet 10.92.0."),
        "{api}"
    );
    assert!(
        api.contains("eth1") && api.contains("inet 10.93.0.50/24"),
        "{api}"
    );
    let networks = net.inspect("api")["networks"].clone();
    assert_eq!(networks.as_array().map(Vec::len), Some(2), "{networks}");
    // db, on back only, now knows api (and its alias there).
    let hosts = net.ok(&["exec", "db", "cat", "/etc/hosts"]);
    assert!(hosts.contains("10.93.0.50\tapi "), "{hosts}");
    assert!(hosts.contains(" gateway"), "{hosts}");
    net.refused(&["network", "connect", "back", "api"], "already connected");
    net.refused(&["network", "connect", "back", "nosuch"], "nosuch");
    // Kept in the container's settings: a restart joins both again.
    net.ok(&["stop", "-t", "1", "api"]);
    net.ok(&["start", "api"]);
    let api = addresses("api");
    assert!(api.contains("inet 10.93.0.50/24"), "after a restart: {api}");
    net.ok(&["network", "disconnect", "back", "api"]);
    let api = addresses("api");
    assert!(!api.contains("10.93.0."), "{api}");
    let hosts = net.ok(&["exec", "db", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("api"), "{hosts}");
    net.refused(&["network", "disconnect", "back", "api"], "not connected");
    net.refused(&["network", "disconnect", "front", "api"], "first network");
    net.ok(&["rm", "-f", "api", "db"]);
    net.ok(&["network", "rm", "front", "back"]);
    net.assert_nothing_left();
}
