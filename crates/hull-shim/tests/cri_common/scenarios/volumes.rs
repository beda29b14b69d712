//! Pod volumes as kubelet hands them to CRI: every volume is a bind mount of a directory
//! kubelet prepared under `<root>/pods/<uid>/volumes/<plugin>/<name>` before RunPodSandbox
//! (here the test plays kubelet). hostPath binds, memory emptyDir and /dev/shm as tmpfs of
//! the right size, configmap/secret updates in kubelet's AtomicWriter order, and what a VM
//! has to refuse. Each runs with runc (the reference) and hull; the results must match.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

/// A kubelet-like volume directory of pod `uid`: `<env dir>/pods/<uid>/volumes/<plugin>/<name>`.
fn volume_dir(env: &CriEnv, uid: &str, plugin: &str, name: &str) -> PathBuf {
    let d = env
        .dir()
        .join("pods")
        .join(uid)
        .join("volumes")
        .join(plugin)
        .join(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    d
}

fn uid(pod: &cri::PodSandboxConfig) -> String {
    pod.metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default()
}

/// A CRI mount of `host` at `path`.
fn mount(path: &str, host: &Path, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: path.to_string(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    }
}

/// A sleeper container `name` with `mounts`.
fn with_mounts(name: &str, mounts: Vec<cri::Mount>) -> cri::ContainerConfig {
    let mut c = spec::container(name, spec::SLEEPER);
    c.mounts = mounts;
    c
}

/// ExecSync of `sh -c script`: (exit code, stdout, stderr).
fn sh(env: &CriEnv, id: &str, script: &str) -> (i32, String, String) {
    let r = env
        .cri()
        .exec_sync(id, &["sh", "-c", script], 60)
        .unwrap_or_else(|e| panic!("ExecSync {script:?}: {e}\n{}", env.log_tail()));
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).trim().to_string(),
        String::from_utf8_lossy(&r.stderr).trim().to_string(),
    )
}

/// Poll `sh -c script` in `id` until its stdout is `want` (10 s).
fn until_output(env: &CriEnv, id: &str, script: &str, want: &str) -> Result<(), String> {
    retry(Duration::from_secs(10), || {
        let (code, out, err) = sh(env, id, script);
        (code == 0 && out == want)
            .then_some(())
            .ok_or(format!("{script}: exit {code} out {out:?} err {err:?}"))
    })
}

/// A tmpfs the test mounted (as kubelet does for medium: Memory), unmounted when dropped.
struct HostTmpfs(PathBuf);

