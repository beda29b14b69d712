//! Integration (root): pod networking the Kata way against real network namespaces. Each test
//! makes its own netns with a veth pair configured as CNI would (the peer in the root netns on
//! a private /30 of 10.199.0.0/16), and removes both at the end.
//!
//! The VM test needs an initrd whose agent knows ConfigureNetwork: it uses the config named
//! by $HULL_CONFIG when set (as `hull` does), else the built-in defaults.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hull_runtime::network::{leftovers, PodNetwork, TAP_NAME};
use hull_runtime::{spec, Config, Error, Sandbox, SandboxOptions, Stdio};

const RUN_ROOT: &str = "/run/hull-tests";
const MTU: u32 = 1400;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

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
    if !is_root() {
        eprintln!("skipped: needs root");
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
    if !is_root() {
        eprintln!("skipped: needs root");
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
