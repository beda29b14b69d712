//! Reading the guest assets' ELF headers (with the `object` crate): whether the agent can be
//! PID 1 of a bare initrd (an x86-64 executable without PT_INTERP) and the kernel's PVH entry.

use std::fs::File;
use std::path::Path;

use object::elf::{self, FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader as _, ProgramHeader as _};
use object::read::{ReadCache, ReadRef};
use object::LittleEndian;

use super::AssetsError;

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

/// Why a file is not a usable x86-64 ELF executable or PVH-bootable kernel. The messages do not
/// name the file: callers put it in front.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file cannot be opened.
    #[error("cannot open: {0}")]
    Open(#[source] std::io::Error),
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// No ELF magic, or shorter than an ELF header.
    #[error("not an ELF file")]
    NotElf,
    /// No ELF magic where a kernel was expected.
    #[error(
        "not an ELF file (Hull boots an uncompressed vmlinux, not a bzImage or compressed kernel)"
    )]
    NotVmlinux,
    /// A 32-bit or big-endian ELF.
    #[error("not a 64-bit little-endian ELF")]
    NotElf64Le,
    /// Another architecture.
    #[error("not an x86-64 binary")]
    NotX86_64,
    /// An object file or other ELF without program headers.
    #[error("no program headers (not an executable)")]
    NoProgramHeaders,
    /// A program header table too large or of an unknown entry size.
    #[error("implausible program header table")]
    ImplausibleProgramHeaders,
    /// The program header table ends past the end of the file.
    #[error("truncated program header table")]
    TruncatedProgramHeaders,
    /// Not ET_EXEC (a PIE, shared object, core...).
    #[error("not an ELF executable (e_type {0}, want {want})", want = elf::ET_EXEC)]
    NotExecutable(u16),
    /// No PT_NOTE segment at all.
    #[error("no PT_NOTE segment, so no PVH entry note; the kernel needs CONFIG_PVH=y")]
    NoNoteSegment,
    /// A PT_NOTE segment larger than any real kernel's.
    #[error("implausible PT_NOTE segment of {0} bytes")]
    ImplausibleNoteSegment(u64),
    /// A PT_NOTE segment that ends past the end of the file.
    #[error("PT_NOTE segment extends past the end of the file")]
    NoteSegmentPastEnd,
    /// The notes of a PT_NOTE segment do not parse.
    #[error("malformed PT_NOTE segment: {0}")]
    MalformedNotes(#[source] object::read::Error),
    /// The PVH note's descriptor is not a non-zero 4- or 8-byte address.
    #[error(
        "PVH entry note (Xen ELF note type {type_}) has a bad address ({0} bytes)",
        type_ = XEN_ELFNOTE_PHYS32_ENTRY
    )]
    BadPvhEntry(usize),
    /// Notes, but not the PVH one.
    #[error(
        "no PVH entry note (Xen ELF note type {type_}, name \"Xen\"); the kernel needs CONFIG_PVH=y",
        type_ = XEN_ELFNOTE_PHYS32_ENTRY
    )]
    NoPvhNote,
}

type Header = FileHeader64<LittleEndian>;
type Phdr = ProgramHeader64<LittleEndian>;

/// An open x86-64 ELF64 file: its header and program headers, read on demand through `cache`.
struct Elf<'a> {
    data: &'a ReadCache<File>,
    len: u64,
    header: &'a Header,
    phdrs: &'a [Phdr],
}

/// Read the ELF header and program header table from `data`. Anything but a 64-bit
/// little-endian x86-64 ELF with a plausible, complete program header table is refused.
fn parse(data: &ReadCache<File>) -> Result<Elf<'_>, ElfError> {
    let len = data.len().map_err(|()| ElfError::NotElf)?;
    let ident = data.read_bytes_at(0, 6).map_err(|()| ElfError::NotElf)?;
    if len < 64 || ident[..4] != elf::ELFMAG {
        return Err(ElfError::NotElf);
    }
    if ident[4] != elf::ELFCLASS64 || ident[5] != elf::ELFDATA2LSB {
        return Err(ElfError::NotElf64Le);
    }
    let header = Header::parse(data).map_err(|_| ElfError::NotElf)?;
    if header.e_machine(LittleEndian) != elf::EM_X86_64 {
        return Err(ElfError::NotX86_64);
    }
    let phnum = header.e_phnum(LittleEndian);
    if header.e_phoff(LittleEndian) == 0 || phnum == 0 {
        return Err(ElfError::NoProgramHeaders);
    }
    if phnum > MAX_PHNUM || usize::from(header.e_phentsize(LittleEndian)) != size_of::<Phdr>() {
        return Err(ElfError::ImplausibleProgramHeaders);
    }
    let phdrs = header
        .program_headers(LittleEndian, data)
        .map_err(|_| ElfError::TruncatedProgramHeaders)?;
    Ok(Elf {
        data,
        len,
        header,
        phdrs,
    })
}

