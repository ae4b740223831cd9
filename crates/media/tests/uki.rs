//! The UKI writer with the stub berth ships, Debian's `systemd-boot-efi`,
//! checked by `object` and by binutils' `objdump`. Booting the result is
//! the QEMU tests' (`qemu-tests/`).
//!
//! The stub comes through `apt-get download`; without apt or objdump a test
//! says it skipped, and under CI=true it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use media::uki::{Uki, UkiInputs, UkiSection, pe_checksum, write_uki};
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::{LittleEndian as LE, Object, ObjectSection, bytes_of};

const STUB_PACKAGE: &str = "systemd-boot-efi";
const STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{reason}, and CI=true makes a skip a failure"
    );
    eprintln!("skipped: {reason}");
}

/// Debian's stub, downloaded and unpacked once per test run into the
/// target directory.
fn debian_stub() -> Option<&'static [u8]> {
    static STUB: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    let stub = STUB.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("media-uki");
        let debs = dir.join("debs");
        fixtures::debian::download(&[STUB_PACKAGE], &debs).map_err(|e| format!("{e:#}"))?;
        let deb = fixtures::debian::deb_path(STUB_PACKAGE, &debs).map_err(|e| format!("{e:#}"))?;
        let unpacked = dir.join("unpacked");
        fixtures::debian::extract(&deb, &unpacked).map_err(|e| format!("{e:#}"))?;
        let path = unpacked.join(STUB_PATH);
        std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))
    });
    match stub {
        Ok(stub) => Some(stub),
        Err(error) => {
            skip(&format!("no {STUB_PACKAGE} stub: {error}"));
            None
        }
    }
}

struct Files {
    _dir: tempfile::TempDir,
    linux: PathBuf,
    initrd: PathBuf,
}

/// The stub itself stands in for the kernel: like a bzImage with an EFI
/// stub it is a PE image whose `SizeOfImage` exceeds its length. The
/// initrd is larger than the writer's buffer and of odd length.
fn files(stub: &[u8]) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let linux = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&linux, stub).unwrap();
    let initrd_bytes: Vec<u8> = (0..5 * 1024 * 1024 + 3u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&initrd, initrd_bytes).unwrap();
    Files {
        _dir: dir,
        linux,
        initrd,
    }
}

const OSREL: &[u8] = b"ID=berth\nNAME=berth\nPRETTY_NAME=\"berth\"\n";
const CMDLINE: &[u8] = b"console=ttyS0 quiet";

fn inputs<'a>(stub: &'a [u8], files: &'a Files) -> UkiInputs<'a> {
    UkiInputs {
        stub,
        osrel: OSREL,
        cmdline: CMDLINE,
        uname: None,
        linux: &files.linux,
        initrd: &files.initrd,
    }
}

fn write(inputs: &UkiInputs) -> (Vec<UkiSection>, Vec<u8>) {
    let plan = Uki::plan(inputs).unwrap();
    let mut out = Vec::new();
    let written = plan.write(&mut out).unwrap();
    assert_eq!(written, out.len() as u64);
    assert_eq!(plan.size(), written);
    (plan.sections().cloned().collect(), out)
}

#[test]
fn the_checksum_is_the_one_binutils_gave_the_stub() {
    let Some(stub) = debian_stub() else { return };
    let file = PeFile64::parse(stub).unwrap();
    let in_header = file.nt_headers().optional_header().check_sum();
    assert_ne!(in_header, 0, "Debian's stub carries a checksum");
    assert_eq!(pe_checksum(stub), Some(in_header));
}

