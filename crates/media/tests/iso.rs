//! The hybrid ISO checked by tools berth did not write: xorriso reads its
//! El Torito catalog, system area and files back, and QEMU's SeaBIOS and
//! OVMF boot it as a CD and as a USB disk. The boot loaders are Debian's
//! (`isolinux`, `syslinux-common`, `systemd-boot-efi`), downloaded with
//! `apt-get download` once per target directory.
//!
//! A missing tool or package is a visible skip, and a failure when
//! `CI=true`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use media::Seed;
use media::iso::{HybridIso, IsoError, IsoFile, check_label};

const MTIME: u64 = 1_700_000_000;
const BIOS_SAYS: &str = "BERTH-ISO: isolinux read its configuration";
/// systemd-boot's menu, with no entries: only its own.
const UEFI_SAYS: &str = "Reboot Into Firmware Interface";

fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{reason}, and CI=true makes a skip a failure"
    );
    eprintln!("skipped: {reason}");
}

fn have(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    if !found {
        skip(&format!("{program} is not installed"));
    }
    found
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // xorriso writes its reports to stdout and its notes to stderr.
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Debian's boot loader packages unpacked into one directory, or `None`
/// (skipped) when they cannot be downloaded.
fn debian_boot_files() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("iso-debian-boot");
        let root = dir.join("root");
        if root.join("usr/lib/ISOLINUX/isohdpfx.bin").is_file() {
            return Some(root);
        }
        if !have("apt-get") || !have("dpkg-deb") {
            return None;
        }
        std::fs::create_dir_all(&dir).ok()?;
        let packages = ["isolinux", "syslinux-common", "systemd-boot-efi"];
        let downloaded = Command::new("apt-get")
            .arg("download")
            .args(packages)
            .current_dir(&dir)
            .output();
        if !downloaded
            .as_ref()
            .is_ok_and(|output| output.status.success())
        {
            skip(&format!("apt-get download {} failed", packages.join(" ")));
            return None;
        }
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            if entry.path().extension().is_some_and(|ext| ext == "deb") {
                run(Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(entry.path())
                    .arg(&root));
            }
        }
        Some(root)
    })
    .as_deref()
}

/// Deterministic filler bytes, different for each `tag`.
fn filler(tag: u8, len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(tag);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A FAT image made by dosfstools and mtools, holding `efi_program` as
/// the removable-media loader.
fn fat_image(dir: &Path, kib: u32, efi_program: &Path) -> Option<PathBuf> {
    if !have("mkfs.vfat") || !have("mmd") || !have("mcopy") {
        return None;
    }
    let image = dir.join("efi.img");
    run(Command::new("mkfs.vfat")
        .arg("-C")
        .arg(&image)
        .arg(kib.to_string()));
    run(Command::new("mmd")
        .arg("-i")
        .arg(&image)
        .args(["::/EFI", "::/EFI/BOOT"]));
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&image)
        .arg(efi_program)
        .arg("::/EFI/BOOT/BOOTX64.EFI"));
    Some(image)
}

/// The ISO's files: isolinux, its configuration, a kernel and an initrd
/// of filler bytes, and a directory of enough files to take several blocks.
fn tree_files(dir: &Path, debian: &Path) -> Vec<IsoFile> {
    let sources = dir.join("sources");
    std::fs::create_dir_all(&sources).unwrap();
    let mut files = vec![
        IsoFile {
            path: "isolinux/isolinux.bin".into(),
            source: debian.join("usr/lib/ISOLINUX/isolinux.bin"),
        },
        IsoFile {
            path: "isolinux/ldlinux.c32".into(),
            source: debian.join("usr/lib/syslinux/modules/bios/ldlinux.c32"),
        },
    ];
    let mut generated = vec![
        (
            "isolinux/isolinux.cfg".to_string(),
            format!("SERIAL 0 115200\nSAY {BIOS_SAYS}\nPROMPT 0\nDEFAULT /boot/kernel\n")
                .into_bytes(),
        ),
        ("boot/kernel".into(), filler(1, 3 << 20)),
        ("boot/initrd.img".into(), filler(2, 1_234_567)),
        ("boot/empty".into(), Vec::new()),
    ];
    for index in 0..120 {
        generated.push((
            format!("many/file_with_a_long_name_{index:03}.txt"),
            filler(index as u8, 100 + index),
        ));
    }
    for (index, (path, bytes)) in generated.into_iter().enumerate() {
        let source = sources.join(index.to_string());
        std::fs::write(&source, bytes).unwrap();
        files.push(IsoFile { path, source });
    }
    files
}

