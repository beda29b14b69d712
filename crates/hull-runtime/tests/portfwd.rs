//! Integration (root, real VM): CRI-style port forwarding. A network namespace stands in for
//! the pod's CNI namespace; a sandbox booted with `netns` set runs busybox httpd and an echo
//! server in its guest, and connections to localhost inside the namespace reach them. Stopping
//! leaves no listener, connection or relay thread behind.
//!
//! Prints connect latency and bulk throughput (run with `--nocapture` to see them).
//! The config comes from $HULL_CONFIG (else the defaults): point it at an initrd whose agent
//! has the forward channel.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{busybox_rootfs, quiet};
use hull_runtime::{spec, Config, Sandbox, SandboxOptions};

const RUN_ROOT: &str = "/run/hull-tests";
const BIG_MIB: usize = 32;

/// A network namespace made with `ip netns`, deleted on drop.
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("run ip");
        assert!(ok.success(), "ip netns add {name}");
        let ok = Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(ok.success(), "lo up in {name}");
        // A pod netns as CNI leaves it: one veth with an address (its peer stays outside).
        let peer = format!("{}p", &name[..name.len().min(13)]);
        for args in [
            vec![
                "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", name,
            ],
            vec!["-n", name, "addr", "add", "10.199.254.2/30", "dev", "eth0"],
            vec!["-n", name, "link", "set", "eth0", "up"],
            vec!["link", "set", &peer, "up"],
        ] {
            let ok = Command::new("ip").args(&args).status().expect("run ip");
            assert!(ok.success(), "ip {args:?}");
        }
        Netns {
            name: name.to_string(),
            path: PathBuf::from("/var/run/netns").join(name),
        }
    }

    /// Run `f` on a thread inside the namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = File::open(&self.path).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("netns thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Send `payload`, half-close, read everything back.
