//! Integration (root): pod networking the Kata way against real network namespaces. Each test
//! makes its own netns with a veth pair configured as CNI would (the peer in the root netns on
//! a private /30 of 10.199.0.0/16), and removes both at the end.
//!
//! The VM test needs an initrd whose agent knows ConfigureNetwork: it uses the config named
//! by $HULL_CONFIG when set (as `hull` does), else the built-in defaults.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hull_runtime::network::{leftovers, PodNetwork, TAP_NAME};
use hull_runtime::{spec, Config, Error, Sandbox, SandboxOptions, Stdio};

const RUN_ROOT: &str = "/run/hull-tests";
const MTU: u32 = 1400;

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A netns holding `eth0` (10.199.K.M+2/30, MTU 1400, default route and a permanent
/// neighbour entry for the peer) whose peer `hn<pid><slot>` in the root netns has .M+1/30.
struct TestNet {
    name: String,
    host_if: String,
    host_ip: String,
    pod_ip: String,
}

impl TestNet {
    fn new(slot: u32, with_veth: bool) -> TestNet {
        let pid = std::process::id();
        let name = format!("hull-nt-{pid}-{slot}");
        let host_if = format!("hn{pid}x{slot}");
        let k = pid % 250;
        let host_ip = format!("10.199.{k}.{}", slot * 4 + 1);
        let pod_ip = format!("10.199.{k}.{}", slot * 4 + 2);
        let t = TestNet {
            name,
            host_if,
            host_ip,
            pod_ip,
        };
        sh(&["ip", "netns", "add", &t.name]);
        t.ns(&["ip", "link", "set", "lo", "up"]);
        if with_veth {
            sh(&[
                "ip", "link", "add", "name", &t.host_if, "type", "veth", "peer", "name", "eth0",
                "netns", &t.name,
            ]);
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{}/30", t.host_ip),
                "dev",
                &t.host_if,
            ]);
            sh(&["ip", "link", "set", &t.host_if, "up"]);
            let host_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", t.host_if))
                .expect("host mac");
            t.ns(&["ip", "link", "set", "eth0", "mtu", &MTU.to_string(), "up"]);
            t.ns(&[
                "ip",
                "addr",
                "add",
                &format!("{}/30", t.pod_ip),
                "dev",
                "eth0",
            ]);
            t.ns(&[
                "ip", "route", "add", "default", "via", &t.host_ip, "dev", "eth0",
            ]);
            t.ns(&[
                "ip",
                "neigh",
                "add",
                &t.host_ip,
                "lladdr",
                host_mac.trim(),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
        }
        t
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    fn ns(&self, cmd: &[&str]) -> String {
        let mut args = vec!["ip", "netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        sh(&args)
    }

    fn mac(&self) -> String {
        self.ns(&["cat", "/sys/class/net/eth0/address"])
            .trim()
            .to_string()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn config() -> Config {
    let (mut c, _) = Config::load(None).expect("config");
    c.runtime.run_dir = PathBuf::from(RUN_ROOT);
    c
}

#[test]
fn tap_and_tc_are_made_and_removed() {
    if !common::require_root() {
        return;
    }
    let net = TestNet::new(0, true);
    let mut pod = PodNetwork::setup(&net.path()).expect("setup");
    let c = pod.config().clone();
    assert_eq!(c.interfaces.len(), 1);
    let i = &c.interfaces[0];
    assert_eq!(i.name, "eth0");
    assert_eq!(i.mtu, MTU);
    assert_eq!(i.mac.to_string(), net.mac());
    let addrs: Vec<String> = i.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(addrs, vec![format!("{}/30", net.pod_ip)]);
    let routes: Vec<String> = c.ordered_routes().iter().map(|r| r.to_string()).collect();
    assert!(
        routes.contains(&format!("default via {} dev eth0 scope 0", net.host_ip)),
        "{routes:?}"
    );
    assert_eq!(c.neighbours.len(), 1, "{:?}", c.neighbours);

    let links = net.ns(&["ip", "-o", "link", "show", TAP_NAME]);
    assert!(links.contains(&format!("mtu {MTU}")), "{links}");
    assert!(links.contains("UP"), "{links}");
    for dev in ["eth0", TAP_NAME] {
        let f = net.ns(&["tc", "filter", "show", "dev", dev, "parent", "ffff:"]);
        let other = if dev == "eth0" { TAP_NAME } else { "eth0" };
        assert!(f.contains("protocol all"), "{dev}: {f}");
        assert!(
            f.contains(&format!("Egress Redirect to device {other}")),
            "{dev}: {f}"
        );
    }
    assert_eq!(
        leftovers(&net.path()).expect("inspect").len(),
        3,
        "tap and two qdiscs"
    );
    pod.teardown();
    assert_eq!(
        leftovers(&net.path()).expect("inspect"),
        Vec::<String>::new()
    );
    // Teardown twice (stop after a crash) is harmless.
    pod.teardown();
}

#[test]
fn bad_netns_is_one_clear_error_and_leaves_nothing() {
    if !common::require_root() {
        return;
    }
    let config = config();
    let pid = std::process::id();
    let missing = PathBuf::from(format!("/var/run/netns/hull-nt-{pid}-missing"));
    let id = format!("net-bad-{pid}");
    let opts = SandboxOptions {
        netns: Some(missing.clone()),
        ..Default::default()
    };
    let e = Sandbox::create(&config, &id, &opts).expect_err("missing netns");
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    assert!(!Path::new(RUN_ROOT).join(&id).exists());

    // A netns with only lo.
    let empty = TestNet::new(1, false);
    let opts = SandboxOptions {
        netns: Some(empty.path()),
        ..Default::default()
    };
    let e = Sandbox::create(&config, &id, &opts).expect_err("no interface");
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    assert!(e.to_string().contains(&empty.name), "{e}");
    assert!(e.to_string().contains("no network interface"), "{e}");
    assert!(!Path::new(RUN_ROOT).join(&id).exists());
    assert_eq!(
        leftovers(&empty.path()).expect("inspect"),
        Vec::<String>::new()
    );

    // A netns whose interface is down.
    let down = TestNet::new(2, true);
    down.ns(&["ip", "link", "set", "eth0", "down"]);
    let opts = SandboxOptions {
        netns: Some(down.path()),
        ..Default::default()
    };
    let e = Sandbox::create(&config, &id, &opts).expect_err("down");
    assert!(e.to_string().contains("eth0 is down"), "{e}");
    assert!(e.to_string().contains(&down.name), "{e}");
    assert_eq!(
        leftovers(&down.path()).expect("inspect"),
        Vec::<String>::new()
    );
}

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = common::busybox_rootfs(
        dir,
        &[
            "sh", "sleep", "cat", "ip", "ping", "wget", "nc", "httpd", "hostname",
        ],
    );
    std::fs::create_dir_all(root.join("www")).expect("mkdir www");
    std::fs::write(root.join("www/index.html"), "hello-from-guest\n").expect("index");
    root
}

fn with_net_raw(mut process: oci_spec::runtime::Process) -> oci_spec::runtime::Process {
    use oci_spec::runtime::Capability;
    let mut caps = process.capabilities().clone().unwrap_or_default();
    for set in [
        caps.bounding().clone(),
        caps.effective().clone(),
        caps.permitted().clone(),
    ] {
        let mut s = set.unwrap_or_default();
        s.insert(Capability::NetRaw);
        s.insert(Capability::NetBindService);
        caps.set_bounding(Some(s.clone()));
        caps.set_effective(Some(s.clone()));
        caps.set_permitted(Some(s));
    }
    process.set_capabilities(Some(caps));
    process
}

/// Run `cmd` in container `c` as exec `id`; (exit status, stdout + stderr).
fn exec(
    c: &hull_runtime::Container,
    process: &oci_spec::runtime::Process,
    id: &str,
    cmd: &str,
) -> (i32, String) {
    let mut p = process.clone();
    p.set_args(Some(vec!["sh".into(), "-c".into(), cmd.into()]));
    let out = common::Sink::default();
    let e = c
        .exec(
            id,
            &p,
            Stdio {
                stdin: None,
                stdout: Box::new(out.clone()),
                stderr: Some(Box::new(out.clone())),
            },
        )
        .unwrap_or_else(|e| panic!("exec {cmd}: {e}"));
    let status = e.wait().expect("wait").status;
    let text = out.text();
    (status, text)
}

fn http_get(addr: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

fn ns_inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").ino()
}

#[test]
fn guest_gets_the_pod_network() {
    if !common::require_root() {
        return;
    }
    let config = config();
    let net = TestNet::new(3, true);
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = busybox_rootfs(tmp.path());
    // A web server on the root-netns side of the veth.
    let host = std::net::TcpListener::bind((net.host_ip.as_str(), 0)).expect("bind host side");
    let host_port = host.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        for s in host.incoming().take(1) {
            let mut s = s.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello-from-host\n");
        }
    });

    let id = format!("net-vm-{}", std::process::id());
    let t0 = Instant::now();
    let sandbox = Sandbox::create(
        &config,
        &id,
        &SandboxOptions {
            netns: Some(net.path()),
            ..Default::default()
        },
    )
    .expect("sandbox boots with the pod network");
    eprintln!(
        "boot with network: {:.2?} (vm to agent {:.2?})",
        t0.elapsed(),
        sandbox.boot_times().vm_to_agent
    );
    let vm_pid = sandbox.vm_pid();
    assert_eq!(
        ns_inode(Path::new(&format!("/proc/{vm_pid}/ns/net"))),
        ns_inode(&net.path()),
        "QEMU must run in the pod netns"
    );

    let spec = spec::minimal(
        vec![
            "httpd".into(),
            "-f".into(),
            "-p".into(),
            "8080".into(),
            "-h".into(),
            "/www".into(),
        ],
        &[],
        None,
        false,
    )
    .expect("spec");
    let mut spec = spec;
    let process = with_net_raw(spec.process().clone().expect("process"));
    spec.set_process(Some(process.clone()));
    let web = sandbox
        .create_container("web", &spec, &rootfs)
        .expect("create");
    let init = web
        .start(Stdio {
            stdin: None,
            stdout: Box::new(std::io::sink()),
            stderr: Some(Box::new(std::io::sink())),
        })
        .expect("start");

    let (st, addr) = exec(&web, &process, "addr", "ip addr show eth0");
    assert_eq!(st, 0, "{addr}");
    assert!(
        addr.contains(&format!("link/ether {}", net.mac())),
        "{addr}"
    );
    assert!(addr.contains(&format!("mtu {MTU}")), "{addr}");
    assert!(addr.contains(&format!("inet {}/30", net.pod_ip)), "{addr}");
    assert!(addr.contains("UP"), "{addr}");
    let (_, route) = exec(&web, &process, "route", "ip route");
    assert!(
        route.contains(&format!("default via {} dev eth0", net.host_ip)),
        "{route}"
    );
    let (_, neigh) = exec(&web, &process, "neigh", "ip neigh show dev eth0");
    assert!(
        neigh.contains(&net.host_ip) && neigh.contains("PERMANENT"),
        "{neigh}"
    );

    // guest -> root netns: ICMP and TCP.
    let (st, ping) = exec(
        &web,
        &process,
        "ping",
        &format!("ping -c 3 -W 5 {}", net.host_ip),
    );
    assert_eq!(st, 0, "{ping}");
    eprintln!("ping guest -> host: {}", ping.lines().last().unwrap_or(""));
    let (st, got) = exec(
        &web,
        &process,
        "wget",
        &format!("wget -q -O - http://{}:{host_port}/", net.host_ip),
    );
    assert_eq!(st, 0, "{got}");
    assert!(got.contains("hello-from-host"), "{got}");
    server.join().expect("host server");

    // root netns -> guest: TCP to the container's httpd on the pod IP.
    let t = Instant::now();
    let body = loop {
        match http_get(&format!("{}:8080", net.pod_ip)) {
            Ok(b) => break b,
            Err(e) if t.elapsed() < Duration::from_secs(20) => {
                eprintln!("retrying: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("host -> pod: {e}"),
        }
    };
    assert!(body.contains("hello-from-guest"), "{body}");
    // A second container of the pod sees the same network (one netns: the guest's).
    let mut spec2 = spec.clone();
    let mut p2 = process.clone();
    p2.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "wget -q -O - http://127.0.0.1:8080/ && ip -o addr show eth0".into(),
    ]));
    spec2.set_process(Some(p2));
    let c2 = sandbox
        .create_container("client", &spec2, &rootfs)
        .expect("create client");
    let out = common::Sink::default();
    let p = c2
        .start(Stdio {
            stdin: None,
            stdout: Box::new(out.clone()),
            stderr: Some(Box::new(out.clone())),
        })
        .expect("start client");
    assert_eq!(p.wait().expect("wait client").status, 0);
    let text = out.text();
    assert!(
        text.contains("hello-from-guest") && text.contains(&net.pod_ip),
        "{text}"
    );

    init.signal(libc::SIGKILL, false).expect("kill");
    let pids: Vec<i32> = sandbox.pids().iter().map(|(_, p)| *p).collect();
    sandbox.stop().expect("stop");
    for pid in pids {
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
            "process {pid} left"
        );
    }
    assert_eq!(
        leftovers(&net.path()).expect("inspect"),
        Vec::<String>::new()
    );
    // The netns and its veth are CNI's: still there, untouched.
    assert!(net
        .ns(&["ip", "-o", "link", "show", "eth0"])
        .contains("eth0"));
}
