//! Which devices a container may use: the OCI `linux.resources.devices`
//! rules, as a `BPF_PROG_TYPE_CGROUP_DEVICE` program for its cgroup v2
//! directory.
//!
//! The kernel runs the program on every open and `mknod` of a device node
//! by a process of the cgroup, with the device's type, numbers and the
//! access asked for; it returns 1 to allow and 0 to deny. [`rules`] reads a
//! `config.json`'s rules and appends runc's defaults; [`program`] turns
//! them into instructions, which [`crate::sys`] loads and attaches. No
//! I/O here.
//!
//! Semantics, those of runc and of the cgroup v1 device controller:
//! everything is denied, then the rules are read from the last one back and
//! the first that matches the request decides. An allow matches a device it
//! names when it grants every access asked for (`r`, `w`, `m`); a deny
//! matches when it names any of them. So `allow c 1:3 r` then
//! `allow c 1:3 w` allows opening 1:3 for reading or for writing, not for
//! both at once, and a later `deny c 1:3 w` takes writing alone.

use serde_json::Value;

/// A device type as a rule names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `a`: block and character devices.
    All,
    Block,
    /// `c` and `u` (unbuffered character devices are character devices).
    Char,
}

/// `m`: making a node (`mknod`).
pub const MKNOD: u8 = 1;
/// `r`: opening for reading.
pub const READ: u8 = 2;
/// `w`: opening for writing.
pub const WRITE: u8 = 4;

/// One rule, in the kernel's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub kind: Kind,
    /// `None` is any major number (`*`).
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// [`MKNOD`], [`READ`] and [`WRITE`] bits.
    pub access: u8,
}

impl Rule {
    const fn allow(kind: Kind, major: Option<u32>, minor: Option<u32>, access: u8) -> Rule {
        Rule {
            allow: true,
            kind,
            major,
            minor,
            access,
        }
    }
}

/// Every access: `rwm`.
pub const ALL: u8 = MKNOD | READ | WRITE;

/// runc's default rules, which every container gets after its own: making
/// any node, and using `null`, `zero`, `full`, `random`, `urandom`, `tty`,
/// `ptmx`, the pseudo-terminals (`pts/*`) and `net/tun`. Opening a node
/// made with the first two is still denied unless another rule allows it.
/// Not `console` (5:1), which runc left out in 1.0 as it reaches the
/// host's console; a container that needs it is granted it.
pub const DEFAULTS: &[Rule] = &[
    Rule::allow(Kind::Char, None, None, MKNOD),
    Rule::allow(Kind::Block, None, None, MKNOD),
    Rule::allow(Kind::Char, Some(1), Some(3), ALL),
    Rule::allow(Kind::Char, Some(1), Some(5), ALL),
    Rule::allow(Kind::Char, Some(1), Some(7), ALL),
    Rule::allow(Kind::Char, Some(1), Some(8), ALL),
    Rule::allow(Kind::Char, Some(1), Some(9), ALL),
    Rule::allow(Kind::Char, Some(5), Some(0), ALL),
    Rule::allow(Kind::Char, Some(5), Some(2), ALL),
    Rule::allow(Kind::Char, Some(10), Some(200), ALL),
    Rule::allow(Kind::Char, Some(136), None, ALL),
];

/// The rules of `config` (a `config.json`), then [`DEFAULTS`]. A rule init
/// cannot read fails with what is wrong with it; rules for FIFOs (`p`),
/// which the kernel does not ask about, are left out.
pub fn rules(config: &Value) -> Result<Vec<Rule>, String> {
    let listed = match config.pointer("/linux/resources/devices") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(list)) => &list[..],
        Some(other) => return Err(format!("linux.resources.devices is not a list: {other}")),
    };
    let mut rules = Vec::new();
    for (i, rule) in listed.iter().enumerate() {
        if let Some(rule) = parse(rule).map_err(|e| format!("linux.resources.devices[{i}]: {e}"))? {
            rules.push(rule);
        }
    }
    rules.extend_from_slice(DEFAULTS);
    Ok(rules)
}

