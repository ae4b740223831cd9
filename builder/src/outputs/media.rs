//! Bootable media, made of the parts the stream produced once (kernel,
//! initrd, command line) and the boot image's loaders:
//!
//! - the UKI: the EFI stub, the kernel, the initrd and the command line;
//! - the ISO: isolinux for BIOS, the UKI in an El Torito EFI image for
//!   UEFI, an isohybrid MBR and GPT for USB sticks;
//! - the raw disk: a GPT disk whose EFI system partition holds the UKI (for
//!   UEFI) and syslinux with the kernel and initrd (for BIOS);
//! - qcow2, VHD, VMDK and GCE's tarball: the raw disk, converted.
//!
//! Each intermediate is written once however many formats need it, as a
//! scratch file of [`Pending`] unless it is itself asked for. Every
//! identifier comes from a [`Seed`] of the parts, every time from the
//! build's clock: the same inputs give the same bytes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use media::fat::FatImage;
use media::syslinux::{self, SyslinuxFiles};
use media::{Seed, gpt};

use super::Format;
use super::boot::BootFiles;
use super::staging::Pending;

/// What media need beyond the parts: the boot image's files, and the
/// user's choices.
#[derive(Debug, Clone, Default)]
pub struct MediaOptions {
    /// The boot image's files; `None` when no format needs them.
    pub boot: Option<BootFiles>,
    /// The ISO's volume label (default: `BERTH`).
    pub label: Option<String>,
    /// The disk size in bytes (default: the smallest that fits).
    pub size: Option<u64>,
}

/// The parts, as indices into [`Pending`].
pub(super) struct Parts<'a> {
    pub name: &'a str,
    pub kernel: usize,
    pub initrd: usize,
    pub cmdline: usize,
    pub mtime: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("-f {format}: the definition has no kernel")]
    NoKernel { format: Format },
    #[error("-f {format}: no boot image (internal: the build did not read one)")]
    NoBootFiles { format: Format },
    #[error("-f {format}: {message}")]
    Format { format: Format, message: String },
    #[error("-f {format}: {what}")]
    Io {
        format: Format,
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The default volume label of ISOs.
pub const DEFAULT_LABEL: &str = "BERTH";

/// The volume label of EFI system partitions and El Torito EFI images.
const ESP_LABEL: &str = "BERTH-EFI";

/// The size of a disk's ESP when its files would fit a smaller one: FAT32
/// needs 65525 clusters (about 34 MiB of 512-byte ones), and this is
/// comfortably past that.
const ESP_FAT32_MIN: u64 = 40 << 20;

/// A size as LinuxKit's `-size` takes it: bytes, or a number with `K`, `M`,
/// `G` or `T` (powers of 1024; a trailing `B` or `iB` is allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let upper = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 10),
        Some('M') => (&upper[..upper.len() - 1], 20),
        Some('G') => (&upper[..upper.len() - 1], 30),
        Some('T') => (&upper[..upper.len() - 1], 40),
        _ => (upper, 0),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size: a number of bytes, or with K, M, G or T"))?;
    number
        .checked_mul(1 << shift)
        .filter(|size| *size > 0)
        .ok_or_else(|| format!("{text:?} is not a size berth can write"))
}

/// `os-release` for the UKI's `.osrel` section: what boot menus show.
fn os_release(name: &str) -> String {
    format!(
        "NAME=berth\nID=berth\nPRETTY_NAME=\"berth {name}\"\nVERSION_ID={version}\n",
        version = env!("CARGO_PKG_VERSION")
    )
}

/// The digest of a file, streamed through the hashing writer the cache
/// uses.
pub(crate) fn file_digest(path: &Path) -> io::Result<String> {
    let mut hashing = oci::digest::HashingWriter::new(io::sink());
    io::copy(&mut File::open(path)?, &mut hashing)?;
    Ok(hashing.finish().0)
}

