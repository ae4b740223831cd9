//! berth's bootable media checked by tools berth did not write: xorriso,
//! fsck.vfat, sgdisk, qemu-img, objdump and tar. Booting them is the boot
//! cases' business; this module checks their structure.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// The programs the checks run.
pub const TOOLS: &[&str] = &[
    "xorriso",
    "fsck.vfat",
    "sgdisk",
    "sfdisk",
    "qemu-img",
    "objdump",
    "tar",
];

/// Runs `program` with `args`; its standard output, or an error with its
/// standard error.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    let shown = qemu::shell_line(&command);
    let output = qemu::output_with_timeout(&mut command, Duration::from_secs(300))
        .with_context(|| format!("running {shown}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(
        output.status.success(),
        "{shown}: {}\n{stdout}{stderr}",
        output.status
    );
    Ok(format!("{stdout}{stderr}"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// `length` bytes of `image` from `offset`, copied into `to`.
fn extract(image: &Path, offset: u64, length: u64, to: &Path) -> Result<()> {
    let mut input = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    input.seek(SeekFrom::Start(offset))?;
    let mut output = File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let copied = std::io::copy(&mut input.take(length), &mut output)?;
    ensure!(
        copied == length,
        "{} ends before {length} bytes from {offset}",
        image.display()
    );
    output.flush()?;
    Ok(())
}

/// The partitions `sfdisk --dump` lists: (start sector, sectors, type).
fn partitions(image: &Path) -> Result<Vec<(u64, u64, String)>> {
    let dump = run("sfdisk", &["--dump", path(image)])?;
    let mut found = Vec::new();
    for line in dump.lines().filter(|l| l.contains(" : start=")) {
        let field = |name: &str| -> Option<String> {
            line.split(',')
                .map(str::trim)
                .map(|f| f.split(" : ").last().unwrap_or(f))
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim().to_string())
        };
        let number = |name: &str| -> Result<u64> {
            field(name)
                .with_context(|| format!("no {name} in {line:?}"))?
                .parse()
                .with_context(|| format!("{name} in {line:?}"))
        };
        found.push((
            number("start")?,
            number("size")?,
            field("type").unwrap_or_default(),
        ));
    }
    Ok(found)
}

/// Checks the FAT image at `offset` of `image` with `fsck.vfat -n`.
fn fsck_fat(image: &Path, start: u64, sectors: u64, scratch: &Path) -> Result<String> {
    let fat = scratch.join("fat.img");
    extract(image, start * 512, sectors * 512, &fat)?;
    let report = run("fsck.vfat", &["-n", path(&fat)])
        .with_context(|| format!("the FAT at sector {start} of {}", image.display()))?;
    let _ = fs::remove_file(&fat);
    Ok(report)
}

/// Checks every artifact of a build of `name` in `out` that is there: the
/// ISO, the UKI, the raw disk and the formats converted from it.
/// `scratch` is an empty directory for extracted images. Returns what was
/// checked, one line per artifact.
pub fn check_artifacts(out: &Path, name: &str, scratch: &Path) -> Result<Vec<String>> {
    let file = |suffix: &str| -> PathBuf { out.join(format!("{name}{suffix}")) };
    let mut checked = Vec::new();

    let iso = file(".iso");
    if iso.exists() {
        let report = run(
            "xorriso",
            &[
                "-indev",
                path(&iso),
                "-report_el_torito",
                "plain",
                "-report_system_area",
                "plain",
            ],
        )?;
        for wanted in [
            "El Torito boot img :   1  BIOS  y   none",
            "El Torito boot img :   2  UEFI  y   none",
            "boot-info-table isohybrid-suitable",
            "MBR isohybrid",
        ] {
            ensure!(
                report.contains(wanted),
                "xorriso's report on {} lacks {wanted:?}:\n{report}",
                iso.display()
            );
        }
        // The El Torito EFI image is MBR partition 2 (type 0xEF).
        let efi = partitions(&iso)?
            .into_iter()
            .find(|(_, _, kind)| kind == "ef")
            .with_context(|| format!("{} has no MBR partition of type 0xEF", iso.display()))?;
        fsck_fat(&iso, efi.0, efi.1, scratch)?;
        checked.push(format!(
            "{}: xorriso lists both boot entries and the isohybrid MBR; fsck.vfat -n passes on its EFI image",
            iso.display()
        ));
    }

    let uki = file(".efi");
    if uki.exists() {
        let headers = run("objdump", &["-h", path(&uki)])?;
        for section in [".osrel", ".cmdline", ".initrd", ".linux"] {
            ensure!(
                headers
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(section)),
                "objdump -h {} shows no {section}:\n{headers}",
                uki.display()
            );
        }
        checked.push(format!(
            "{}: objdump -h shows .osrel .cmdline .initrd .linux",
            uki.display()
        ));
    }

    let raw = file(".raw");
    if !raw.exists() {
        return Ok(checked);
    }
    let verify = run("sgdisk", &["-v", path(&raw)])?;
    ensure!(
        verify.contains("No problems found"),
        "sgdisk -v {}:\n{verify}",
        raw.display()
    );
    let esp = partitions(&raw)?
        .into_iter()
        .find(|(_, _, kind)| kind.eq_ignore_ascii_case("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"))
        .with_context(|| format!("{} has no EFI system partition", raw.display()))?;
    fsck_fat(&raw, esp.0, esp.1, scratch)?;
    let raw_size = fs::metadata(&raw)?.len();
    checked.push(format!(
        "{}: sgdisk -v finds no problems; fsck.vfat -n passes on its ESP",
        raw.display()
    ));

    for (suffix, format, checkable) in [
        (".qcow2", "qcow2", true),
        (".vmdk", "vmdk", true),
        (".vhd", "vpc", false),
    ] {
        let image = file(suffix);
        if !image.exists() {
            continue;
        }
        if checkable {
            run("qemu-img", &["check", path(&image)])?;
        }
        let info = run(
            "qemu-img",
            &["info", "-f", format, "--output=json", path(&image)],
        )?;
        let size_field = format!("\"virtual-size\": {raw_size}");
        ensure!(
            info.contains(&format!("\"format\": \"{format}\"")) && info.contains(&size_field),
            "qemu-img info {} does not say {format} of {raw_size} bytes:\n{info}",
            image.display()
        );
        let back = scratch.join("back.raw");
        run(
            "qemu-img",
            &[
                "convert",
                "-f",
                format,
                "-O",
                "raw",
                path(&image),
                path(&back),
            ],
        )?;
        ensure!(
            same_bytes(&back, &raw)?,
            "qemu-img convert of {} to raw differs from {}",
            image.display(),
            raw.display()
        );
        let _ = fs::remove_file(&back);
        checked.push(format!(
            "{}: {}qemu-img info says {format} of {raw_size} bytes, and converts back to the raw disk's bytes",
            image.display(),
            if checkable { "qemu-img check passes, " } else { "" }
        ));
    }

    let vhd = file(".vhd");
    if vhd.exists() {
        let kind = vhd_kind(&vhd)?;
        ensure!(
            kind == 2 || kind == 3,
            "{} ends in no footer of a fixed or dynamic disk (type {kind})",
            vhd.display()
        );
        checked.push(format!(
            "{}: its footer says a {} disk",
            vhd.display(),
            if kind == 2 { "fixed" } else { "dynamic" }
        ));
    }

    let gcp = file(".img.tar.gz");
    if gcp.exists() {
        let listing = run("tar", &["-tzf", path(&gcp)])?;
        ensure!(
            listing.trim() == "disk.raw",
            "tar -tzf {} lists {listing:?}, not disk.raw alone",
            gcp.display()
        );
        // GCE's disk is a whole GiB with its backup GPT at its end.
        run("tar", &["-xzf", path(&gcp), "-C", path(scratch)])?;
        let disk = scratch.join("disk.raw");
        let size = fs::metadata(&disk)?.len();
        ensure!(
            size % (1 << 30) == 0,
            "disk.raw in {} is {size} bytes, not a whole GiB",
            gcp.display()
        );
        let verify = run("sgdisk", &["-v", path(&disk)])?;
        ensure!(
            verify.contains("No problems found"),
            "sgdisk -v on disk.raw of {}:\n{verify}",
            gcp.display()
        );
        let _ = fs::remove_file(&disk);
        checked.push(format!(
            "{}: tar -tzf lists disk.raw alone; it is {size} bytes and sgdisk -v finds no problems",
            gcp.display()
        ));
    }
    Ok(checked)
}

/// The kind of VHD at `path`: 2 for fixed, 3 for dynamic (its footer's
/// disk type).
pub fn vhd_kind(path: &Path) -> Result<u32> {
    let mut footer = [0u8; 512];
    let mut input = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    input.seek(SeekFrom::End(-512))?;
    input.read_exact(&mut footer)?;
    ensure!(
        &footer[..8] == b"conectix",
        "{} ends in no VHD footer",
        path.display()
    );
    Ok(u32::from_be_bytes([
        footer[60], footer[61], footer[62], footer[63],
    ]))
}

/// Whether two files hold the same bytes.
pub fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| File::open(p).with_context(|| format!("opening {}", p.display()));
    let (mut a, mut b) = (open(a)?, open(b)?);
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let mut left = vec![0; 1 << 20];
    let mut right = vec![0; 1 << 20];
    loop {
        let read = a.read(&mut left)?;
        if read == 0 {
            return Ok(true);
        }
        b.read_exact(&mut right[..read])?;
        if left[..read] != right[..read] {
            return Ok(false);
        }
    }
}

/// Every file in `dir`, by name.
pub fn files(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    Ok(names)
}

/// Fails unless `a` and `b` hold the same files with the same bytes.
pub fn same_dirs(a: &Path, b: &Path) -> Result<()> {
    let (left, right) = (files(a)?, files(b)?);
    if left != right {
        bail!(
            "{} holds {left:?}, {} holds {right:?}",
            a.display(),
            b.display()
        );
    }
    for name in &left {
        ensure!(
            same_bytes(&a.join(name), &b.join(name))?,
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
    Ok(())
}
