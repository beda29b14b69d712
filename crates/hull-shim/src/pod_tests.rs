//! Pod logic through hull-runtime's fakes (a VMM that is a sleeping child process, an agent on
//! a Unix socket, mounts that only make directories): no root, no VM.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use hull_runtime::testing::{FakeMounts, FakeVmm};
use hull_runtime::{Config, Seams};

use super::*;
use crate::events::{Event, Sink};

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl Sink for Events {
    fn send(&self, e: Event) {
        self.0.lock().expect("events").push(e);
    }
}

impl Events {
    fn exits(&self) -> Vec<(String, u32)> {
        self.0
            .lock()
            .expect("events")
            .iter()
            .filter_map(|e| match e {
                Event::Exit { id, status, .. } => Some((id.clone(), *status)),
                _ => None,
            })
            .collect()
    }
}

struct Env {
    dir: tempfile::TempDir,
    pod: Arc<Pod>,
    events: Arc<Events>,
    config: Config,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::defaults();
    config.runtime.run_dir = dir.path().join("run");
    config.shared_fs.kind = hull_runtime::config::SharedFsKind::NineP;
    let events = Arc::new(Events::default());
    let pod = Pod::with_seams(
        config.clone(),
        events.clone(),
        Box::new(|_| {
            Ok(Seams {
                vmm: Box::new(FakeVmm::default()),
                mounts: Arc::new(FakeMounts::default()),
            })
        }),
    );
    Env {
        dir,
        pod,
        events,
        config,
    }
}

/// A bundle for task `id` running `args`, in sandbox `sandbox` (None: its own).
fn bundle(e: &Env, id: &str, args: &[&str], sandbox: Option<&str>) -> std::path::PathBuf {
    let b = e.dir.path().join("bundles").join(id);
    std::fs::create_dir_all(b.join("rootfs")).expect("bundle");
    let mut spec = hull_runtime::spec::minimal(
        args.iter().map(|s| s.to_string()).collect(),
        &[],
        None,
        false,
    )
    .expect("spec");
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path("rootfs".into());
    spec.set_root(Some(root));
    if let Some(sb) = sandbox {
        spec.set_annotations(Some(
            [(SANDBOX_ID_ANNOTATION.to_string(), sb.to_string())].into(),
        ));
    }
    spec.save(b.join("config.json")).expect("save spec");
    b
}

fn create(e: &Env, id: &str, args: &[&str], sandbox: Option<&str>) -> Result<()> {
    let b = bundle(e, id, args, sandbox);
    e.pod.create(id, &b, &[], IoPaths::default())
}

fn run_dir(e: &Env, sandbox: &str) -> std::path::PathBuf {
    e.config.runtime.run_dir.join(sandbox)
}

#[test]
fn containers_come_and_go_while_the_pod_runs() {
    let e = env();
    create(&e, "pod1", &["sleep", "1000"], None).expect("sandbox task");
    e.pod.start("pod1", "").expect("start sandbox");
    create(&e, "app", &["sleep", "1000"], Some("pod1")).expect("container");
    e.pod.start("app", "").expect("start app");
    // kubelet restarts a container: kill, wait, delete, create again.
    e.pod.kill("app", "", 9, false).expect("kill");
    assert_eq!(e.pod.wait("app", "").expect("wait").status, 137);
    e.pod.delete("app", "").expect("delete");
    assert!(
        run_dir(&e, "pod1").exists(),
        "the pod's VM went with its container"
    );
    create(&e, "app", &["exit", "4"], Some("pod1")).expect("recreate");
    e.pod.start("app", "").expect("restart");
    assert_eq!(e.pod.wait("app", "").expect("wait").status, 4);
    e.pod.delete("app", "").expect("delete again");
    // The sandbox task goes last and takes the VM with it.
    e.pod.kill("pod1", "", 15, false).expect("kill sandbox");
    e.pod.wait("pod1", "").expect("wait sandbox");
    e.pod.delete("pod1", "").expect("delete sandbox");
    assert!(!run_dir(&e, "pod1").exists(), "run dir left");
    assert!(e.pod.is_empty());
    assert!(e.events.exits().contains(&("app".into(), 137)));
}

