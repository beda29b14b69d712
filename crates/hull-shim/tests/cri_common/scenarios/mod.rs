//! Test bodies of tests/cri.rs: each takes the runtime handler (runc or hull), runs one pod
//! feature through CRI as kubelet would, and removes its pods again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;

use super::{spec, stream, CriEnv, HULL, RUNC};

mod kernel;
mod resources;
mod security;
mod vm;
mod volumes;
#[allow(unused_imports)]
pub use kernel::guest_kernel_features;
#[allow(unused_imports)]
pub use resources::{
    container_resources, memory_limit_too_low, oom_killed, oom_while_running,
    pod_cgroup_caps_containers, update_container_resources,
};
#[allow(unused_imports)]
pub use security::{
    bind_into_proc_refused, device_allow_list, devices, privileged, seccomp_profiles,
    setuid_and_no_new_privs, signal_state, sysctls, users_and_groups,
};
use vm::pod_namespaces;
// Used by tests/cri.rs, not by the examples that share this harness.
#[allow(unused_imports)]
pub use vm::{bad_pod_input, vm_death, vm_sizing};
#[allow(unused_imports)]
pub use volumes::{
    configmap_updates, host_path, host_to_container_propagation, memory_empty_dir_and_shm,
    missing_bind_source, volumes_refused,
};

const PORT: u16 = 8080;
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A pod with its config and id.
#[derive(Debug)]
pub struct Pod {
    pub id: String,
    pub config: cri::PodSandboxConfig,
}