impl HostTmpfs {
    fn mount(dir: &Path, size: &str) -> HostTmpfs {
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", dir.display()));
        HostTmpfs(dir.to_path_buf())
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `dir` bound on itself and made shared (as a kubelet host's / is), unmounted when dropped.
struct SharedBind(HostTmpfs);

impl SharedBind {
    fn new(dir: &Path) -> SharedBind {
        use nix::mount::{mount, MsFlags};
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .unwrap_or_else(|e| panic!("bind {}: {e}", dir.display()));
        let guard = SharedBind(HostTmpfs(dir.to_path_buf()));
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("make {} shared: {e}", dir.display()));
        guard
    }
}

/// hostPath binds of a directory and of a file, read-write and read-only, with each of
/// `handlers`: host writes are seen in the container, container writes on the host, and a
/// write to a read-only bind fails with EROFS; everything the container reports is the same
/// with every handler.
pub fn host_path(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let mut seen = Vec::new();
    for &handler in handlers {
        let cfg = spec::pod("hostpath", &env.log_dir());
        let dir = volume_dir(env, &uid(&cfg), "kubernetes.io~host-path", "data");
        let file = dir.with_file_name("single-file");
        std::fs::write(dir.join("in-dir"), "host1\n").expect("write");
        std::fs::write(&file, "file1\n").expect("write");
        let pod = run_pod(env, cfg, handler);
        let id = start(
            env,
            &pod,
            &with_mounts(
                "hp",
                vec![
                    mount("/hp-rw", &dir, false),
                    mount("/hp-ro", &dir, true),
                    mount("/hpf-rw", &file, false),
                    mount("/hpf-ro", &file, true),
                ],
            ),
        );
        let mut got = Vec::new();
        got.push(sh(
            env,
            &id,
            "cat /hp-rw/in-dir /hp-ro/in-dir /hpf-rw /hpf-ro",
        ));
        // Host -> container: in place, and a new file.
        std::fs::write(dir.join("in-dir"), "host2\n").expect("write");
        std::fs::write(dir.join("new"), "new\n").expect("write");
        std::fs::write(&file, "file2\n").expect("write");
        until_output(
            env,
            &id,
            "cat /hp-ro/in-dir /hp-rw/new /hpf-ro",
            "host2\nnew\nfile2",
        )
        .unwrap_or_else(|e| panic!("{handler}: host writes not seen: {e}"));
        // Container -> host.
        got.push(sh(
            env,
            &id,
            "echo c1 > /hp-rw/from-c && echo c2 > /hpf-rw && echo ok",
        ));
        assert_eq!(
            std::fs::read_to_string(dir.join("from-c")).ok().as_deref(),
            Some("c1\n"),
            "{handler}: a file the container made"
        );
        assert_eq!(
            std::fs::read_to_string(&file).ok().as_deref(),
            Some("c2\n"),
            "{handler}: the bound file the container wrote"
        );
        // Read-only binds refuse writes the way the kernel says it.
        got.push(sh(env, &id, "echo x > /hp-ro/x"));
        got.push(sh(env, &id, "echo x > /hpf-ro"));
        got.push(sh(env, &id, "touch /hp-ro/in-dir"));
        eprintln!("{handler}: {got:?}");
        seen.push((handler, got));
        stop_remove_ok(env, &id);
        remove_pod(env, &pod);
    }
    let (first, want) = &seen[0];
    for (h, got) in &seen {
        assert_eq!(got, want, "{h} differs from {first}");
    }
    assert!(
        want[2].2.contains("Read-only file system"),
        "read-only bind: {:?}",
        want[2]
    );
}

/// The pod's /dev/shm and a memory emptyDir (8Mi, kubelet's tmpfs) shared by two containers,
/// and a disk emptyDir, with each of `handlers`: the same sizes in `df`, what one container
/// writes the other reads, and writing 9 MiB into the 8 MiB emptyDir fails with ENOSPC.
pub fn memory_empty_dir_and_shm(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let mut seen = Vec::new();
    for &handler in handlers {
        let cfg = spec::pod("emptydir", &env.log_dir());
        let mem = volume_dir(env, &uid(&cfg), "kubernetes.io~empty-dir", "mem");
        let disk = volume_dir(env, &uid(&cfg), "kubernetes.io~empty-dir", "disk");
        let _tmpfs = HostTmpfs::mount(&mem, "8m");
        let pod = run_pod(env, cfg, handler);
        let mounts = vec![mount("/mem", &mem, false), mount("/disk", &disk, false)];
        let a = start(env, &pod, &with_mounts("a", mounts.clone()));
        let b = start(env, &pod, &with_mounts("b", mounts));
        let size = "df -k /dev/shm /mem | awk 'NR>1 {print $2}' | tr '\\n' ' '";
        let mut got = vec![sh(env, &a, size), sh(env, &b, size)];
        got.push(sh(
            env,
            &a,
            "echo from-a > /mem/x && echo from-a > /disk/x && echo shm-a > /dev/shm/s && echo ok",
        ));
        got.push(sh(env, &b, "cat /mem/x /disk/x /dev/shm/s"));
        // A tmpfs in the container's own kernel, not the host's over virtio-fs (whose statfs
        // would show the same size).
        got.push(sh(
            env,
            &b,
            "awk '$2==\"/mem\" || $2==\"/dev/shm\" {print $2, $3}' /proc/mounts | sort",
        ));
        // With hull the pod's memory is the guest's: the host tmpfs stays empty.
        let on_host = mem.join("x").exists();
        assert_eq!(
            on_host,
            handler == RUNC,
            "{handler}: /mem/x on the host tmpfs"
        );
        let (code, _, err) = sh(env, &b, "dd if=/dev/zero of=/mem/big bs=1M count=9");
        got.push((
            code,
            String::new(),
            err.lines().next().unwrap_or_default().into(),
        ));
        // The space comes back when the file goes.
        got.push(sh(
            env,
            &a,
            "rm /mem/big && dd if=/dev/zero of=/mem/big bs=1M count=7 2>/dev/null && echo ok",
        ));
        eprintln!("{handler}: {got:?}");
        seen.push((handler, got));
        remove_pod(env, &pod);
    }
    let (first, want) = &seen[0];
    for (h, got) in &seen {
        assert_eq!(got, want, "{h} differs from {first}");
    }
    assert_eq!(
        want[0].1, "65536 8192",
        "/dev/shm and the memory emptyDir sizes"
    );
    assert_eq!(
        want[4].1, "/dev/shm tmpfs\n/mem tmpfs",
        "tmpfs mounts in the container"
    );
    assert!(
        want[5].0 != 0 && want[5].2.contains("No space left on device"),
        "9 MiB into 8 MiB: {:?}",
        want[5]
    );
}

/// kubelet's AtomicWriter, as it updates a configmap volume `dir` to `version` with `keys`:
/// a new timestamped directory written completely, `..data_tmp` renamed over `..data`, the
/// user-visible symlinks made, the old directory removed.
pub fn atomic_write(dir: &Path, version: u32, keys: &[(&str, &str)]) {
    let ts = format!("..2026_11_25_15_00_00.{version:06}");
    let new = dir.join(&ts);
    std::fs::create_dir(&new).expect("mkdir version");
    for (k, v) in keys {
        std::fs::write(new.join(k), v).expect("write key");
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    symlink(&ts, &tmp).expect("symlink ..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("rename ..data");
    for (k, _) in keys {
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{k}"), &link).expect("user-visible symlink");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).expect("remove old version");
    }
}

/// Shell text: forever read /cfg/a, /cfg/b and /cfg/a again through the user-visible names;
/// when both reads of a agree (no update came in between), log the pair `a b` with the
/// uptime when it was first seen. A torn pair (a != b) is what a non-atomic update shows.
const WATCHER: &str = r#"last=""
while :; do
  a1=$(cat /cfg/a 2>/dev/null); b=$(cat /cfg/b 2>/dev/null); a2=$(cat /cfg/a 2>/dev/null)
  if [ -n "$a1" ] && [ -n "$b" ] && [ "$a1" = "$a2" ] && [ "$a1 $b" != "$last" ]; then
    last="$a1 $b"; echo "$last $(cut -d' ' -f1 /proc/uptime)" >> /tmp/seen
  fi
done"#;

const UPDATES: u32 = 20;

/// A configmap updated `UPDATES` times by kubelet's AtomicWriter while a watcher in the
/// container reads two of its keys, with each of `handlers`: the watcher never sees a torn
/// pair and sees the last version within 2 s; a secret is readable in the container and, with
/// hull, never under the sandbox's run directory on the host.
pub fn configmap_updates(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    for &handler in handlers {
        let cfg = spec::pod("configmap", &env.log_dir());
        let cm = volume_dir(env, &uid(&cfg), "kubernetes.io~configmap", "cfg");
        atomic_write(&cm, 0, &[("a", "0"), ("b", "0")]);
        let secret = volume_dir(env, &uid(&cfg), "kubernetes.io~secret", "tok");
        let token = format!("s3cr3t-{}-{handler}", std::process::id());
        atomic_write(&secret, 0, &[("token", &token)]);
        // As kubelet writes a secret for a pod with fsGroup 3000 and defaultMode 0440.
        let file = secret.join("..data/token");
        std::os::unix::fs::lchown(&file, Some(0), Some(3000)).expect("chown token");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o440)).expect("chmod");
        let pod = run_pod(env, cfg, handler);
        let mut c = spec::container("watch", &["sh", "-c", WATCHER]);
        c.mounts = vec![mount("/cfg", &cm, true), mount("/secret", &secret, true)];
        let id = start(env, &pod, &c);
        assert_eq!(
            sh(env, &id, "cat /secret/token").1,
            token,
            "{handler}: secret"
        );
        assert_eq!(
            sh(env, &id, "stat -L -c '%g %a' /secret/token").1.trim(),
            "3000 440",
            "{handler}: the secret's group and mode (fsGroup, defaultMode)"
        );
        let (_, links, _) = sh(env, &id, "readlink /cfg/a; readlink /cfg/..data");
        assert_eq!(
            links, "..data/a\n..2026_11_25_15_00_00.000000",
            "{handler}: kubelet's layout, symlinks kept"
        );
        until_output(env, &id, "tail -n1 /tmp/seen | cut -d' ' -f1,2", "0 0")
            .unwrap_or_else(|e| panic!("{handler}: the watcher never saw the first version: {e}"));
        for v in 1..UPDATES {
            let val = v.to_string();
            atomic_write(&cm, v, &[("a", &val), ("b", &val)]);
            // Pacing, not synchronisation: the watcher should see many versions.
            std::thread::sleep(Duration::from_millis(150));
        }
        let before = sh(env, &id, "cut -d' ' -f1 /proc/uptime").1;
        let before: f64 = before.parse().expect("uptime");
        let last = UPDATES.to_string();
        atomic_write(&cm, UPDATES, &[("a", &last), ("b", &last)]);
        let want = format!("{last} {last}");
        let line = retry(Duration::from_secs(20), || {
            let (_, out, _) = sh(env, &id, "cat /tmp/seen");
            out.lines()
                .find(|l| l.starts_with(&format!("{want} ")))
                .map(str::to_string)
                .ok_or(format!("not seen yet; seen:\n{out}"))
        })
        .unwrap_or_else(|e| panic!("{handler}: final version: {e}"));
        let seen_at: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("uptime in line");
        let (_, all, _) = sh(env, &id, "cat /tmp/seen");
        let torn: Vec<&str> = all
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() < 2 || f[0] != f[1]
            })
            .collect();
        let versions = all.lines().count();
        let latency = seen_at - before;
        eprintln!(
            "{handler}: watcher saw {versions} versions, last one {latency:.2} s after the update (upper bound)"
        );
        assert_eq!(torn, Vec::<&str>::new(), "{handler}: torn reads");
        assert!(
            latency < 2.0,
            "{handler}: last version seen after {latency:.2} s"
        );
        if handler == HULL {
            let found = secret_on_host(env, &pod.id, &token);
            assert_eq!(found, Vec::<String>::new(), "secret under the run dir");
            assert_eq!(watch_threads(&pod.id), 2, "one watch per synced volume");
        }
        stop_remove(env, &id, 0);
        if handler == HULL {
            assert_eq!(
                watch_threads(&pod.id),
                0,
                "the watches end with their last container"
            );
        }
        remove_pod(env, &pod);
    }
}