fn hybrid_iso(files: Vec<IsoFile>, efi_image: PathBuf, mbr_code: Vec<u8>) -> HybridIso {
    HybridIso {
        label: "BERTH_TEST".into(),
        seed: Seed::of(&[b"iso test"]),
        mtime: MTIME,
        files,
        bios_boot_image: "isolinux/isolinux.bin".into(),
        efi_image,
        mbr_code,
    }
}

fn write_iso(iso: &HybridIso, path: &Path) -> u64 {
    let size = iso
        .write(std::fs::File::create(path).unwrap())
        .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    assert_eq!(size, std::fs::metadata(path).unwrap().len());
    size
}

/// A real hybrid ISO with Debian's loaders and an EFI image of `efi_kib`,
/// in `dir`.
fn real_iso(dir: &Path, efi_kib: u32) -> Option<(HybridIso, PathBuf)> {
    let debian = debian_boot_files()?;
    let efi_image = fat_image(
        dir,
        efi_kib,
        &debian.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
    )?;
    let mbr_code = std::fs::read(debian.join("usr/lib/ISOLINUX/isohdpfx.bin")).unwrap();
    let iso = hybrid_iso(tree_files(dir, debian), efi_image, mbr_code);
    let path = dir.join("test.iso");
    write_iso(&iso, &path);
    Some((iso, path))
}

/// The fields of xorriso's report line that starts with `prefix`.
fn report_fields<'a>(report: &'a str, prefix: &str) -> Vec<&'a str> {
    let line = report
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in xorriso's report:\n{report}"));
    line[prefix.len()..].split_whitespace().collect()
}

#[test]
fn xorriso_reads_both_boot_entries_the_isohybrid_mbr_and_every_file() {
    if !have("xorriso") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((iso, path)) = real_iso(dir.path(), 2048) else {
        return;
    };
    let report = run(Command::new("xorriso").arg("-indev").arg(&path).args([
        "-report_el_torito",
        "plain",
        "-report_system_area",
        "plain",
    ]));

    assert!(report.contains("Boot record  : El Torito , MBR isohybrid cyl-align-on GPT"));
    assert!(report.contains("Volume id    : 'BERTH_TEST'"));
    let bios = report_fields(&report, "El Torito boot img :   1");
    assert_eq!(bios[..5], ["BIOS", "y", "none", "0x0000", "0x00"]);
    assert_eq!(bios[5], "4", "load size");
    let bios_lba: u32 = bios[6].parse().unwrap();
    let uefi = report_fields(&report, "El Torito boot img :   2");
    assert_eq!(uefi[..5], ["UEFI", "y", "none", "0x0000", "0x00"]);
    let efi_size = std::fs::metadata(&iso.efi_image).unwrap().len();
    assert_eq!(uefi[5], (efi_size / 512).to_string(), "EFI sector count");
    let efi_lba: u64 = uefi[6].parse().unwrap();
    // xorriso checks the table against the image's place and checksum.
    let options = report_fields(&report, "El Torito img opts :   1");
    assert_eq!(options, ["boot-info-table", "isohybrid-suitable"]);
    assert_eq!(
        report_fields(&report, "El Torito img path :   1"),
        ["/ISOLINUX/ISOLINUX.BIN"]
    );

    let image = std::fs::read(&path).unwrap();
    let sectors = image.len() as u64 / 512;
    assert_eq!(image.len() % (1 << 20), 0, "padded to whole cylinders");
    assert_eq!(
        report_fields(&report, "ISO image size/512 :"),
        [sectors.to_string()]
    );
    assert_eq!(
        report_fields(&report, "MBR partition      :   1"),
        ["0x80", "0x00", "0", &sectors.to_string()]
    );
    assert_eq!(
        report_fields(&report, "MBR partition      :   2"),
        [
            "0x00",
            "0xef",
            &(efi_lba * 4).to_string(),
            &(efi_size / 512).to_string()
        ]
    );
    // isohdpfx loads the boot image from the 512-byte sector at MBR offset 432.
    assert_eq!(
        image[432..440],
        (u64::from(bios_lba) * 4).to_le_bytes(),
        "boot image address in the MBR"
    );
    assert_eq!(
        report_fields(&report, "GPT lba range      :"),
        [
            "64",
            &(sectors - 64).to_string(),
            &(sectors - 1).to_string()
        ]
    );
    assert_eq!(
        report_fields(&report, "GPT start and size :   2"),
        [(efi_lba * 4).to_string(), (efi_size / 512).to_string()]
    );
    assert_eq!(
        report_fields(&report, "GPT type GUID      :   2"),
        ["28732ac11ff8d211ba4b00a0c93ec93b"],
        "EFI system partition"
    );

    // Every file reads back byte for byte, isolinux.bin with its
    // boot-info table.
    let extracted = dir.path().join("extracted");
    run(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&path)
        .args(["-extract", "/"])
        .arg(&extracted));
    for file in &iso.files {
        let mut expected = std::fs::read(&file.source).unwrap();
        let got = std::fs::read(extracted.join(file.path.to_ascii_uppercase()))
            .unwrap_or_else(|error| panic!("{} not extracted: {error}", file.path));
        if file.path == iso.bios_boot_image {
            let checksum = expected[64..].chunks(4).fold(0u32, |sum, word| {
                let mut bytes = [0; 4];
                bytes[..word.len()].copy_from_slice(word);
                sum.wrapping_add(u32::from_le_bytes(bytes))
            });
            let mut table = [0; 56];
            table[..4].copy_from_slice(&16u32.to_le_bytes());
            table[4..8].copy_from_slice(&bios_lba.to_le_bytes());
            table[8..12].copy_from_slice(&(expected.len() as u32).to_le_bytes());
            table[12..16].copy_from_slice(&checksum.to_le_bytes());
            expected[8..64].copy_from_slice(&table);
        }
        assert!(got == expected, "{} differs after extraction", file.path);
    }
    let mut listed = 0;
    for entry in walk(&extracted) {
        listed += 1;
        assert!(
            iso.files
                .iter()
                .any(|file| extracted.join(file.path.to_ascii_uppercase()) == entry),
            "{} is not one of the files written",
            entry.display()
        );
    }
    assert_eq!(listed, iso.files.len());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