fn echo(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let mut back = Vec::new();
    std::thread::scope(|sc| {
        let h = sc.spawn(move || -> std::io::Result<()> {
            w.write_all(payload)?;
            w.shutdown(Shutdown::Write)
        });
        let r = (&s).read_to_end(&mut back);
        h.join().expect("writer")?;
        r.map(|_| ())
    })?;
    Ok(back)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

fn threads_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|c| c.trim().to_string())
                .filter(|c| c.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn port_forward_from_a_netns_reaches_guest_servers() {
    if !common::require_root() {
        return;
    }
    // Threads of the relay are named hull-pf-*.
    let threads_before = threads_named("hull-pf");
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = busybox_rootfs(
        tmp.path(),
        &["sh", "sleep", "echo", "cat", "dd", "httpd", "nc", "kill"],
    );
    let (mut config, _) = Config::load(None).expect("config");
    config.runtime.run_dir = PathBuf::from(RUN_ROOT);
    let ns = Netns::new(&format!("hullpf{}", std::process::id()));
    let id = format!("lib-pf-{}", std::process::id());
    let opts = SandboxOptions {
        netns: Some(ns.path.clone()),
        ..SandboxOptions::default()
    };
    let sandbox = Sandbox::create(&config, &id, &opts).expect("sandbox boots");
    assert_eq!(sandbox.forwarded_ports(), (vec![], 0));

    let script = format!(
        "echo hello-from-guest > /dev/shm/index.html; \
         dd if=/dev/zero of=/dev/shm/big bs=1M count={BIG_MIB} 2>/dev/null; \
         httpd -f -p 8080 -h /dev/shm & exec nc -ll -p 9000 -e /bin/cat"
    );
    let spec =
        spec::minimal(vec!["sh".into(), "-c".into(), script], &[], None, false).expect("spec");
    let c1 = sandbox
        .create_container("c1", &spec, &rootfs)
        .expect("create");
    let t = Instant::now();
    let init = c1.start(quiet()).expect("start");
    wait_until("8080 and 9000 forwarded", Duration::from_secs(30), || {
        let (p, _) = sandbox.forwarded_ports();
        p.contains(&8080) && p.contains(&9000)
    });
    eprintln!(
        "servers forwarded {:?} after the container start",
        t.elapsed()
    );

    // A server started later: how long until its port is forwarded (exec start included).
    let mut late = spec.process().clone().expect("process");
    late.set_args(Some(vec![
        "nc".into(),
        "-ll".into(),
        "-p".into(),
        "7000".into(),
        "-e".into(),
        "/bin/cat".into(),
    ]));
    let t = Instant::now();
    let e1 = c1.exec("late", &late, quiet()).expect("exec");
    let started = t.elapsed();
    let seen = wait_until("7000 forwarded", Duration::from_secs(10), || {
        sandbox.forwarded_ports().0.contains(&7000)
    });
    eprintln!(
        "late server: exec returned after {started:?}, port forwarded {:?} after that",
        seen
    );

    let has_v6 = ns.run(|| std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok());
    ns.run(|| {
        let web = SocketAddr::new(V4, 8080);
        let body = http_get(web, "/").expect("GET / through the netns");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("HTTP/1."), "{text}");
        assert!(text.contains("hello-from-guest"), "{text}");
        if has_v6 {
            let body = http_get(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 8080), "/")
                .expect("GET / over ::1");
            assert!(String::from_utf8_lossy(&body).contains("hello-from-guest"));
        }

        // Connect-to-first-response latency of small requests.
        let times: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let b = http_get(web, "/").expect("GET");
                assert!(String::from_utf8_lossy(&b).contains("hello-from-guest"));
                t.elapsed()
            })
            .collect();
        eprintln!(
            "GET / through port forwarding: median {:?}, max {:?}",
            median(times.clone()),
            times.iter().max().expect("some")
        );

        // Bulk download.
        let t = Instant::now();
        let big = http_get(web, "/big").expect("GET /big");
        let secs = t.elapsed().as_secs_f64();
        assert!(big.len() > BIG_MIB << 20, "{} bytes", big.len());
        assert!(big.ends_with(&[0u8; 4096]), "body must be the zeros");
        eprintln!(
            "download {BIG_MIB} MiB: {:.0} ms, {:.1} MiB/s",
            secs * 1e3,
            BIG_MIB as f64 / secs
        );

        // Echo both ways with a half-close at the end (cat sees EOF, then closes).
        let payload: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let t = Instant::now();
        let back = echo(SocketAddr::new(V4, 9000), &payload).expect("echo");
        let secs = t.elapsed().as_secs_f64();
        assert!(
            back == payload,
            "echo returned {} bytes, differing",
            back.len()
        );
        eprintln!(
            "echo 8 MiB up and down: {:.0} ms, {:.1} MiB/s each way",
            secs * 1e3,
            8.0 / secs
        );
        let back = echo(SocketAddr::new(V4, 7000), b"late-server").expect("echo late");
        assert_eq!(back, b"late-server");

        // A port nothing listens on in the guest is refused in the namespace too.
        let e = TcpStream::connect((Ipv4Addr::LOCALHOST, 8081)).expect_err("8081");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    });
    wait_until(
        "relay threads of ended connections to end",
        Duration::from_secs(5),
        || threads_named("hull-pf-8080").is_empty() && threads_named("hull-pf-9000").is_empty(),
    );

    // A connection left open is cut by the stop; servers that go lose their listeners.
    e1.signal(libc::SIGKILL, false).expect("kill late server");
    e1.wait().expect("wait late");
    wait_until("7000 unforwarded", Duration::from_secs(10), || {
        !sandbox.forwarded_ports().0.contains(&7000)
    });
    let open = ns.run(|| {
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, 9000)).expect("connect 9000");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s
    });
    wait_until("the open connection", Duration::from_secs(10), || {
        sandbox.forwarded_ports().1 == 1
    });
    init.signal(libc::SIGKILL, true).expect("kill");
    init.wait().expect("wait");
    c1.remove().expect("remove");
    let t = Instant::now();
    sandbox.stop().expect("stop");
    eprintln!("sandbox stop took {:?}", t.elapsed());
    let mut buf = [0u8; 1];
    assert!(
        matches!((&open).read(&mut buf), Ok(0) | Err(_)),
        "cut at stop"
    );

    assert_eq!(sandbox.forwarded_ports(), (vec![], 0));
    assert_eq!(threads_named("hull-pf"), threads_before, "threads left");
    let listening = ns.run(|| {
        let mut v = Vec::new();
        for t in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
            let text = std::fs::read_to_string(t).unwrap_or_default();
            v.extend(
                text.lines()
                    .skip(1)
                    .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
                    .map(str::to_string),
            );
        }
        v
    });
    assert!(
        listening.is_empty(),
        "listeners left in the netns: {listening:?}"
    );
}

#[test]
fn a_missing_netns_is_refused_before_boot() {
    if !common::require_root() {
        return;
    }
    let (mut config, _) = Config::load(None).expect("config");
    config.runtime.run_dir = PathBuf::from(RUN_ROOT);
    let id = format!("lib-pf-bad-{}", std::process::id());
    let opts = SandboxOptions {
        netns: Some(PathBuf::from("/var/run/netns/hull-no-such-netns")),
        ..SandboxOptions::default()
    };
    let t = Instant::now();
    let e = Sandbox::create(&config, &id, &opts).expect_err("missing netns");
    assert!(matches!(e, hull_runtime::Error::NotFound(_)), "{e}");
    assert!(e.to_string().contains("hull-no-such-netns"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!Path::new(RUN_ROOT).join(&id).exists());
}
