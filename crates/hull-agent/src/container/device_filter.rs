//! The cgroup device allow-list (`linux.resources.devices`) on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup, built the way runc builds
//! it (libcontainer/cgroups/devices/ebpf): the spec's rules, then runc's default devices, checked
//! last rule first, the first match deciding, anything unmatched denied.
//!
//! No crate emits programs at run time and loads them without libbpf (aya loads compiled ELF
//! objects), so the dozen instructions and the two `bpf(2)` calls are written out here.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::AgentError;

/// One rule of the allow-list: `None` is a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// `BPF_DEVCG_DEV_BLOCK` (1), `BPF_DEVCG_DEV_CHAR` (2), or any.
    pub kind: Option<u32>,
    /// Major number.
    pub major: Option<u32>,
    /// Minor number.
    pub minor: Option<u32>,
    /// `BPF_DEVCG_ACC_MKNOD` (1) | `READ` (2) | `WRITE` (4).
    pub access: u32,
}

const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
const ACC_ALL: u32 = 1 | 2 | 4;

impl Rule {
    const fn char(major: Option<u32>, minor: Option<u32>, access: u32) -> Rule {
        Rule {
            allow: true,
            kind: Some(DEV_CHAR),
            major,
            minor,
            access,
        }
    }
}

/// What runc allows every container on top of the spec (specconv's AllowedDevices): mknod of
/// any node, and the nodes it makes in /dev.
fn runc_defaults() -> Vec<Rule> {
    let rwm = ACC_ALL;
    vec![
        Rule::char(None, None, 1),
        Rule {
            kind: Some(DEV_BLOCK),
            ..Rule::char(None, None, 1)
        },
        Rule::char(Some(1), Some(3), rwm),    // null
        Rule::char(Some(1), Some(8), rwm),    // random
        Rule::char(Some(1), Some(7), rwm),    // full
        Rule::char(Some(5), Some(0), rwm),    // tty
        Rule::char(Some(1), Some(5), rwm),    // zero
        Rule::char(Some(1), Some(9), rwm),    // urandom
        Rule::char(Some(5), Some(1), rwm),    // console
        Rule::char(Some(136), None, rwm),     // pts
        Rule::char(Some(5), Some(2), rwm),    // ptmx
        Rule::char(Some(10), Some(200), rwm), // net/tun
    ]
}

fn number(v: Option<i64>, what: &str) -> Result<Option<u32>, AgentError> {
    match v {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            AgentError::InvalidArgument(format!("device cgroup rule: {what} {n} is out of range"))
        }),
    }
}

/// The rules of `spec_rules` (in order) followed by runc's defaults; `None` when the spec has
/// no rules at all (nothing to enforce, as runc without device rules).
pub fn rules(spec_rules: &[LinuxDeviceCgroup]) -> Result<Option<Vec<Rule>>, AgentError> {
    if spec_rules.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(spec_rules.len() + 12);
    for r in spec_rules {
        let kind = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            // runc skips fifos: the device controller never sees them.
            LinuxDeviceType::P => continue,
        };
        let mut access = 0;
        for c in r.access().as_deref().unwrap_or("rwm").chars() {
            access |= match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                other => {
                    return Err(AgentError::InvalidArgument(format!(
                        "device cgroup rule: access {other:?} is not one of r, w, m"
                    )))
                }
            };
        }
        out.push(Rule {
            allow: r.allow(),
            kind,
            major: number(r.major(), "major")?,
            minor: number(r.minor(), "minor")?,
            access: if access == 0 { ACC_ALL } else { access },
        });
    }
    out.extend(runc_defaults());
    Ok(Some(out))
}

/// One eBPF instruction, encoded as the kernel's `struct bpf_insn`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const AND_K: u8 = 0x57; // dst &= imm
const RSH_K: u8 = 0x77; // dst >>= imm
const MOV_X: u8 = 0xbf; // dst = src
const MOV_K: u8 = 0xb7; // dst = imm
const JNE_K: u8 = 0x55; // if dst != imm goto +off
const JEQ_K: u8 = 0x15; // if dst == imm goto +off
const EXIT: u8 = 0x95;

