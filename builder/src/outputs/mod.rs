//! Output formats: one entry stream in, artifacts out.
//!
//! Every artifact is written under a temporary name in the output directory
//! and renamed into place only when all of them are complete
//! ([`Pending`], in `staging.rs`),
//! so a failed build leaves nothing behind and never replaces a good
//! artifact with half of a new one. File names follow LinuxKit's.

mod squashfs;
mod staging;

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

pub use archive::compress::Compression;
use archive::entry::{Entry, Sink, copy_entry};
use archive::{compress, cpio, tar};

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
    /// `NAME-kernel`, `NAME-squashfs.img` (the whole tree), `NAME-cmdline`
    /// naming it, and `NAME-initrd.img` holding only `/init` and the
    /// modules that find and mount the image ([`squashfs`]).
    KernelSquashfs,
}

impl Format {
    pub const ALL: &[(&str, Format)] = &[
        ("tar", Format::Tar),
        ("kernel+initrd", Format::KernelInitrd),
        ("tar-kernel-initrd", Format::TarKernelInitrd),
        ("kernel+squashfs", Format::KernelSquashfs),
    ];
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

/// The sinks for the requested formats, fed by one stream.
pub struct Writers {
    sinks: Vec<Box<dyn Sink>>,
    mtime: u64,
    parts: Option<Parts>,
    squashfs: Option<squashfs::SquashfsParts>,
    name: String,
    formats: Vec<Format>,
}

impl Writers {
    /// `mtime` is the time of the entries of `tar-kernel-initrd`.
    pub fn new(
        pending: &mut Pending,
        name: &str,
        formats: &[Format],
        compression: Compression,
        mtime: u64,
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
        if formats.contains(&Format::KernelInitrd) || formats.contains(&Format::TarKernelInitrd) {
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
        })
    }

    pub fn sink(&mut self) -> &mut dyn Sink {
        self
    }

    /// Ends the stream and lays out the kernel/initrd formats.
    pub fn finish(mut self, pending: &mut Pending) -> io::Result<()> {
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
        if self.formats.contains(&Format::KernelInitrd) {
            commit_kernel_initrd(pending, name, parts, None)?;
        }
        Ok(())
    }
}

/// Names the parts `NAME-kernel`, `NAME-cmdline` (with `extra_cmdline`
/// appended) and `NAME-initrd.img` (early microcode first).
fn commit_kernel_initrd(
    pending: &mut Pending,
    name: &str,
    parts: Parts,
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
    let initrd_name = format!("{name}-initrd.img");
    if std::fs::metadata(pending.path(parts.ucode))?.len() == 0 {
        pending.rename(parts.initrd, &initrd_name);
    } else {
        // Early microcode must come first and uncompressed
        // (Documentation/arch/x86/microcode.rst).
        let (_, file) = pending.create(Some(&initrd_name))?;
        let mut out = BufWriter::new(file);
        for part in [parts.ucode, parts.initrd] {
            io::copy(&mut File::open(pending.path(part))?, &mut out)?;
        }
        out.flush()?;
    }
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
