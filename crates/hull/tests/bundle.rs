//! End-to-end: `hull run --bundle` honours the OCI config: args, env, cwd, user, hostname,
//! rlimits and a read-only root.

mod common;

use common::{stdout, Env};

#[test]
fn bundle_config_is_honoured() {
    let env = Env::new("bundle", "");
    let bundle = tempfile::tempdir().expect("tempdir");
    common::make_rootfs(&bundle.path().join("rootfs"));
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "bundled",
        "process": {
            "terminal": false,
            "user": { "uid": 1000, "gid": 1000 },
            "args": ["sh", "-c", "id -u; id -g; pwd; echo $GREETING; hostname; ulimit -n; touch /x 2>/dev/null && echo rw || echo ro"],
            "env": ["PATH=/bin", "GREETING=hello"],
            "cwd": "/home/user",
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 321, "soft": 123 }]
        },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" }
        ],
        "linux": { "namespaces": [ {"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"} ] }
    });
    std::fs::write(bundle.path().join("config.json"), config.to_string()).expect("config.json");
    let b = bundle.path().to_string_lossy().into_owned();
    let out = env.hull(&["run", "--bundle", &b]).output().expect("spawn");
    env.assert_clean();
    assert!(out.status.success(), "stderr: {}", common::stderr(&out));
    let s = stdout(&out);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        lines,
        [
            "1000",
            "1000",
            "/home/user",
            "hello",
            "bundled",
            "123",
            "ro"
        ],
        "{s}"
    );
}
