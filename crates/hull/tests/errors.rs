//! End-to-end: bad input ends with one readable error line, a non-zero status, and no leftovers.

mod common;

use common::{assert_one_line_error, Env};

#[test]
fn missing_command_in_rootfs() {
    let env = Env::new("nocmd", "");
    let out = env.run(&["--", "no-such-command", "x"]);
    assert_one_line_error(&out, "no-such-command");
}

#[test]
fn missing_kernel() {
    let env = Env::new("nokernel", "[assets]\nkernel = \"/nonexistent/vmlinux\"\n");
    let out = env.run(&["--", "true"]);
    assert_one_line_error(&out, "/nonexistent/vmlinux");
}

#[test]
fn kernel_that_is_not_a_pvh_vmlinux() {
    // What an old install left behind: a bzImage where an ELF vmlinux with a PVH note belongs.
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("vmlinuz");
    let mut bzimage = vec![0u8; 4096];
    bzimage[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&old, bzimage).expect("write");
    let env = Env::new(
        "oldkernel",
        &format!("[assets]\nkernel = \"{}\"\n", old.display()),
    );
    let out = env.run(&["--", "true"]);
    assert_one_line_error(&out, &old.display().to_string());
    let err = common::stderr(&out);
    assert!(
        err.contains("not an ELF file") && err.contains("hull assets build"),
        "{err}"
    );
}

#[test]
fn corrupt_initrd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("initrd.img");
    std::fs::write(&bad, vec![0x5a; 4096]).expect("write");
    let env = Env::new(
        "badinitrd",
        &format!("[assets]\ninitrd = \"{}\"\n", bad.display()),
    );
    let out = env.run(&["--", "true"]);
    assert_one_line_error(&out, "initrd.img");
}

#[test]
fn missing_qemu() {
    let env = Env::new(
        "noqemu",
        "[hypervisor]\nqemu = \"/nonexistent/qemu-system-x86_64\"\n",
    );
    let out = env.run(&["--", "true"]);
    assert_one_line_error(&out, "qemu");
}

#[test]
fn missing_vsock_backend() {
    let env = Env::new(
        "novsock",
        "[vsock]\nmode = \"hybrid\"\nvhost_device_vsock = \"/nonexistent/vhost-device-vsock\"\n",
    );
    let out = env.run(&["--", "true"]);
    assert_one_line_error(&out, "vhost-device-vsock");
}

#[test]
fn malformed_config_toml() {
    let env = Env::new("badtoml", "[hypervisor]\ncpus = \"many\"\n");
    let out = env.run(&["--", "true"]);
    assert_one_line_error(&out, "cpus");
}

#[test]
fn malformed_bundle_config() {
    let env = Env::new("badbundle", "");
    let bundle = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(bundle.path().join("rootfs")).expect("rootfs");
    std::fs::write(bundle.path().join("config.json"), "{ \"ociVersion\": 1, ").expect("write");
    let b = bundle.path().to_string_lossy().into_owned();
    let out = env.hull(&["run", "--bundle", &b]).output().expect("spawn");
    env.assert_clean();
    assert_one_line_error(&out, "config.json");
}

#[test]
fn guest_that_never_answers_times_out_with_console_tail() {
    // A valid initrd whose /init never starts an agent: it prints a line and sleeps.
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    common::make_rootfs(&tree);
    nix::sys::stat::mknod(
        &tree.join("dev/console"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(5, 1),
    )
    .expect("mknod console");
    std::fs::write(
        tree.join("init"),
        "#!/bin/sh\necho silent-init-here\nexec sleep 1000\n",
    )
    .expect("init");
    std::fs::set_permissions(
        tree.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let initrd = dir.path().join("silent.img");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            tree.display(),
            initrd.display()
        ))
        .status()
        .expect("cpio");
    assert!(status.success());
    let env = Env::new(
        "silent",
        &format!(
            "[assets]\ninitrd = \"{}\"\n[hypervisor]\nboot_timeout_secs = 4\n",
            initrd.display()
        ),
    );
    let out = env.run(&["--", "true"]);
    assert_one_line_error(&out, "did not answer");
    assert!(
        common::stderr(&out).contains("silent-init-here"),
        "no console tail: {}",
        common::stderr(&out)
    );
}