#[test]
fn the_uki_keeps_the_stub_and_adds_the_sections_linux_last() {
    let Some(stub) = debian_stub() else { return };
    let files = files(stub);
    let (planned, uki) = write(&inputs(stub, &files));
    let stub_file = PeFile64::parse(stub).unwrap();
    let file = PeFile64::parse(uki.as_slice()).unwrap();

    let names = |file: &PeFile64| -> Vec<String> {
        file.sections()
            .map(|section| section.name().unwrap().to_string())
            .collect()
    };
    let mut expected = names(&stub_file);
    expected.extend([".osrel", ".cmdline", ".initrd", ".linux"].map(String::from));
    assert_eq!(names(&file), expected);

    // The stub's sections, data and entry point are untouched.
    for (old, new) in stub_file.sections().zip(file.sections()) {
        assert_eq!(bytes_of(old.pe_section()), bytes_of(new.pe_section()));
        assert_eq!(old.data().unwrap(), new.data().unwrap());
    }
    assert_eq!(file.entry(), stub_file.entry());

    let optional = file.nt_headers().optional_header();
    let (section_alignment, file_alignment) =
        (optional.section_alignment(), optional.file_alignment());
    let stub_optional = stub_file.nt_headers().optional_header();
    let mut end = stub_optional.size_of_image();
    let linux = std::fs::read(&files.linux).unwrap();
    let initrd = std::fs::read(&files.initrd).unwrap();
    let contents: [&[u8]; 4] = [OSREL, CMDLINE, &initrd, &linux];
    let added = file.sections().skip(stub_file.sections().count());
    for ((section, plan), content) in added.zip(&planned).zip(contents) {
        let header = section.pe_section();
        let name = plan.name;
        assert_eq!(section.name().unwrap(), name);
        assert_eq!(
            header.virtual_address.get(LE),
            plan.virtual_address,
            "{name}"
        );
        assert_eq!(
            header.pointer_to_raw_data.get(LE),
            plan.file_offset,
            "{name}"
        );
        assert_eq!(header.virtual_size.get(LE), plan.virtual_size, "{name}");
        assert_eq!(plan.virtual_address % section_alignment, 0, "{name}");
        assert_eq!(plan.file_offset % file_alignment, 0, "{name}");
        assert!(
            plan.virtual_address >= end,
            "{name} overlaps what is before it"
        );
        end = plan.virtual_address + plan.virtual_size;
        let start = plan.file_offset as usize;
        assert_eq!(&uki[start..start + content.len()], content, "{name}");
        assert_eq!(plan.size as usize, content.len(), "{name}");
    }
    // The kernel is given the room its own header asks for.
    let linux_in_memory = stub_optional.size_of_image();
    assert!(linux_in_memory as usize > linux.len());
    assert_eq!(planned[3].virtual_size, linux_in_memory);

    assert_eq!(
        optional.size_of_image(),
        end.div_ceil(section_alignment) * section_alignment
    );
    assert_eq!(
        optional.size_of_initialized_data() - stub_optional.size_of_initialized_data(),
        planned[..3]
            .iter()
            .map(|s| s.size.div_ceil(file_alignment) * file_alignment)
            .sum::<u32>()
    );
    assert_eq!(optional.check_sum(), pe_checksum(&uki).unwrap());
    assert_eq!(
        file.nt_headers().file_header().time_date_stamp.get(LE),
        stub_file.nt_headers().file_header().time_date_stamp.get(LE)
    );
}

#[test]
fn objdump_lists_the_sections_where_they_were_planned() {
    let Some(stub) = debian_stub() else { return };
    let files = files(stub);
    let (planned, uki) = write(&inputs(stub, &files));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.efi");
    std::fs::write(&path, &uki).unwrap();
    let output = match Command::new("objdump").arg("-h").arg(&path).output() {
        Ok(output) => output,
        Err(error) => return skip(&format!("objdump (binutils) cannot run: {error}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "objdump -h failed: {stdout}");
    assert!(stdout.contains("file format pei-x86-64"), "{stdout}");
    // "Idx Name Size VMA LMA File-off Algn", all but Idx and Name in hex.
    let listed: Vec<(String, u64, u64, u64)> = stdout
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| u64::from_str_radix(fields[i], 16).unwrap();
            (fields.len() == 7 && fields[0].parse::<u32>().is_ok())
                .then(|| (fields[1].to_string(), number(2), number(3), number(5)))
        })
        .collect();
    let added = &listed[listed.len() - planned.len()..];
    // objdump's size is what the file holds of the section: the virtual
    // size, or the file-aligned data where the section is larger in memory.
    let file_alignment = PeFile64::parse(stub)
        .unwrap()
        .nt_headers()
        .optional_header()
        .file_alignment();
    let expected: Vec<_> = planned
        .iter()
        .map(|s| {
            let in_file = s.size.div_ceil(file_alignment) * file_alignment;
            (
                s.name.to_string(),
                u64::from(s.virtual_size.min(in_file)),
                u64::from(s.virtual_address),
                u64::from(s.file_offset),
            )
        })
        .collect();
    assert_eq!(added, expected, "{stdout}");
    let names: Vec<&str> = added.iter().map(|(name, ..)| name.as_str()).collect();
    assert_eq!(names, [".osrel", ".cmdline", ".initrd", ".linux"]);
}

#[test]
fn two_writes_give_the_same_bytes() {
    let Some(stub) = debian_stub() else { return };
    let files = files(stub);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    write_uki(&inputs(stub, &files), &mut first).unwrap();
    write_uki(&inputs(stub, &files), &mut second).unwrap();
    assert!(first == second, "two UKIs of the same inputs differ");
}
