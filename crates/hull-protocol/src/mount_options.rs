//! Mount options as containerd and OCI specs give them ("ro", "rbind", "rprivate", "lowerdir=..."):
//! split into mount(2) flags, propagation flags and filesystem data, the same on host and guest.

use nix::mount::MsFlags;

/// What a list of mount options asks of mount(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// MS_* flags applied when mounting (MS_BIND for `bind` and `rbind`; never MS_REC, see
    /// `recursive`). A later option wins over an earlier one ("ro,rw" is read-write).
    pub flags: MsFlags,
    /// MS_PRIVATE/MS_SHARED/MS_SLAVE/MS_UNBINDABLE (with MS_REC for the `r` forms), applied by a
    /// second mount(2) call after the mount itself.
    pub propagation: MsFlags,
    /// Every other option, in order: the filesystem's data.
    pub data: Vec<String>,
    /// `rbind`: the bind mount takes the submounts along (MS_REC).
    pub recursive: bool,
}

impl MountOptions {
    /// Parse options in order.
    pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
        let mut o = MountOptions {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            data: Vec::new(),
            recursive: false,
        };
        for opt in options {
            let opt = opt.as_ref();
            if let Some((set, on)) = flag(opt) {
                o.flags.set(set, on);
            } else if let Some(p) = propagation(opt) {
                o.propagation.insert(p);
            } else if opt == "rbind" {
                o.flags.insert(MsFlags::MS_BIND);
                o.recursive = true;
            } else if opt != "defaults" {
                o.data.push(opt.to_string());
            }
        }
        o
    }

    /// The filesystem data: the data options joined with ','.
    pub fn data_string(&self) -> String {
        self.data.join(",")
    }

    /// `flags`, with MS_REC when `recursive`.
    pub fn mount_flags(&self) -> MsFlags {
        if self.recursive {
            self.flags | MsFlags::MS_REC
        } else {
            self.flags
        }
    }
}

/// The flag an option sets (true) or clears (false).
fn flag(option: &str) -> Option<(MsFlags, bool)> {
    Some(match option {
        "ro" => (MsFlags::MS_RDONLY, true),
        "rw" => (MsFlags::MS_RDONLY, false),
        "nosuid" => (MsFlags::MS_NOSUID, true),
        "suid" => (MsFlags::MS_NOSUID, false),
        "nodev" => (MsFlags::MS_NODEV, true),
        "dev" => (MsFlags::MS_NODEV, false),
        "noexec" => (MsFlags::MS_NOEXEC, true),
        "exec" => (MsFlags::MS_NOEXEC, false),
        "sync" => (MsFlags::MS_SYNCHRONOUS, true),
        "async" => (MsFlags::MS_SYNCHRONOUS, false),
        "noatime" => (MsFlags::MS_NOATIME, true),
        "nodiratime" => (MsFlags::MS_NODIRATIME, true),
        "relatime" => (MsFlags::MS_RELATIME, true),
        "strictatime" => (MsFlags::MS_STRICTATIME, true),
        "bind" => (MsFlags::MS_BIND, true),
        _ => return None,
    })
}

/// The propagation an option asks for.
fn propagation(option: &str) -> Option<MsFlags> {
    let (recursive, kind) = match option.strip_prefix('r') {
        Some(k @ ("private" | "shared" | "slave" | "unbindable")) => (true, k),
        _ => (false, option),
    };
    let p = match kind {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(if recursive { p | MsFlags::MS_REC } else { p })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_propagation_and_data_are_split() {
        let o = MountOptions::parse(&["nosuid", "rbind", "ro", "mode=755", "rprivate"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_BIND | MsFlags::MS_RDONLY
        );
        assert!(o.recursive);
        assert_eq!(o.mount_flags(), o.flags | MsFlags::MS_REC);
        assert_eq!(o.data, vec!["mode=755".to_string()]);
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
    }

    #[test]
    fn overlay_options_keep_their_order_as_data() {
        let opts: Vec<String> = ["ro", "index=off", "lowerdir=/a:/b", "nosuid"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = MountOptions::parse(&opts);
        assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(o.data_string(), "index=off,lowerdir=/a:/b");
        assert!(!o.recursive && o.propagation.is_empty());
    }

    #[test]
    fn later_options_win_and_defaults_is_nothing() {
        let o = MountOptions::parse(&["ro", "rw", "defaults", "noexec", "exec"]);
        assert_eq!(o.flags, MsFlags::empty());
        assert!(o.data.is_empty());
        let o = MountOptions::parse(&["bind", "rw"]);
        assert_eq!(o.mount_flags(), MsFlags::MS_BIND);
        assert_eq!(
            MountOptions::parse(&["slave", "runbindable"]).propagation,
            MsFlags::MS_SLAVE | MsFlags::MS_UNBINDABLE | MsFlags::MS_REC
        );
        // Not a propagation option just because it starts with 'r'.
        assert_eq!(
            MountOptions::parse(&["rshared"]).propagation,
            MsFlags::MS_SHARED | MsFlags::MS_REC
        );
        assert_eq!(
            MountOptions::parse(&["rsize=8192"]).data,
            vec!["rsize=8192".to_string()]
        );
    }
}
