//! Just enough ELF64 reading for the guest assets: whether the agent can be PID 1 of a bare initrd
//! (an x86-64 executable without PT_INTERP) and whether the kernel has a PVH entry note.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::AssetsError;

const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
/// Program headers we are willing to read; real binaries have about a dozen.
const MAX_PHNUM: u16 = 256;
/// Largest PT_NOTE segment we read; a vmlinux has a few hundred bytes of notes.
const MAX_NOTE_SEGMENT: u64 = 1 << 20;
/// The owner name of Xen ELF notes, NUL included.
const XEN_NOTE_NAME: &[u8] = b"Xen\0";
/// XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit physical entry point of the PVH boot ABI.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// How an ELF executable is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter: runs on a bare kernel.
    Static,
    /// Has a PT_INTERP header naming a dynamic loader.
    Dynamic,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The parts of one ELF64 program header we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProgramHeader {
    p_type: u32,
    offset: u64,
    filesz: u64,
    align: u64,
}

/// An open x86-64 ELF64 file: its type and program headers.
#[derive(Debug)]
struct Elf {
    file: File,
    len: u64,
    e_type: u16,
    phdrs: Vec<ProgramHeader>,
}

/// Why a file is not a readable x86-64 ELF64 (or could not be read at all).
#[derive(Debug)]
enum ElfError {
    Open(std::io::Error),
    Read(std::io::Error),
    /// No ELF magic (or shorter than an ELF header).
    NotElf,
    Invalid(&'static str),
}

impl ElfError {
    fn reason(&self) -> String {
        match self {
            ElfError::Open(e) => format!("cannot open: {e}"),
            ElfError::Read(e) => format!("cannot read: {e}"),
            ElfError::NotElf => "not an ELF file".to_string(),
            ElfError::Invalid(r) => (*r).to_string(),
        }
    }
}

/// Read the ELF header and program header table of `path`. Anything but a 64-bit little-endian
/// x86-64 ELF with a plausible, complete program header table is refused.
fn open(path: &Path) -> Result<Elf, ElfError> {
    let mut file = File::open(path).map_err(ElfError::Open)?;
    let len = file.metadata().map_err(ElfError::Read)?.len();
    let mut hdr = [0u8; 64];
    let mut got = 0;
    while got < hdr.len() {
        let n = file.read(&mut hdr[got..]).map_err(ElfError::Read)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got < hdr.len() || &hdr[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if hdr[4] != 2 || hdr[5] != 1 {
        return Err(ElfError::Invalid("not a 64-bit little-endian ELF"));
    }
    let header = |v: Option<u64>| v.ok_or(ElfError::Invalid("truncated ELF header"));
    if u16_at(&hdr, 0x12) != Some(EM_X86_64) {
        return Err(ElfError::Invalid("not an x86-64 binary"));
    }
    let e_type = u16_at(&hdr, 0x10).unwrap_or(0);
    let phoff = header(u64_at(&hdr, 0x20))?;
    let phentsize = header(u16_at(&hdr, 0x36).map(u64::from))?;
    let phnum = header(u16_at(&hdr, 0x38).map(u64::from))?;
    if phnum == 0 {
        return Err(ElfError::Invalid("no program headers (not an executable)"));
    }
    let implausible = ElfError::Invalid("implausible program header table");
    if phnum > u64::from(MAX_PHNUM) || !(56..=1024).contains(&phentsize) {
        return Err(implausible);
    }
    // Both factors are bounded above, so neither the product nor the usize conversion can fail.
    let table_len = phentsize * phnum;
    let (Ok(len_usize), Ok(entsize)) = (usize::try_from(table_len), usize::try_from(phentsize))
    else {
        return Err(implausible);
    };
    let truncated = ElfError::Invalid("truncated program header table");
    if phoff.checked_add(table_len).is_none_or(|end| end > len) {
        return Err(truncated);
    }
    let mut table = vec![0u8; len_usize];
    file.seek(SeekFrom::Start(phoff)).map_err(ElfError::Read)?;
    file.read_exact(&mut table).map_err(|_| truncated)?;
    let phdrs = table
        .chunks_exact(entsize)
        .map(|ph| ProgramHeader {
            // 56 <= entsize, so every field of an ELF64 program header is inside `ph`.
            p_type: u32_at(ph, 0).unwrap_or(0),
            offset: u64_at(ph, 0x08).unwrap_or(0),
            filesz: u64_at(ph, 0x20).unwrap_or(0),
            align: u64_at(ph, 0x30).unwrap_or(0),
        })
        .collect();
    Ok(Elf {
        file,
        len,
        e_type,
        phdrs,
    })
}

/// Read the ELF header and program headers of `path` and tell how it is linked.
/// Anything but a 64-bit little-endian x86-64 executable is an error naming the file.
pub fn linkage(path: &Path) -> Result<Linkage, AssetsError> {
    let elf = open(path).map_err(|e| match e {
        ElfError::Open(e) => AssetsError::io(format!("open {}", path.display()), e),
        ElfError::Read(e) => AssetsError::io(format!("read {}", path.display()), e),
        e => AssetsError::AgentInvalid {
            path: path.to_path_buf(),
            reason: e.reason(),
        },
    })?;
    Ok(if elf.phdrs.iter().any(|ph| ph.p_type == PT_INTERP) {
        Linkage::Dynamic
    } else {
        Linkage::Static
    })
}

/// One ELF note: (owner name with its NUL, type, descriptor).
type Note<'a> = (&'a [u8], u32, &'a [u8]);

/// The notes of one PT_NOTE segment, or what is malformed.
/// Names and descriptors are padded to `align` (4 unless the segment says 8), as the ELF spec says.
fn parse_notes(seg: &[u8], align: usize) -> Result<Vec<Note<'_>>, &'static str> {
    let bad = "malformed PT_NOTE segment";
    let pad = |n: usize| {
        n.checked_add(align - 1)
            .map(|v| v & !(align - 1))
            .ok_or(bad)
    };
    let mut notes = Vec::new();
    let mut pos = 0usize;
    while pos < seg.len() {
        let (Some(namesz), Some(descsz), Some(n_type)) =
            (u32_at(seg, pos), u32_at(seg, pos + 4), u32_at(seg, pos + 8))
        else {
            return Err(bad);
        };
        let name_start = pos + 12;
        let name_end = name_start.checked_add(namesz as usize).ok_or(bad)?;
        let desc_start = pad(name_end)?;
        let desc_end = desc_start.checked_add(descsz as usize).ok_or(bad)?;
        let (Some(name), Some(desc)) =
            (seg.get(name_start..name_end), seg.get(desc_start..desc_end))
        else {
            return Err(bad);
        };
        notes.push((name, n_type, desc));
        pos = pad(desc_end)?;
    }
    Ok(notes)
}

/// The PVH entry point of the x86-64 ELF executable at `path`: the descriptor of its
/// XEN_ELFNOTE_PHYS32_ENTRY note (type 18, owner "Xen") in a PT_NOTE segment, which is what QEMU
/// looks for to boot an uncompressed vmlinux directly. Errors say what is wrong, without the path.
pub fn pvh_entry(path: &Path) -> Result<u64, String> {
    let mut elf = open(path).map_err(|e| match e {
        ElfError::NotElf => {
            "not an ELF file (Hull boots an uncompressed vmlinux, not a bzImage or compressed kernel)"
                .to_string()
        }
        e => e.reason(),
    })?;
    if elf.e_type != ET_EXEC {
        return Err(format!(
            "not an ELF executable (e_type {}, want {ET_EXEC})",
            elf.e_type
        ));
    }
    let note_segments: Vec<ProgramHeader> = elf
        .phdrs
        .iter()
        .copied()
        .filter(|ph| ph.p_type == PT_NOTE)
        .collect();
    if note_segments.is_empty() {
        return Err(
            "no PT_NOTE segment, so no PVH entry note; the kernel needs CONFIG_PVH=y".into(),
        );
    }
    for ph in note_segments {
        if ph.filesz > MAX_NOTE_SEGMENT {
            return Err(format!(
                "implausible PT_NOTE segment of {} bytes",
                ph.filesz
            ));
        }
        if ph
            .offset
            .checked_add(ph.filesz)
            .is_none_or(|end| end > elf.len)
        {
            return Err("PT_NOTE segment extends past the end of the file".into());
        }
        // filesz <= MAX_NOTE_SEGMENT, so this fits.
        let mut seg = vec![0u8; ph.filesz as usize];
        elf.file
            .seek(SeekFrom::Start(ph.offset))
            .and_then(|_| elf.file.read_exact(&mut seg))
            .map_err(|e| format!("cannot read PT_NOTE segment: {e}"))?;
        let align = if ph.align == 8 { 8 } else { 4 };
        for (name, n_type, desc) in parse_notes(&seg, align)? {
            if name != XEN_NOTE_NAME || n_type != XEN_ELFNOTE_PHYS32_ENTRY {
                continue;
            }
            let entry = match desc.len() {
                4 => u32_at(desc, 0).map(u64::from),
                8 => u64_at(desc, 0),
                _ => None,
            };
            return match entry {
                Some(e) if e != 0 => Ok(e),
                _ => Err(format!(
                    "PVH entry note (Xen ELF note type {XEN_ELFNOTE_PHYS32_ENTRY}) has a bad address \
                     ({} bytes)",
                    desc.len()
                )),
            };
        }
    }
    Err(format!(
        "no PVH entry note (Xen ELF note type {XEN_ELFNOTE_PHYS32_ENTRY}, name \"Xen\"); \
         the kernel needs CONFIG_PVH=y"
    ))
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

/// A minimal x86-64 ELF executable for tests: one PT_LOAD and, if `notes` is given, one PT_NOTE
/// segment (4-byte aligned) holding these `(name, type, descriptor)` notes.
#[cfg(test)]
pub(super) fn fake_elf(e_type: u16, notes: Option<&[Note<'_>]>) -> Vec<u8> {
    let pad4 = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(4), 0);
    let mut seg = Vec::new();
    for (name, n_type, desc) in notes.unwrap_or_default() {
        seg.extend_from_slice(&(name.len() as u32).to_le_bytes());
        seg.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        seg.extend_from_slice(&n_type.to_le_bytes());
        seg.extend_from_slice(name);
        pad4(&mut seg);
        seg.extend_from_slice(desc);
        pad4(&mut seg);
    }
    let phnum: u16 = if notes.is_some() { 2 } else { 1 };
    let data_off = 64 + 56 * u64::from(phnum);
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little-endian
    out[6] = 1; // EV_CURRENT
    out[0x10..0x12].copy_from_slice(&e_type.to_le_bytes());
    out[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
    out[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    out[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    out[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes());
    let phdr = |p_type: u32, offset: u64, size: u64, align: u64| {
        let mut ph = vec![0u8; 56];
        ph[0..4].copy_from_slice(&p_type.to_le_bytes());
        ph[0x08..0x10].copy_from_slice(&offset.to_le_bytes());
        ph[0x20..0x28].copy_from_slice(&size.to_le_bytes());
        ph[0x28..0x30].copy_from_slice(&size.to_le_bytes());
        ph[0x30..0x38].copy_from_slice(&align.to_le_bytes());
        ph
    };
    out.extend(phdr(1, 0, data_off + seg.len() as u64, 0x1000));
    if notes.is_some() {
        out.extend(phdr(PT_NOTE, data_off, seg.len() as u64, 4));
    }
    out.extend(seg);
    out
}

/// [`fake_elf`] shaped like a PVH-bootable vmlinux: an executable with a GNU build-id note and,
/// if `pvh`, the Xen PHYS32_ENTRY note with an 8-byte address (as Linux emits it on x86-64).
#[cfg(test)]
pub(super) fn fake_vmlinux(pvh: bool) -> Vec<u8> {
    let entry = 0x0100_0000u64.to_le_bytes();
    let mut notes: Vec<Note<'_>> = vec![(b"GNU\0", 3, &[0xab; 20])];
    if pvh {
        notes.push((b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &entry));
    }
    fake_elf(ET_EXEC, Some(&notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    #[test]
    fn pvh_note_is_found_with_4_or_8_byte_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "vmlinux", &fake_vmlinux(true));
        assert_eq!(pvh_entry(&p).expect("pvh"), 0x0100_0000);
        let four = fake_elf(
            ET_EXEC,
            Some(&[(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x1234u32.to_le_bytes())]),
        );
        let p = write(dir.path(), "four", &four);
        assert_eq!(pvh_entry(&p).expect("pvh"), 0x1234);
    }

    #[test]
    fn kernel_without_pvh_note_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: [(&str, Vec<u8>, &str); 6] = [
            ("no-note", fake_vmlinux(false), "no PVH entry note"),
            ("no-pt-note", fake_elf(ET_EXEC, None), "no PT_NOTE segment"),
            (
                "other-xen-note",
                fake_elf(ET_EXEC, Some(&[(b"Xen\0", 17, &[1; 8])])),
                "no PVH entry note",
            ),
            (
                "zero-entry",
                fake_elf(
                    ET_EXEC,
                    Some(&[(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 8])]),
                ),
                "bad address",
            ),
            ("pie", fake_elf(3, None), "not an ELF executable"),
            ("bzimage", bzimage_like(), "not a bzImage"),
        ];
        for (name, bytes, want) in cases {
            let p = write(dir.path(), name, &bytes);
            let msg = pvh_entry(&p).expect_err(name);
            assert!(msg.contains(want), "{name}: {msg}");
        }
        let msg = pvh_entry(Path::new("/bin/ls")).expect_err("ls is a PIE");
        assert!(msg.contains("not an ELF executable"), "{msg}");
    }

    fn bzimage_like() -> Vec<u8> {
        let mut k = vec![0u8; 0x400];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k
    }

    #[test]
    fn truncated_or_malformed_kernels_are_refused_not_read_past_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = fake_vmlinux(true);
        // Every strict prefix fails cleanly: header, program headers or notes cut short.
        for cut in [0, 4, 63, 64, 100, 64 + 112, good.len() - 1] {
            let p = write(dir.path(), "cut", &good[..cut]);
            let msg = pvh_entry(&p).expect_err("truncated");
            assert!(
                msg.contains("not an ELF")
                    || msg.contains("truncated")
                    || msg.contains("past the end"),
                "cut {cut}: {msg}"
            );
        }
        // A note whose name size points far outside the segment.
        let mut huge = good.clone();
        let seg = 64 + 112;
        huge[seg..seg + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let p = write(dir.path(), "huge", &huge);
        assert!(pvh_entry(&p)
            .expect_err("huge")
            .contains("malformed PT_NOTE"));
        // A PT_NOTE segment claiming to be enormous.
        let mut big = good.clone();
        let note_ph = 64 + 56;
        big[note_ph + 0x20..note_ph + 0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        let p = write(dir.path(), "big", &big);
        assert!(pvh_entry(&p)
            .expect_err("big")
            .contains("implausible PT_NOTE"));
        // Program headers that claim to lie beyond the end of the file.
        let mut far = good;
        far[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        let p = write(dir.path(), "far", &far);
        assert!(pvh_entry(&p)
            .expect_err("far")
            .contains("truncated program header"));
    }

    #[test]
    fn parse_notes_handles_alignment_and_rejects_overruns() {
        let mut seg = Vec::new();
        seg.extend_from_slice(&6u32.to_le_bytes());
        seg.extend_from_slice(&8u32.to_le_bytes());
        seg.extend_from_slice(&1u32.to_le_bytes());
        seg.extend_from_slice(b"LINUX\0");
        seg.extend_from_slice(&[0; 6]); // the name ends at 18; an 8-aligned descriptor starts at 24
        seg.extend_from_slice(&7u64.to_le_bytes());
        let notes = parse_notes(&seg, 8).expect("aligned to 8");
        assert_eq!(notes, vec![(&b"LINUX\0"[..], 1, &7u64.to_le_bytes()[..])]);
        // Read with 4-byte padding the same bytes are a different, overrunning note.
        assert!(parse_notes(&seg, 4).is_err());
        assert!(parse_notes(&seg[..seg.len() - 1], 8).is_err());
        assert!(parse_notes(&seg[..5], 4).is_err());
        assert_eq!(parse_notes(&[], 4).expect("empty"), vec![]);
    }

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