/// Writes every format of `formats` (all of which need boot files).
pub(super) fn write(
    pending: &mut Pending,
    parts: &Parts,
    formats: &[Format],
    options: &MediaOptions,
) -> Result<(), MediaError> {
    let first = formats[0];
    let io_error = |what: &str| {
        let what = what.to_string();
        move |source| MediaError::Io {
            format: first,
            what: what.clone(),
            source,
        }
    };
    let kernel = pending.path(parts.kernel).to_path_buf();
    let initrd = pending.path(parts.initrd).to_path_buf();
    if std::fs::metadata(&kernel)
        .map_err(io_error("the kernel"))?
        .len()
        == 0
    {
        return Err(MediaError::NoKernel { format: first });
    }
    let boot = options
        .boot
        .as_ref()
        .ok_or(MediaError::NoBootFiles { format: first })?;
    let cmdline = std::fs::read_to_string(pending.path(parts.cmdline))
        .map_err(io_error("the command line"))?;
    let cmdline = cmdline.trim().to_string();
    let seed = Seed::of(&[
        file_digest(&kernel)
            .map_err(io_error("the kernel"))?
            .as_bytes(),
        file_digest(&initrd)
            .map_err(io_error("the initrd"))?
            .as_bytes(),
        cmdline.as_bytes(),
        parts.name.as_bytes(),
    ]);
    let media = Media {
        name: parts.name,
        kernel,
        initrd,
        cmdline,
        mtime: parts.mtime,
        seed,
        boot,
        label: options.label.as_deref().unwrap_or(DEFAULT_LABEL),
        size: options.size,
    };
    media.write_all(pending, formats)
}

/// Everything the media of one build are made of.
struct Media<'a> {
    name: &'a str,
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
    mtime: u64,
    seed: Seed,
    boot: &'a BootFiles,
    label: &'a str,
    size: Option<u64>,
}

/// A media error of `format`, with its causes on one line.
fn failed<E: std::error::Error>(format: Format) -> impl Fn(E) -> MediaError {
    move |error| MediaError::Format {
        format,
        message: oci::chain::render(&error),
    }
}

