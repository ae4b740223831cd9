//! Output formats: one entry stream in, artifacts out.
//!
//! Every artifact is written under a temporary name in the output directory
//! and renamed into place only when all of them are complete
//! ([`Pending`], in `staging.rs`),
//! so a failed build leaves nothing behind and never replaces a good
//! artifact with half of a new one. File names follow LinuxKit's.

mod boot;
mod media;
mod squashfs;
mod staging;

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

pub use archive::compress::Compression;
use archive::entry::{Entry, Sink, copy_entry};
use archive::{compress, cpio, tar};

pub use boot::{BootError, BootFiles};
pub(crate) use media::file_digest;
pub use media::{MediaError, MediaOptions, parse_size};
pub use staging::Pending;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// The whole filesystem: `NAME.tar`.
    Tar,
    /// `NAME-kernel`, `NAME-initrd.img`, `NAME-cmdline`.
    KernelInitrd,
    /// `NAME-initrd.tar` holding `kernel`, `initrd.img`, `cmdline`,
    /// `ucode.cpio`.
    TarKernelInitrd,
    /// `NAME.efi`: a unified kernel image (systemd's EFI stub, the kernel,
    /// the initrd and the command line in one PE file).
    Uki,
    /// `NAME.iso`: one hybrid image, BIOS and UEFI, CD and USB.
    Iso,
    /// `NAME.raw`: a GPT disk, BIOS and UEFI.
    Raw,
    /// `NAME.qcow2`: the raw disk as qcow2.
    Qcow2,
    /// `NAME.vhd`: the raw disk as a fixed VHD, its size a whole MiB.
    Vhd,
    /// `NAME.vhd`: the raw disk as a dynamic VHD.
    DynamicVhd,
    /// `NAME.vmdk`: the raw disk as a streamOptimized VMDK.
    Vmdk,
    /// `NAME.img.tar.gz`: the raw disk as `disk.raw` in a GNU tar, gzipped,
    /// as GCE's image import takes it.
    Gcp,
    /// `NAME-kernel`, `NAME-squashfs.img` (the whole tree), `NAME-cmdline`
    /// naming it, and `NAME-initrd.img` holding only `/init` and the
    /// modules that find and mount the image ([`squashfs`]).
    KernelSquashfs,
}

impl Format {
    /// Every name a format is asked for by: berth's own first, then
    /// LinuxKit's names for the same artifact.
    pub const ALL: &[(&str, Format)] = &[
        ("tar", Format::Tar),
        ("kernel+initrd", Format::KernelInitrd),
        ("tar-kernel-initrd", Format::TarKernelInitrd),
        ("uki", Format::Uki),
        ("iso", Format::Iso),
        ("raw", Format::Raw),
        ("qcow2", Format::Qcow2),
        ("vhd", Format::Vhd),
        ("dynamic-vhd", Format::DynamicVhd),
        ("vmdk", Format::Vmdk),
        ("gcp", Format::Gcp),
        ("kernel+squashfs", Format::KernelSquashfs),
        // LinuxKit's names: one hybrid ISO and one disk boot both ways.
        ("iso-bios", Format::Iso),
        ("iso-efi", Format::Iso),
        ("iso-efi-initrd", Format::Iso),
        ("kernel+iso", Format::Iso),
        ("raw-bios", Format::Raw),
        ("raw-efi", Format::Raw),
        ("aws", Format::Raw),
        ("qcow2-bios", Format::Qcow2),
        ("qcow2-efi", Format::Qcow2),
    ];

    /// Whether the format is made from the kernel, the whole initrd and
    /// the command line (as opposed to the tar of the whole tree, or the
    /// squashfs and its small initrd).
    pub fn needs_kernel_parts(self) -> bool {
        !matches!(self, Format::Tar | Format::KernelSquashfs)
    }

    /// Whether the format needs the boot image's loaders and stubs.
    pub fn needs_boot_files(self) -> bool {
        !matches!(
            self,
            Format::Tar | Format::KernelInitrd | Format::TarKernelInitrd | Format::KernelSquashfs
        )
    }

    /// Whether the format is derived from the raw disk.
    pub fn needs_disk(self) -> bool {
        matches!(
            self,
            Format::Raw
                | Format::Qcow2
                | Format::Vhd
                | Format::DynamicVhd
                | Format::Vmdk
                | Format::Gcp
        )
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let known: Vec<_> = Format::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown format {s:?} (known: {})", known.join(", "))
            })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = Format::ALL
            .iter()
            .find(|(_, x)| x == self)
            .map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}