/// RunPodSandbox of `config` with `handler`, panicking with containerd's error.
pub fn run_pod(env: &CriEnv, config: cri::PodSandboxConfig, handler: &str) -> Pod {
    let t = Instant::now();
    let id = env
        .run_pod(&config, handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox ({handler}): {e}\n{}", env.log_tail()));
    eprintln!("{handler}: RunPodSandbox took {:.2?}", t.elapsed());
    Pod { id, config }
}

/// CreateContainer + StartContainer of `name` running `cmd` in `pod`.
pub fn start(env: &CriEnv, pod: &Pod, config: &cri::ContainerConfig) -> String {
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let t = Instant::now();
    let id = env
        .create_container(&pod.id, config, &pod.config)
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", env.log_tail()));
    env.cri()
        .start_container(&id)
        .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", env.log_tail()));
    eprintln!(
        "CreateContainer + StartContainer {name} took {:.2?}",
        t.elapsed()
    );
    id
}

/// ExecSync `cmd` in `id`; asserts exit 0 and returns stdout.
pub fn exec_ok(env: &CriEnv, id: &str, cmd: &[&str]) -> String {
    let r = env
        .cri()
        .exec_sync(id, cmd, 30)
        .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}\n{}", env.log_tail()));
    assert_eq!(
        r.exit_code,
        0,
        "ExecSync {cmd:?} exit {}: stdout {:?} stderr {:?}",
        r.exit_code,
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// ContainerStatus's state of `id`.
pub fn state(env: &CriEnv, id: &str) -> cri::ContainerState {
    let st = env
        .cri()
        .container_status(id)
        .unwrap_or_else(|e| panic!("ContainerStatus: {e}"));
    cri::ContainerState::try_from(st.state).unwrap_or(cri::ContainerState::ContainerUnknown)
}

/// StopContainer (grace `grace_s`) and RemoveContainer; returns the exit code and stop time.
pub fn stop_remove(env: &CriEnv, id: &str, grace_s: i64) -> (i32, Duration) {
    let t = Instant::now();
    env.cri()
        .stop_container(id, grace_s)
        .unwrap_or_else(|e| panic!("StopContainer: {e}\n{}", env.log_tail()));
    let took = t.elapsed();
    let st = env
        .cri()
        .container_status(id)
        .unwrap_or_else(|e| panic!("ContainerStatus after stop: {e}"));
    assert_eq!(
        cri::ContainerState::try_from(st.state),
        Ok(cri::ContainerState::ContainerExited),
        "after StopContainer: {st:?}"
    );
    env.cri()
        .remove_container(id)
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}\n{}", env.log_tail()));
    (st.exit_code, took)
}

/// [`stop_remove`] of a container that exits 0 on SIGTERM: asserts that exit code.
pub fn stop_remove_ok(env: &CriEnv, id: &str) {
    let (code, took) = stop_remove(env, id, 10);
    assert_eq!(
        code, 0,
        "exit code of {id} stopped with SIGTERM (after {took:.2?})"
    );
}

/// StopPodSandbox + RemovePodSandbox.
pub fn remove_pod(env: &CriEnv, pod: &Pod) {
    let t = Instant::now();
    env.cri()
        .stop_pod(&pod.id)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", env.log_tail()));
    env.cri()
        .remove_pod(&pod.id)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", env.log_tail()));
    eprintln!("StopPodSandbox + RemovePodSandbox took {:.2?}", t.elapsed());
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("osrelease")
        .trim()
        .to_string()
}

fn web_server(name: &str) -> cri::ContainerConfig {
    let script = spec::web_server_script(PORT, &format!("hello-from-{name}"));
    spec::container(name, &["sh", "-c", &script])
}

/// Poll `f` until it returns Ok or `timeout` passes; the last error otherwise.
fn retry<T>(timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// One HTTP/1.0 GET of `http://127.0.0.1:8080/` from inside container `from` (ExecSync of
/// busybox nc: Debian's static busybox wget crashes, exit 139), the whole response as text.
pub fn localhost_get(env: &CriEnv, from: &str) -> Result<String, String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 {PORT}");
    let r = env
        .cri()
        .exec_sync(from, &["sh", "-c", &script], 30)
        .map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    (r.exit_code == 0 && out.starts_with("HTTP/1."))
        .then_some(out.clone())
        .ok_or(format!(
            "nc exit {}: stdout {out:?} stderr {:?}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr)
        ))
}

/// One HTTP/1.0 GET of `/` from `addr`, the whole response as text.
pub fn http_get(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The basics, for each of `handlers` side by side in one containerd: RunPodSandbox,
/// CreateContainer, StartContainer, ExecSync (`uname -r`: the host's kernel with runc, the
/// guest's with hull; an exit code), ContainerStatus, Stop/RemoveContainer, Stop/RemovePodSandbox.
pub fn lifecycle(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let host = host_kernel();
    let pods: Vec<(String, Pod, String)> = handlers
        .iter()
        .map(|h| {
            let pod = run_pod(env, spec::pod(&format!("life-{h}"), &env.log_dir()), h);
            let c = start(env, &pod, &spec::container("main", spec::SLEEPER));
            (h.to_string(), pod, c)
        })
        .collect();
    for (h, _, c) in &pods {
        assert_eq!(state(env, c), cri::ContainerState::ContainerRunning, "{h}");
        let kernel = exec_ok(env, c, &["uname", "-r"]).trim().to_string();
        assert!(!kernel.is_empty(), "{h}: empty uname -r");
        match h.as_str() {
            RUNC => assert_eq!(kernel, host, "runc container sees another kernel"),
            HULL => assert_ne!(kernel, host, "hull container runs on the host kernel"),
            _ => {}
        }
        let r = env
            .cri()
            .exec_sync(c, &["sh", "-c", "echo out; echo err >&2; exit 7"], 30)
            .unwrap_or_else(|e| panic!("{h}: ExecSync: {e}"));
        assert_eq!(
            (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
            (7, &b"out\n"[..], &b"err\n"[..]),
            "{h}: ExecSync exit code and output"
        );
    }
    for (h, pod, c) in &pods {
        let (code, took) = stop_remove(env, c, 10);
        eprintln!("{h}: StopContainer took {took:.2?}, exit code {code}");
        assert_eq!(code, 0, "{h}: the sleeper exits 0 on SIGTERM");
        remove_pod(env, pod);
    }
}

/// A web server in the pod answers on the pod's IP from the host (through the CNI bridge).
pub fn pod_ip_from_host(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("reach", &env.log_dir()), handler);
    let web = start(env, &pod, &web_server("web"));
    let ip = env.pod_ip(&pod.id);
    let addr: SocketAddr = format!("{ip}:{PORT}").parse().expect("pod address");
    let body = retry(SERVE_TIMEOUT, || {
        http_get(addr).and_then(|r| {
            r.contains("hello-from-web")
                .then_some(r.clone())
                .ok_or(format!("unexpected answer {r:?}"))
        })
    })
    .unwrap_or_else(|e| panic!("{handler}: host -> pod {addr}: {e}"));
    assert!(body.starts_with("HTTP/1."), "{body}");
    stop_remove_ok(env, &web);
    remove_pod(env, &pod);
}

/// Pods reach each other on their IPs through the CNI bridge, both ways: a pod of handler `a`
/// and one of handler `b` each serve HTTP and each GETs the other's page.
pub fn pod_to_pod(env: &CriEnv, a: &str, b: &str) {
    env.pull_busybox();
    let pods: Vec<(Pod, String, String)> = [(a, "pa"), (b, "pb")]
        .iter()
        .map(|(h, name)| {
            let pod = run_pod(env, spec::pod(&format!("{name}-{h}"), &env.log_dir()), h);
            let web = start(env, &pod, &web_server(&format!("web-{name}")));
            let ip = env.pod_ip(&pod.id);
            (pod, web, ip)
        })
        .collect();
    for (from, to, name) in [(0, 1, "pb"), (1, 0, "pa")] {
        let (_, web, _) = &pods[from];
        let ip = &pods[to].2;
        let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} {PORT}");
        let got = retry(SERVE_TIMEOUT, || {
            let r = env
                .cri()
                .exec_sync(web, &["sh", "-c", &script], 30)
                .map_err(|e| e.to_string())?;
            let out = String::from_utf8_lossy(&r.stdout).into_owned();
            out.contains(&format!("hello-from-web-{name}"))
                .then_some(out.clone())
                .ok_or(format!("nc exit {}: {out:?}", r.exit_code))
        })
        .unwrap_or_else(|e| panic!("{} -> {} ({ip}): {e}", [a, b][from], [a, b][to]));
        assert!(got.starts_with("HTTP/1."), "{got}");
    }
    for (pod, _, _) in &pods {
        remove_pod(env, pod);
    }
}

/// Two containers of one pod talk over localhost (they share the pod's network namespace).
pub fn localhost_between_containers(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("localhost", &env.log_dir()), handler);
    let web = start(env, &pod, &web_server("web"));
    let client = start(env, &pod, &spec::container("client", spec::SLEEPER));
    let got = retry(SERVE_TIMEOUT, || localhost_get(env, &client))
        .unwrap_or_else(|e| panic!("{handler}: client -> localhost:{PORT}: {e}"));
    assert!(got.contains("hello-from-web"), "{got}");
    assert_eq!(
        state(env, &web),
        cri::ContainerState::ContainerRunning,
        "{handler}: web"
    );
    // StopPodSandbox stops both containers (stopping one by one is what
    // container_restart_in_running_pod is about).
    remove_pod(env, &pod);
}