/// The shim serving pod `pod` (its command line names the pod id).
fn shim_pid(pod: &str) -> Option<i32> {
    crate::common::host::processes()
        .into_iter()
        .find(|p| {
            p.args.iter().any(|a| a.contains("containerd-shim-hull-v2"))
                && p.args.iter().any(|a| a == pod)
        })
        .map(|p| p.pid)
}

/// Threads of the pod's shim that watch a volume.
fn watch_threads(pod: &str) -> usize {
    let Some(pid) = shim_pid(pod) else {
        return 0;
    };
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "volume-watch")
        })
        .count()
}

/// hull's run directory root, from `$HULL_CONFIG` (default /run/hull).
fn hull_run_root() -> PathBuf {
    let text = std::env::var("HULL_CONFIG")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "run_dir").then(|| PathBuf::from(v.trim().trim_matches('"')))
        })
        .unwrap_or_else(|| PathBuf::from("/run/hull"))
}

/// Every file under the pod's run directory, seen from inside the shim's mount namespace
/// (where its binds are), that holds `needle`.
fn secret_on_host(env: &CriEnv, pod: &str, needle: &str) -> Vec<String> {
    let pid = shim_pid(pod).unwrap_or_else(|| panic!("no shim for {pod}\n{}", env.log_tail()));
    let root = PathBuf::from(format!("/proc/{pid}/root"))
        .join(hull_run_root().strip_prefix("/").unwrap_or(Path::new("")))
        .join(pod);
    assert!(root.is_dir(), "{} is not there", root.display());
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() {
                todo.push(p);
            } else if ft.is_file() {
                let hit = std::fs::read(&p)
                    .is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle.as_bytes()));
                if hit {
                    found.push(p.display().to_string());
                }
            }
        }
    }
    found
}

