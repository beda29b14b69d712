//! Hull's configuration: defaults embedded in the binary, overridden by an optional TOML file.
//! Unknown keys and wrong types are errors that name the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The built-in defaults, with a comment on every key (also what `hull env --default` prints).
pub const DEFAULT_TOML: &str = include_str!("default.toml");
/// Config file read when no other is named.
pub const DEFAULT_PATH: &str = "/etc/hull/config.toml";
/// Environment variable naming a config file.
pub const ENV_VAR: &str = "HULL_CONFIG";

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// the file
        path: PathBuf,
        /// why
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a wrong key or value.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// the file
        path: PathBuf,
        /// what is wrong, with the key
        message: String,
    },
    /// The file parses but a value is out of range.
    #[error("invalid config {path}: {source}")]
    Value {
        /// the file
        path: PathBuf,
        /// which value and what it must be
        source: ValueError,
    },
}

/// A configuration value that has the right type but is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// `hypervisor.cpus` out of range.
    #[error("hypervisor.cpus must be 1..=64, not {0}")]
    Cpus(u32),
    /// `hypervisor.memory_mib` out of range.
    #[error("hypervisor.memory_mib must be 64..=65536, not {0}")]
    MemoryMib(u32),
    /// `hypervisor.boot_timeout_secs` is zero.
    #[error("hypervisor.boot_timeout_secs must be > 0")]
    BootTimeout,
    /// `shared_fs.cache` is not a virtiofsd cache mode.
    #[error("shared_fs.cache must be none, auto or always, not {0:?}")]
    Cache(String),
    /// `runtime.agent_log_level` is not a log level.
    #[error("runtime.agent_log_level {0:?} is not a log level")]
    AgentLogLevel(String),
    /// `runtime.console_bound_kib` out of range.
    #[error("runtime.console_bound_kib must be 4..=65536, not {0}")]
    ConsoleBound(u32),
    /// `pod.max_cpus` or `pod.max_memory_mib` below the VM's own share.
    #[error("pod.max_cpus and pod.max_memory_mib must be at least hypervisor.cpus and hypervisor.memory_mib")]
    PodLimits,
    /// `runtime.run_dir` is relative.
    #[error("runtime.run_dir must be an absolute path")]
    RunDirNotAbsolute,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// VM settings.
    pub hypervisor: HypervisorConfig,
    /// Guest kernel and initrd.
    pub assets: AssetsConfig,
    /// Agent channel.
    pub vsock: VsockConfig,
    /// Rootfs sharing.
    pub shared_fs: SharedFsConfig,
    /// Host-side state.
    pub runtime: RuntimeConfig,
    /// Limits of CRI pods.
    pub pod: PodConfig,
}

/// `[pod]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PodConfig {
    /// Most vCPUs a pod's VM may have.
    pub max_cpus: u32,
    /// Most memory a pod's VM may have, in MiB.
    pub max_memory_mib: u32,
    /// Kernel parameters a pod may add ("name" or "name=value").
    pub allowed_kernel_params: Vec<String>,
}

/// `[hypervisor]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HypervisorConfig {
    /// QEMU binary.
    pub qemu: PathBuf,
    /// Accelerator choice.
    pub accel: AccelChoice,
    /// Default vCPUs.
    pub cpus: u32,
    /// Default memory in MiB.
    pub memory_mib: u32,
    /// Extra kernel command line.
    pub kernel_params: String,
    /// Seconds to wait for the agent.
    pub boot_timeout_secs: u64,
    /// TCG translation cache size in MiB (0 = QEMU's default).
    pub tcg_tb_size_mib: u32,
}

/// Accelerator choice in the config.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM if it can run the guest, else TCG.
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG.
    Tcg,
}

/// `[assets]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AssetsConfig {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initrd.
    pub initrd: PathBuf,
    /// Kernel source tarball.
    pub kernel_source: PathBuf,
    /// Build cache.
    pub cache_dir: PathBuf,
    /// Agent binary for the initrd ("" = next to the hull binary).
    pub agent: PathBuf,
}

/// `[vsock]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// Transport choice.
    pub mode: VsockMode,
    /// vhost-user vsock backend binary.
    pub vhost_device_vsock: PathBuf,
}

/// Vsock transport choice.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VsockMode {
    /// vhost if available, else hybrid.
    Auto,
    /// Kernel vhost-vsock (AF_VSOCK on the host).
    Vhost,
    /// vhost-user backend with a Unix socket.
    Hybrid,
}

/// `[shared_fs]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SharedFsConfig {
    /// virtio-fs or 9p.
    pub kind: SharedFsKind,
    /// virtiofsd binary.
    pub virtiofsd: PathBuf,
    /// virtiofsd cache mode.
    pub cache: String,
}

/// Shared filesystem kind.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum SharedFsKind {
    /// virtio-fs through virtiofsd.
    #[serde(rename = "virtiofs")]
    VirtioFs,
    /// 9p served by QEMU.
    #[serde(rename = "9p")]
    NineP,
}

impl SharedFsKind {
    /// The value of the `hull.sharedfs=` kernel parameter.
    pub fn as_param(self) -> &'static str {
        match self {
            SharedFsKind::VirtioFs => "virtiofs",
            SharedFsKind::NineP => "9p",
        }
    }
}

