//! Parsing of the kernel command line (/proc/cmdline) into the agent's boot options.
//! Only the `hull.*` keys are read; everything else belongs to the kernel.

use hull_protocol::cmdline as keys;

/// How the sandbox's shared directory reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedFs {
    /// virtio-fs (the default).
    VirtioFs,
    /// 9p over virtio.
    NineP,
    /// Nothing to mount.
    None,
}

/// The agent's options from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// `hull.sharedfs`
    pub shared_fs: SharedFs,
    /// `hull.log`, a tracing level or filter
    pub log: String,
    /// `hull.probe=1`
    pub probe: bool,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            shared_fs: SharedFs::VirtioFs,
            log: "info".to_string(),
            probe: false,
        }
    }
}

/// Parse a kernel command line; unknown values fall back to the defaults (and are reported).
pub fn parse(cmdline: &str) -> (BootOptions, Vec<String>) {
    let mut opts = BootOptions::default();
    let mut warnings = Vec::new();
    for word in cmdline.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        match key {
            k if k == keys::SHARED_FS => {
                opts.shared_fs = match value {
                    "virtiofs" => SharedFs::VirtioFs,
                    "9p" => SharedFs::NineP,
                    "none" => SharedFs::None,
                    other => {
                        warnings.push(format!("unknown {k}={other:?}, using virtiofs"));
                        SharedFs::VirtioFs
                    }
                }
            }
            k if k == keys::LOG => {
                let ok = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | ',' | '='));
                if ok {
                    opts.log = value.to_string();
                } else {
                    warnings.push(format!("bad {k}={value:?}, using info"));
                }
            }
            k if k == keys::PROBE => opts.probe = matches!(value, "1" | "true" | "yes" | ""),
            _ => {}
        }
    }
    (opts, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_hull_keys() {
        let (o, w) = parse("console=ttyS0 reboot=t panic=-1 quiet\n");
        assert_eq!(o, BootOptions::default());
        assert!(w.is_empty());
    }

    #[test]
    fn reads_all_keys() {
        let (o, w) = parse("console=hvc0 hull.sharedfs=9p hull.log=debug hull.probe=1");
        assert_eq!(o.shared_fs, SharedFs::NineP);
        assert_eq!(o.log, "debug");
        assert!(o.probe);
        assert!(w.is_empty());
        let (o, _) = parse("hull.sharedfs=none hull.probe=0");
        assert_eq!(o.shared_fs, SharedFs::None);
        assert!(!o.probe);
    }

    #[test]
    fn bad_values_fall_back() {
        let (o, w) = parse("hull.sharedfs=nfs hull.log=$(reboot)");
        assert_eq!(o.shared_fs, SharedFs::VirtioFs);
        assert_eq!(o.log, "info");
        assert_eq!(w.len(), 2);
    }
}