/// The program: load type, access, major, minor from `struct bpf_cgroup_dev_ctx`, then one
/// block per rule, last rule first, each returning its verdict on a match; 0 (deny) at the end.
pub fn program(rules: &[Rule]) -> Vec<u64> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Each check jumps past the rest of the block; its length is known once built.
        let mut block: Vec<(u8, u8, u8, i32)> = Vec::new(); // (code, dst, src, imm); jumps to next
        if let Some(k) = r.kind {
            block.push((JNE_K, 2, 0, k as i32));
        }
        if r.access != ACC_ALL {
            block.push((MOV_X, 1, 3, 0));
            block.push((AND_K, 1, 0, r.access as i32));
            block.push((JEQ_K, 1, 0, 0));
        }
        if let Some(m) = r.major {
            block.push((JNE_K, 4, 0, m as i32));
        }
        if let Some(m) = r.minor {
            block.push((JNE_K, 5, 0, m as i32));
        }
        let unconditional = block.is_empty();
        block.push((MOV_K, 0, 0, i32::from(r.allow)));
        block.push((EXIT, 0, 0, 0));
        let len = block.len();
        for (i, (code, dst, src, imm)) in block.into_iter().enumerate() {
            let off = if matches!(code, JNE_K | JEQ_K) {
                (len - i - 1) as i16
            } else {
                0
            };
            p.push(insn(code, dst, src, off, imm));
        }
        // A rule matching every device decides for all earlier ones: the verifier refuses
        // code that cannot be reached.
        if unconditional {
            return p;
        }
    }
    p.push(insn(MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i32> {
    // SAFETY: `attr` is a zero-initialised buffer as large as the kernel's `union bpf_attr`
    // prefix for these commands; the kernel reads at most `attr.len()` bytes of it, and every
    // pointer stored in it (instructions, license) outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    i32::try_from(rc).map_err(|_| std::io::Error::other("bpf returned an out-of-range fd"))
}

/// Load the device program of `rules`; a refusal carries the kernel verifier's last words.
fn load(rules: &[Rule]) -> Result<OwnedFd, AgentError> {
    let insns = program(rules);
    let license = c"Apache-2.0";
    let try_load = |log: Option<&mut Vec<u8>>| {
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
        attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        if let Some(log) = log {
            attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
            attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
            attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let prog = match try_load(None) {
        Ok(fd) => fd,
        Err(e) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 1 << 20];
            let _ = try_load(Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let last: Vec<&str> = text.lines().rev().take(3).collect();
            return Err(AgentError::io(
                "load the device cgroup program",
                format!("{e} (verifier: {})", last.join(" | ")),
            ));
        }
    };
    // SAFETY: BPF_PROG_LOAD just returned this new fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(prog) })
}

/// Load `rules` as a device program and attach it to the cgroup `dir`.
pub fn attach(dir: &Path, rules: &[Rule]) -> Result<(), AgentError> {
    let prog = load(rules)?;
    let cgroup = File::open(dir)
        .map_err(|e| AgentError::io(&format!("open cgroup {}", dir.display()), e))?;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| AgentError::io("attach the device cgroup program", e))?;
    tracing::debug!(cgroup = %dir.display(), rules = rules.len(), "device cgroup program attached");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter of exactly the instructions `program` emits.
    fn run(p: &[u64], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0;
        loop {
            let i = p[pc];
            let (code, dst, src) = (
                i as u8,
                ((i >> 8) & 0xf) as usize,
                ((i >> 12) & 0xf) as usize,
            );
            let off = (i >> 16) as u16 as i16;
            let imm = (i >> 32) as u32 as i32;
            pc += 1;
            match code {
                LDX_W => r[dst] = u64::from(ctx[off as usize / 4]),
                AND_K => r[dst] &= imm as u32 as u64,
                RSH_K => r[dst] >>= imm,
                MOV_X => r[dst] = r[src],
                MOV_K => r[dst] = imm as u32 as u64,
                JNE_K if r[dst] != imm as u32 as u64 => pc += off as usize,
                JEQ_K if r[dst] == imm as u32 as u64 => pc += off as usize,
                JNE_K | JEQ_K => {}
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn containerd_default() -> Vec<Rule> {
        let deny_all: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":false,"access":"rwm"}"#).expect("rule");
        rules(&[deny_all]).expect("rules").expect("some")
    }

    #[test]
    fn containerd_default_allows_runc_defaults_only() {
        let p = program(&containerd_default());
        let (r, w, m) = (2, 4, 1);
        assert_eq!(run(&p, DEV_CHAR, r | w, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, DEV_CHAR, r, 136, 7), 1, "a pts");
        assert_eq!(run(&p, DEV_CHAR, m, 1, 11), 1, "mknod of kmsg");
        assert_eq!(run(&p, DEV_CHAR, r, 1, 11), 0, "read kmsg");
        assert_eq!(run(&p, DEV_BLOCK, r, 8, 0), 0, "a disk");
        assert_eq!(run(&p, DEV_CHAR, r, 10, 232), 0, "kvm");
    }

    #[test]
    fn later_rules_win_and_allow_all_allows_all() {
        let json = r#"[{"allow":false,"access":"rwm"},
            {"allow":true,"type":"c","major":10,"minor":232,"access":"rw"},
            {"allow":false,"type":"c","major":10,"minor":232,"access":"w"}]"#;
        let spec: Vec<LinuxDeviceCgroup> = serde_json::from_str(json).expect("rules");
        let p = program(&rules(&spec).expect("rules").expect("some"));
        assert_eq!(run(&p, DEV_CHAR, 2, 10, 232), 1, "read allowed");
        assert_eq!(
            run(&p, DEV_CHAR, 4, 10, 232),
            0,
            "write denied by the last rule"
        );
        let all: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"access":"rwm"}]"#,
        )
        .expect("rules");
        let p = program(&rules(&all).expect("rules").expect("some"));
        assert_eq!(run(&p, DEV_BLOCK, 6, 8, 0), 1, "privileged: a disk");
    }

    #[test]
    fn the_kernel_loads_it() {
        if !hull_protocol::test_support::require_root() {
            return;
        }
        load(&containerd_default()).expect("loaded");
        let all: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"access":"rwm"}]"#,
        )
        .expect("rules");
        load(&rules(&all).expect("rules").expect("some")).expect("privileged loaded");
    }

    #[test]
    fn bad_rules_and_no_rules() {
        assert_eq!(rules(&[]).expect("none"), None);
        let bad: Vec<LinuxDeviceCgroup> =
            serde_json::from_str(r#"[{"allow":true,"access":"rx"}]"#).expect("rules");
        assert!(rules(&bad).is_err());
    }
}