/// Small made-up inputs: enough for the bytes, not for booting.
fn made_up_iso(dir: &Path, efi_len: u64) -> HybridIso {
    let boot = dir.join("isolinux.bin");
    std::fs::write(&boot, filler(7, 2048 + 100)).unwrap();
    let config = dir.join("isolinux.cfg");
    std::fs::write(&config, "DEFAULT /boot/kernel\n").unwrap();
    let efi_image = dir.join("efi.img");
    std::fs::File::create(&efi_image)
        .unwrap()
        .set_len(efi_len)
        .unwrap();
    let files = vec![
        IsoFile {
            path: "isolinux/isolinux.bin".into(),
            source: boot,
        },
        IsoFile {
            path: "isolinux/isolinux.cfg".into(),
            source: config,
        },
    ];
    hybrid_iso(files, efi_image, filler(8, 432))
}

fn bytes_of(iso: &HybridIso) -> Vec<u8> {
    let mut bytes = Vec::new();
    iso.write(&mut bytes).unwrap();
    bytes
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let iso = made_up_iso(dir.path(), 1 << 20);
    let first = bytes_of(&iso);
    assert_eq!(first, bytes_of(&iso));

    // The seed reaches the MBR's disk signature and the GPT's GUIDs, the
    // mtime the volume's dates; nothing else changes.
    let reseeded = bytes_of(&HybridIso {
        seed: Seed::of(&[b"other"]),
        ..iso.clone()
    });
    assert_ne!(first[440..444], reseeded[440..444], "disk signature");
    let volume = 16 * 2048..first.len() - 63 * 512;
    assert_eq!(first[volume.clone()], reseeded[volume]);
    let later = bytes_of(&HybridIso {
        mtime: MTIME + 86400,
        ..iso.clone()
    });
    let pvd = 16 * 2048;
    assert_eq!(&first[pvd + 813..pvd + 829], b"2023111422132000");
    assert_eq!(&later[pvd + 813..pvd + 829], b"2023111522132000");
}

