//! seccomp: the OCI profile (`linux.seccomp`, which containerd fills from RuntimeDefault or a
//! Localhost file) compiled to BPF with seccompiler, and loaded into the container process.
//!
//! A profile mixes actions, while a seccompiler filter has a single match action, so filters
//! are stacked and the kernel takes the most restrictive verdict: one base filter in which every
//! rule of the profile matches to Allow and anything else gets the default action (left out when
//! the default is Allow), then one filter per distinct non-Allow rule action (its rules give that
//! action, anything else Allow). A call a rule with action X matches is thus X (the base allows
//! it); an unmatched call gets the default; equal precedences (two ERRNOs) are decided by the
//! later filter, i.e. the rule's. Unknown syscall names are skipped, as libseccomp does for names
//! this architecture lacks. Only x86_64 is compiled, whatever the architectures list says
//! (libseccomp too always keeps the native one); calls of another ABI (i386 `int 0x80`) are killed.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompFilterFlag as Flag,
    LinuxSeccompOperator as Op, LinuxSyscall,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// A profile that cannot be compiled; the message names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// An action this implementation cannot give (SCMP_ACT_NOTIFY needs a listener).
    #[error("seccomp profile: action {0} is not supported")]
    UnsupportedAction(String),
    /// A flag this implementation does not know.
    #[error("seccomp profile: flag {0} is not supported")]
    UnsupportedFlag(String),
    /// A rule's argument condition is malformed.
    #[error("seccomp profile: syscall {name}: {reason}")]
    BadArg {
        /// the syscall of the rule
        name: String,
        /// what is wrong
        reason: String,
    },
    /// seccompiler refused the filter (e.g. too many instructions).
    #[error("seccomp profile: {0}")]
    Compile(String),
}

/// The compiled profile: BPF programs in load order, and the seccomp(2) flags.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// programs, loaded first to last
    pub programs: Vec<BpfProgram>,
    /// SECCOMP_FILTER_FLAG_* bits
    pub flags: libc::c_ulong,
}

/// The seccompiler action of an OCI action (`errno` = the rule's or default errnoRet).
fn action(a: Action, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    let errno = errno.unwrap_or(libc::EPERM as u32);
    Ok(match a {
        Action::ScmpActAllow => SeccompAction::Allow,
        Action::ScmpActErrno => SeccompAction::Errno(errno),
        Action::ScmpActKill | Action::ScmpActKillThread => SeccompAction::KillThread,
        Action::ScmpActKillProcess => SeccompAction::KillProcess,
        Action::ScmpActTrap => SeccompAction::Trap,
        Action::ScmpActLog => SeccompAction::Log,
        Action::ScmpActTrace => SeccompAction::Trace(errno),
        Action::ScmpActNotify => return Err(SeccompError::UnsupportedAction(a.to_string())),
    })
}

fn flag(f: Flag) -> Result<libc::c_ulong, SeccompError> {
    Ok(match f {
        Flag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
        Flag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
        Flag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
        other => return Err(SeccompError::UnsupportedFlag(other.to_string())),
    })
}