impl Media<'_> {
    /// Writes the media. What needs `pending` (creating the files, writing
    /// the UKI and the ESPs) is done first, in order; then the ISO is written
    /// on one thread while the raw disk is written on this one, and the
    /// formats converted from the disk each on a thread of its own.
    fn write_all(&self, pending: &mut Pending, formats: &[Format]) -> Result<(), MediaError> {
        let wants = |format: Format| formats.contains(&format);
        let first_disk = formats.iter().copied().find(|f| f.needs_disk());
        let uki = if wants(Format::Uki) || wants(Format::Iso) || first_disk.is_some() {
            Some(self.uki(pending, wants(Format::Uki))?)
        } else {
            None
        };
        let iso = match (wants(Format::Iso), &uki) {
            (true, Some(uki)) => Some(self.iso(pending, uki)?),
            _ => None,
        };
        let (disk, gcp_disk) = match (first_disk, &uki) {
            (Some(first), Some(uki)) => {
                let (disk, gcp) =
                    self.raw(pending, first, wants(Format::Raw), uki, wants(Format::Gcp))?;
                (Some(disk), gcp)
            }
            _ => (None, None),
        };
        let mut conversions = Vec::new();
        for format in formats.iter().copied().filter(|f| f.needs_disk()) {
            if format != Format::Raw {
                conversions.push(self.conversion(pending, format)?);
            }
        }
        let raw = disk.as_ref().map(|disk| disk.path.clone());
        let gcp_raw = gcp_disk.as_ref().map(|disk| disk.path.clone());
        std::thread::scope(|scope| {
            let iso = iso.map(|iso| scope.spawn(move || iso.run()));
            let mut results = Vec::new();
            if let (Some(disk), Some(raw)) = (disk, &raw) {
                results.push(disk.run());
                results.extend(gcp_disk.map(DiskJob::run));
                if results.iter().all(Result::is_ok) {
                    let threads: Vec<_> = conversions
                        .into_iter()
                        .map(|job| {
                            let raw = match (job.format, &gcp_raw) {
                                (Format::Gcp, Some(gcp_raw)) => gcp_raw,
                                _ => raw,
                            };
                            (job.format, scope.spawn(move || self.convert(job, raw)))
                        })
                        .collect();
                    results.extend(
                        threads
                            .into_iter()
                            .map(|(format, thread)| joined(format, thread)),
                    );
                }
            }
            if let Some(iso) = iso {
                results.push(joined(Format::Iso, iso));
            }
            results.into_iter().collect::<Result<(), MediaError>>()
        })
    }

    /// A new artifact `name` (a scratch file unless `named`): its path and
    /// the file.
    fn create(
        &self,
        pending: &mut Pending,
        format: Format,
        name: &str,
        named: bool,
    ) -> Result<(PathBuf, File), MediaError> {
        let (index, file) =
            pending
                .create(named.then_some(name))
                .map_err(|source| MediaError::Io {
                    format,
                    what: format!("creating {name}"),
                    source,
                })?;
        Ok((pending.path(index).to_path_buf(), file))
    }

    /// The UKI: `NAME.efi` if asked for, a scratch file otherwise.
    fn uki(&self, pending: &mut Pending, named: bool) -> Result<PathBuf, MediaError> {
        let name = format!("{}.efi", self.name);
        let (path, file) = self.create(pending, Format::Uki, &name, named)?;
        let osrel = os_release(self.name);
        let inputs = media::uki::UkiInputs {
            stub: &self.boot.uki_stub,
            osrel: osrel.as_bytes(),
            cmdline: self.cmdline.as_bytes(),
            uname: None,
            linux: &self.kernel,
            initrd: &self.initrd,
        };
        let mut out = BufWriter::new(file);
        media::uki::write_uki(&inputs, &mut out).map_err(failed(Format::Uki))?;
        out.flush().map_err(|source| MediaError::Io {
            format: Format::Uki,
            what: format!("writing {name}"),
            source,
        })?;
        Ok(path)
    }

    /// The EFI system partition (or the ISO's El Torito EFI image): the UKI
    /// as the default boot program and, when `syslinux` is given, syslinux
    /// with the kernel and initrd for BIOS. Written to a scratch file.
    fn esp(
        &self,
        pending: &mut Pending,
        format: Format,
        uki: &Path,
        hidden_sectors: u32,
        syslinux: bool,
    ) -> Result<(PathBuf, u64), MediaError> {
        let fat_error = failed(format);
        let mut fat = FatImage::new(
            ESP_LABEL,
            self.seed.serial("esp volume id"),
            self.mtime,
            hidden_sectors,
        )
        .map_err(&fat_error)?;
        fat.add_file("EFI/BOOT/BOOTX64.EFI", uki)
            .map_err(&fat_error)?;
        let plan = if syslinux {
            fat.add_file("VMLINUZ", &self.kernel).map_err(&fat_error)?;
            fat.add_file("INITRD.IMG", &self.initrd)
                .map_err(&fat_error)?;
            let files = SyslinuxFiles::from_installer(&self.boot.syslinux_installer)
                .map_err(failed(format))?;
            let config = syslinux::config("VMLINUZ", Some("INITRD.IMG"), &self.cmdline);
            // A disk's ESP is FAT32, as the UEFI specification asks of
            // fixed disks: a small system gets an ESP of ESP_FAT32_MIN,
            // a larger one (syslinux's files take well under 1 MiB) is
            // past FAT32's least number of clusters anyway.
            let least = fat.min_size().map_err(&fat_error)? + (1 << 20);
            let size = (least < ESP_FAT32_MIN).then_some(ESP_FAT32_MIN);
            syslinux::install(&files, fat, &config, size).map_err(failed(format))?
        } else {
            fat.plan(None).map_err(&fat_error)?
        };
        let (path, file) = self.create(pending, format, "the EFI system partition", false)?;
        let mut out = BufWriter::new(file);
        plan.write(&mut out).map_err(&fat_error)?;
        out.flush().map_err(|source| MediaError::Io {
            format,
            what: "writing the EFI system partition".into(),
            source,
        })?;
        Ok((path, plan.size()))
    }

    /// The raw GPT disk: `NAME.raw` if asked for, a scratch file for the
    /// formats converted from it otherwise. `format` is the first disk
    /// format asked for, which errors name.
    fn raw(
        &self,
        pending: &mut Pending,
        format: Format,
        named: bool,
        uki: &Path,
        gcp: bool,
    ) -> Result<(DiskJob, Option<DiskJob>), MediaError> {
        let gpt_error = failed(format);
        let boot_code: [u8; 440] = self
            .boot
            .gpt_mbr
            .get(..440)
            .and_then(|code| code.try_into().ok())
            .ok_or_else(|| MediaError::Format {
                format,
                message: format!(
                    "the boot image's {} holds {} bytes, not the 440 of MBR boot code",
                    super::boot::GPT_MBR,
                    self.boot.gpt_mbr.len()
                ),
            })?;
        let disk = |content: gpt::Content, size: Option<u64>| gpt::Disk {
            seed: self.seed,
            boot_code: Some(boot_code),
            partitions: vec![gpt::Partition {
                name: "EFI system partition".into(),
                type_guid: gpt::EFI_SYSTEM_PARTITION,
                attributes: gpt::LEGACY_BIOS_BOOTABLE,
                content,
            }],
            size,
        };
        // Where the partition starts does not depend on its size or the
        // disk's; the FAT needs it for syslinux ("hidden sectors").
        let first_lba = disk(gpt::Content::Zeros(gpt::SECTOR), None)
            .layout()
            .map_err(&gpt_error)?
            .partitions()[0]
            .first_lba;
        let hidden = u32::try_from(first_lba).map_err(|_| MediaError::Format {
            format,
            message: format!("the partition starts at sector {first_lba}, beyond FAT's reach"),
        })?;
        let (esp, length) = self.esp(pending, format, uki, hidden, true)?;
        let content = gpt::Content::File { path: esp, length };
        let layout = disk(content.clone(), self.size)
            .layout()
            .map_err(&gpt_error)?;
        let name = format!("{}.raw", self.name);
        let (path, file) = self.create(pending, format, &name, named)?;
        // GCE takes a disk of whole GiB: the same disk laid out at that
        // size, so that its backup GPT is at its end.
        let gcp = match gcp {
            false => None,
            true => {
                let size = layout.size().next_multiple_of(1 << 30);
                let layout = disk(content, Some(size))
                    .layout()
                    .map_err(failed(Format::Gcp))?;
                let (path, file) = self.create(pending, Format::Gcp, "disk.raw", false)?;
                Some(DiskJob {
                    layout,
                    file,
                    path,
                    format: Format::Gcp,
                })
            }
        };
        Ok((
            DiskJob {
                layout,
                file,
                path,
                format,
            },
            gcp,
        ))
    }

    /// The hybrid ISO: isolinux with the kernel and initrd for BIOS, the
    /// UKI in the El Torito EFI image for UEFI, isohybrid for USB sticks.
    /// Its EFI image and scratch files are written here; the ISO itself by
    /// [`IsoJob::run`].
    fn iso(&self, pending: &mut Pending, uki: &Path) -> Result<IsoJob, MediaError> {
        let format = Format::Iso;
        let (efi_image, _) = self.esp(pending, format, uki, 0, false)?;
        let config = syslinux::config("BOOT/KERNEL", Some("BOOT/INITRD.IMG"), &self.cmdline);
        let mut files = Vec::new();
        for (path, bytes) in [
            ("ISOLINUX/ISOLINUX.BIN", &self.boot.isolinux[..]),
            ("ISOLINUX/LDLINUX.C32", &self.boot.ldlinux_c32[..]),
            ("ISOLINUX/ISOLINUX.CFG", config.as_bytes()),
        ] {
            let source = self.scratch(pending, format, path, bytes)?;
            files.push(media::iso::IsoFile {
                path: path.into(),
                source,
            });
        }
        for (path, source) in [
            ("BOOT/KERNEL", &self.kernel),
            ("BOOT/INITRD.IMG", &self.initrd),
        ] {
            files.push(media::iso::IsoFile {
                path: path.into(),
                source: source.clone(),
            });
        }
        let iso = media::iso::HybridIso {
            label: self.label.to_string(),
            seed: self.seed,
            mtime: self.mtime,
            files,
            bios_boot_image: "ISOLINUX/ISOLINUX.BIN".into(),
            efi_image,
            mbr_code: self.boot.isohybrid_mbr.clone(),
        };
        let name = format!("{}.iso", self.name);
        let (_, file) = self.create(pending, format, &name, true)?;
        Ok(IsoJob { iso, file, name })
    }

    /// A scratch file holding `bytes`, for a writer that takes files.
    fn scratch(
        &self,
        pending: &mut Pending,
        format: Format,
        what: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, MediaError> {
        let (path, mut file) = self.create(pending, format, what, false)?;
        file.write_all(bytes).map_err(|source| MediaError::Io {
            format,
            what: format!("writing {what}"),
            source,
        })?;
        Ok(path)
    }

    /// The file of a format converted from the raw disk: `NAME.qcow2`,
    /// `NAME.vhd`, `NAME.vmdk` or `NAME.img.tar.gz`.
    fn conversion(&self, pending: &mut Pending, format: Format) -> Result<Conversion, MediaError> {
        let name = match format {
            Format::Qcow2 => format!("{}.qcow2", self.name),
            Format::Vhd | Format::DynamicVhd => format!("{}.vhd", self.name),
            Format::Vmdk => format!("{}.vmdk", self.name),
            Format::Gcp => format!("{}.img.tar.gz", self.name),
            other => unreachable!("{other} is not converted from the raw disk"),
        };
        let (_, file) = self.create(pending, format, &name, true)?;
        Ok(Conversion { format, name, file })
    }

    /// Converts the raw disk at `raw` into `job`'s format.
    fn convert(&self, job: Conversion, raw: &Path) -> Result<(), MediaError> {
        let Conversion {
            format,
            name,
            mut file,
        } = job;
        let error = failed(format);
        if format == Format::Vhd {
            // Writes zeros as holes: seeks on the file itself.
            media::vhd::write_fixed(raw, &self.seed, self.mtime, &mut file).map_err(error)?;
            return Ok(());
        }
        let mut out = BufWriter::with_capacity(1 << 20, file);
        match format {
            Format::Qcow2 => media::qcow2::write(raw, &mut out),
            Format::DynamicVhd => media::vhd::write_dynamic(raw, &self.seed, self.mtime, &mut out),
            Format::Vmdk => media::vmdk::write(raw, &name, &self.seed, &mut out),
            _ => media::gcp::write(raw, self.mtime, &mut out),
        }
        .map_err(&error)?;
        out.flush().map_err(|source| MediaError::Io {
            format,
            what: format!("writing {name}"),
            source,
        })
    }
}