/// Every file a build named NAME may write, by what follows NAME in its
/// name, with the media type the file has as a layer of a berth artifact
/// (`docs/distribution.md`): the formats' files (as [`Writers`] and
/// `media.rs` name them), the lock file and SBOM every build writes, and
/// the digests and their signature a signed build writes.
const BUILD_FILES: &[(&str, &str)] = &[
    ("-kernel", "application/vnd.berth.kernel"),
    ("-initrd.img", "application/vnd.berth.initrd"),
    ("-cmdline", "application/vnd.berth.cmdline"),
    ("-initrd.tar", "application/vnd.berth.kernel-initrd.tar"),
    ("-squashfs.img", "application/vnd.berth.squashfs"),
    (".tar", "application/vnd.berth.rootfs.tar"),
    (".efi", "application/vnd.berth.uki"),
    (".iso", "application/vnd.berth.iso"),
    (".raw", "application/vnd.berth.disk.raw"),
    (".qcow2", "application/vnd.berth.disk.qcow2"),
    (".vhd", "application/vnd.berth.disk.vhd"),
    (".vmdk", "application/vnd.berth.disk.vmdk"),
    (".img.tar.gz", "application/vnd.berth.disk.gcp.tar+gzip"),
    (".lock", "application/vnd.berth.lock"),
    (".spdx.json", "application/spdx+json"),
    (".sha256", "application/vnd.berth.sha256"),
    (".sha256.sig", "application/vnd.berth.sha256.sig"),
];

/// The names of every file a build named `name` may write, each with its
/// media type as an artifact's layer.
pub fn build_files(name: &str) -> Vec<(String, &'static str)> {
    BUILD_FILES
        .iter()
        .map(|(suffix, media_type)| (format!("{name}{suffix}"), *media_type))
        .collect()
}

/// The build a file of that name belongs to and its media type as an
/// artifact's layer, by the longest of [`build_files`]' endings it has
/// (`x-initrd.tar` is build `x`'s kernel+initrd tar, not build `x-initrd`'s
/// tar; `--name` says otherwise); `None` for a file no build writes.
pub fn build_of(file_name: &str) -> Option<(&str, &'static str)> {
    BUILD_FILES
        .iter()
        .filter_map(|(suffix, media_type)| {
            let name = file_name.strip_suffix(suffix)?;
            (!name.is_empty()).then_some((suffix.len(), name, *media_type))
        })
        .max_by_key(|(length, _, _)| *length)
        .map(|(_, name, media_type)| (name, media_type))
}

/// The sinks for the requested formats, fed by one stream.
pub struct Writers {
    sinks: Vec<Box<dyn Sink>>,
    mtime: u64,
    parts: Option<Parts>,
    squashfs: Option<squashfs::SquashfsParts>,
    name: String,
    formats: Vec<Format>,
    media: MediaOptions,
}

/// What went wrong writing the artifacts.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Media(#[from] MediaError),
}

