//! The initrd: an uncompressed cpio "newc" archive whose /init is the static hull-agent,
//! plus the directories and the /dev/console node the kernel and the agent expect.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use cpio::newc::{Builder, ModeFileType};

use super::AssetsError;

/// The magic at the start of every newc entry (and so of the archive).
pub const NEWC_MAGIC: &[u8; 6] = b"070701";

/// One entry of the initrd besides /init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// A directory with its permission bits.
    Dir(&'static str, u32),
    /// A character device: name, permission bits, major, minor.
    Char(&'static str, u32, u32, u32),
}

/// Everything in the initrd except /init, parents before children. Changing this list means
/// bumping [`super::key::INITRD_LAYOUT`].
pub const LAYOUT: &[Node] = &[
    Node::Dir("dev", 0o755),
    Node::Char("dev/console", 0o600, 5, 1),
    Node::Dir("proc", 0o555),
    Node::Dir("sys", 0o555),
    Node::Dir("sys/fs", 0o755),
    Node::Dir("sys/fs/cgroup", 0o755),
    Node::Dir("run", 0o755),
    Node::Dir("tmp", 0o1777),
    Node::Dir("etc", 0o755),
    Node::Dir("mnt", 0o755),
    Node::Dir("root", 0o700),
];

/// Name of the agent inside the initrd: the kernel runs /init as PID 1.
pub const INIT_NAME: &str = "init";

/// Write the whole archive to `out`: [`LAYOUT`], then `init` (the agent, `init_size` bytes) as
/// /init with mode 0755, then the trailer. All entries are owned by root with mtime 0, so the
/// same agent always gives the same bytes.
pub fn write_archive<W: Write, R: io::Read>(out: W, init: &mut R, init_size: u64) -> io::Result<W> {
    let mut w = out;
    let mut ino = 1u32;
    for node in LAYOUT {
        let b = match *node {
            Node::Dir(name, perm) => Builder::new(name)
                .mode(perm)
                .set_mode_file_type(ModeFileType::Directory)
                .nlink(2),
            Node::Char(name, perm, major, minor) => Builder::new(name)
                .mode(perm)
                .set_mode_file_type(ModeFileType::Char)
                .rdev_major(major)
                .rdev_minor(minor),
        };
        w = b.ino(ino).write(w, 0).finish()?;
        ino += 1;
    }
    let size = u32::try_from(init_size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "agent binary is over 4 GiB"))?;
    let mut entry = Builder::new(INIT_NAME)
        .ino(ino)
        .mode(0o755)
        .set_mode_file_type(ModeFileType::Regular)
        .write(w, size);
    let copied = io::copy(&mut io::Read::take(init, init_size), &mut entry)?;
    if copied != init_size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("agent binary shrank while copying ({copied} of {init_size} bytes)"),
        ));
    }
    let w = entry.finish()?;
    cpio::newc::trailer(w)
}

/// Build the initrd from the agent at `agent` straight into the file `out`.
pub fn write_file(agent: &Path, out: &mut File) -> Result<(), AssetsError> {
    let mut src =
        File::open(agent).map_err(|e| AssetsError::io(format!("open {}", agent.display()), e))?;
    let size = src
        .metadata()
        .map_err(|e| AssetsError::io(format!("stat {}", agent.display()), e))?
        .len();
    let buffered = io::BufWriter::new(out);
    let mut buffered = write_archive(buffered, &mut src, size)
        .map_err(|e| AssetsError::io(format!("write initrd from {}", agent.display()), e))?;
    buffered
        .flush()
        .map_err(|e| AssetsError::io("write initrd", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// One parsed entry: name, mode, rdev (major, minor), content.
    type Parsed = (String, u32, (u32, u32), Vec<u8>);

    /// Read an archive back with our own minimal newc parser (independent of the writer).
    fn parse(mut b: &[u8]) -> Vec<Parsed> {
        let field = |h: &[u8], i: usize| {
            let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).expect("ascii");
            u32::from_str_radix(s, 16).expect("hex")
        };
        let pad4 = |n: usize| (4 - n % 4) % 4;
        let mut out = Vec::new();
        loop {
            assert_eq!(&b[..6], NEWC_MAGIC);
            let (mode, size, rmaj, rmin, namesize) = (
                field(b, 1),
                field(b, 6) as usize,
                field(b, 9),
                field(b, 10),
                field(b, 11) as usize,
            );
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .expect("name")
                .to_string();
            let data_at = 110 + namesize + pad4(110 + namesize);
            let data = b[data_at..data_at + size].to_vec();
            b = &b[data_at + size + pad4(size)..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "bytes after trailer");
                return out;
            }
            out.push((name, mode, (rmaj, rmin), data));
        }
    }

    #[test]
    fn archive_reads_back_with_init_console_and_dirs() {
        let agent = b"\x7fELF pretend agent, odd length!".to_vec();
        let bytes =
            write_archive(Vec::new(), &mut agent.as_slice(), agent.len() as u64).expect("write");
        assert_eq!(&bytes[..6], NEWC_MAGIC);
        let entries = parse(&bytes);
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.0 == n)
                .unwrap_or_else(|| panic!("no {n}"))
        };
        let init = get("init");
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.3, agent);
        let console = get("dev/console");
        assert_eq!(console.1, 0o020600);
        assert_eq!(console.2, (5, 1));
        for d in ["dev", "proc", "sys", "sys/fs/cgroup", "run", "tmp"] {
            assert_eq!(get(d).1 & 0o170000, 0o040000, "{d} is a directory");
        }
        assert_eq!(get("tmp").1 & 0o7777, 0o1777);
    }

    #[test]
    fn archive_reads_back_with_the_cpio_crate_too() {
        let agent = vec![7u8; 1001];
        let bytes = write_archive(Vec::new(), &mut agent.as_slice(), 1001).expect("write");
        let mut r: &[u8] = &bytes;
        let mut names = Vec::new();
        loop {
            let mut entry = cpio::NewcReader::new(r).expect("entry");
            if entry.entry().is_trailer() {
                break;
            }
            names.push(entry.entry().name().to_string());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            if entry.entry().name() == "init" {
                assert_eq!(data, agent);
            }
            r = entry.finish().expect("next");
        }
        assert_eq!(names.len(), LAYOUT.len() + 1);
    }

    #[test]
    fn same_agent_gives_same_bytes() {
        let a = write_archive(Vec::new(), &mut &b"abc"[..], 3).expect("write");
        let b = write_archive(Vec::new(), &mut &b"abc"[..], 3).expect("write");
        assert_eq!(a, b);
    }

    #[test]
    fn short_agent_is_an_error() {
        assert!(write_archive(Vec::new(), &mut &b"ab"[..], 3).is_err());
    }
}