/// Containers see the pod's hostname, containerd's /etc/hosts (a copy of the host's) and an
/// /etc/resolv.conf made from the pod's DNSConfig.
pub fn hostname_hosts_resolv(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let mut cfg = spec::pod("dns", &env.log_dir());
    cfg.hostname = "hull-dns-pod".into();
    cfg.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
        searches: vec![
            "hull-test.svc.cluster.local".into(),
            "svc.cluster.local".into(),
        ],
        options: vec!["ndots:5".into(), "timeout:2".into()],
    });
    let pod = run_pod(env, cfg, handler);
    let c = start(env, &pod, &spec::container("main", spec::SLEEPER));
    // Every mismatch is collected, so one run shows all that is missing.
    let mut wrong = Vec::new();
    let hostname = exec_ok(env, &c, &["hostname"]);
    if hostname.trim() != "hull-dns-pod" {
        wrong.push(format!("hostname is {hostname:?}"));
    }
    let file = exec_ok(env, &c, &["cat", "/etc/hostname"]);
    if file.trim() != "hull-dns-pod" {
        wrong.push(format!("/etc/hostname is {file:?}"));
    }
    let resolv = exec_ok(env, &c, &["cat", "/etc/resolv.conf"]);
    for want in [
        "nameserver 10.96.0.10",
        "nameserver 10.96.0.11",
        "search hull-test.svc.cluster.local svc.cluster.local",
        "options ndots:5 timeout:2",
    ] {
        if !resolv.lines().any(|l| l.trim() == want) {
            wrong.push(format!("no {want:?} in /etc/resolv.conf {resolv:?}"));
        }
    }
    let hosts = exec_ok(env, &c, &["cat", "/etc/hosts"]);
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if hosts != host_hosts {
        wrong.push(format!(
            "/etc/hosts is {hosts:?}, not containerd's copy of the host's {host_hosts:?}"
        ));
    }
    assert_eq!(wrong, Vec::<String>::new(), "{handler}");
    stop_remove_ok(env, &c);
    remove_pod(env, &pod);
}

