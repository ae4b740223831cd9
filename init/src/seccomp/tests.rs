use super::*;

/// Runs `program` as the kernel would on a call: a classic BPF
/// interpreter over `struct seccomp_data`, enough for what [`compile`]
/// writes.
fn run(program: &[Instruction], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |offset: u32| -> u32 {
        match offset {
            0 => nr,
            4 => arch,
            o if (16..64).contains(&o) => {
                let arg = args[((o - 16) / 8) as usize];
                if o % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            o => panic!("load of offset {o}"),
        }
    };
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let i = program[pc];
        pc += 1;
        let branch = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
        match i.code {
            LD_W_ABS => a = word(i.k),
            ALU_AND_K => a &= i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K => pc += branch(a == i.k),
            JMP_JGT_K => pc += branch(a > i.k),
            JMP_JGE_K => pc += branch(a >= i.k),
            RET_K => return i.k,
            code => panic!("instruction {code:#x}"),
        }
    }
}

fn profile(json: Value) -> Filter {
    compile(&serde_json::from_value(json).unwrap()).unwrap()
}

fn call(filter: &Filter, name: &str, args: [u64; 6]) -> u32 {
    run(
        &filter.program,
        AUDIT_ARCH_X86_64,
        number(name).unwrap(),
        args,
    )
}

const DENIED: u32 = RET_ERRNO | EPERM;

#[test]
fn names_have_their_x86_64_numbers() {
    assert_eq!(number("read"), Some(0));
    assert_eq!(number("unshare"), Some(272));
    assert_eq!(number("clone3"), Some(435));
    assert_eq!(number("socketcall"), None, "an i386 call");
    assert!(x86_64::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn an_allow_list_allows_what_it_names_and_denies_the_rest() {
    let f = profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "write", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["reboot"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["getpid"], "action": "SCMP_ACT_LOG"},
        ]
    }));
    assert_eq!(call(&f, "read", [0; 6]), RET_ALLOW);
    assert_eq!(call(&f, "write", [0; 6]), RET_ALLOW);
    assert_eq!(call(&f, "unshare", [0; 6]), DENIED);
    assert_eq!(call(&f, "clone3", [0; 6]), RET_ERRNO | 38);
    assert_eq!(call(&f, "reboot", [0; 6]), RET_KILL_PROCESS);
    assert_eq!(call(&f, "getpid", [0; 6]), RET_LOG);
    // The default's errno is the profile's.
    let f = profile(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13}));
    assert_eq!(call(&f, "read", [0; 6]), RET_ERRNO | 13);
}

#[test]
fn other_architectures_and_x32_get_enosys_whatever_the_default() {
    let f = profile(json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    assert_eq!(run(&f.program, AUDIT_ARCH_X86_64, 0, [0; 6]), RET_ALLOW);
    let i386 = 0x4000_0003;
    assert_eq!(run(&f.program, i386, 0, [0; 6]), RET_ERRNO | ENOSYS);
    assert_eq!(
        run(&f.program, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 272, [0; 6]),
        RET_ERRNO | ENOSYS
    );
}

/// Each operator on 64-bit values whose high and low words disagree.
#[test]
fn each_operator_compares_all_64_bits() {
    let value: u64 = 0x0000_0001_0000_0005;
    let cases: &[(&str, &[(u64, bool)])] = &[
        (
            "SCMP_CMP_EQ",
            &[(value, true), (5, false), (0x0000_0002_0000_0005, false)],
        ),
        (
            "SCMP_CMP_NE",
            &[(value, false), (5, true), (0x0000_0001_0000_0006, true)],
        ),
        (
            "SCMP_CMP_GT",
            &[
                (value, false),
                (value + 1, true),
                (0x0000_0002_0000_0000, true),
                (0x0000_0000_ffff_ffff, false),
            ],
        ),
        (
            "SCMP_CMP_GE",
            &[
                (value, true),
                (value - 1, false),
                (u64::MAX, true),
                (6, false),
            ],
        ),
        (
            "SCMP_CMP_LT",
            &[
                (value, false),
                (value - 1, true),
                (0x0000_0000_ffff_ffff, true),
                (0x0000_0002_0000_0000, false),
            ],
        ),
        (
            "SCMP_CMP_LE",
            &[
                (value, true),
                (value + 1, false),
                (0, true),
                (u64::MAX, false),
            ],
        ),
    ];
    for (op, checks) in cases {
        let f = profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 2, "value": value, "op": op}]}]
        }));
        for (arg, allowed) in *checks {
            let got = call(&f, "personality", [0, 0, *arg, 0, 0, 0]);
            assert_eq!(got == RET_ALLOW, *allowed, "{op} with {arg:#x}");
        }
    }
}

#[test]
fn a_masked_comparison_uses_value_as_mask_and_value_two_as_datum() {
    let f = profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0x7E02_0000u64, "op": "SCMP_CMP_MASKED_EQ"}]}]
    }));
    // A thread (CLONE_VM|CLONE_FS|...) is allowed, a new user namespace not.
    assert_eq!(call(&f, "clone", [0x003d_0f00, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(call(&f, "clone", [0x1000_0000, 0, 0, 0, 0, 0]), DENIED);
    let f = profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 1, "value": 0xff00_0000_00ffu64, "valueTwo": 0x1200_0000_0034u64,
                "op": "SCMP_CMP_MASKED_EQ"}]}]
    }));
    assert_eq!(
        call(&f, "ioctl", [0, 0x1234_5678_9a34, 0, 0, 0, 0]),
        RET_ALLOW
    );
    assert_eq!(call(&f, "ioctl", [0, 0x1334_5678_9a34, 0, 0, 0, 0]), DENIED);
    assert_eq!(call(&f, "ioctl", [0, 0x1234_5678_9a35, 0, 0, 0, 0]), DENIED);
}