/// CreateContainer, then StartContainer, which must fail (containerd 1.6 creates the task,
/// and so asks the shim, only at StartContainer); the container is removed. The error.
fn refused(env: &CriEnv, pod: &Pod, c: &cri::ContainerConfig) -> String {
    let id = env
        .create_container(&pod.id, c, &pod.config)
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"));
    let e = env
        .cri()
        .start_container(&id)
        .expect_err("StartContainer must fail");
    env.cri()
        .remove_container(&id)
        .unwrap_or_else(|e| panic!("RemoveContainer after a failed start: {e}"));
    e.message().to_string()
}

/// What a VM cannot do is refused with one clear error when the task is created, while the pod's
/// other container keeps running: bidirectional propagation, a configmap over the size the
/// guest takes. Host-to-container propagation (rslave) is accepted.
pub fn volumes_refused(env: &CriEnv) {
    env.pull_busybox();
    let cfg = spec::pod("refused", &env.log_dir());
    let host = volume_dir(env, &uid(&cfg), "kubernetes.io~host-path", "h");
    let big = volume_dir(env, &uid(&cfg), "kubernetes.io~configmap", "big");
    std::fs::write(big.join("huge"), vec![b'x'; 4 << 20]).expect("write");
    // containerd itself wants the source of a propagating mount on a shared mount.
    let _shared = SharedBind::new(&host);
    let pod = run_pod(env, cfg, HULL);
    let keep = start(env, &pod, &spec::container("keep", spec::SLEEPER));
    let mut m = mount("/shared", &host, false);
    m.propagation = cri::MountPropagation::PropagationBidirectional as i32;
    let e = refused(env, &pod, &with_mounts("bidi", vec![m]));
    eprintln!("bidirectional: {e}");
    assert!(
        e.contains("/shared") && e.contains("propagation"),
        "unclear error: {e}"
    );
    let e = refused(
        env,
        &pod,
        &with_mounts("big", vec![mount("/big", &big, true)]),
    );
    eprintln!("oversized: {e}");
    assert!(e.contains("bytes"), "unclear error: {e}");
    assert_eq!(watch_threads(&pod.id), 0, "a refused volume left its watch");
    let mut m = mount("/slave", &host, false);
    m.propagation = cri::MountPropagation::PropagationHostToContainer as i32;
    let slave = start(env, &pod, &with_mounts("slave", vec![m]));
    assert_eq!(state(env, &keep), cri::ContainerState::ContainerRunning);
    assert_eq!(exec_ok(env, &keep, &["echo", "alive"]).trim(), "alive");
    stop_remove_ok(env, &slave);
    env.track_ids_from_log();
    remove_pod(env, &pod);
}