/// One container is stopped, removed and created again (as kubelet restarts it) while the
/// pod and its other container keep running and serving.
pub fn container_restart_in_running_pod(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("restart", &env.log_dir()), handler);
    let web = start(env, &pod, &web_server("web"));
    let side = start(env, &pod, &spec::container("side", spec::SLEEPER));
    let fetch = |from: &str| retry(SERVE_TIMEOUT, || localhost_get(env, from));
    let got = fetch(&side).unwrap_or_else(|e| panic!("{handler}: side -> web: {e}"));
    assert!(got.contains("hello-from-web"), "{got}");

    let (code, took) = stop_remove(env, &side, 10);
    eprintln!("{handler}: stopping one container of a running pod took {took:.2?} (exit {code})");
    let st = env.cri().pod_status(&pod.id).expect("PodSandboxStatus");
    assert_eq!(
        st.status.map(|s| s.state),
        Some(cri::PodSandboxState::SandboxReady as i32),
        "{handler}: the pod is no longer ready after one container was removed"
    );
    assert_eq!(
        state(env, &web),
        cri::ContainerState::ContainerRunning,
        "{handler}: web died"
    );
    let got =
        localhost_get(env, &web).unwrap_or_else(|e| panic!("{handler}: web stopped serving: {e}"));
    assert!(got.contains("hello-from-web"), "{got}");

    let side2 = start(
        env,
        &pod,
        &spec::container_attempt("side", 1, spec::SLEEPER),
    );
    let got = fetch(&side2).unwrap_or_else(|e| panic!("{handler}: recreated side -> web: {e}"));
    assert!(got.contains("hello-from-web"), "{got}");
    stop_remove_ok(env, &side2);
    stop_remove_ok(env, &web);
    remove_pod(env, &pod);
}

