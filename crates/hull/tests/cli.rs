//! End-to-end: `hull check` reports the accelerator it chose and why; `hull env` prints the
//! effective configuration and versions.

mod common;

use common::{stdout, Env};

#[test]
fn check_names_the_accelerator_and_helpers() {
    let env = Env::new("check", "");
    let out = env.hull(&["check"]).output().expect("spawn");
    let s = stdout(&out);
    assert!(out.status.success(), "{s}{}", common::stderr(&out));
    let accel = s
        .lines()
        .find(|l| l.starts_with("accelerator"))
        .expect("accelerator line");
    assert!(
        accel.contains(" tcg (") || accel.contains(" kvm ("),
        "{accel}"
    );
    for name in ["qemu", "guest assets", "vsock", "shared fs"] {
        assert!(
            s.lines().any(|l| l.starts_with(name) && l.contains(" ok ")),
            "{name} not ok in:\n{s}"
        );
    }
}

#[test]
fn check_fails_when_a_helper_is_missing() {
    let env = Env::new(
        "checkmissing",
        "[shared_fs]\nvirtiofsd = \"/nonexistent/virtiofsd\"\n",
    );
    let out = env.hull(&["check"]).output().expect("spawn");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("shared fs") && l.contains("FAIL")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn env_prints_effective_config_and_versions() {
    let env = Env::new("env", "[hypervisor]\ncpus = 3\n");
    let out = env.hull(&["env"]).output().expect("spawn");
    let s = stdout(&out);
    assert!(out.status.success());
    assert!(s.contains("# qemu: QEMU emulator version"), "{s}");
    assert!(s.contains("[hypervisor]") && s.contains("cpus = 3"), "{s}");
    let defaults = env.hull(&["env", "--default"]).output().expect("spawn");
    assert!(
        stdout(&defaults).contains("# Accelerator:"),
        "defaults lost their comments"
    );
}
