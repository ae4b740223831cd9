//! Seccomp: an OCI `linux.seccomp` profile compiled to a classic BPF
//! program and installed in the container's first process just before it
//! runs its program; no libseccomp, which the static build lacks.
//!
//! The bundle's profile never reaches libcontainer: [`take`] moves it out
//! of the runtime's `config.json` into a [`Confinement`] beside it, and
//! [`crate::runtime`]'s executor installs it through [`crate::sys`].
//! Which profile a container has (Docker's default, a file, none) is the
//! builder's decision, written into `config.json`; this module enforces
//! whatever is there.
//!
//! The order is runc's (`libcontainer/standard_init_linux.go`): with
//! `noNewPrivileges` the filter is loaded as late as possible, by the
//! executor; without it the kernel lets only a process with
//! `CAP_SYS_ADMIN` load a filter, which libcontainer has already dropped
//! when the executor runs. So [`take`] has libcontainer keep
//! `CAP_SYS_ADMIN` in the effective and permitted sets, and the executor
//! drops it right after loading the filter, before `execve`: the program
//! starts with exactly the capabilities `config.json` gives it.
//!
//! Only x86_64 system calls are filtered: a 32-bit (`int 0x80`) or x32
//! call gets `ENOSYS`, whatever the profile says, so that no profile can be
//! bypassed through another architecture's numbers.

mod x86_64;

use libcontainer::oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde_json::{Value, json};

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A compiled profile: the program and the `seccomp(2)` flags to load it
/// with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub program: Vec<Instruction>,
    pub flags: u32,
}

/// What the executor installs: the filter, and whether it must drop the
/// `CAP_SYS_ADMIN` that [`take`] kept for loading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    pub filter: Filter,
    pub drop_sys_admin: bool,
}

/// The file beside the runtime's `config.json` that holds the profile.
pub const FILE: &str = "seccomp.json";

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
/// The kernel's `BPF_MAXINSNS`.
const MAX_INSTRUCTIONS: usize = 4096;

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// The x86_64 number of system call `name`.
pub fn number(name: &str) -> Option<u32> {
    x86_64::SYSCALLS
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .and_then(|i| x86_64::SYSCALLS.get(i))
        .map(|(_, nr)| *nr)
}

/// The return value of `action`; `errno` is the profile's `errnoRet`.
fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, String> {
    let data = |value: u32| {
        if value > 0xffff {
            return Err(format!("errnoRet {value} is out of range (at most 65535)"));
        }
        Ok(value)
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data(errno.unwrap_or(EPERM))?,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data(errno.unwrap_or(EPERM))?,
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => {
            return Err("SCMP_ACT_NOTIFY needs a seccomp agent, which berth does not run".into());
        }
    })
}

/// Where a jump in a condition's code goes.
#[derive(Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// The end of the condition: it holds.
    Pass,
    /// The next rule: the condition does not hold.
    Fail,
}

/// An instruction whose jumps are still symbolic.
struct Step {
    code: u16,
    k: u32,
    jt: Target,
    jf: Target,
}

fn load(k: u32) -> Step {
    Step {
        code: LD_W_ABS,
        k,
        jt: Target::Next,
        jf: Target::Next,
    }
}

fn and(k: u32) -> Step {
    Step {
        code: ALU_AND_K,
        k,
        jt: Target::Next,
        jf: Target::Next,
    }
}

fn jump(code: u16, k: u32, jt: Target, jf: Target) -> Step {
    Step { code, k, jt, jf }
}