#[test]
fn an_efi_image_over_65535_sectors_is_counted_as_0() {
    let dir = tempfile::tempdir().unwrap();
    let big = 65536 * 512;
    let image = bytes_of(&made_up_iso(dir.path(), big));
    let boot_record = &image[17 * 2048..18 * 2048];
    assert_eq!(&boot_record[7..30], b"EL TORITO SPECIFICATION");
    let catalog_lba = u32::from_le_bytes(boot_record[0x47..0x4B].try_into().unwrap()) as usize;
    let catalog = &image[catalog_lba * 2048..][..128];
    assert_eq!(catalog[64..66], [0x91, 0xEF], "final section, UEFI");
    assert_eq!(catalog[96], 0x88, "bootable");
    assert_eq!(catalog[102..104], [0, 0], "sector count");
    // The MBR partition firmware uses on a USB disk keeps the exact size.
    assert_eq!(
        u32::from_le_bytes(image[462 + 12..462 + 16].try_into().unwrap()),
        65536
    );
    // Just below the limit, the count is exact.
    let image = bytes_of(&made_up_iso(dir.path(), big - 512));
    let catalog = &image[catalog_lba * 2048..][..128];
    assert_eq!(catalog[102..104], 65535u16.to_le_bytes());
}

#[test]
fn bad_inputs_are_errors_that_name_them() {
    for label in [
        "berth",
        "",
        "BERTH-ISO",
        "A234567890123456789012345678901234",
    ] {
        let error = check_label(label).unwrap_err();
        assert!(matches!(error, IsoError::Label { .. }));
        assert!(error.to_string().contains(&format!("{label:?}")), "{error}");
    }
    check_label("BERTH_1").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let iso = made_up_iso(dir.path(), 4096);
    let error_of = |iso: HybridIso| iso.write(std::io::sink()).unwrap_err().to_string();
    let with_file = |path: &str| {
        let mut iso = iso.clone();
        iso.files.push(IsoFile {
            path: path.into(),
            source: iso.files[1].source.clone(),
        });
        error_of(iso)
    };
    assert_eq!(
        error_of(HybridIso {
            label: "Berth".into(),
            ..iso.clone()
        }),
        "volume label \"Berth\" is not valid for ISO 9660: only A-Z, 0-9 and _ are allowed"
    );
    assert!(with_file("boot/vmlinuz-6.1").contains("\"boot/vmlinuz-6.1\""));
    assert!(with_file("boot.d/kernel").contains("directory \"boot.d\" has a dot"));
    assert!(with_file("ISOLINUX/ISOLINUX.CFG").contains("given twice"));
    assert!(with_file("isolinux").contains("given twice"));
    assert!(with_file("a/b/c/d/e/f/g/h/i").contains("8 levels"));
    assert!(with_file(&"x".repeat(31)).contains("1 to 30 characters"));
    let mut missing = iso.clone();
    missing.files[1].source = dir.path().join("missing");
    let missing = error_of(missing);
    assert!(
        missing.starts_with("reading ") && missing.ends_with("missing"),
        "{missing}"
    );
    assert!(
        error_of(HybridIso {
            bios_boot_image: "isolinux/nothere.bin".into(),
            ..iso.clone()
        })
        .contains("\"isolinux/nothere.bin\" is not one of the ISO's files")
    );
    assert!(
        error_of(HybridIso {
            mbr_code: vec![0; 100],
            ..iso.clone()
        })
        .contains("100 bytes")
    );
    let tiny = dir.path().join("tiny.bin");
    std::fs::write(&tiny, [0; 63]).unwrap();
    let mut tiny_boot = iso.clone();
    tiny_boot.files[0].source = tiny;
    assert!(error_of(tiny_boot).contains("tiny.bin is 63 bytes, too small"));
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let empty_efi = error_of(made_up_iso(&empty_dir, 0));
    assert!(empty_efi.ends_with("efi.img is empty"), "{empty_efi}");
    // 2156-01-01: past the last year a directory record holds.
    assert!(
        error_of(HybridIso {
            mtime: 5_869_584_000,
            ..iso.clone()
        })
        .contains("5869584000")
    );
    HybridIso {
        mtime: 5_869_583_999,
        ..iso.clone()
    }
    .write(std::io::sink())
    .expect("2155-12-31 23:59:59 fits");
}

