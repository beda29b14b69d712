//! Just enough ELF reading to tell whether the agent can be PID 1 of a bare initrd:
//! an x86-64 executable with no PT_INTERP program header (no dynamic loader needed).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::AssetsError;

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;
/// Program headers we are willing to read; real binaries have about a dozen.
const MAX_PHNUM: u16 = 256;

/// How an ELF executable is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter: runs on a bare kernel.
    Static,
    /// Has a PT_INTERP header naming a dynamic loader.
    Dynamic,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Read the ELF header and program headers of `path` and tell how it is linked.
/// Anything but a 64-bit little-endian x86-64 executable is an error naming the file.
pub fn linkage(path: &Path) -> Result<Linkage, AssetsError> {
    let invalid = |reason: &str| AssetsError::AgentInvalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let io = |e| AssetsError::io(format!("read {}", path.display()), e);
    let mut f =
        File::open(path).map_err(|e| AssetsError::io(format!("open {}", path.display()), e))?;
    let mut hdr = [0u8; 64];
    let mut got = 0;
    while got < hdr.len() {
        let n = f.read(&mut hdr[got..]).map_err(io)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got < hdr.len() || &hdr[..4] != b"\x7fELF" {
        return Err(invalid("not an ELF file"));
    }
    if hdr[4] != 2 || hdr[5] != 1 {
        return Err(invalid("not a 64-bit little-endian ELF"));
    }
    let header = |v: Option<u64>| v.ok_or_else(|| invalid("truncated ELF header"));
    if u16_at(&hdr, 0x12) != Some(EM_X86_64) {
        return Err(invalid("not an x86-64 binary"));
    }
    let phoff = header(u64_at(&hdr, 0x20))?;
    let phentsize = header(u16_at(&hdr, 0x36).map(u64::from))?;
    let phnum = header(u16_at(&hdr, 0x38).map(u64::from))?;
    if phnum == 0 {
        return Err(invalid("no program headers (not an executable)"));
    }
    if phnum > u64::from(MAX_PHNUM) || !(56..=1024).contains(&phentsize) {
        return Err(invalid("implausible program header table"));
    }
    let len = usize::try_from(phentsize * phnum)
        .map_err(|_| invalid("implausible program header table"))?;
    let mut table = vec![0u8; len];
    f.seek(SeekFrom::Start(phoff)).map_err(io)?;
    f.read_exact(&mut table)
        .map_err(|_| invalid("truncated program header table"))?;
    let has_interp = table
        .chunks_exact(usize::try_from(phentsize).map_err(|_| invalid("bad phentsize"))?)
        .any(|ph| u32_at(ph, 0) == Some(PT_INTERP));
    Ok(if has_interp {
        Linkage::Dynamic
    } else {
        Linkage::Static
    })
}

/// Accept `path` as the initrd's /init only if it is a static x86-64 ELF executable.
pub fn require_static(path: &Path) -> Result<(), AssetsError> {
    match linkage(path)? {
        Linkage::Static => Ok(()),
        Linkage::Dynamic => Err(AssetsError::AgentDynamic {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_static_is_static() {
        let p = Path::new("/bin/busybox");
        if !p.exists() {
            eprintln!("skipped: /bin/busybox (busybox-static) not installed");
            return;
        }
        assert_eq!(linkage(p).expect("elf"), Linkage::Static);
        require_static(p).expect("static");
    }

    #[test]
    fn ls_is_dynamic_and_refused_with_the_fix() {
        let p = Path::new("/bin/ls");
        assert_eq!(linkage(p).expect("elf"), Linkage::Dynamic);
        let msg = require_static(p).expect_err("dynamic").to_string();
        assert!(
            msg.contains("/bin/ls") && msg.contains("dynamically linked"),
            "{msg}"
        );
        assert!(msg.contains("x86_64-unknown-linux-musl"), "{msg}");
    }

    #[test]
    fn non_elf_and_truncated_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("agent.sh");
        std::fs::write(&script, b"#!/bin/sh\necho hi\n").expect("write");
        let msg = linkage(&script).expect_err("script").to_string();
        assert!(
            msg.contains("agent.sh") && msg.contains("not an ELF"),
            "{msg}"
        );

        let ls = std::fs::read("/bin/ls").expect("read /bin/ls");
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &ls[..80]).expect("write");
        assert!(linkage(&cut).is_err());
    }
}
