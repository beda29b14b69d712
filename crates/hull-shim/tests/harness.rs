//! Proves the end-to-end harness (tests/common) with containerd's stock runc runtime: a private
//! containerd comes up, imports the busybox image, runs containers, and leaves nothing behind.

mod common;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{host, stderr, stdout, PrivateContainerd, BUSYBOX, RUNC_RUNTIME};

#[test]
fn runc_exit_code_stdin_and_no_leftovers() {
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();

    let id = cd.id("runc-1");
    let out = cd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNC_RUNTIME,
        BUSYBOX,
        &id,
        "echo",
        "hi",
    ]);
    assert!(out.status.success(), "echo failed: {}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");

    let out = cd.ctr(&["run", "--rm", BUSYBOX, &id, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));

    let cat = cd.id("runc-cat");
    let out = cd.ctr_input(&["run", "--rm", BUSYBOX, &cat, "cat"], b"hi\n");
    assert!(out.status.success(), "cat failed: {}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");

    // The image is what make-image.sh promises: users, /tmp, PATH, Cmd ["sh"].
    let out = cd.ctr_input(
        &["run", "--rm", BUSYBOX, &id],
        b"id -un; ls -ld /tmp; echo $PATH\n",
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "stdout: {text}\nstderr: {}", stderr(&out));
    assert_eq!(lines[0], "root");
    assert!(lines[1].starts_with("drwxrwxrwt"), "/tmp is {}", lines[1]);
    assert_eq!(
        lines[2],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );

    assert_eq!(cd.leftovers(), Vec::<String>::new());
    assert_eq!(cd.stop(), Vec::<String>::new());
}

#[test]
fn leftovers_see_a_running_container_and_stop_removes_it() {
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();
    let id = cd.id("runc-detached");
    cd.ctr_ok(&["run", "-d", BUSYBOX, &id, "sleep", "1000"]);
    assert_eq!(cd.task_status(&id).as_deref(), Some("RUNNING"));

    let left = cd.leftovers();
    let dir = cd.dir().to_path_buf();
    for what in [
        format!("container {}/{id} still exists", common::NAMESPACE),
        "containerd-shim".to_string(),
        "sleep 1000".to_string(),
        format!("mount {}", dir.display()),
    ] {
        assert!(
            left.iter().any(|l| l.contains(&what)),
            "leftovers do not mention {what:?}: {left:#?}"
        );
    }

    // stop() deletes the task and container gracefully: nothing is left to report.
    assert_eq!(cd.stop(), Vec::<String>::new());
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!Path::new("/run/containerd/runc/hull-test")
        .join(&id)
        .exists());
    assert_eq!(host::mounts_under(&dir), Vec::<String>::new());
}

#[test]
fn ctr_timeout_kills_ctr_and_stop_cleans_up() {
    let Some(cd) = PrivateContainerd::start() else {
        return;
    };
    cd.import_busybox();
    let id = cd.id("runc-hang");
    let args = ["run", "--rm", BUSYBOX, &id, "sleep", "1000"];
    let started = Instant::now();
    let hung = std::panic::catch_unwind(AssertUnwindSafe(|| {
        cd.ctr_with(&args, None, Duration::from_secs(2))
    }));
    let msg = hung.expect_err("ctr should have timed out");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("timed out"), "unexpected panic: {msg}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // ctr is gone (killed by pid), its FIFOs stay in our directory, the container remains...
    let left = cd.leftovers();
    assert!(
        !left
            .iter()
            .any(|l| l.contains(" ctr ") || l.contains("(ctr)")),
        "{left:#?}"
    );
    assert!(left.iter().any(|l| l.contains("still exists")), "{left:#?}");
    // ...until stop() deletes it.
    assert_eq!(cd.stop(), Vec::<String>::new());
}

#[test]
fn image_build_is_reproducible_and_cached() {
    let busybox = Path::new("/bin/busybox").exists();
    if !common::require::require(busybox, "/bin/busybox (busybox-static)") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-image.sh");
    let build = |name: &str| {
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg(tmp.path().join(name))
            .output()
            .expect("run make-image.sh");
        assert!(out.status.success(), "make-image.sh: {}", stderr(&out));
        stdout(&out)
    };
    let first = build("a.tar");
    assert!(first.contains(BUSYBOX), "{first}");
    build("b.tar");
    let a = std::fs::read(tmp.path().join("a.tar")).expect("read a.tar");
    let b = std::fs::read(tmp.path().join("b.tar")).expect("read b.tar");
    assert!(a == b, "two builds of the same busybox differ");
    assert!(build("a.tar").contains("up to date"));
    // Nothing but the archives and their stamps: no temp files.
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.tar", "a.tar.stamp", "b.tar", "b.tar.stamp"]);
}

