//! The shim's own ttrpc socket, named by the bundle's address file: unlinked by the serving
//! shim at Shutdown, or by `delete` after a shim that was killed.

use std::path::Path;

/// The socket of a shim that was killed stays behind; remove it (the address file in the
/// bundle names it).
pub fn remove_dead() {
    let Ok(address) = containerd_shim::util::read_address() else {
        return;
    };
    let path = Path::new(address.trim().trim_start_matches("unix://"));
    let is_socket = std::fs::symlink_metadata(path)
        .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        .unwrap_or(false);
    // Only a socket nobody answers on: a live shim of the same pod may still serve it.
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// The serving shim's own socket, unlinked at Shutdown (the bundle's address file names it).
pub fn remove_own() {
    if let Ok(address) = containerd_shim::util::read_address() {
        let path = Path::new(address.trim().trim_start_matches("unix://"));
        if let Err(e) = std::fs::remove_file(path) {
            tracing::debug!(path = %path.display(), error = %e, "shim socket not removed");
        }
    }
}