/// One OCI rule's conditions (ANDed) as a seccompiler rule; None = no conditions.
fn rule(name: &str, s: &LinuxSyscall) -> Result<Option<SeccompRule>, SeccompError> {
    let bad = |reason: String| SeccompError::BadArg {
        name: name.to_string(),
        reason,
    };
    let mut conditions = Vec::new();
    for a in s.args().iter().flatten() {
        let index = u8::try_from(a.index())
            .ok()
            .filter(|i| *i < 6)
            .ok_or_else(|| bad(format!("argument index {} is not 0-5", a.index())))?;
        // libseccomp compares all 64 bits on x86_64; MASKED_EQ is (arg & value) == valueTwo.
        let (op, value) = match a.op() {
            Op::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
            Op::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
            Op::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
            Op::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
            Op::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
            Op::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
            Op::ScmpCmpMaskedEq => (
                SeccompCmpOp::MaskedEq(a.value()),
                a.value_two().unwrap_or(0),
            ),
        };
        let c = SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
            .map_err(|e| bad(e.to_string()))?;
        conditions.push(c);
    }
    if conditions.is_empty() {
        return Ok(None);
    }
    SeccompRule::new(conditions)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// Rules per syscall number; an empty chain matches the call whatever its arguments.
type Chains = BTreeMap<i64, Vec<SeccompRule>>;

fn add(chains: &mut Chains, nr: i64, r: Option<SeccompRule>) {
    let unconditional = chains.get(&nr).is_some_and(Vec::is_empty);
    match r {
        _ if unconditional => {}
        None => {
            chains.insert(nr, Vec::new());
        }
        Some(r) => chains.entry(nr).or_default().push(r),
    }
}

fn filter(
    chains: Chains,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    SeccompFilter::new(chains, mismatch, matched, TargetArch::x86_64)
        .and_then(BpfProgram::try_from)
        .map_err(|e| SeccompError::Compile(e.to_string()))
}

/// Compile `profile` for x86_64. Errors name the offending part of the profile.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filters, SeccompError> {
    let mut flags = 0;
    for f in profile.flags().iter().flatten() {
        flags |= flag(*f)?;
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut all = Chains::new();
    // Per distinct non-Allow action, in order of first appearance.
    let mut by_action: Vec<(SeccompAction, Chains)> = Vec::new();
    for s in profile.syscalls().iter().flatten() {
        let act = action(s.action(), s.errno_ret())?;
        for name in s.names() {
            let r = rule(name, s)?;
            let Ok(nr) = syscalls::Sysno::from_str(name) else {
                tracing::debug!(syscall = %name, "seccomp: unknown syscall skipped");
                continue;
            };
            let nr = i64::from(nr.id());
            add(&mut all, nr, r.clone());
            if act == SeccompAction::Allow {
                continue;
            }
            let i = match by_action.iter().position(|(a, _)| *a == act) {
                Some(i) => i,
                None => {
                    by_action.push((act.clone(), Chains::new()));
                    by_action.len() - 1
                }
            };
            add(&mut by_action[i].1, nr, r);
        }
    }
    let mut programs = Vec::new();
    if default != SeccompAction::Allow {
        programs.push(filter(all, default, SeccompAction::Allow)?);
    }
    for (act, chains) in by_action {
        if !chains.is_empty() {
            programs.push(filter(chains, SeccompAction::Allow, act)?);
        }
    }
    Ok(Filters { programs, flags })
}

/// Load `filters` into the calling thread with seccomp(2). Without no_new_privs this needs
/// CAP_SYS_ADMIN, so then it must run before capabilities are dropped.
pub fn load(filters: &Filters) -> std::io::Result<()> {
    for p in &filters.programs {
        let prog = libc::sock_fprog {
            len: u16::try_from(p.len())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?,
            filter: p.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `p`, a live, correctly sized array of BPF instructions; the
        // kernel copies it during the call and keeps no pointer to our memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                filters.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("profile json")
    }

    #[test]
    fn allow_default_with_one_errno_rule_is_one_filter() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
               "syscalls":[{"names":["mkdir","mkdirat","no_such_call"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
        );
        let f = compile(&p).expect("compiles");
        assert_eq!(f.programs.len(), 1);
        assert_eq!(f.flags, 0);
    }

    #[test]
    fn mixed_actions_stack_a_base_and_one_filter_per_action() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
               "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
               "syscalls":[
                 {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                 {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                 {"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                 {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                 {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"},
                 {"names":["uname"],"action":"SCMP_ACT_LOG"}]}"#,
        );
        let f = compile(&p).expect("compiles");
        assert_eq!(f.programs.len(), 4, "base + errno + kill + log");
    }

    #[test]
    fn unconditional_rule_wins_over_conditional_ones() {
        let mut c = Chains::new();
        let cond = SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::Eq,
            1,
        )
        .expect("cond")])
        .expect("rule");
        add(&mut c, 5, Some(cond.clone()));
        add(&mut c, 5, None);
        add(&mut c, 5, Some(cond));
        assert_eq!(c.get(&5).map(Vec::len), Some(0));
    }

    #[test]
    fn bad_profiles_are_named() {
        let notify = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        assert_eq!(
            compile(&notify).expect_err("notify").to_string(),
            "seccomp profile: action SCMP_ACT_NOTIFY is not supported"
        );
        // The architectures list does not matter: x86_64 is compiled in any case.
        let arm_only = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_ARM"],
               "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert_eq!(compile(&arm_only).map(|f| f.programs.len()), Ok(1));
        let idx = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert_eq!(
            compile(&idx).expect_err("index").to_string(),
            "seccomp profile: syscall read: argument index 7 is not 0-5"
        );
    }

    #[test]
    fn a_profile_as_large_as_the_default_fits() {
        // Like containerd's RuntimeDefault: default ERRNO, ~all calls allowed, a few with args.
        let names: Vec<String> = syscalls::Sysno::iter()
            .map(|s| s.name().to_string())
            .collect();
        assert!(names.len() > 300, "{}", names.len());
        let p = profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
                {{"names":{},"action":"SCMP_ACT_ALLOW"}},
                {{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}}]}},
                {{"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}}]}}"#,
            serde_json::to_string(&names).expect("names")
        ));
        let f = compile(&p).expect("compiles");
        assert_eq!(f.programs.len(), 2);
        assert!(f.programs.iter().all(|p| p.len() < 4096));
    }
}