/// Conditions of one rule must all hold; rules of one call are
/// alternatives, each with its own action.
#[test]
fn conditions_are_and_rules_are_or() {
    let f = profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 1, "op": "SCMP_CMP_NE"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97, "args": [
                {"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_TRAP"},
        ]
    }));
    assert_eq!(call(&f, "socket", [2, 2, 0, 0, 0, 0]), RET_ALLOW);
    // The first rule's second condition fails: the last, unconditional one.
    assert_eq!(call(&f, "socket", [2, 1, 0, 0, 0, 0]), RET_TRAP);
    assert_eq!(call(&f, "socket", [40, 1, 0, 0, 0, 0]), RET_ERRNO | 97);
    assert_eq!(call(&f, "socket", [10, 1, 0, 0, 0, 0]), RET_TRAP);
    // Without an unconditional rule, the default.
    let f = profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        ]
    }));
    assert_eq!(call(&f, "personality", [8, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(call(&f, "personality", [0, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(call(&f, "personality", [0x40000, 0, 0, 0, 0, 0]), DENIED);
    assert_eq!(call(&f, "read", [0; 6]), RET_ALLOW);
}

/// The builder's default profile refuses `AF_VSOCK` on the low word the
/// kernel reads, before Docker's comparison of all 64 bits allows the rest.
#[test]
fn the_first_rule_of_a_call_that_matches_decides() {
    let f = profile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": [
                {"index": 0, "value": 0xffff_ffffu64, "valueTwo": 40, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
        ]
    }));
    assert_eq!(call(&f, "socket", [2, 1, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(call(&f, "socket", [40, 1, 0, 0, 0, 0]), DENIED);
    assert_eq!(call(&f, "socket", [0x1_0000_0028, 1, 0, 0, 0, 0]), DENIED);
    assert_eq!(
        call(&f, "socket", [0x1_0000_0002, 1, 0, 0, 0, 0]),
        RET_ALLOW
    );
}

#[test]
fn what_cannot_be_enforced_is_an_error() {
    for (json, expected) in [
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
            "defaultAction: SCMP_ACT_NOTIFY needs a seccomp agent",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}),
            "read: errnoRet 70000 is out of range",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "argument index 6 is out of range",
        ),
    ] {
        let err = compile(&serde_json::from_value(json).unwrap()).unwrap_err();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn take_moves_the_profile_out_and_keeps_sys_admin_to_load_it() {
    let profile = json!({"defaultAction": "SCMP_ACT_ALLOW"});
    let caps = json!(["CAP_CHOWN"]);
    let mut config = json!({
        "process": {"capabilities": {"bounding": caps, "effective": caps, "permitted": caps}},
        "linux": {"seccomp": profile},
    });
    let file = take(&mut config).unwrap().unwrap();
    assert_eq!(config["linux"], json!({}));
    assert_eq!(file, json!({"profile": profile, "dropSysAdmin": true}));
    let with = json!(["CAP_CHOWN", "CAP_SYS_ADMIN"]);
    assert_eq!(config["process"]["capabilities"]["effective"], with);
    assert_eq!(config["process"]["capabilities"]["permitted"], with);
    assert_eq!(config["process"]["capabilities"]["bounding"], caps);
    assert!(confinement(&file).unwrap().drop_sys_admin);

    // With noNewPrivileges the kernel needs no capability.
    let mut config = json!({
        "process": {"noNewPrivileges": true, "capabilities": {"effective": caps}},
        "linux": {"seccomp": profile},
    });
    let file = take(&mut config).unwrap().unwrap();
    assert_eq!(file["dropSysAdmin"], json!(false));
    assert_eq!(config["process"]["capabilities"]["effective"], caps);

    // No profile, nothing to do; a bad one is refused here.
    let mut config = json!({"linux": {"seccomp": null}});
    assert_eq!(take(&mut config).unwrap(), None);
    let mut config = json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_NOTIFY"}}});
    let err = take(&mut config).unwrap_err();
    assert!(err.starts_with("linux.seccomp: defaultAction"), "{err}");
}

/// The kernel runs the program: this test runs itself again in a child
/// process, which loads a filter and then runs util-linux's `unshare` and
/// `setarch` under it.
#[test]
fn the_kernel_enforces_a_compiled_filter() {
    const CHILD: &str = "BERTH_SECCOMP_TEST_CHILD";
    let tool = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if !(tool("unshare") && tool("setarch")) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "util-linux's unshare and setarch are needed"
        );
        eprintln!("skipped: util-linux's unshare and setarch are not installed");
        return;
    }
    let ok = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if std::env::var_os(CHILD).is_some() {
        let f = profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["unshare"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 0, "value": 0x0040000, "op": "SCMP_CMP_MASKED_EQ", "valueTwo": 0x0040000}]},
            ]
        }));
        rustix::thread::set_no_new_privs(true).unwrap();
        crate::sys::load_seccomp_filter(&f).unwrap();
        // Prints what each command did, for the parent to check.
        println!(
            "verdict: unshare={} setarch={} setarch-R={}",
            ok("unshare", &["--user", "true"]),
            ok("setarch", &["x86_64", "true"]),
            ok("setarch", &["x86_64", "-R", "true"]),
        );
        return;
    }
    // Without a filter, unshare works here: otherwise the test proves nothing.
    if !ok("unshare", &["--user", "true"]) {
        eprintln!("skipped: unshare --user is refused here even without a filter");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "seccomp::tests::the_kernel_enforces_a_compiled_filter",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("verdict: unshare=false setarch=true setarch-R=false"),
        "{stdout}"
    );
}
