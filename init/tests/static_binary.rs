//! PID 1 is one static binary: built with `+crt-static` in its own target
//! directory, it must have no ELF interpreter, and it must stay small.

use std::path::Path;
use std::process::Command;

/// The budget from the issue: 6 MiB.
const BUDGET: u64 = 6 * 1024 * 1024;
const PT_INTERP: u32 = 3;

fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (offset, size, count) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..count)
        .map(|i| {
            let at = offset + i * size;
            u32::from_le_bytes(elf[at..at + 4].try_into().unwrap())
        })
        .collect()
}

#[test]
fn init_is_a_static_binary_within_budget() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut build = static_build::cargo_build(workspace, "init", "init");
    let status = build.command.status().unwrap();
    assert!(status.success(), "the static build of init failed");
    let binary = build.binary;
    let elf = std::fs::read(&binary).unwrap();
    let types = program_header_types(&elf);
    assert!(!types.is_empty());
    assert!(
        !types.contains(&PT_INTERP),
        "{} has an ELF interpreter",
        binary.display()
    );
    let size = elf.len() as u64;
    eprintln!(
        "init: {} bytes ({:.2} MiB), static",
        size,
        size as f64 / 1048576.0
    );
    assert!(
        size <= BUDGET,
        "init is {size} bytes, over the {BUDGET}-byte budget"
    );
    // It runs on its own, with no dynamic loader.
    let output = Command::new(&binary).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("berth-init "));
}

#[test]
fn a_dynamic_binary_is_recognised() {
    // The test binary itself is linked dynamically: the check must see it.
    let elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(program_header_types(&elf).contains(&PT_INTERP));
}