/// A bind source that is gone when the task is created (containerd makes a missing hostPath
/// at CreateContainer; kubelet or the host may remove it before StartContainer), with each of
/// `handlers`: StartContainer fails with one readable error (with hull, naming the path), the
/// pod's other container keeps running, and the pod is removed without leftovers.
pub fn missing_bind_source(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    for &handler in handlers {
        let cfg = spec::pod("missing", &env.log_dir());
        let gone = volume_dir(env, &uid(&cfg), "kubernetes.io~host-path", "gone");
        let pod = run_pod(env, cfg, handler);
        let keep = start(env, &pod, &spec::container("keep", spec::SLEEPER));
        let id = env
            .create_container(
                &pod.id,
                &with_mounts("m", vec![mount("/m", &gone, false)]),
                &pod.config,
            )
            .unwrap_or_else(|e| panic!("{handler}: CreateContainer: {e}"));
        std::fs::remove_dir(&gone).expect("rmdir");
        let e = env
            .cri()
            .start_container(&id)
            .expect_err("StartContainer with a missing source must fail");
        let msg = e.message();
        eprintln!("{handler}: {msg}");
        assert!(!msg.contains('\n'), "{handler}: one line: {msg}");
        if handler == HULL {
            assert!(
                msg.contains(&*gone.to_string_lossy()) && msg.contains("does not exist"),
                "{handler}: {msg}"
            );
        }
        env.cri()
            .remove_container(&id)
            .unwrap_or_else(|e| panic!("{handler}: RemoveContainer: {e}"));
        assert_eq!(
            state(env, &keep),
            cri::ContainerState::ContainerRunning,
            "{handler}"
        );
        assert_eq!(exec_ok(env, &keep, &["echo", "alive"]).trim(), "alive");
        env.track_ids_from_log();
        remove_pod(env, &pod);
    }
}

/// HOST_TO_CONTAINER propagation of a hostPath on a shared host mount, with each of
/// `handlers`: a tmpfs the host mounts below it after the container started is seen in the
/// container, with what the host writes there.
pub fn host_to_container_propagation(env: &CriEnv, handlers: &[&str]) {
    env.pull_busybox();
    let mut seen = Vec::new();
    for &handler in handlers {
        let cfg = spec::pod("rslave", &env.log_dir());
        let host = volume_dir(env, &uid(&cfg), "kubernetes.io~host-path", "h");
        std::fs::create_dir(host.join("sub")).expect("mkdir");
        let shared = SharedBind::new(&host);
        let pod = run_pod(env, cfg, handler);
        let mut m = mount("/slave", &host, true);
        m.propagation = cri::MountPropagation::PropagationHostToContainer as i32;
        let id = start(env, &pod, &with_mounts("slave", vec![m]));
        let late = HostTmpfs::mount(&host.join("sub"), "1m");
        std::fs::write(host.join("sub/late"), "mounted later\n").expect("write");
        let got = until_output(env, &id, "cat /slave/sub/late", "mounted later");
        eprintln!("{handler}: {got:?}");
        seen.push((handler, got.is_ok()));
        stop_remove_ok(env, &id);
        remove_pod(env, &pod);
        drop(late);
        drop(shared);
    }
    for (h, ok) in &seen {
        assert!(
            ok,
            "{h}: a host mount made after the container started is not seen"
        );
    }
}