/// `[runtime]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Root of per-sandbox state.
    pub run_dir: PathBuf,
    /// Agent log level.
    pub agent_log_level: String,
    /// KiB of guest console kept (in memory, and as much again at most on disk).
    pub console_bound_kib: u32,
}

impl RuntimeConfig {
    /// Bytes of guest console kept: `console_bound_kib` in bytes.
    pub fn console_bound(&self) -> usize {
        self.console_bound_kib as usize * 1024
    }
}

impl Config {
    /// The built-in defaults.
    pub fn defaults() -> Config {
        // The embedded file is checked by a unit test, so this cannot fail at run time.
        Self::from_toml_str(DEFAULT_TOML, Path::new("<built-in defaults>"))
            .unwrap_or_else(|e| panic!("built-in config is broken: {e}"))
    }

    /// Load: the file named by `explicit`, else $HULL_CONFIG, else /etc/hull/config.toml if it
    /// exists, else the defaults. A named file that does not exist is an error.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let named = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(ENV_VAR).map(PathBuf::from));
        let path = match named {
            Some(p) => p,
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok((Self::defaults(), None)),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Ok((Self::from_toml_str(&text, &path)?, Some(path)))
    }

    /// Parse `text` over the built-in defaults.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut merged: toml::Table =
            toml::from_str(DEFAULT_TOML).map_err(|e| invalid(e.to_string()))?;
        let user: toml::Table =
            toml::from_str(text).map_err(|e| invalid(one_line(&e.to_string())))?;
        merge(&mut merged, user);
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(one_line(&e.to_string())))?;
        config.validate().map_err(|source| ConfigError::Value {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ValueError> {
        let h = &self.hypervisor;
        if !(1..=64).contains(&h.cpus) {
            return Err(ValueError::Cpus(h.cpus));
        }
        if !(64..=65536).contains(&h.memory_mib) {
            return Err(ValueError::MemoryMib(h.memory_mib));
        }
        if h.boot_timeout_secs == 0 {
            return Err(ValueError::BootTimeout);
        }
        if !matches!(self.shared_fs.cache.as_str(), "none" | "auto" | "always") {
            return Err(ValueError::Cache(self.shared_fs.cache.clone()));
        }
        if !matches!(
            self.runtime.agent_log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(ValueError::AgentLogLevel(
                self.runtime.agent_log_level.clone(),
            ));
        }
        if !(4..=65536).contains(&self.runtime.console_bound_kib) {
            return Err(ValueError::ConsoleBound(self.runtime.console_bound_kib));
        }
        if self.pod.max_cpus < h.cpus || self.pod.max_memory_mib < h.memory_mib {
            return Err(ValueError::PodLimits);
        }
        if !self.runtime.run_dir.is_absolute() {
            return Err(ValueError::RunDirNotAbsolute);
        }
        Ok(())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Overlay `user` onto `base`, table by table.
fn merge(base: &mut toml::Table, user: toml::Table) {
    for (key, value) in user {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) => merge(b, u),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::defaults();
        assert_eq!(c.hypervisor.accel, AccelChoice::Auto);
        assert_eq!(c.shared_fs.kind, SharedFsKind::VirtioFs);
        assert_eq!(c.runtime.console_bound_kib, 1024);
        assert_eq!(c.runtime.console_bound(), 1 << 20);
    }

    #[test]
    fn file_overrides_one_key() {
        let c = Config::from_toml_str("[hypervisor]\ncpus = 2\n", Path::new("t")).expect("valid");
        assert_eq!(c.hypervisor.cpus, 2);
        assert_eq!(
            c.hypervisor.memory_mib,
            Config::defaults().hypervisor.memory_mib
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml_str("[hypervisor]\ncpu = 2\n", Path::new("t"))
            .expect_err("unknown key");
        assert!(e.to_string().contains("cpu"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            "[hypervisor]\ncpus = 0",
            "[hypervisor]\naccel = \"xen\"",
            "[shared_fs]\nkind = \"nfs\"",
            "[hypervisor]\nmemory_mib = \"lots\"",
            "[runtime]\nconsole_bound_kib = 0",
            "[runtime]\nconsole_bound_kib = 3",
            "[runtime]\nconsole_bound_kib = 65537",
            "not toml at all [",
        ] {
            assert!(Config::from_toml_str(bad, Path::new("t")).is_err(), "{bad}");
        }
    }

    #[test]
    fn out_of_range_values_are_named_with_the_file() {
        let e = Config::from_toml_str("[hypervisor]\ncpus = 65", Path::new("/etc/h.toml"))
            .expect_err("too many cpus");
        assert!(
            matches!(
                &e,
                ConfigError::Value {
                    source: ValueError::Cpus(65),
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "invalid config /etc/h.toml: hypervisor.cpus must be 1..=64, not 65"
        );
        let e = Config::from_toml_str("[runtime]\nrun_dir = \"rel\"", Path::new("t"))
            .expect_err("relative run_dir");
        assert!(
            e.to_string()
                .ends_with("runtime.run_dir must be an absolute path"),
            "{e}"
        );
    }

    #[test]
    fn round_trips() {
        let c = Config::defaults();
        let again = Config::from_toml_str(&c.to_toml(), Path::new("t")).expect("round trip");
        assert_eq!(c, again);
    }
}