/// The code of one argument comparison, 64 bits wide as libseccomp
/// compares them: the high words decide unless they are equal.
fn condition(arg: &LinuxSeccompArg) -> Result<Vec<Step>, String> {
    use Target::{Fail, Next, Pass};
    let index = u32::try_from(arg.index())
        .ok()
        .filter(|i| *i < 6)
        .ok_or_else(|| format!("argument index {} is out of range (0 to 5)", arg.index()))?;
    let low = OFFSET_ARGS + 8 * index;
    let high = low + 4;
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let (vh, vl) = split(arg.value());
    Ok(match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => vec![
            load(high),
            jump(JMP_JEQ_K, vh, Next, Fail),
            load(low),
            jump(JMP_JEQ_K, vl, Next, Fail),
        ],
        LinuxSeccompOperator::ScmpCmpNe => vec![
            load(high),
            jump(JMP_JEQ_K, vh, Next, Pass),
            load(low),
            jump(JMP_JEQ_K, vl, Fail, Next),
        ],
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (mh, ml) = (vh, vl);
            let (dh, dl) = split(arg.value_two().unwrap_or(0));
            vec![
                load(high),
                and(mh),
                jump(JMP_JEQ_K, dh, Next, Fail),
                load(low),
                and(ml),
                jump(JMP_JEQ_K, dl, Next, Fail),
            ]
        }
        // Greater: the high words decide unless equal, then the low ones.
        op @ (LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe) => {
            let low_test = match op {
                LinuxSeccompOperator::ScmpCmpGt => JMP_JGT_K,
                _ => JMP_JGE_K,
            };
            vec![
                load(high),
                jump(JMP_JGT_K, vh, Pass, Next),
                jump(JMP_JEQ_K, vh, Next, Fail),
                load(low),
                jump(low_test, vl, Next, Fail),
            ]
        }
        // Less: the negation of greater-or-equal (and of greater).
        op => {
            let low_test = match op {
                LinuxSeccompOperator::ScmpCmpLt => JMP_JGE_K,
                _ => JMP_JGT_K,
            };
            vec![
                load(high),
                jump(JMP_JGE_K, vh, Next, Pass),
                jump(JMP_JEQ_K, vh, Next, Fail),
                load(low),
                jump(low_test, vl, Fail, Next),
            ]
        }
    })
}

/// A program written from its end: every jump goes forward, so its target
/// is already written when the jump is, and a label is the length the
/// program had just after its target was written.
#[derive(Default)]
struct Backwards {
    reversed: Vec<Instruction>,
}

impl Backwards {
    fn label(&self) -> usize {
        self.reversed.len()
    }

    fn offset(&self, to: usize) -> Result<u8, String> {
        u8::try_from(self.reversed.len() - to)
            .map_err(|_| "a rule is too long for a classic BPF jump".to_string())
    }

    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) {
        self.reversed.push(Instruction { code, jt, jf, k });
    }

    fn ret(&mut self, k: u32) {
        self.push(RET_K, 0, 0, k);
    }

    /// One condition's `steps` in order; `Fail` goes to `fail`.
    fn steps(&mut self, steps: &[Step], fail: usize) -> Result<(), String> {
        let pass = self.label();
        for step in steps.iter().rev() {
            let target = |t: Target| match t {
                Target::Next => Ok(0),
                Target::Pass => self.offset(pass),
                Target::Fail => self.offset(fail),
            };
            let (jt, jf) = (target(step.jt)?, target(step.jf)?);
            self.push(step.code, jt, jf, step.k);
        }
        Ok(())
    }

    fn finish(self) -> Vec<Instruction> {
        let mut program = self.reversed;
        program.reverse();
        program
    }
}

/// Compiles `profile` for x86_64.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, String> {
    let default = action(profile.default_action(), profile.default_errno_ret())
        .map_err(|e| format!("defaultAction: {e}"))?;
    let mut flags = 0;
    for flag in profile.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err("flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a seccomp agent, which berth does not run".into());
            }
        };
    }

    // Each call's rules in the profile's order; a rule with arguments is
    // tried before one without, which would otherwise hide it.
    let mut rules: std::collections::BTreeMap<u32, Vec<(&[LinuxSeccompArg], u32)>> =
        Default::default();
    for syscall in profile.syscalls().iter().flatten() {
        let ret = action(syscall.action(), syscall.errno_ret())
            .map_err(|e| format!("{}: {e}", syscall.names().join(", ")))?;
        let args = syscall.args().as_deref().unwrap_or_default();
        for name in syscall.names() {
            let Some(nr) = number(name) else { continue };
            rules.entry(nr).or_default().push((args, ret));
        }
    }

    let mut code = Backwards::default();
    code.ret(default);
    for (nr, mut list) in rules.into_iter().rev() {
        list.sort_by_key(|(args, _)| args.is_empty());
        let next = code.label();
        match list.as_slice() {
            [([], ret), ..] => {
                code.ret(*ret);
                code.push(JMP_JEQ_K, 0, 1, nr);
            }
            _ => {
                // None of its rules matched: the default action.
                code.ret(default);
                for (args, ret) in list.iter().rev() {
                    let fail = code.label();
                    code.ret(*ret);
                    for arg in args.iter().rev() {
                        let steps = condition(arg).map_err(|e| format!("syscall {nr}: {e}"))?;
                        code.steps(&steps, fail)?;
                    }
                }
                let length = u32::try_from(code.label() - next).unwrap_or(u32::MAX);
                code.push(JMP_JA, 0, 0, length);
                code.push(JMP_JEQ_K, 1, 0, nr);
            }
        }
    }
    // The number is loaded once, before every comparison of it.
    code.push(LD_W_ABS, 0, 0, OFFSET_NR);
    code.ret(RET_ERRNO | ENOSYS);
    code.push(JMP_JGE_K, 0, 1, X32_SYSCALL_BIT);
    code.push(LD_W_ABS, 0, 0, OFFSET_NR);
    code.ret(RET_ERRNO | ENOSYS);
    code.push(JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64);
    code.push(LD_W_ABS, 0, 0, OFFSET_ARCH);
    let program = code.finish();
    if program.len() > MAX_INSTRUCTIONS {
        return Err(format!(
            "the profile compiles to {} instructions, more than the kernel's {MAX_INSTRUCTIONS}",
            program.len()
        ));
    }
    Ok(Filter { program, flags })
}