#[test]
fn leftovers_include_a_virtiofsd_pid_file_naming_a_run_directory() {
    if !common::require::require_root() {
        return;
    }
    let run_dir = Path::new(common::TESTS_ROOT).join(format!("pidfile-{}", std::process::id()));
    let name = format!(
        "{}.virtiofsd.sock.pid",
        run_dir.to_string_lossy().replace('/', ".")
    );
    let made_dir = !Path::new(host::VIRTIOFSD_PID_DIR).exists();
    std::fs::create_dir_all(host::VIRTIOFSD_PID_DIR).expect("mkdir /run/virtiofsd");
    let pid_file = Path::new(host::VIRTIOFSD_PID_DIR).join(name);
    std::fs::write(&pid_file, b"1\n").expect("write pid file");
    let found = host::virtiofsd_pid_files(&run_dir);
    // A sibling whose name merely starts the same is not ours.
    let other = host::virtiofsd_pid_files(Path::new(&format!("{}0", run_dir.display())));
    std::fs::remove_file(&pid_file).expect("remove pid file");
    if made_dir {
        let _ = std::fs::remove_dir(host::VIRTIOFSD_PID_DIR);
    }
    assert_eq!(found, vec![pid_file]);
    assert_eq!(other, Vec::<std::path::PathBuf>::new());
}

#[test]
fn created_id_skips_flags_and_their_values() {
    use common::created_id;
    let id = |a: &[&str]| created_id(a);
    assert_eq!(
        id(&["run", "--rm", "img", "c1", "sh"]).as_deref(),
        Some("c1")
    );
    assert_eq!(
        id(&[
            "run",
            "--rm",
            "--runtime",
            "io.containerd.hull.v2",
            "-t",
            "img",
            "c2"
        ])
        .as_deref(),
        Some("c2")
    );
    assert_eq!(
        id(&["run", "--env=A=B", "-d", "img", "c3"]).as_deref(),
        Some("c3")
    );
    assert_eq!(
        id(&["c", "create", "--label", "a=b", "img", "c4"]).as_deref(),
        Some("c4")
    );
    assert_eq!(id(&["tasks", "ls"]), None);
    assert_eq!(id(&["run", "img"]), None);
}

#[test]
fn fifo_dir_goes_after_the_subcommand() {
    use common::with_fifo_dir;
    assert_eq!(
        with_fifo_dir(&["run", "--rm", "img", "c1"], "/d"),
        ["run", "--fifo-dir", "/d", "--rm", "img", "c1"]
    );
    assert_eq!(
        with_fifo_dir(&["tasks", "exec", "--exec-id", "e", "c1", "sh"], "/d"),
        [
            "tasks",
            "exec",
            "--fifo-dir",
            "/d",
            "--exec-id",
            "e",
            "c1",
            "sh"
        ]
    );
    assert_eq!(
        with_fifo_dir(&["run", "--fifo-dir=/x", "i", "c"], "/d"),
        ["run", "--fifo-dir=/x", "i", "c"]
    );
    assert_eq!(with_fifo_dir(&["tasks", "ls"], "/d"), ["tasks", "ls"]);
}

#[test]
fn host_helpers() {
    assert!(host::names_path("/run/hull/t-1", "/run/hull/t-1"));
    assert!(host::names_path(
        "path=/run/hull/t-1/vsock.sock,x",
        "/run/hull/t-1"
    ));
    assert!(host::names_path("a=/run/hull/t-1,b", "/run/hull/t-1"));
    assert!(!host::names_path("/run/hull/t-12/x", "/run/hull/t-1"));
    assert!(host::names_path(
        "/run/hull/t-12 /run/hull/t-1",
        "/run/hull/t-1"
    ));
    assert_eq!(host::unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
    assert_eq!(host::unescape_mountinfo("/plain"), "/plain");
    // This process is never its own leftover, whatever its command line names.
    let me = std::process::id() as i32;
    assert!(host::owned_processes(&["/".into()], &[])
        .iter()
        .all(|p| p.pid != me));
}
