//! The boot loaders and stubs bootable media are made with, read out of the
//! definition's `boot:` image (berth's own `images/boot` by default): the
//! files are data, never run. They are small, so they are held in memory.

use archive::Clock;
use archive::entry::Kind;
use oci::ImageSource;
use oci::layout::ResolvedImage;

use crate::flatten::{FlattenError, flatten};

/// Each file's path in the boot image.
pub const UKI_STUB: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
pub const ISOLINUX: &str = "usr/lib/ISOLINUX/isolinux.bin";
pub const ISOHYBRID_MBR: &str = "usr/lib/ISOLINUX/isohdpfx.bin";
pub const LDLINUX_C32: &str = "usr/lib/syslinux/modules/bios/ldlinux.c32";
pub const GPT_MBR: &str = "usr/lib/syslinux/mbr/gptmbr.bin";
/// The syslinux installer, for the boot sector and `ldlinux.sys` it carries.
pub const SYSLINUX_INSTALLER: &str = "usr/bin/syslinux";

/// The files of a boot image that media need.
#[derive(Debug, Clone, Default)]
pub struct BootFiles {
    pub uki_stub: Vec<u8>,
    pub isolinux: Vec<u8>,
    pub isohybrid_mbr: Vec<u8>,
    pub ldlinux_c32: Vec<u8>,
    pub gpt_mbr: Vec<u8>,
    pub syslinux_installer: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    #[error(
        "boot image {image}: no file /{path} (a boot image holds berth's boot loaders: see images/boot)"
    )]
    Missing { image: String, path: &'static str },
}

impl BootFiles {
    /// Reads the files out of `image`; a missing one is an error naming it.
    pub fn read(
        source: &dyn ImageSource,
        image: &ResolvedImage,
        clock: Clock,
    ) -> Result<BootFiles, BootError> {
        let mut files = BootFiles::default();
        let mut found = [false; 6];
        flatten(source, image, &[], clock, &mut |entry, data| {
            if entry.kind != Kind::File {
                return Ok(());
            }
            let Some(index) = PATHS.iter().position(|path| *path == entry.path) else {
                return Ok(());
            };
            let slot = files.slot(index);
            slot.clear();
            data.read_to_end(slot)
                .map_err(|source| FlattenError::Read {
                    image: image.reference.clone(),
                    layer: entry.path.clone(),
                    source,
                })?;
            found[index] = true;
            Ok(())
        })?;
        match found.iter().position(|found| !found) {
            Some(missing) => Err(BootError::Missing {
                image: image.reference.clone(),
                path: PATHS[missing],
            }),
            None => Ok(files),
        }
    }

    fn slot(&mut self, index: usize) -> &mut Vec<u8> {
        match index {
            0 => &mut self.uki_stub,
            1 => &mut self.isolinux,
            2 => &mut self.isohybrid_mbr,
            3 => &mut self.ldlinux_c32,
            4 => &mut self.gpt_mbr,
            _ => &mut self.syslinux_installer,
        }
    }
}

/// The order of [`BootFiles::slot`].
const PATHS: [&str; 6] = [
    UKI_STUB,
    ISOLINUX,
    ISOHYBRID_MBR,
    LDLINUX_C32,
    GPT_MBR,
    SYSLINUX_INSTALLER,
];