const SYS_ADMIN: &str = "CAP_SYS_ADMIN";

/// Moves `linux.seccomp` out of the runtime's `config.json` and compiles
/// it; says what [`FILE`] holds, or `None` when there is no profile. When
/// the process has no `noNewPrivileges` and drops `CAP_SYS_ADMIN`, it is
/// kept in the effective and permitted sets for the executor to load the
/// filter with and drop.
pub fn take(config: &mut Value) -> Result<Option<Value>, String> {
    let Some(profile) = config
        .get_mut("linux")
        .and_then(Value::as_object_mut)
        .and_then(|linux| linux.remove("seccomp"))
        .filter(|p| !p.is_null())
    else {
        return Ok(None);
    };
    let parsed: LinuxSeccomp =
        serde_json::from_value(profile.clone()).map_err(|e| format!("linux.seccomp: {e}"))?;
    compile(&parsed).map_err(|e| format!("linux.seccomp: {e}"))?;
    let no_new_privileges = config.pointer("/process/noNewPrivileges") == Some(&json!(true));
    let mut drop_sys_admin = false;
    if !no_new_privileges {
        let capabilities = config
            .pointer_mut("/process/capabilities")
            .and_then(Value::as_object_mut);
        let effective_lacks = |set: Option<&Value>| {
            set.and_then(Value::as_array)
                .is_some_and(|s| !s.iter().any(|c| c == SYS_ADMIN))
        };
        if let Some(capabilities) = capabilities
            && effective_lacks(capabilities.get("effective"))
        {
            drop_sys_admin = true;
            for set in ["effective", "permitted"] {
                if let Some(list) = capabilities.get_mut(set).and_then(Value::as_array_mut)
                    && !list.iter().any(|c| c == SYS_ADMIN)
                {
                    list.push(json!(SYS_ADMIN));
                }
            }
        }
    }
    Ok(Some(
        json!({ "profile": profile, "dropSysAdmin": drop_sys_admin }),
    ))
}

/// Reads what [`take`] wrote.
pub fn confinement(file: &Value) -> Result<Confinement, String> {
    let profile: LinuxSeccomp =
        serde_json::from_value(file["profile"].clone()).map_err(|e| format!("{FILE}: {e}"))?;
    Ok(Confinement {
        filter: compile(&profile)?,
        drop_sys_admin: file["dropSysAdmin"] == json!(true),
    })
}

/// Loads the filter into this process (the container's, in the executor)
/// and drops what [`take`] kept for it. Everything after this runs under
/// the filter: the profile must allow `capset` (when a capability is
/// dropped) and `execve`, as Docker's does.
pub fn install(confinement: &Confinement) -> Result<(), String> {
    crate::sys::load_seccomp_filter(&confinement.filter)
        .map_err(|e| format!("loading the seccomp filter: {e}"))?;
    if confinement.drop_sys_admin {
        use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
        let mut sets = capabilities(None).map_err(|e| format!("capget: {e}"))?;
        sets.effective.remove(CapabilitySet::SYS_ADMIN);
        sets.permitted.remove(CapabilitySet::SYS_ADMIN);
        set_capabilities(None, sets)
            .map_err(|e| format!("dropping CAP_SYS_ADMIN after loading the seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
