//! The pod network of one private containerd: a numbered slot (held by a lock file, so
//! concurrent test processes never share one) gives a subnet, a bridge name and a CNI network
//! name; the conflist (bridge + host-local + portmap + loopback) lives in the test's directory.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::common::{run, stdout, TESTS_ROOT};

/// Where containerd finds the CNI plugins (Debian's containernetworking-plugins).
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Slots 0..SLOTS: subnet 10.89.<slot>.0/24, bridge `hullcri<slot>`.
const SLOTS: u32 = 100;

/// One slot, held until dropped; dropping deletes the bridge (the bridge plugin never does).
#[derive(Debug)]
pub struct NetSlot {
    slot: u32,
    _lock: Flock<File>,
}

impl NetSlot {
    /// The first free slot; a bridge left by a crashed run in that slot is deleted first.
    pub fn acquire() -> NetSlot {
        std::fs::create_dir_all(TESTS_ROOT).expect("create /run/hull-tests");
        for slot in 0..SLOTS {
            let path = Path::new(TESTS_ROOT).join(format!("cri-net-{slot}.lock"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                let s = NetSlot { slot, _lock: lock };
                s.delete_bridge();
                return s;
            }
        }
        panic!("all {SLOTS} CRI test network slots under {TESTS_ROOT} are taken");
    }

    /// The pod subnet, `10.89.<slot>.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.89.{}.0/24", self.slot)
    }

    /// The bridge's address on the host side (the pods' gateway).
    pub fn gateway(&self) -> String {
        format!("10.89.{}.1", self.slot)
    }

    /// The bridge interface (at most 15 characters).
    pub fn bridge(&self) -> String {
        format!("hullcri{}", self.slot)
    }

    /// The CNI network name (also the tag portmap puts in its iptables comments).
    pub fn network(&self) -> String {
        format!("hull-cri-test-{}", self.slot)
    }

    /// Write the conflist into `conf_dir`, with host-local's state under `ipam_dir`.
    pub fn write_conflist(&self, conf_dir: &Path, ipam_dir: &Path) -> PathBuf {
        std::fs::create_dir_all(conf_dir).expect("create CNI conf dir");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.network(),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge(),
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.subnet(), "gateway": self.gateway() }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": ipam_dir,
                    },
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
                { "type": "loopback" },
            ],
        });
        let path = conf_dir.join("10-hull-cri-test.conflist");
        let text = serde_json::to_string_pretty(&conf).expect("conflist JSON");
        std::fs::write(&path, text).expect("write conflist");
        path
    }

    /// iptables nat rules that still name this network (portmap tags its rules with it).
    pub fn leftover_rules(&self) -> Vec<String> {
        let mut c = Command::new("iptables-save");
        c.args(["-t", "nat"]);
        let Ok(out) = run::run(c, None, || true, Duration::from_secs(10)) else {
            return Vec::new();
        };
        let tag = format!("\"{}\"", self.network());
        stdout(&out)
            .lines()
            .filter(|l| l.contains(&tag))
            .map(|l| format!("iptables nat rule {l}"))
            .collect()
    }

    fn delete_bridge(&self) {
        if Path::new("/sys/class/net").join(self.bridge()).exists() {
            let mut c = Command::new("ip");
            c.args(["link", "del", &self.bridge()]);
            let _ = run::run(c, None, || true, Duration::from_secs(10));
        }
    }
}

impl Drop for NetSlot {
    fn drop(&mut self) {
        self.delete_bridge();
    }
}
