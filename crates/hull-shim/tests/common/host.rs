//! Reading the host's state for leftover checks: processes (/proc), mounts (mountinfo), and
//! finding the processes a test owns by what their command lines name.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

// Each test binary uses a different part of this.
#[allow(unused_imports)]
pub use hull_protocol::test_support::{virtiofsd_pid_files, VIRTIOFSD_PID_DIR};

/// One process from /proc.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub args: Vec<String>,
}

impl Proc {
    /// "PID (comm): arg arg ..." for reports.
    pub fn describe(&self) -> String {
        format!(
            "process {} ({}): {}",
            self.pid,
            self.comm,
            self.args.join(" ")
        )
    }
}

/// All live (non-zombie) processes.
pub fn processes() -> Vec<Proc> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("?");
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if state == "Z" || state == "X" {
            continue;
        }
        let args = std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                c.split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        found.push(Proc {
            pid,
            ppid,
            comm,
            args,
        });
    }
    found
}

/// Whether `text` names the path `needle` itself or something below it (so `/run/hull/t-1`
/// does not match `/run/hull/t-12`).
pub fn names_path(text: &str, needle: &str) -> bool {
    let mut from = 0;
    while let Some(i) = text[from..].find(needle) {
        let end = from + i + needle.len();
        match text[end..].chars().next() {
            None => return true,
            Some(c) if !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') => {
                return true
            }
            _ => from = end,
        }
    }
    false
}

/// Processes that belong to a test: those whose command line names one of `needles` (paths),
/// plus every descendant of those and of `roots` (e.g. our containerd). `roots` themselves
/// and this test process are not reported.
pub fn owned_processes(needles: &[String], roots: &[i32]) -> Vec<Proc> {
    let me = std::process::id() as i32;
    let procs = processes();
    let mut marked: BTreeSet<i32> = procs
        .iter()
        .filter(|p| p.pid != me && !roots.contains(&p.pid))
        .filter(|p| {
            p.args
                .iter()
                .any(|a| needles.iter().any(|n| names_path(a, n)))
        })
        .map(|p| p.pid)
        .collect();
    let children: HashMap<i32, Vec<i32>> = procs.iter().fold(HashMap::new(), |mut m, p| {
        m.entry(p.ppid).or_default().push(p.pid);
        m
    });
    let mut stack: Vec<i32> = marked
        .iter()
        .copied()
        .chain(roots.iter().copied())
        .collect();
    while let Some(pid) = stack.pop() {
        for &c in children.get(&pid).into_iter().flatten() {
            if c != me && !roots.contains(&c) && marked.insert(c) {
                stack.push(c);
            }
        }
    }
    procs
        .into_iter()
        .filter(|p| marked.contains(&p.pid))
        .collect()
}

/// Mount points of this mount namespace, in mountinfo order (parents before children).
pub fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .collect()
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    let below = format!("{}/", dir.trim_end_matches('/'));
    mount_points()
        .into_iter()
        .filter(|m| *m == dir || m.starts_with(&below))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmount (lazily, children first) everything at or below `dir`; returns what stays mounted.
pub fn unmount_under(dir: &Path) -> Vec<String> {
    for _ in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_under(dir)
}
