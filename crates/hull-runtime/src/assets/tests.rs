//! Tests of `build` as a whole: the initrd for real (busybox stands in for a static agent),
//! the kernel through a pre-seeded cache (the real compile is exercised by `hull assets build`).

use std::path::{Path, PathBuf};

use super::*;

fn cfg(dir: &Path) -> AssetsConfig {
    AssetsConfig {
        kernel: dir.join("out/vmlinux"),
        initrd: dir.join("out/initrd.img"),
        kernel_source: dir.join("linux-source.tar.xz"),
        cache_dir: dir.join("cache"),
        agent: PathBuf::new(),
    }
}

fn static_agent(dir: &Path) -> Option<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    if !crate::test_support::require_file(busybox, "busybox-static") {
        return None;
    }
    let agent = dir.join("hull-agent");
    std::fs::copy(busybox, &agent).expect("copy busybox");
    Some(agent)
}

#[test]
fn initrd_is_built_once_then_up_to_date_and_follows_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(agent) = static_agent(dir.path()) else {
        return;
    };
    let c = cfg(dir.path());
    let opts = BuildOptions {
        agent: Some(agent.clone()),
        which: Which::InitrdOnly,
        ..Default::default()
    };
    let first = build(&c, &opts)
        .expect("build")
        .initrd
        .expect("initrd report");
    assert_eq!(first.outcome, Outcome::Built);
    verify_initrd(&c.initrd).expect("valid initrd");
    let again = build(&c, &opts)
        .expect("build")
        .initrd
        .expect("initrd report");
    assert_eq!(again.outcome, Outcome::UpToDate);
    assert_eq!(again.key, first.key);

    let forced = build(
        &c,
        &BuildOptions {
            force: true,
            ..opts.clone()
        },
    )
    .expect("build");
    assert_eq!(forced.initrd.expect("initrd").outcome, Outcome::Built);

    // A different agent binary is a different key.
    let mut bytes = std::fs::read(&agent).expect("read");
    bytes.push(0);
    std::fs::write(&agent, bytes).expect("write");
    let changed = build(&c, &opts)
        .expect("build")
        .initrd
        .expect("initrd report");
    assert_eq!(changed.outcome, Outcome::Built);
    assert_ne!(changed.key, first.key);
    assert_eq!(status(&c).initrd.key(), Some(changed.key.as_str()));
}

#[test]
fn dynamic_agent_is_refused_and_nothing_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path());
    let opts = BuildOptions {
        agent: Some("/bin/ls".into()),
        ..Default::default()
    };
    let msg = build(&c, &opts).expect_err("dynamic").to_string();
    assert_eq!(
        msg,
        "hull-agent at /bin/ls is dynamically linked; build it with --target x86_64-unknown-linux-musl"
    );
    assert!(!c.initrd.exists() && !c.kernel.exists());
}

#[test]
fn kernel_comes_from_the_cache_then_is_up_to_date() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path());
    std::fs::write(&c.kernel_source, b"pretend tarball").expect("write");
    let source = key::sha256_file(&c.kernel_source).expect("hash");
    let k = kernel_key(KERNEL_FRAGMENT, KERNEL_RECIPE, &source);
    let image = elf::fake_vmlinux(true);
    let cached = cached_image(&c.cache_dir, &k);
    std::fs::create_dir_all(cached.parent().expect("parent")).expect("mkdir");
    std::fs::write(&cached, &image).expect("seed cache");

    let opts = BuildOptions {
        which: Which::KernelOnly,
        ..Default::default()
    };
    let first = build(&c, &opts)
        .expect("build")
        .kernel
        .expect("kernel report");
    assert_eq!(
        (first.outcome, first.key.as_str()),
        (Outcome::FromCache, k.as_str())
    );
    assert_eq!(std::fs::read(&c.kernel).expect("installed"), image);
    let again = build(&c, &opts)
        .expect("build")
        .kernel
        .expect("kernel report");
    assert_eq!(again.outcome, Outcome::UpToDate);

    // Someone replaced the installed kernel: it is reinstalled from the cache.
    std::fs::write(&c.kernel, b"garbage").expect("clobber");
    let repaired = build(&c, &opts)
        .expect("build")
        .kernel
        .expect("kernel report");
    assert_eq!(repaired.outcome, Outcome::FromCache);
    verify_kernel(&c.kernel).expect("valid again");
}

#[test]
fn cached_kernel_without_pvh_note_is_not_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path());
    std::fs::write(&c.kernel_source, b"pretend tarball").expect("write");
    let source = key::sha256_file(&c.kernel_source).expect("hash");
    let k = kernel_key(KERNEL_FRAGMENT, KERNEL_RECIPE, &source);
    let cached = cached_image(&c.cache_dir, &k);
    std::fs::create_dir_all(cached.parent().expect("parent")).expect("mkdir");
    std::fs::write(&cached, elf::fake_vmlinux(false)).expect("seed cache");

    let opts = BuildOptions {
        which: Which::KernelOnly,
        ..Default::default()
    };
    // The bad cache entry is ignored, so a real build starts (and fails on the fake tarball).
    let msg = build(&c, &opts).expect_err("rebuild").to_string();
    assert!(msg.contains("tar -xf"), "{msg}");
    assert!(!c.kernel.exists());
}