/// StopContainer sends SIGTERM, waits the grace period, then SIGKILLs; a container that exits
/// on SIGTERM makes StopContainer return at once; a stopped container is removable at once.
/// (The stubborn one goes first: with hull today the first container removed takes the pod.)
pub fn stop_grace_period(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("grace", &env.log_dir()), handler);
    let polite = start(env, &pod, &spec::container("polite", spec::SLEEPER));
    let stubborn = start(
        env,
        &pod,
        &spec::container(
            "stubborn",
            &["sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
        ),
    );
    // Both have installed their traps once an exec has answered (the shell ran its first line).
    exec_ok(env, &polite, &["true"]);
    exec_ok(env, &stubborn, &["true"]);
    std::thread::sleep(Duration::from_millis(500));

    let grace = 3;
    let (code, took) = stop_remove(env, &stubborn, grace);
    eprintln!("{handler}: stubborn stop took {took:.2?}, exit {code}");
    assert_eq!(code, 137, "{handler}: SIGKILLed container's exit code");
    assert!(
        took >= Duration::from_secs(grace as u64),
        "{handler}: SIGKILL before the grace period ended ({took:?})"
    );
    assert!(
        took < Duration::from_secs(grace as u64 + 15),
        "{handler}: stop took {took:?} for a {grace} s grace period"
    );
    let (code, took) = stop_remove(env, &polite, 30);
    eprintln!("{handler}: polite stop took {took:.2?}, exit {code}");
    assert_eq!(code, 0, "{handler}: polite container's exit code");
    assert!(
        took < Duration::from_secs(10),
        "{handler}: polite stop took {took:?} of a 30 s grace period"
    );

    remove_pod(env, &pod);
}

/// PortForward to the pod's port 8080 through containerd's streaming server over WebSocket.
pub fn port_forward(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("portfwd", &env.log_dir()), handler);
    let web = start(env, &pod, &web_server("web"));
    let started = Instant::now();
    let mut attempts = 0;
    let mut last = Duration::ZERO;
    let got = retry(SERVE_TIMEOUT, || {
        attempts += 1;
        let t = Instant::now();
        let url = env
            .cri()
            .port_forward_url(&pod.id, &[i32::from(PORT)])
            .map_err(|e| format!("PortForward: {e}"))?;
        let f = env.cri().block_on(stream::port_forward(
            &url,
            b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n",
            Duration::from_secs(20),
        ))?;
        let text = String::from_utf8_lossy(&f.data).into_owned();
        last = t.elapsed();
        text.contains("hello-from-web")
            .then_some(text.clone())
            .ok_or(format!("data {text:?}, error channel {:?}", f.error))
    })
    .unwrap_or_else(|e| panic!("{handler}: port-forward to {PORT}: {e}"));
    eprintln!(
        "{handler}: PortForward GET answered {:.2?} after StartContainer, attempt {attempts} \
         (PortForward URL + WebSocket + GET: {last:.2?})",
        started.elapsed()
    );
    assert!(got.starts_with("HTTP/1."), "{got}");
    stop_remove_ok(env, &web);
    remove_pod(env, &pod);
}

/// Exec through the streaming server: stdin reaches the process, stdout and stderr come back
/// apart, the exit code arrives in the final status.
pub fn exec_stream(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("exec", &env.log_dir()), handler);
    let c = start(env, &pod, &spec::container("main", spec::SLEEPER));
    let cmd = [
        "sh",
        "-c",
        "read line; echo \"got $line\"; echo oops >&2; exit 3",
    ];
    let url = env
        .cri()
        .exec_url(&c, &cmd, true, false)
        .unwrap_or_else(|e| panic!("Exec: {e}"));
    let out = env
        .cri()
        .block_on(stream::exec(
            &url,
            Some(b"hello\n"),
            Duration::from_secs(60),
        ))
        .unwrap_or_else(|e| panic!("{handler}: exec stream: {e}"));
    assert_eq!(out.stdout_text(), "got hello\n", "{handler}: {out:?}");
    assert_eq!(out.stderr_text(), "oops\n", "{handler}: {out:?}");
    assert_eq!(out.exit_code(), Some(3), "{handler}: status {}", out.status);
    stop_remove_ok(env, &c);
    remove_pod(env, &pod);
}