fn open(path: &Path) -> Result<ReadCache<File>, ElfError> {
    File::open(path).map(ReadCache::new).map_err(ElfError::Open)
}

/// Read the ELF header and program headers of `path` and tell how it is linked.
/// Anything but a 64-bit little-endian x86-64 executable is an error naming the file.
pub fn linkage(path: &Path) -> Result<Linkage, AssetsError> {
    let invalid = |e: ElfError| match e {
        ElfError::Open(e) => AssetsError::io(format!("open {}", path.display()), e),
        ElfError::Read(e) => AssetsError::io(format!("read {}", path.display()), e),
        e => AssetsError::AgentInvalid {
            path: path.to_path_buf(),
            reason: e,
        },
    };
    let data = open(path).map_err(invalid)?;
    let elf = parse(&data).map_err(invalid)?;
    let interp = elf
        .phdrs
        .iter()
        .any(|ph| ph.p_type(LittleEndian) == elf::PT_INTERP);
    Ok(if interp {
        Linkage::Dynamic
    } else {
        Linkage::Static
    })
}

/// The PVH entry point of the x86-64 ELF executable at `path`: the descriptor of its
/// XEN_ELFNOTE_PHYS32_ENTRY note (type 18, owner "Xen") in a PT_NOTE segment, which is what QEMU
/// looks for to boot an uncompressed vmlinux directly. Errors say what is wrong, without the path.
pub fn pvh_entry(path: &Path) -> Result<u64, ElfError> {
    let data = open(path)?;
    let elf = parse(&data).map_err(|e| match e {
        ElfError::NotElf => ElfError::NotVmlinux,
        e => e,
    })?;
    let e_type = elf.header.e_type(LittleEndian);
    if e_type != elf::ET_EXEC {
        return Err(ElfError::NotExecutable(e_type));
    }
    let mut note_segments = elf
        .phdrs
        .iter()
        .filter(|ph| ph.p_type(LittleEndian) == elf::PT_NOTE)
        .peekable();
    if note_segments.peek().is_none() {
        return Err(ElfError::NoNoteSegment);
    }
    for ph in note_segments {
        let (offset, size) = ph.file_range(LittleEndian);
        if size > MAX_NOTE_SEGMENT {
            return Err(ElfError::ImplausibleNoteSegment(size));
        }
        if offset.checked_add(size).is_none_or(|end| end > elf.len) {
            return Err(ElfError::NoteSegmentPastEnd);
        }
        let mut notes = match ph.notes(LittleEndian, elf.data) {
            Ok(Some(notes)) => notes,
            Ok(None) => continue,
            Err(e) => return Err(ElfError::MalformedNotes(e)),
        };
        while let Some(note) = notes.next().map_err(ElfError::MalformedNotes)? {
            if note.name_bytes() != XEN_NOTE_NAME
                || note.n_type(LittleEndian) != XEN_ELFNOTE_PHYS32_ENTRY
            {
                continue;
            }
            let desc = note.desc();
            let entry = match *desc {
                [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
                [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
                _ => 0,
            };
            return match entry {
                0 => Err(ElfError::BadPvhEntry(desc.len())),
                e => Ok(e),
            };
        }
    }
    Err(ElfError::NoPvhNote)
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

/// One ELF note of a test file: (owner name with its NUL, type, descriptor).
#[cfg(test)]
type Note<'a> = (&'a [u8], u32, &'a [u8]);

/// A minimal x86-64 ELF executable for tests: one PT_LOAD and, if `notes` is given, one PT_NOTE
/// segment (4-byte aligned) holding these `(name, type, descriptor)` notes.
#[cfg(test)]
pub(super) fn fake_elf(e_type: u16, notes: Option<&[Note<'_>]>) -> Vec<u8> {
    fake_elf_aligned(e_type, notes, 4)
}

/// [`fake_elf`] with the notes padded to `align` (4 or 8) and the PT_NOTE saying so.
#[cfg(test)]
fn fake_elf_aligned(e_type: u16, notes: Option<&[Note<'_>]>, align: usize) -> Vec<u8> {
    let pad = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(align), 0);
    let mut seg = Vec::new();
    for (name, n_type, desc) in notes.unwrap_or_default() {
        seg.extend_from_slice(&(name.len() as u32).to_le_bytes());
        seg.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        seg.extend_from_slice(&n_type.to_le_bytes());
        seg.extend_from_slice(name);
        pad(&mut seg);
        seg.extend_from_slice(desc);
        pad(&mut seg);
    }
    let phnum: u16 = if notes.is_some() { 2 } else { 1 };
    let data_off = 64 + 56 * u64::from(phnum);
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little-endian
    out[6] = 1; // EV_CURRENT
    out[0x10..0x12].copy_from_slice(&e_type.to_le_bytes());
    out[0x12..0x14].copy_from_slice(&elf::EM_X86_64.to_le_bytes());
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
        out.extend(phdr(elf::PT_NOTE, data_off, seg.len() as u64, align as u64));
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
    fake_elf(elf::ET_EXEC, Some(&notes))
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
            elf::ET_EXEC,
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
            (
                "no-pt-note",
                fake_elf(elf::ET_EXEC, None),
                "no PT_NOTE segment",
            ),
            (
                "other-xen-note",
                fake_elf(elf::ET_EXEC, Some(&[(b"Xen\0", 17, &[1; 8])])),
                "no PVH entry note",
            ),
            (
                "zero-entry",
                fake_elf(
                    elf::ET_EXEC,
                    Some(&[(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 8])]),
                ),
                "bad address",
            ),
            ("pie", fake_elf(3, None), "not an ELF executable"),
            ("bzimage", bzimage_like(), "not a bzImage"),
        ];
        for (name, bytes, want) in cases {
            let p = write(dir.path(), name, &bytes);
            let msg = pvh_entry(&p).expect_err(name).to_string();
            assert!(msg.contains(want), "{name}: {msg}");
        }
        let msg = pvh_entry(Path::new("/bin/ls"))
            .expect_err("ls is a PIE")
            .to_string();
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
            let msg = pvh_entry(&p).expect_err("truncated").to_string();
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
            .to_string()
            .contains("malformed PT_NOTE"));
        // A PT_NOTE segment claiming to be enormous.
        let mut big = good.clone();
        let note_ph = 64 + 56;
        big[note_ph + 0x20..note_ph + 0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        let p = write(dir.path(), "big", &big);
        assert!(pvh_entry(&p)
            .expect_err("big")
            .to_string()
            .contains("implausible PT_NOTE"));
        // Program headers that claim to lie beyond the end of the file.
        let mut far = good;
        far[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        let p = write(dir.path(), "far", &far);
        assert!(pvh_entry(&p)
            .expect_err("far")
            .to_string()
            .contains("truncated program header"));
    }

    #[test]
    fn notes_are_read_with_the_segments_alignment() {
        let dir = tempfile::tempdir().expect("tempdir");
        // "LINUX\0" ends the name at 18: an 8-aligned descriptor starts at 24, a 4-aligned one
        // at 20, so only a reader that honours p_align finds the PVH note after it.
        let entry = 0x0200_0000u64.to_le_bytes();
        let notes: [Note<'_>; 2] = [
            (b"LINUX\0", 1, &7u64.to_le_bytes()),
            (b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &entry),
        ];
        let p = write(
            dir.path(),
            "aligned8",
            &fake_elf_aligned(elf::ET_EXEC, Some(&notes), 8),
        );
        assert_eq!(pvh_entry(&p).expect("pvh"), 0x0200_0000);
        let p = write(
            dir.path(),
            "aligned4",
            &fake_elf_aligned(elf::ET_EXEC, Some(&notes), 4),
        );
        assert_eq!(pvh_entry(&p).expect("pvh"), 0x0200_0000);
    }

    #[test]
    fn non_x86_64_and_32_bit_elves_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut arm = fake_vmlinux(true);
        arm[0x12..0x14].copy_from_slice(&elf::EM_AARCH64.to_le_bytes());
        let p = write(dir.path(), "arm", &arm);
        let msg = pvh_entry(&p).expect_err("arm").to_string();
        assert!(msg.contains("not an x86-64 binary"), "{msg}");
        let mut class32 = fake_vmlinux(true);
        class32[4] = elf::ELFCLASS32;
        let p = write(dir.path(), "class32", &class32);
        let msg = pvh_entry(&p).expect_err("32-bit").to_string();
        assert!(msg.contains("not a 64-bit little-endian ELF"), "{msg}");
    }

    #[test]
    fn busybox_static_is_static() {
        let p = Path::new("/bin/busybox");
        if !crate::test_support::require_file(p, "busybox-static") {
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