/// The ISO, ready to be written.
struct IsoJob {
    iso: media::iso::HybridIso,
    file: File,
    name: String,
}

impl IsoJob {
    fn run(self) -> Result<(), MediaError> {
        let mut out = BufWriter::with_capacity(1 << 20, self.file);
        self.iso.write(&mut out).map_err(failed(Format::Iso))?;
        out.flush().map_err(|source| MediaError::Io {
            format: Format::Iso,
            what: format!("writing {}", self.name),
            source,
        })
    }
}

/// The raw disk, laid out, ready to be written.
struct DiskJob {
    layout: gpt::Layout,
    file: File,
    path: PathBuf,
    /// The first disk format asked for, which errors name.
    format: Format,
}

impl DiskJob {
    fn run(mut self) -> Result<(), MediaError> {
        self.layout
            .write_sparse(&mut self.file)
            .map_err(failed(self.format))
    }
}

/// A format to convert the raw disk into, and its file.
struct Conversion {
    format: Format,
    name: String,
    file: File,
}

/// The result of `format`'s thread; a panic, which berth's writers do not
/// do, is an error rather than a second panic.
fn joined(
    format: Format,
    handle: std::thread::ScopedJoinHandle<'_, Result<(), MediaError>>,
) -> Result<(), MediaError> {
    handle.join().unwrap_or_else(|_| {
        Err(MediaError::Format {
            format,
            message: "its writer thread panicked".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_as_linuxkit_reads_them() {
        assert_eq!(parse_size("1024M").unwrap(), 1 << 30);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64kb").unwrap(), 64 << 10);
        assert!(
            parse_size("big")
                .unwrap_err()
                .contains("\"big\" is not a size")
        );
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