/// Whether `config`'s own rules allow opening any device: such a
/// container's root keeps its device nodes usable (it is not `nodev`).
pub fn granted(config: &Value) -> bool {
    config
        .pointer("/linux/resources/devices")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter().any(|rule| {
                matches!(parse(rule), Ok(Some(r)) if r.allow && r.access & (READ | WRITE) != 0)
            })
        })
}

fn parse(rule: &Value) -> Result<Option<Rule>, String> {
    let Some(object) = rule.as_object() else {
        return Err(format!("not an object: {rule}"));
    };
    let allow = match object.get("allow") {
        Some(Value::Bool(b)) => *b,
        other => return Err(format!("allow is {other:?}, not true or false")),
    };
    let kind = match object.get("type").map(|t| (t, t.as_str())) {
        None | Some((Value::Null, _)) | Some((_, Some("a"))) => Kind::All,
        Some((_, Some("b"))) => Kind::Block,
        Some((_, Some("c" | "u"))) => Kind::Char,
        Some((_, Some("p"))) => return Ok(None),
        Some((other, _)) => return Err(format!("unknown type {other} (a, b, c, u or p)")),
    };
    let number = |key: &str| -> Result<Option<u32>, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            // runc's spelling of `*`.
            Some(v) if v.as_i64() == Some(-1) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| i32::try_from(*n).is_ok())
                .map(Some)
                .ok_or_else(|| format!("{key} {v} is not a device number")),
        }
    };
    let access = match object.get("access") {
        None | Some(Value::Null) => ALL,
        Some(Value::String(s)) => {
            let mut bits = 0;
            for c in s.chars() {
                bits |= match c {
                    'm' => MKNOD,
                    'r' => READ,
                    'w' => WRITE,
                    _ => return Err(format!("access {s:?}: {c:?} is not r, w or m")),
                };
            }
            // An empty string is all of them, as with runc.
            if bits == 0 { ALL } else { bits }
        }
        Some(other) => return Err(format!("access {other} is not a string")),
    };
    Ok(Some(Rule {
        allow,
        kind,
        major: number("major")?,
        minor: number("minor")?,
        access,
    }))
}

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`:
/// opcode, destination register in the low nibble and source register in
/// the high nibble of `regs`, offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (linux/bpf.h, linux/bpf_common.h): class | operation | source.
const LDX_MEM_W: u8 = 0x01 | 0x60; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_MOV_K: u8 = 0x07 | 0xb0; // BPF_ALU64 | BPF_MOV | BPF_K
const ALU64_MOV_X: u8 = 0x07 | 0xb0 | 0x08; // BPF_ALU64 | BPF_MOV | BPF_X
const ALU64_AND_K: u8 = 0x07 | 0x50; // BPF_ALU64 | BPF_AND | BPF_K
const ALU64_RSH_K: u8 = 0x07 | 0x70; // BPF_ALU64 | BPF_RSH | BPF_K
const JMP_JEQ_K: u8 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JNE_K: u8 = 0x05 | 0x50; // BPF_JMP | BPF_JNE | BPF_K
const JMP_EXIT: u8 = 0x05 | 0x90; // BPF_JMP | BPF_EXIT

/// `bpf_cgroup_dev_ctx`'s device types (`BPF_DEVCG_DEV_*`).
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

// The registers the program keeps the request in.
const CTX: u8 = 1;
const TYPE: u8 = 2;
const ACCESS: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;
const SCRATCH: u8 = 6;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const fn exit_with(value: i32) -> [Insn; 2] {
    [
        insn(ALU64_MOV_K, 0, 0, 0, value),
        insn(JMP_EXIT, 0, 0, 0, 0),
    ]
}

fn jump(offset: usize) -> Result<i16, String> {
    i16::try_from(offset).map_err(|_| "too many device rules for one program".to_string())
}

/// The program that enforces `rules` ([`rules`]' order: the last rule
/// wins). Fails only when the rules are too many for the jumps of one
/// program.
pub fn program(rules: &[Rule]) -> Result<Vec<Insn>, String> {
    // The context (`bpf_cgroup_dev_ctx`): `access_type` (the access bits
    // above the type, in its low 16 bits), `major`, `minor`; each u32.
    let mut program = vec![
        insn(LDX_MEM_W, TYPE, CTX, 0, 0),
        insn(ALU64_MOV_X, ACCESS, TYPE, 0, 0),
        insn(ALU64_AND_K, TYPE, 0, 0, 0xffff),
        insn(ALU64_RSH_K, ACCESS, 0, 0, 16),
        insn(LDX_MEM_W, MAJOR, CTX, 4, 0),
        insn(LDX_MEM_W, MINOR, CTX, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let block = block(rule)?;
        // The verifier refuses unreachable instructions: a rule that
        // matches every request ends the program.
        let conclusive = block.len() == 2;
        program.extend(block);
        if conclusive {
            return Ok(program);
        }
    }
    program.extend(exit_with(0));
    Ok(program)
}

/// One rule: comparisons that skip it when the request is not its, then
/// its verdict.
fn block(rule: &Rule) -> Result<Vec<Insn>, String> {
    // Each guard is the instructions before a jump past the block, and
    // that jump (`true`: taken when equal).
    let mut guards: Vec<(Vec<Insn>, bool, u8, i32)> = Vec::new();
    match rule.kind {
        Kind::All => {}
        Kind::Block => guards.push((Vec::new(), false, TYPE, DEV_BLOCK)),
        Kind::Char => guards.push((Vec::new(), false, TYPE, DEV_CHAR)),
    }
    for (register, number) in [(MAJOR, rule.major), (MINOR, rule.minor)] {
        if let Some(n) = number {
            let n = i32::try_from(n).map_err(|_| format!("device number {n} is too large"))?;
            guards.push((Vec::new(), false, register, n));
        }
    }
    let copy = insn(ALU64_MOV_X, SCRATCH, ACCESS, 0, 0);
    match rule.allow {
        // Skipped when something asked for is not granted.
        true if rule.access != ALL => {
            let others = i32::from(!rule.access & ALL);
            let and = insn(ALU64_AND_K, SCRATCH, 0, 0, others);
            guards.push((vec![copy, and], false, SCRATCH, 0));
        }
        // Skipped when nothing asked for is denied.
        false if rule.access != ALL => {
            let and = insn(ALU64_AND_K, SCRATCH, 0, 0, i32::from(rule.access));
            guards.push((vec![copy, and], true, SCRATCH, 0));
        }
        _ => {}
    }
    let verdict = exit_with(i32::from(rule.allow));
    let mut block = Vec::new();
    let mut rest: usize = guards
        .iter()
        .map(|(before, _, _, _)| before.len() + 1)
        .sum();
    rest += verdict.len();
    for (before, when_equal, register, value) in guards {
        rest -= before.len() + 1;
        block.extend(before);
        let code = if when_equal { JMP_JEQ_K } else { JMP_JNE_K };
        block.push(insn(code, register, 0, jump(rest)?, value));
    }
    block.extend(verdict);
    Ok(block)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Runs `program` as the kernel would for a request, on the few
    /// instructions [`program`] writes; anything else fails the test.
    fn run(program: &[Insn], kind: i32, access: u8, major: u32, minor: u32) -> bool {
        let mut r = [0u64; 11];
        let ctx = [
            (u64::from(access) << 16) | kind as u64,
            u64::from(major),
            u64::from(minor),
        ];
        let mut pc = 0usize;
        for _ in 0..100_000 {
            let i = program[pc];
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            let imm = i64::from(i.imm) as u64;
            let jump = |taken: bool| match taken {
                true => (pc as i64 + 1 + i64::from(i.off)) as usize,
                false => pc + 1,
            };
            pc = match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = ctx[usize::try_from(i.off).unwrap() / 4];
                    pc + 1
                }
                ALU64_MOV_K => {
                    r[dst] = imm;
                    pc + 1
                }
                ALU64_MOV_X => {
                    r[dst] = r[src];
                    pc + 1
                }
                ALU64_AND_K => {
                    r[dst] &= imm;
                    pc + 1
                }
                ALU64_RSH_K => {
                    r[dst] >>= imm;
                    pc + 1
                }
                JMP_JEQ_K => jump(r[dst] == imm),
                JMP_JNE_K => jump(r[dst] != imm),
                JMP_EXIT => return r[0] == 1,
                code => panic!("unexpected opcode {code:#x}"),
            };
        }
        panic!("the program did not end");
    }

    fn allowed(rules: &Value, kind: i32, access: u8, major: u32, minor: u32) -> bool {
        let config = json!({"linux": {"resources": {"devices": rules}}});
        let program = program(&super::rules(&config).unwrap()).unwrap();
        run(&program, kind, access, major, minor)
    }

    const B: i32 = DEV_BLOCK;
    const C: i32 = DEV_CHAR;
    const RW: u8 = READ | WRITE;

    #[test]
    fn the_defaults_allow_runcs_devices_and_nothing_else() {
        let none = json!([]);
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (10, 200),
        ] {
            assert!(allowed(&none, C, RW, major, minor), "c {major}:{minor}");
            assert!(!allowed(&none, B, READ, major, minor), "b {major}:{minor}");
        }
        assert!(allowed(&none, C, RW, 136, 7), "pts/7");
        // The host's disk, its memory, its serial port, its console: denied.
        for (kind, major, minor) in [(B, 254, 0), (B, 8, 0), (C, 1, 1), (C, 4, 64), (C, 5, 1)] {
            assert!(
                !allowed(&none, kind, READ, major, minor),
                "{kind} {major}:{minor}"
            );
            assert!(
                !allowed(&none, kind, WRITE, major, minor),
                "{kind} {major}:{minor}"
            );
            // Making the node is allowed; opening it is not.
            assert!(
                allowed(&none, kind, MKNOD, major, minor),
                "{kind} {major}:{minor}"
            );
        }
    }

    #[test]
    fn a_bundle_rule_allows_its_device_and_access_only() {
        let disk = json!([{"allow": true, "type": "b", "major": 254, "minor": 0, "access": "r"}]);
        assert!(allowed(&disk, B, READ, 254, 0));
        assert!(!allowed(&disk, B, RW, 254, 0));
        assert!(!allowed(&disk, B, READ, 254, 1));
        assert!(!allowed(&disk, C, READ, 254, 0));
        let all_block = json!([{"allow": true, "type": "b", "access": "rwm"}]);
        assert!(allowed(&all_block, B, RW, 8, 16));
        assert!(!allowed(&all_block, C, READ, 4, 64));
        // LinuxKit writes no access: all of them.
        let everything = json!([{"allow": true}]);
        assert!(allowed(&everything, C, RW, 4, 64) && allowed(&everything, B, RW, 8, 0));
        // `u` is a character device; a FIFO rule is no device rule.
        let serial = json!([{"allow": true, "type": "u", "major": 4, "minor": 64}, {"allow": true, "type": "p"}]);
        assert!(allowed(&serial, C, RW, 4, 64));
        assert!(!allowed(&serial, C, RW, 4, 65));
    }

    #[test]
    fn a_later_rule_wins_and_an_allow_grants_all_that_is_asked_or_nothing() {
        // A deny of writing takes writing alone.
        let rules = json!([
            {"allow": true, "type": "c", "access": "rwm"},
            {"allow": false, "type": "c", "major": 4, "minor": 64, "access": "w"}
        ]);
        assert!(allowed(&rules, C, READ, 4, 64));
        assert!(!allowed(&rules, C, WRITE, 4, 64));
        assert!(!allowed(&rules, C, RW, 4, 64));
        assert!(allowed(&rules, C, RW, 4, 65));
        // Two allows of one device do not add up, as with runc.
        let rules = json!([
            {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "r"},
            {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "w"}
        ]);
        assert!(allowed(&rules, B, READ, 8, 0) && allowed(&rules, B, WRITE, 8, 0));
        assert!(!allowed(&rules, B, RW, 8, 0));
        let rules = json!([
            {"allow": true, "type": "c", "access": "r"},
            {"allow": true, "type": "c", "major": 4, "minor": 64, "access": "w"}
        ]);
        assert!(!allowed(&rules, C, RW, 4, 64));
        assert!(allowed(&rules, C, READ, 4, 65) && !allowed(&rules, C, WRITE, 4, 65));
        // A deny of one bit takes the requests that ask for it.
        let rules = json!([
            {"allow": true, "type": "b", "access": "rwm"},
            {"allow": false, "type": "b", "major": 8, "access": "r"}
        ]);
        assert!(allowed(&rules, B, WRITE, 8, 1) && !allowed(&rules, B, READ, 8, 1));
        assert!(!allowed(&rules, B, RW, 8, 1) && allowed(&rules, B, RW, 9, 1));
        // A deny of everything undoes the allows before it, not the
        // defaults after.
        let rules = json!([
            {"allow": true, "type": "b", "major": 8, "minor": 0},
            {"allow": false, "access": "rwm"}
        ]);
        assert!(!allowed(&rules, B, READ, 8, 0));
        assert!(allowed(&rules, C, RW, 1, 3));
        // runc's -1 is any number.
        let rules = json!([{"allow": true, "type": "b", "major": 8, "minor": -1}]);
        assert!(allowed(&rules, B, READ, 8, 3) && !allowed(&rules, B, READ, 9, 3));
    }

    #[test]
    fn bad_rules_are_named() {
        for (rule, message) in [
            (
                json!({"allow": true, "type": "x"}),
                "[0]: unknown type \"x\"",
            ),
            (
                json!({"allow": true, "major": "8"}),
                "[0]: major \"8\" is not a device number",
            ),
            (
                json!({"allow": true, "minor": 4294967296u64}),
                "[0]: minor 4294967296 is not",
            ),
            (
                json!({"allow": true, "access": "rx"}),
                "[0]: access \"rx\": 'x' is not r, w or m",
            ),
            (json!({"type": "b"}), "[0]: allow is None"),
            (json!("b 8:0 rwm"), "[0]: not an object"),
        ] {
            let config = json!({"linux": {"resources": {"devices": [rule]}}});
            let err = rules(&config).unwrap_err();
            assert!(err.starts_with("linux.resources.devices"), "{err}");
            assert!(err.contains(message), "{err} lacks {message}");
        }
        let config = json!({"linux": {"resources": {"devices": {}}}});
        assert!(rules(&config).unwrap_err().contains("not a list"));
        // No rules at all: the defaults.
        assert_eq!(rules(&json!({})).unwrap(), DEFAULTS);
    }

    #[test]
    fn a_grant_is_an_allow_of_reading_or_writing() {
        let with = |rules: Value| json!({"linux": {"resources": {"devices": rules}}});
        assert!(!granted(&json!({})));
        assert!(!granted(&with(json!([{"allow": false, "access": "rwm"}]))));
        assert!(!granted(&with(
            json!([{"allow": true, "type": "c", "access": "m"}])
        )));
        assert!(granted(&with(
            json!([{"allow": true, "type": "b", "access": "rwm"}])
        )));
        assert!(granted(&with(
            json!([{"allow": true, "type": "c", "major": 4, "minor": 64}])
        )));
    }

    #[test]
    fn every_instruction_is_reachable() {
        // The verifier refuses a program with one that is not: a rule
        // matching everything must end its section.
        for rules in [
            json!([]),
            json!([{"allow": true}]),
            json!([{"allow": false}]),
            json!([{"allow": true, "type": "b", "major": 8}, {"allow": false, "access": "r"}]),
        ] {
            let config = json!({"linux": {"resources": {"devices": rules}}});
            let program = program(&super::rules(&config).unwrap()).unwrap();
            let mut reached = vec![false; program.len()];
            let mut todo = vec![0usize];
            while let Some(pc) = todo.pop() {
                if pc >= program.len() || std::mem::replace(&mut reached[pc], true) {
                    continue;
                }
                let i = program[pc];
                let target = (pc as i64 + 1 + i64::from(i.off)) as usize;
                match i.code {
                    JMP_EXIT => {}
                    JMP_JEQ_K | JMP_JNE_K => todo.extend([pc + 1, target]),
                    _ => todo.push(pc + 1),
                }
            }
            assert!(reached.iter().all(|r| *r), "{rules}: {reached:?}");
        }
    }
}
