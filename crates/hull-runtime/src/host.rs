//! The host effects a sandbox has besides its VM, behind a narrow seam: the mounts of its
//! shared directory. The real implementation mounts; tests without root use a fake.

use std::path::Path;

use crate::error::Result;
use crate::mounts;

/// Mount operations on the sandbox's shared directory.
pub trait HostMounts: Send + Sync + std::fmt::Debug {
    /// Make `dir` a mount point whose later submounts propagate to copies of it.
    fn make_shared(&self, dir: &Path) -> Result<()>;
    /// Bind `src` onto the existing `dst`, read-only if asked.
    fn bind(&self, src: &Path, dst: &Path, readonly: bool) -> Result<()>;
    /// Unmount everything at or below `dir`, then remove it; refuses while a mount stays.
    fn remove_tree(&self, dir: &Path) -> Result<()>;
}

/// The host's real mounts.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealMounts;

impl HostMounts for RealMounts {
    fn make_shared(&self, dir: &Path) -> Result<()> {
        mounts::make_shared_mountpoint(dir)
    }

    fn bind(&self, src: &Path, dst: &Path, readonly: bool) -> Result<()> {
        mounts::bind(src, dst, readonly)
    }

    fn remove_tree(&self, dir: &Path) -> Result<()> {
        mounts::remove_dir_if_unmounted(dir)
    }
}