#[test]
fn bad_requests_get_their_codes() {
    let e = env();
    create(&e, "pod2", &["sleep", "1000"], None).expect("sandbox task");
    let dup = create(&e, "pod2", &["sleep", "1"], None).expect_err("dup");
    assert!(matches!(dup, ShimError::AlreadyExists(_)), "{dup:?}");
    let other = create(&e, "x", &["sleep", "1"], Some("another-pod")).expect_err("other pod");
    assert!(other.to_string().contains("another-pod"), "{other}");
    let running = e.pod.start("pod2", "").expect("start");
    assert!(running > 0);
    let twice = e.pod.start("pod2", "").expect_err("twice");
    assert!(
        matches!(twice, ShimError::FailedPrecondition(_)),
        "{twice:?}"
    );
    let busy = e.pod.delete("pod2", "").expect_err("running");
    assert!(matches!(busy, ShimError::FailedPrecondition(_)), "{busy:?}");
    let missing = e.pod.kill("nope", "", 9, false).expect_err("unknown");
    assert!(matches!(missing, ShimError::NotFound(_)), "{missing:?}");
    e.pod.kill("pod2", "", 9, false).expect("kill");
    e.pod.wait("pod2", "").expect("wait");
    e.pod.delete("pod2", "").expect("delete");
}

#[test]
fn a_dead_vm_ends_every_task_with_255_and_the_pod_is_removable() {
    let e = env();
    create(&e, "pod3", &["sleep", "1000"], None).expect("sandbox");
    e.pod.start("pod3", "").expect("start");
    create(&e, "app", &["sleep", "1000"], Some("pod3")).expect("app");
    e.pod.start("app", "").expect("start app");
    let vm = std::fs::read_to_string(run_dir(&e, "pod3").join("owner")).expect("owner");
    assert!(!vm.is_empty());
    let pids = e.pod.state().sandbox.as_ref().expect("sandbox").vm_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the fake vm");
    assert_eq!(e.pod.wait("app", "").expect("wait").status, 255);
    assert_eq!(e.pod.wait("pod3", "").expect("wait").status, 255);
    let late = create(&e, "late", &["sleep", "1"], Some("pod3")).expect_err("dead VM");
    assert!(late.to_string().contains("killed by signal 9"), "{late}");
    e.pod.delete("app", "").expect("delete app");
    e.pod.delete("pod3", "").expect("delete sandbox");
    assert!(!run_dir(&e, "pod3").exists());
}

#[test]
fn concurrent_create_exec_delete_never_deadlock() {
    let e = env();
    create(&e, "pod4", &["sleep", "1000"], None).expect("sandbox");
    e.pod.start("pod4", "").expect("start");
    let (tx, rx) = mpsc::channel();
    let bundles: Vec<_> = (0..3)
        .map(|t| {
            (0..5)
                .map(|i| {
                    let id = format!("c{t}-{i}");
                    (id.clone(), bundle(&e, &id, &["exit", "0"], Some("pod4")))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for list in bundles {
        let pod = e.pod.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for (id, b) in list {
                pod.create(&id, &b, &[], IoPaths::default())
                    .expect("create");
                pod.start(&id, "").expect("start");
                pod.wait(&id, "").expect("wait");
                pod.delete(&id, "").expect("delete");
            }
            let _ = tx.send(());
        });
    }
    // Execs into the sandbox task at the same time.
    let exec = hull_runtime::spec::minimal(vec!["exit".into(), "0".into()], &[], None, false)
        .expect("spec")
        .process()
        .clone()
        .expect("process");
    for i in 0..5 {
        let eid = format!("e{i}");
        e.pod
            .add_exec("pod4", &eid, exec.clone(), IoPaths::default())
            .expect("add exec");
        e.pod.start("pod4", &eid).expect("start exec");
        e.pod.wait("pod4", &eid).expect("wait exec");
        e.pod.delete("pod4", &eid).expect("delete exec");
    }
    drop(tx);
    for _ in 0..3 {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a worker hung or failed");
    }
    e.pod.kill("pod4", "", 9, false).expect("kill");
    e.pod.wait("pod4", "").expect("wait");
    e.pod.delete("pod4", "").expect("delete");
    assert!(!Path::new(&run_dir(&e, "pod4")).exists());
}