/// A container's stdout and stderr reach its CRI log file (`<log_directory>/<log_path>`) in
/// the CRI log format, and ContainerStatus reports its exit code once it exits by itself.
pub fn logs_and_exit_status(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("logs", &env.log_dir()), handler);
    let cfg = spec::container(
        "talker",
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 4"],
    );
    let c = start(env, &pod, &cfg);
    let done = retry(Duration::from_secs(60), || {
        let st = env.cri().container_status(&c).map_err(|e| e.to_string())?;
        (st.state == cri::ContainerState::ContainerExited as i32)
            .then_some(st.clone())
            .ok_or(format!("still {st:?}"))
    })
    .unwrap_or_else(|e| panic!("{handler}: container did not exit: {e}"));
    assert_eq!(done.exit_code, 4, "{handler}: {done:?}");
    assert_eq!(done.reason, "Error", "{handler}: {done:?}");
    let log = std::path::Path::new(&pod.config.log_directory).join(&cfg.log_path);
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    // "<RFC3339Nano time> <stream> <P|F> <text>"
    let lines: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            (f.len() == 4 && f[2] == "F").then(|| (f[1].to_string(), f[3].to_string()))
        })
        .collect();
    assert!(
        lines.contains(&("stdout".into(), "to-stdout".into())),
        "{handler}: log:\n{text}"
    );
    assert!(
        lines.contains(&("stderr".into(), "to-stderr".into())),
        "{handler}: log:\n{text}"
    );
    env.cri()
        .remove_container(&c)
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
    remove_pod(env, &pod);
}

