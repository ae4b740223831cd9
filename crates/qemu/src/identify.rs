//! What a file to boot is, from its bytes: the signatures of the formats a
//! machine can start from (an ISO, the disk image formats QEMU reads, an
//! EFI executable, a Linux kernel, a squashfs image). The file's name is
//! never consulted: a renamed artifact is still what it is.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::machine::Format;

/// What [`identify`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// ISO 9660 (`CD001` in the first volume descriptor), hybrid or not.
    Iso,
    /// A disk image in `format`; raw ones carry an MBR boot signature.
    Disk(Format),
    /// A PE executable for UEFI: a unified kernel image, or any EFI program.
    Efi,
    /// A Linux kernel image with the x86 boot protocol header (`HdrS`).
    Linux,
    /// A squashfs file system image (`hsqs`).
    Squashfs,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Iso => "an ISO image",
            Kind::Disk(Format::Raw) => "a raw disk image",
            Kind::Disk(Format::Qcow2) => "a qcow2 disk image",
            Kind::Disk(Format::Vhd) => "a VHD disk image",
            Kind::Disk(Format::Vmdk) => "a VMDK disk image",
            Kind::Efi => "an EFI executable",
            Kind::Linux => "a Linux kernel",
            Kind::Squashfs => "a squashfs image",
        }
    }
}

/// How much of the start of a file the signatures need: the ISO's first
/// volume descriptor is at 32 KiB.
const HEAD: usize = 0x8800;

/// Reads the signatures of `path`; `Ok(None)` for a file of no known kind.
pub fn identify(path: &Path) -> io::Result<Option<Kind>> {
    let mut file = File::open(path)?;
    let mut head = Vec::with_capacity(HEAD);
    (&mut file).take(HEAD as u64).read_to_end(&mut head)?;
    let length = file.seek(SeekFrom::End(0))?;
    // A fixed VHD is a raw disk followed by a 512-byte footer.
    let mut tail = [0u8; 512];
    let tail = if length >= 512 {
        file.seek(SeekFrom::Start(length - 512))?;
        file.read_exact(&mut tail)?;
        &tail[..]
    } else {
        &[][..]
    };
    Ok(classify(&head, tail))
}

/// The kind of a file whose first bytes are `head` and last 512 `tail`.
fn classify(head: &[u8], tail: &[u8]) -> Option<Kind> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"QFI\xfb") {
        return Some(Kind::Disk(Format::Qcow2));
    }
    if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
        return Some(Kind::Disk(Format::Vmdk));
    }
    // A dynamic VHD starts with a copy of its footer; a fixed one has it
    // only at the end.
    if at(0, b"conectix") || tail.starts_with(b"conectix") {
        return Some(Kind::Disk(Format::Vhd));
    }
    if at(0, b"hsqs") {
        return Some(Kind::Squashfs);
    }
    // Before the MBR test: a hybrid ISO carries a boot signature too.
    if at(0x8001, b"CD001") {
        return Some(Kind::Iso);
    }
    if at(0, b"MZ") {
        let pe = head
            .get(0x3c..0x40)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if pe.is_some_and(|offset| at(offset, b"PE\0\0")) {
            return Some(Kind::Efi);
        }
    }
    if at(0x202, b"HdrS") {
        return Some(Kind::Linux);
    }
    if at(510, &[0x55, 0xaa]) {
        return Some(Kind::Disk(Format::Raw));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(mut bytes: Vec<u8>, offset: usize, magic: &[u8]) -> Vec<u8> {
        if bytes.len() < offset + magic.len() {
            bytes.resize(offset + magic.len(), 0);
        }
        bytes[offset..offset + magic.len()].copy_from_slice(magic);
        bytes
    }

    /// A name, the head and the tail of a file, and what it is.
    type Case<'a> = (&'a str, Vec<u8>, &'a [u8], Option<Kind>);

    #[test]
    fn each_signature_is_told_apart() {
        let mbr = with(Vec::new(), 510, &[0x55, 0xaa]);
        let cases: &[Case] = &[
            ("empty", Vec::new(), &[], None),
            ("zeros", vec![0; 4096], &[], None),
            ("raw", mbr.clone(), &[], Some(Kind::Disk(Format::Raw))),
            (
                "hybrid ISO",
                with(mbr.clone(), 0x8001, b"CD001"),
                &[],
                Some(Kind::Iso),
            ),
            (
                "qcow2",
                b"QFI\xfb\0\0\0\x02".to_vec(),
                &[],
                Some(Kind::Disk(Format::Qcow2)),
            ),
            (
                "vmdk",
                b"KDMV\x03\0\0\0".to_vec(),
                &[],
                Some(Kind::Disk(Format::Vmdk)),
            ),
            (
                "fixed vhd",
                mbr.clone(),
                b"conectix\0\0\0\x02",
                Some(Kind::Disk(Format::Vhd)),
            ),
            (
                "dynamic vhd",
                b"conectix".to_vec(),
                &[],
                Some(Kind::Disk(Format::Vhd)),
            ),
            ("squashfs", b"hsqs".to_vec(), &[], Some(Kind::Squashfs)),
            (
                "bzImage",
                with(with(mbr.clone(), 0, b"MZ"), 0x202, b"HdrS"),
                &[],
                Some(Kind::Linux),
            ),
            (
                "PE",
                with(
                    with(with(Vec::new(), 0, b"MZ"), 0x3c, &[0x80, 0, 0, 0]),
                    0x80,
                    b"PE\0\0",
                ),
                &[],
                Some(Kind::Efi),
            ),
            (
                "MZ without PE",
                with(with(Vec::new(), 0, b"MZ"), 0x3c, &[0xff, 0xff, 0xff, 0x7f]),
                &[],
                None,
            ),
        ];
        for (name, head, tail, expected) in cases {
            assert_eq!(classify(head, tail), *expected, "{name}");
        }
    }

    #[test]
    fn files_are_read_whatever_their_length() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.bin");
        std::fs::write(&short, b"QFI").unwrap();
        assert_eq!(identify(&short).unwrap(), None);
        let vhd = dir.path().join("disk.anything");
        let mut bytes = vec![0u8; 3 * 512];
        bytes[2 * 512..2 * 512 + 8].copy_from_slice(b"conectix");
        std::fs::write(&vhd, bytes).unwrap();
        assert_eq!(identify(&vhd).unwrap(), Some(Kind::Disk(Format::Vhd)));
        assert!(identify(&dir.path().join("missing")).is_err());
    }
}