impl Writers {
    /// `mtime` is the time of the entries of `tar-kernel-initrd`.
    pub fn new(
        pending: &mut Pending,
        name: &str,
        formats: &[Format],
        compression: Compression,
        mtime: u64,
        media: MediaOptions,
    ) -> io::Result<Writers> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        let mut parts = None;
        if formats.contains(&Format::Tar) {
            let (_, file) = pending.create(Some(&format!("{name}.tar")))?;
            sinks.push(Box::new(tar::TarWriter::new(BufWriter::with_capacity(
                1 << 20,
                file,
            ))));
        }
        if formats.iter().any(|f| f.needs_kernel_parts()) {
            let (sink, split) = KernelInitrd::new(pending, compression, |_| true)?;
            sinks.push(Box::new(sink));
            parts = Some(split);
        }
        let mut squashfs_parts = None;
        if formats.contains(&Format::KernelSquashfs) {
            if formats.contains(&Format::KernelInitrd) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "formats kernel+initrd and kernel+squashfs both write {name}-initrd.img \
                         and {name}-cmdline: build them one at a time"
                    ),
                ));
            }
            let (more, split) = squashfs::sinks(pending, name, compression, mtime)?;
            sinks.extend(more);
            squashfs_parts = Some(split);
        }
        Ok(Writers {
            sinks,
            mtime,
            parts,
            squashfs: squashfs_parts,
            name: name.to_string(),
            formats: formats.to_vec(),
            media,
        })
    }

    pub fn sink(&mut self) -> &mut dyn Sink {
        self
    }

    /// Ends the stream, lays out the kernel/initrd formats and writes the
    /// media made of the parts.
    pub fn finish(mut self, pending: &mut Pending) -> Result<(), OutputError> {
        for sink in &mut self.sinks {
            sink.finish()?;
        }
        self.sinks.clear();
        if let Some(split) = self.squashfs {
            squashfs::commit(pending, &self.name, split)?;
        }
        let Some(parts) = self.parts else {
            return Ok(());
        };
        let name = &self.name;
        if self.formats.contains(&Format::TarKernelInitrd) {
            let (_, file) = pending.create(Some(&format!("{name}-initrd.tar")))?;
            let mut tar = tar::TarWriter::new(BufWriter::new(file));
            for (inner, part) in [
                ("kernel", parts.kernel),
                ("initrd.img", parts.initrd),
                ("cmdline", parts.cmdline),
                ("ucode.cpio", parts.ucode),
            ] {
                let mut file = File::open(pending.path(part))?;
                let size = file.metadata()?.len();
                if size > 0 {
                    let entry = Entry::file(inner, 0o644, size, self.mtime);
                    copy_entry(&mut tar, &entry, &mut file)?;
                }
            }
            tar.finish()?;
        }
        let initrd = boot_initrd(pending, parts)?;
        if self.formats.contains(&Format::KernelInitrd) {
            commit_kernel_initrd(pending, name, parts, initrd, None)?;
        }
        let media: Vec<Format> = self
            .formats
            .iter()
            .copied()
            .filter(|f| f.needs_boot_files())
            .collect();
        if !media.is_empty() {
            media::write(
                pending,
                &media::Parts {
                    name,
                    kernel: parts.kernel,
                    initrd,
                    cmdline: parts.cmdline,
                    mtime: self.mtime,
                },
                &media,
                &self.media,
            )?;
        }
        Ok(())
    }
}

/// The initrd as a boot loader takes it: early microcode first and
/// uncompressed (Documentation/arch/x86/microcode.rst); the initrd part
/// itself when there is none. Its index in `pending`.
fn boot_initrd(pending: &mut Pending, parts: Parts) -> io::Result<usize> {
    if std::fs::metadata(pending.path(parts.ucode))?.len() == 0 {
        return Ok(parts.initrd);
    }
    let (index, file) = pending.create(None)?;
    let mut out = BufWriter::new(file);
    for part in [parts.ucode, parts.initrd] {
        io::copy(&mut File::open(pending.path(part))?, &mut out)?;
    }
    out.flush()?;
    Ok(index)
}

/// Names the parts `NAME-kernel`, `NAME-cmdline` (with `extra_cmdline`
/// appended) and `NAME-initrd.img` (`initrd`, from [`boot_initrd`]).
fn commit_kernel_initrd(
    pending: &mut Pending,
    name: &str,
    parts: Parts,
    initrd: usize,
    extra_cmdline: Option<&str>,
) -> io::Result<()> {
    if std::fs::metadata(pending.path(parts.kernel))?.len() > 0 {
        pending.rename(parts.kernel, &format!("{name}-kernel"));
    }
    match extra_cmdline {
        Some(extra) => {
            let cmdline = String::from_utf8_lossy(&read_file(pending.path(parts.cmdline))?)
                .trim_end()
                .to_string();
            let joined = match cmdline.is_empty() {
                true => extra.to_string(),
                false => format!("{cmdline} {extra}"),
            };
            pending.write(&format!("{name}-cmdline"), joined.as_bytes())?;
        }
        None => {
            if std::fs::metadata(pending.path(parts.cmdline))?.len() > 0 {
                pending.rename(parts.cmdline, &format!("{name}-cmdline"));
            }
        }
    }
    pending.rename(initrd, &format!("{name}-initrd.img"));
    Ok(())
}

impl Sink for Writers {
    fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.entry(entry))
    }
    fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.data(chunk))
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where each part of the kernel/initrd split went, as indices into
/// [`Pending`].
#[derive(Clone, Copy)]
struct Parts {
    kernel: usize,
    cmdline: usize,
    ucode: usize,
    initrd: usize,
}