/// Exec with a TTY and stdin (as `kubectl exec -it`): the process sees a terminal, output comes
/// back on stdout with CRLF. (Without stdin containerd 1.6.20 loses a TTY exec's whole output,
/// with runc too: "Failed to pipe \"stdout\" for container exec ...: read /proc/self/fd/N: file
/// already closed" right after "stdin closed".)
pub fn exec_tty(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("tty", &env.log_dir()), handler);
    let c = start(env, &pod, &spec::container("main", spec::SLEEPER));
    let url = env
        .cri()
        .exec_url(
            &c,
            &["sh", "-c", "tty; test -t 1 && echo is-a-tty"],
            true,
            true,
        )
        .unwrap_or_else(|e| panic!("Exec: {e}"));
    let out = env
        .cri()
        .block_on(stream::exec(&url, None, Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{handler}: tty exec stream: {e}"));
    let text = out.stdout_text();
    assert!(text.starts_with("/dev/pts/"), "{handler}: {out:?}");
    assert!(text.contains("is-a-tty\r\n"), "{handler}: {out:?}");
    assert_eq!(out.exit_code(), Some(0), "{handler}: status {}", out.status);
    stop_remove_ok(env, &c);
    remove_pod(env, &pod);
}

/// Attach to a container started with stdin: what is sent reaches its stdin, its output comes
/// back, and the stream ends when it exits.
pub fn attach(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let pod = run_pod(env, spec::pod("attach", &env.log_dir()), handler);
    let mut cfg = spec::container("main", &["sh", "-c", "read line; echo \"attached $line\""]);
    cfg.stdin = true;
    cfg.stdin_once = true;
    let c = start(env, &pod, &cfg);
    let url = env
        .cri()
        .attach_url(&c, true, false)
        .unwrap_or_else(|e| panic!("Attach: {e}"));
    let out = env
        .cri()
        .block_on(stream::exec(&url, Some(b"hi\n"), Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{handler}: attach stream: {e}"));
    assert_eq!(out.stdout_text(), "attached hi\n", "{handler}: {out:?}");
    let st = retry(Duration::from_secs(30), || {
        let st = env.cri().container_status(&c).map_err(|e| e.to_string())?;
        (st.state == cri::ContainerState::ContainerExited as i32)
            .then_some(st.clone())
            .ok_or(format!("still {st:?}"))
    })
    .unwrap_or_else(|e| panic!("{handler}: attached container did not exit: {e}"));
    assert_eq!(st.exit_code, 0, "{handler}: {st:?}");
    env.cri()
        .remove_container(&c)
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
    remove_pod(env, &pod);
}

const MIB: u64 = 1 << 20;

/// With `shareProcessNamespace` (pod and container pid mode POD) a container sees the pause
/// container's process; with pid mode CONTAINER it sees only its own.
pub fn share_process_namespace(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    for share in [true, false] {
        let mode = if share {
            cri::NamespaceMode::Pod
        } else {
            cri::NamespaceMode::Container
        } as i32;
        let name = if share { "sharepid" } else { "ownpid" };
        let mut cfg = spec::pod(name, &env.log_dir());
        pod_namespaces(&mut cfg, |n| n.pid = mode);
        let pod = run_pod(env, cfg, handler);
        let mut ccfg = spec::container("peek", spec::SLEEPER);
        if let Some(n) = ccfg
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            n.pid = mode;
        }
        let c = start(env, &pod, &ccfg);
        let ps = exec_ok(env, &c, &["ps", "-o", "pid,args"]);
        // The pause image runs `sh -c "trap ...; sleep 2147483647 & wait"`.
        let sees_pause = ps.contains("sleep 2147483647");
        assert!(ps.contains("sleep 100000"), "{handler}: own process: {ps}");
        assert_eq!(
            sees_pause, share,
            "{handler}: pid mode {mode} (shareProcessNamespace {share}): ps shows:\n{ps}"
        );
        if share {
            // In a shared pid namespace the init's exit does not end its children by itself:
            // runc's shim kills the rest of the container, and so must hull. A second
            // container watches the first one's `sleep 100001` go when the first is stopped.
            let mut left = ccfg.clone();
            left.metadata = Some(cri::ContainerMetadata {
                name: "leaves-a-child".into(),
                attempt: 0,
            });
            left.command = ["sh", "-c", "trap 'exit 0' TERM; sleep 100001 & wait"]
                .map(String::from)
                .to_vec();
            let first = start(env, &pod, &left);
            let children = |env: &CriEnv| exec_ok(env, &c, &["ps", "-o", "args"]);
            assert!(children(env).contains("sleep 100001"), "{handler}");
            env.cri()
                .stop_container(&first, 10)
                .unwrap_or_else(|e| panic!("StopContainer: {e}"));
            retry(Duration::from_secs(10), || {
                let ps = children(env);
                (!ps.contains("sleep 100001")).then_some(()).ok_or(ps)
            })
            .unwrap_or_else(|ps| {
                panic!("{handler}: the stopped container's child lives on:\n{ps}")
            });
            env.cri()
                .remove_container(&first)
                .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
        }
        stop_remove_ok(env, &c);
        remove_pod(env, &pod);
    }
}

/// The CPU time (ns) and working set (bytes) in one ContainerStats.
fn usage(s: &cri::ContainerStats) -> (u64, u64) {
    (
        s.cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map_or(0, |v| v.value),
        s.memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value),
    )
}

/// ContainerStats and ListContainerStats of a busy container: CPU time that grows, a working
/// set, the writable layer's usage; PodSandboxStats of its pod (in a pod cgroup, as kubelet
/// makes them): the pod's network counters.
pub fn container_stats(env: &CriEnv, handler: &str) {
    env.pull_busybox();
    let mut cfg = spec::pod("stats", &env.log_dir());
    let parent = format!("hull-test-pod-{}-{handler}", std::process::id());
    cfg.linux.get_or_insert_with(Default::default).cgroup_parent = format!("/{parent}");
    let pod = run_pod(env, cfg, handler);
    let busy = start(
        env,
        &pod,
        &spec::container("busy", &["sh", "-c", "while :; do :; done"]),
    );
    let first = retry(Duration::from_secs(30), || {
        let s = env
            .cri()
            .container_stats(&busy)
            .map_err(|e| e.to_string())?;
        let (cpu, mem) = usage(&s);
        (cpu > 0 && mem > 0)
            .then_some((cpu, mem))
            .ok_or(format!("{s:?}"))
    })
    .unwrap_or_else(|e| panic!("{handler}: ContainerStats without CPU or memory: {e}"));
    std::thread::sleep(Duration::from_secs(1));
    let s = env
        .cri()
        .container_stats(&busy)
        .unwrap_or_else(|e| panic!("{handler}: ContainerStats: {e}"));
    let second = usage(&s);
    eprintln!("{handler}: busy container: (cpu ns, working set bytes) {first:?} then {second:?}");
    assert!(
        second.0 > first.0 + 100_000_000,
        "{handler}: a busy loop used {} ns of CPU in a second",
        second.0 - first.0
    );
    let list = env
        .cri()
        .list_container_stats(&pod.id)
        .unwrap_or_else(|e| panic!("{handler}: ListContainerStats: {e}"));
    let mine: Vec<_> = list
        .iter()
        .filter(|s| s.attributes.as_ref().map(|a| a.id.as_str()) == Some(busy.as_str()))
        .collect();
    assert_eq!(mine.len(), 1, "{handler}: ListContainerStats {list:?}");
    let (cpu, mem) = usage(mine[0]);
    assert!(
        cpu >= second.0 && mem > 0,
        "{handler}: ListContainerStats {:?}",
        mine[0]
    );
    // The writable layer's usage, after 1 MiB written to it.
    exec_ok(
        env,
        &busy,
        &["dd", "if=/dev/zero", "of=/written", "bs=1024", "count=1024"],
    );
    let layer = retry(Duration::from_secs(30), || {
        let s = env
            .cri()
            .container_stats(&busy)
            .map_err(|e| e.to_string())?;
        let used = s
            .writable_layer
            .as_ref()
            .and_then(|f| f.used_bytes.as_ref())
            .map_or(0, |v| v.value);
        (used >= 1024 * 1024)
            .then_some(used)
            .ok_or(format!("{s:?}"))
    })
    .unwrap_or_else(|e| panic!("{handler}: writable layer usage below 1 MiB: {e}"));
    // The pod's network counters (kubelet's pod network stats), after a few pings out.
    exec_ok(
        env,
        &busy,
        &[
            "sh",
            "-c",
            "ping -c 3 -W 1 $(ip route | awk '/^default/ {print $3}') >/dev/null",
        ],
    );
    let s = env.cri().pod_stats(&pod.id);
    remove_pod(env, &pod);
    remove_cgroup_parent(&parent);
    let s = s.unwrap_or_else(|e| panic!("{handler}: PodSandboxStats: {e}"));
    let linux = s.linux.as_ref().expect("linux pod stats");
    let net = linux
        .network
        .as_ref()
        .and_then(|n| n.default_interface.as_ref())
        .unwrap_or_else(|| panic!("{handler}: PodSandboxStats without a network: {s:?}"));
    let bytes = |v: &Option<cri::UInt64Value>| v.as_ref().map_or(0, |v| v.value);
    let pod_mem = linux
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value);
    eprintln!(
        "{handler}: writable layer {layer} bytes; pod {} rx {} tx {} bytes, working set {pod_mem}",
        net.name,
        bytes(&net.rx_bytes),
        bytes(&net.tx_bytes)
    );
    assert_eq!(net.name, "eth0", "{handler}");
    assert!(
        bytes(&net.rx_bytes) >= 3 * 84 && bytes(&net.tx_bytes) >= 3 * 84,
        "{handler}: three pings each way: {net:?}"
    );
    assert!(pod_mem > 0, "{handler}: the pod's working set: {linux:?}");
}

/// Remove the test's pod cgroup `/<name>` from every hierarchy (what kubelet would do).
fn remove_cgroup_parent(name: &str) {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(name)];
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        dirs.push(e.path().join(name));
    }
    for d in dirs {
        if d.exists() {
            std::fs::remove_dir(&d).unwrap_or_else(|e| panic!("rmdir {}: {e}", d.display()));
        }
    }
}