/// The console's text without its terminal control sequences: firmware
/// that mirrors its screen to the serial port moves the cursor between
/// the characters of a line.
fn plain_text(console: &[u8]) -> String {
    let mut text = Vec::with_capacity(console.len());
    let mut bytes = console.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        if byte != 0x1b {
            text.push(byte);
        } else if bytes.next_if_eq(&b'[').is_some() {
            // CSI: parameters, then one final byte in @..~.
            while bytes.next().is_some_and(|b| !(0x40..=0x7e).contains(&b)) {}
        } else {
            bytes.next();
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Boots `machine` until its serial console shows `expected`; the
/// console so far in the panic message otherwise.
fn boot_until(machine: &qemu::Machine, expected: &str, timeout: Duration) -> Result<(), String> {
    let mut child = machine
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("starting {}: {error}", machine.command_line()))?;
    let console = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let console = Arc::clone(&console);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            loop {
                let chunk = match stdout.fill_buf() {
                    Ok([]) | Err(_) => break,
                    Ok(chunk) => chunk.to_vec(),
                };
                stdout.consume(chunk.len());
                console.lock().unwrap().extend_from_slice(&chunk);
            }
        })
    };
    let deadline = Instant::now() + timeout;
    let result = loop {
        if plain_text(&console.lock().unwrap()).contains(expected) {
            break Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("qemu exited ({status})"));
        }
        if Instant::now() > deadline {
            break Err(format!("timed out after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .map(|mut e| e.read_to_string(&mut stderr));
    result.map_err(|reason| {
        format!(
            "{reason} waiting for {expected:?}\ncommand: {}\nstderr: {stderr}\nconsole:\n{}",
            machine.command_line(),
            String::from_utf8_lossy(&console.lock().unwrap())
        )
    })
}

#[test]
fn seabios_and_ovmf_boot_it_as_a_cd_and_as_a_usb_disk() {
    let Ok(qemu_program) = qemu::locate() else {
        return skip("qemu-system-x86_64 is not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    // One ISO with a small EFI image, and one whose EFI image is past El
    // Torito's 16-bit sector count (34 MiB, counted as 0).
    let (small, large) = (dir.path().join("small"), dir.path().join("large"));
    std::fs::create_dir_all(&small).unwrap();
    std::fs::create_dir_all(&large).unwrap();
    let Some((_, small_iso)) = real_iso(&small, 2048) else {
        return;
    };
    let Some((_, large_iso)) = real_iso(&large, 34 * 1024) else {
        return;
    };
    let cd = |iso: &Path| qemu::Drive::cdrom(iso);
    let usb =
        |iso: &Path| qemu::Drive::disk(iso, qemu::Format::Raw, qemu::Interface::Usb).read_only();
    // Each UEFI boot with a variable store of its own, as a new machine.
    let ovmf = |name: &str| qemu::Ovmf::debian(&dir.path().join(name)).map(qemu::Firmware::Uefi);
    let mut uefi = Vec::new();
    for name in ["cd", "usb", "large-cd", "large-usb"] {
        match ovmf(name) {
            Ok(firmware) => uefi.push(firmware),
            Err(error) => return skip(&error.to_string()),
        }
    }
    let [uefi_cd, uefi_usb, uefi_large_cd, uefi_large_usb] = <[_; 4]>::try_from(uefi).unwrap();
    let boots = [
        (
            "SeaBIOS, CD",
            qemu::Firmware::Bios,
            cd(&small_iso),
            BIOS_SAYS,
        ),
        (
            "SeaBIOS, USB disk",
            qemu::Firmware::Bios,
            usb(&small_iso),
            BIOS_SAYS,
        ),
        ("OVMF, CD", uefi_cd, cd(&small_iso), UEFI_SAYS),
        ("OVMF, USB disk", uefi_usb, usb(&small_iso), UEFI_SAYS),
        (
            "OVMF, CD, 34 MiB EFI image",
            uefi_large_cd,
            cd(&large_iso),
            UEFI_SAYS,
        ),
        (
            "OVMF, USB disk, 34 MiB EFI image",
            uefi_large_usb,
            usb(&large_iso),
            UEFI_SAYS,
        ),
    ];
    // KVM is not trusted here (see the qemu crate): software emulation.
    let mut failures = Vec::new();
    for (name, firmware, drive, expected) in boots {
        let machine = qemu::Machine::new(&qemu_program, qemu::Accel::Tcg)
            .firmware(firmware)
            .drive(drive);
        let started = Instant::now();
        match boot_until(&machine, expected, Duration::from_secs(90)) {
            Ok(()) => eprintln!("{name}: {expected:?} after {:?}", started.elapsed()),
            Err(error) => failures.push(format!("{name}: {error}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