/// Splits the stream as LinuxKit does: `boot/kernel`, `boot/cmdline` and
/// `boot/ucode.cpio` become their own files, anything else under `boot/` is
/// dropped, and the rest (what `keep` takes of it) becomes the compressed
/// cpio initrd.
struct KernelInitrd {
    kernel: BufWriter<File>,
    cmdline: BufWriter<File>,
    ucode: BufWriter<File>,
    initrd: Option<cpio::CpioWriter<Box<dyn compress::Encoder>>>,
    /// Which of the other entries go into the initrd.
    keep: fn(&str) -> bool,
    target: Target,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Kernel,
    Cmdline,
    Ucode,
    Initrd,
    Drop,
}

impl KernelInitrd {
    fn new(
        pending: &mut Pending,
        compression: Compression,
        keep: fn(&str) -> bool,
    ) -> io::Result<(KernelInitrd, Parts)> {
        let (kernel_index, kernel) = pending.create(None)?;
        let (cmdline_index, cmdline) = pending.create(None)?;
        let (ucode_index, ucode) = pending.create(None)?;
        let (initrd_index, initrd) = pending.create(None)?;
        let parts = Parts {
            kernel: kernel_index,
            cmdline: cmdline_index,
            ucode: ucode_index,
            initrd: initrd_index,
        };
        let encoder = compress::encoder(compression, BufWriter::with_capacity(1 << 20, initrd))?;
        let sink = KernelInitrd {
            kernel: BufWriter::with_capacity(1 << 20, kernel),
            cmdline: BufWriter::new(cmdline),
            ucode: BufWriter::new(ucode),
            initrd: Some(cpio::CpioWriter::new(encoder)),
            keep,
            target: Target::Drop,
        };
        Ok((sink, parts))
    }
}

impl Sink for KernelInitrd {
    fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        let file = entry.kind == archive::entry::Kind::File;
        self.target = match entry.path.as_str() {
            "boot/kernel" if file => Target::Kernel,
            "boot/cmdline" if file => Target::Cmdline,
            "boot/ucode.cpio" if file => Target::Ucode,
            p if p.starts_with("boot/") => Target::Drop,
            p if (self.keep)(p) => Target::Initrd,
            _ => Target::Drop,
        };
        // A second kernel or cmdline replaces the first, as in LinuxKit.
        for (target, file) in [
            (Target::Kernel, &mut self.kernel),
            (Target::Cmdline, &mut self.cmdline),
            (Target::Ucode, &mut self.ucode),
        ] {
            if self.target == target {
                file.flush()?;
                file.get_mut().set_len(0)?;
                file.get_mut().rewind()?;
            }
        }
        if self.target == Target::Initrd {
            self.initrd
                .as_mut()
                .expect("initrd finished")
                .entry(entry)?;
        }
        Ok(())
    }

    fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        match self.target {
            Target::Kernel => self.kernel.write_all(chunk),
            Target::Cmdline => self.cmdline.write_all(chunk),
            Target::Ucode => self.ucode.write_all(chunk),
            Target::Initrd => self.initrd.as_mut().expect("initrd finished").data(chunk),
            Target::Drop => Ok(()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        for file in [&mut self.kernel, &mut self.cmdline, &mut self.ucode] {
            file.flush()?;
        }
        if let Some(mut initrd) = self.initrd.take() {
            initrd.finish()?;
            initrd.into_inner().finish()?;
        }
        Ok(())
    }
}

/// Reads a whole small file, for tests and listings.
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_belongs_to_the_build_its_longest_known_ending_leaves() {
        assert_eq!(
            build_of("x-initrd.tar"),
            Some(("x", "application/vnd.berth.kernel-initrd.tar"))
        );
        assert_eq!(build_of("x-initrd.img").map(|b| b.0), Some("x"));
        assert_eq!(
            build_of("web.img.tar.gz"),
            Some(("web", "application/vnd.berth.disk.gcp.tar+gzip"))
        );
        assert_eq!(build_of("a.b.iso").map(|b| b.0), Some("a.b"));
        assert_eq!(build_of(".iso"), None);
        assert_eq!(build_of("notes.txt"), None);
        let names: Vec<String> = build_files("x").into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"x-squashfs.img".to_string()));
        assert!(
            names
                .iter()
                .all(|n| build_of(n).is_some_and(|b| b.0 == "x"))
        );
    }
}
