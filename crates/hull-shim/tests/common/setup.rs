//! Setting up a private containerd: its directory, its config file, the PATH it (and so the
//! shims it starts) sees, and finding the binaries.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::TESTS_ROOT;

/// `name` on our PATH (or in /usr/bin, /usr/local/bin).
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A fresh `/run/hull-tests/containerd-XXXXXX`, mode 0700.
pub fn make_private_dir() -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(TESTS_ROOT)
        .expect("create /run/hull-tests");
    for _ in 0..100 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let mut n = h.finish();
        let mut suffix = String::new();
        for _ in 0..6 {
            let d = (n % 36) as u32;
            suffix.push(char::from_digit(d, 36).unwrap_or('x'));
            n /= 36;
        }
        let dir = Path::new(TESTS_ROOT).join(format!("containerd-{suffix}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
    panic!("no free directory name under {TESTS_ROOT}");
}

/// containerd 1.6 config (version 2): everything private to `dir`, only what ctr needs loaded;
/// with `cri` (the CRI plugin's own tables) the CRI plugin too.
pub fn config_toml(dir: &Path, cri: Option<&str>) -> String {
    let d = dir.display();
    let cri_disabled = if cri.is_some() {
        ""
    } else {
        "\n  \"io.containerd.grpc.v1.cri\","
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
# Not needed: the unusable snapshotters and the restart/cgroup monitors only slow startup
# (and CRI unless a test drives it).
disabled_plugins = [{cri_disabled}
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.restart",
  "io.containerd.monitor.v1.cgroups",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
    );
    if let Some(cri) = cri {
        s.push('\n');
        s.push_str(cri);
    }
    s
}

/// containerd's PATH: the shim under test first, then the usual system directories, then ours.
pub fn containerd_path() -> String {
    // Cargo names the shim it built for integration tests only; an example
    // (target/<profile>/examples/NAME) looks in its profile directory.
    let built = option_env!("CARGO_BIN_EXE_containerd-shim-hull-v2")
        .map(PathBuf::from)
        .or_else(|| Some(std::env::current_exe().ok()?.parent()?.to_path_buf()));
    let shim_dir = std::env::var_os("HULL_SHIM_DIR")
        .map(PathBuf::from)
        .or_else(|| built.as_deref()?.parent().map(Path::to_path_buf));
    let mut dirs: Vec<PathBuf> = shim_dir.into_iter().collect();
    dirs.extend(
        [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .map(PathBuf::from),
    );
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    let mut seen = BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    std::env::join_paths(dirs)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin".into())
}
