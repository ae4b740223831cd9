//! `kernel+squashfs`, for systems larger than memory: `NAME-squashfs.img`
//! holds the whole tree, `NAME-initrd.img` only what init needs to find and
//! mount it (`/init`, and of the chosen kernel modules those of disks,
//! squashfs and overlay, with their dependencies and their index), and
//! `NAME-cmdline` names the image with `berth.root=squashfs:ID`
//! (`contract::squashfs` owns the id and init's side of it).
//!
//! The stream cannot be written as it comes: squashfs puts each directory's
//! table after its entries' data, and a later entry may replace an earlier
//! one. So file data is spooled to a scratch file beside the artifacts,
//! only the metadata is kept in memory, and `backhand` writes the image at
//! the end, in path order, reading each file back from the spool. The image
//! is zstd-compressed (Debian's kernels have `CONFIG_SQUASHFS_ZSTD`), its
//! time is the build's, and no uid, gid or time from the build host enters
//! it, so the same inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

use archive::entry::{Entry, Kind, Sink, copy_entry};
use archive::{compress, cpio};
use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use contract::depmod;

use super::{Compression, KernelInitrd, Parts, Pending, boot_initrd, commit_kernel_initrd};

/// Where the parts of a `kernel+squashfs` build went, as indices into
/// [`Pending`].
#[derive(Clone, Copy)]
pub(super) struct SquashfsParts {
    split: Parts,
    image: usize,
}

/// Whether an entry may belong in the small initrd: `/init` and the
/// kernel's modules with their index (and the directories above them);
/// which modules is decided at the end ([`SmallInitrd`]).
fn in_small_initrd(path: &str) -> bool {
    matches!(path, "init" | "lib" | "lib/modules") || path.starts_with("lib/modules/")
}

/// The modules the small initrd keeps of those chosen, with what they
/// depend on: disk controllers and their buses (the directories of
/// `kernel/drivers/` they live in), and the filesystems of the root.
const DISK_DRIVER_DIRS: &[&str] = &[
    "kernel/drivers/ata/",
    "kernel/drivers/block/",
    "kernel/drivers/cdrom/",
    "kernel/drivers/hv/",
    "kernel/drivers/mmc/",
    "kernel/drivers/nvme/",
    "kernel/drivers/scsi/",
    "kernel/drivers/usb/host/",
    "kernel/drivers/usb/storage/",
    "kernel/drivers/virtio/",
    "kernel/drivers/xen/",
];
const ROOT_MODULES: &[&str] = &["squashfs", "overlay"];

/// The two sinks of a `kernel+squashfs` build: the kernel/initrd split with
/// the small initrd, and the squashfs tree.
pub(super) fn sinks(
    pending: &mut Pending,
    name: &str,
    compression: Compression,
    mtime: u64,
) -> io::Result<(Vec<Box<dyn Sink>>, SquashfsParts)> {
    // The split gives the kernel, cmdline and microcode; the initrd is the
    // small one.
    let (split_sink, mut split) = KernelInitrd::new(pending, compression, |_| false)?;
    let (initrd, initrd_file) = pending.create(None)?;
    split.initrd = initrd;
    let (_, initrd_spool) = pending.create(None)?;
    let small = SmallInitrd {
        spool: Some(BufWriter::new(initrd_spool)),
        spooled: 0,
        out: Some((initrd_file, compression)),
        entries: BTreeMap::new(),
        kept: false,
    };
    let (image, image_file) = pending.create(Some(&format!("{name}-squashfs.img")))?;
    let (_, spool) = pending.create(None)?;
    let tree = SquashfsTree {
        name: format!("{name}-squashfs.img"),
        spool: Some(BufWriter::with_capacity(1 << 20, spool)),
        spooled: 0,
        image: Some(image_file),
        nodes: BTreeMap::new(),
        // squashfs times are 32-bit: past 2106 they stay there.
        mtime: u32::try_from(mtime).unwrap_or(u32::MAX),
        skipping: false,
    };
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(split_sink), Box::new(small), Box::new(tree)];
    Ok((sinks, SquashfsParts { split, image }))
}

/// Names the kernel, cmdline and initrd, the cmdline ending with the
/// squashfs image's `berth.root`.
pub(super) fn commit(pending: &mut Pending, name: &str, parts: SquashfsParts) -> io::Result<()> {
    let mut superblock = [0u8; contract::squashfs::SUPERBLOCK_SIZE];
    File::open(pending.path(parts.image))?.read_exact(&mut superblock)?;
    let id = contract::squashfs::root_id(&superblock).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name}-squashfs.img: {e}"),
        )
    })?;
    let option = contract::squashfs::root_option(&id);
    let initrd = boot_initrd(pending, parts.split)?;
    commit_kernel_initrd(pending, name, parts.split, initrd, Some(&option))
}

/// One entry of the tree, its data a region of the spool.
#[derive(Clone)]
struct Node {
    kind: NodeKind,
    header: NodeHeader,
}

#[derive(Clone)]
enum NodeKind {
    File { offset: u64, size: u64 },
    Directory,
    Symlink(String),
    CharDevice(u32),
    BlockDevice(u32),
    Fifo,
}

/// Collects the tree, then writes it as squashfs when the stream ends.
struct SquashfsTree {
    name: String,
    spool: Option<BufWriter<File>>,
    spooled: u64,
    image: Option<File>,
    nodes: BTreeMap<String, Node>,
    mtime: u32,
    /// The current entry is left out, and so is its data.
    skipping: bool,
}

/// Linux's encoding of a device number (`new_encode_dev`), as squashfs
/// stores it.
fn device_number(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Sink for SquashfsTree {
    fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        // `boot/` holds the kernel and its command line, artifacts of their
        // own, and is left out of the tree as it is of the initrd.
        self.skipping =
            entry.path.is_empty() || entry.path == "boot" || entry.path.starts_with("boot/");
        if self.skipping {
            return Ok(());
        }
        let kind = match &entry.kind {
            Kind::File => NodeKind::File {
                offset: self.spooled,
                size: entry.size,
            },
            Kind::Directory => NodeKind::Directory,
            Kind::Symlink { target } => NodeKind::Symlink(target.clone()),
            Kind::HardLink { target } => match self.nodes.get(target) {
                Some(Node {
                    kind: kind @ NodeKind::File { .. },
                    ..
                }) => kind.clone(),
                _ => {
                    return Err(invalid(format!(
                        "{}: hard link {} to {target}, which is not a regular file before it",
                        self.name, entry.path
                    )));
                }
            },
            Kind::CharDevice { major, minor } => {
                NodeKind::CharDevice(device_number(*major, *minor))
            }
            Kind::BlockDevice { major, minor } => {
                NodeKind::BlockDevice(device_number(*major, *minor))
            }
            Kind::Fifo => NodeKind::Fifo,
        };
        let header = NodeHeader {
            permissions: (entry.mode & 0o7777) as u16,
            uid: entry.uid,
            gid: entry.gid,
            mtime: u32::try_from(entry.mtime).unwrap_or(u32::MAX),
        };
        // A later entry replaces an earlier one, as when a tar is unpacked;
        // what was under a directory that is no longer one goes with it.
        let replaced = self.nodes.insert(entry.path.clone(), Node { kind, header });
        let is_directory = matches!(entry.kind, Kind::Directory);
        if let Some(Node {
            kind: NodeKind::Directory,
            ..
        }) = replaced
            && !is_directory
        {
            let prefix = format!("{}/", entry.path);
            let below: Vec<String> = (self.nodes.range(prefix.clone()..))
                .take_while(|(path, _)| path.starts_with(&prefix))
                .map(|(path, _)| path.clone())
                .collect();
            for path in below {
                self.nodes.remove(&path);
            }
        }
        Ok(())
    }

    fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.skipping {
            return Ok(());
        }
        let spool = self
            .spool
            .as_mut()
            .ok_or_else(|| invalid(format!("{}: data after the end", self.name)))?;
        spool.write_all(chunk)?;
        self.spooled += chunk.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let (Some(spool), Some(image)) = (self.spool.take(), self.image.take()) else {
            return Ok(());
        };
        let spool = spool.into_inner().map_err(|e| e.into_error())?;
        let fail = |e: backhand::BackhandError| invalid(format!("{}: {e}", self.name));
        let mut fs = FilesystemWriter::default();
        // backhand's deduplication takes two files of the same length and
        // xxh64 for one without comparing their bytes: a layer could make
        // its file stand in for another image's. Every file is written.
        fs.set_no_duplicate_files(false);
        fs.set_time(self.mtime);
        fs.set_root_mode(0o755);
        fs.set_root_uid(0);
        fs.set_root_gid(0);
        fs.set_compressor(FilesystemCompressor::new(Compressor::Zstd, None).map_err(fail)?);
        let parent_header = NodeHeader {
            permissions: 0o755,
            uid: 0,
            gid: 0,
            mtime: self.mtime,
        };
        // Path order puts every directory before what is in it.
        for (path, node) in &self.nodes {
            let at = |e: backhand::BackhandError| invalid(format!("{}: {path}: {e}", self.name));
            if let Some((parent, _)) = path.rsplit_once('/')
                && !self.nodes.contains_key(parent)
            {
                fs.push_dir_all(parent, parent_header).map_err(at)?;
            }
            let header = node.header;
            match &node.kind {
                NodeKind::File { offset, size } => {
                    let region = Region {
                        file: &spool,
                        offset: *offset,
                        remaining: *size,
                    };
                    fs.push_file(region, path, header)
                }
                NodeKind::Directory => fs.push_dir(path, header),
                NodeKind::Symlink(target) => fs.push_symlink(target.as_str(), path, header),
                NodeKind::CharDevice(number) => fs.push_char_device(*number, path, header),
                NodeKind::BlockDevice(number) => fs.push_block_device(*number, path, header),
                NodeKind::Fifo => fs.push_fifo(path, header),
            }
            .map_err(at)?;
        }
        let mut out = BufWriter::with_capacity(1 << 20, image);
        fs.write(&mut out).map_err(fail)?;
        out.flush()
    }
}

/// The small initrd: `/init` and the kernel's modules are spooled as they
/// come (`modules.dep` may come last), and at the end only the modules
/// that find and mount the root are written, with their index cut down to
/// them.
struct SmallInitrd {
    spool: Option<BufWriter<File>>,
    spooled: u64,
    out: Option<(File, Compression)>,
    /// Path → the entry and where its data starts in the spool; a later
    /// entry replaces an earlier one.
    entries: BTreeMap<String, (Entry, u64)>,
    /// The current entry is spooled.
    kept: bool,
}

impl SmallInitrd {
    fn read(&self, spool: &File, entry: &Entry, offset: u64) -> io::Result<String> {
        let mut text = String::new();
        Region {
            file: spool,
            offset,
            remaining: entry.size,
        }
        .read_to_string(&mut text)
        .map_err(|e| invalid(format!("{}: {e}", entry.path)))?;
        Ok(text)
    }

    /// The module files to keep, per `lib/modules/VERSION/modules.dep`:
    /// disk drivers and the root's filesystems, and what they depend on.
    fn modules(&self, spool: &File) -> io::Result<BTreeSet<String>> {
        let mut keep = BTreeSet::new();
        for (path, (entry, offset)) in &self.entries {
            let Some(dir) = path.strip_suffix("/modules.dep") else {
                continue;
            };
            if entry.kind != Kind::File {
                continue;
            }
            let text = self.read(spool, entry, *offset)?;
            for line in depmod::parse_dep(&text) {
                let wanted = ROOT_MODULES.contains(&line.name.as_str())
                    || DISK_DRIVER_DIRS.iter().any(|d| line.path.starts_with(d));
                if wanted {
                    // modules.dep lists every module a module needs, not
                    // only the direct ones.
                    for file in std::iter::once(line.path).chain(line.depends) {
                        keep.insert(format!("{dir}/{file}"));
                    }
                }
            }
        }
        Ok(keep)
    }

    /// What is written, but the directories: `/init`, the kept modules,
    /// the index files but depmod's binary ones (they name every module),
    /// and hard links to what is kept as copies of it.
    fn files(&self, keep: &BTreeSet<String>) -> Vec<(Entry, u64)> {
        let mut files = Vec::new();
        for (path, (entry, offset)) in &self.entries {
            let rest = path
                .strip_prefix("lib/modules/")
                .and_then(|r| r.split_once('/'))
                .map(|(_, rest)| rest);
            let written = match (&entry.kind, rest) {
                (Kind::Directory, _) => false,
                (_, None) => path == "init",
                (_, Some(rest)) if depmod::module_name(rest).is_some() => keep.contains(path),
                (_, Some(rest)) => !rest.ends_with(".bin"),
            };
            if !written {
                continue;
            }
            let (mut entry, mut offset) = (entry.clone(), *offset);
            if let Kind::HardLink { target } = &entry.kind {
                let Some((target, at)) = self
                    .entries
                    .get(target)
                    .filter(|(t, _)| t.kind == Kind::File)
                else {
                    continue;
                };
                (entry.kind, entry.size, offset) = (Kind::File, target.size, *at);
            }
            files.push((entry, offset));
        }
        files
    }
}

impl Sink for SmallInitrd {
    fn entry(&mut self, entry: &Entry) -> io::Result<()> {
        self.kept = in_small_initrd(&entry.path);
        if self.kept {
            let mut entry = entry.clone();
            // A name left out would keep cpio waiting for it.
            entry.links = 1;
            self.entries
                .insert(entry.path.clone(), (entry, self.spooled));
        }
        Ok(())
    }

    fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        if let (Some(spool), true) = (&mut self.spool, self.kept) {
            spool.write_all(chunk)?;
            self.spooled += chunk.len() as u64;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let (Some(spool), Some((out, compression))) = (self.spool.take(), self.out.take()) else {
            return Ok(());
        };
        let spool = spool.into_inner().map_err(|e| e.into_error())?;
        let keep = self.modules(&spool)?;
        let mut written = self.files(&keep);
        // The directories above what is written, and no others.
        let above: BTreeSet<String> = written
            .iter()
            .flat_map(|(entry, _)| archive::entry::ancestors(&entry.path).map(str::to_string))
            .collect();
        written.extend(
            (self.entries.values())
                .filter(|(entry, _)| entry.is_dir() && above.contains(&entry.path))
                .cloned(),
        );
        written.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        let encoder = compress::encoder(compression, BufWriter::with_capacity(1 << 20, out))?;
        let mut cpio = cpio::CpioWriter::new(encoder);
        for (entry, offset) in &written {
            let name = entry.path.rsplit('/').next().unwrap_or_default();
            if matches!(name, "modules.dep" | "modules.alias") && entry.kind == Kind::File {
                let dir = archive::entry::parent(&entry.path);
                let text = self.read(&spool, entry, *offset)?;
                let cut = crate::kernel::cut_index(name, &text, dir, &keep);
                let mut entry = entry.clone();
                entry.size = cut.len() as u64;
                copy_entry(&mut cpio, &entry, &mut cut.as_bytes())?;
            } else {
                let mut data = Region {
                    file: &spool,
                    offset: *offset,
                    remaining: entry.size,
                };
                copy_entry(&mut cpio, entry, &mut data)?;
            }
        }
        cpio.finish()?;
        cpio.into_inner().finish()
    }
}

/// A file's bytes in the spool, read without moving a shared cursor.
struct Region<'a> {
    file: &'a File,
    offset: u64,
    remaining: u64,
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spool ended before a file's data",
            ));
        }
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use archive::entry::{Entry, Kind, Sink, write_bytes};

    use super::super::{Compression, Format, Pending, Writers, read_file};

    const MTIME: u64 = 1_600_000_000;

    const MODULES_DEP: &[u8] = b"kernel/fs/squashfs.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/net/failover.ko:
kernel/drivers/net/virtio_net.ko: kernel/net/failover.ko kernel/drivers/virtio/virtio_ring.ko
";

    const MODULES_ALIAS: &[u8] = b"alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
";

    /// The path of an external tool, or a visible skip (a failure under
    /// `CI=true`).
    fn tool_or_skip(name: &str) -> Option<PathBuf> {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        });
        if found.is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{name} is not installed, and CI=true makes a skip a failure"
            );
            eprintln!("skipped: {name} is not installed");
        }
        found
    }

    /// A stream in assembly's order: the kernel's part, init, a bundle,
    /// files; with a hard link, a replaced file, a file of several blocks
    /// and set-id bits.
    fn stream(sink: &mut dyn Sink) {
        let dir = |path: &str, mode| Entry::directory(path, mode, MTIME);
        let mut big = Vec::new();
        let mut x: u32 = 1;
        for _ in 0..300_000 {
            // Not very compressible: a xorshift sequence.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            big.push(x as u8);
        }
        let files: &[(&str, u32, &[u8])] = &[
            ("boot/kernel", 0o644, b"not really a kernel"),
            ("boot/cmdline", 0o644, b"console=ttyS0\n"),
            (
                "lib/modules/6.1.0/kernel/fs/squashfs.ko",
                0o644,
                b"squashfs",
            ),
            (
                "lib/modules/6.1.0/kernel/drivers/block/virtio_blk.ko",
                0o644,
                b"blk",
            ),
            (
                "lib/modules/6.1.0/kernel/drivers/virtio/virtio_ring.ko",
                0o644,
                b"ring",
            ),
            (
                "lib/modules/6.1.0/kernel/drivers/net/virtio_net.ko",
                0o644,
                b"net",
            ),
            (
                "lib/modules/6.1.0/kernel/net/failover.ko",
                0o644,
                b"failover",
            ),
            ("lib/modules/6.1.0/modules.dep", 0o644, MODULES_DEP),
            ("lib/modules/6.1.0/modules.alias", 0o644, MODULES_ALIAS),
            ("lib/modules/6.1.0/modules.dep.bin", 0o644, b"binary index"),
            ("init", 0o755, b"berth's init"),
            ("etc/hostname", 0o644, b"first\n"),
            ("containers/services/svc/config.json", 0o644, b"{}"),
            ("containers/services/svc/rootfs/bin/tool", 0o4755, b"tool"),
            ("containers/services/svc/rootfs/empty", 0o600, b""),
            ("var/big", 0o644, &big),
            // files: replaces init's.
            ("etc/hostname", 0o644, b"second\n"),
        ];
        for path in [
            "boot",
            "lib",
            "lib/modules",
            "lib/modules/6.1.0",
            "lib/modules/6.1.0/kernel",
            "lib/modules/6.1.0/kernel/fs",
            "lib/modules/6.1.0/kernel/drivers",
            "lib/modules/6.1.0/kernel/drivers/block",
            "lib/modules/6.1.0/kernel/drivers/virtio",
            "lib/modules/6.1.0/kernel/drivers/net",
            "lib/modules/6.1.0/kernel/net",
            "etc",
            "containers",
            "containers/services",
            "containers/services/svc",
            "containers/services/svc/rootfs",
            "containers/services/svc/rootfs/bin",
            "var",
        ] {
            sink.entry(&dir(path, 0o755)).unwrap();
        }
        sink.entry(&dir("tmp", 0o1777)).unwrap();
        for (path, mode, bytes) in files {
            let mut entry = Entry::file(*path, *mode, bytes.len() as u64, MTIME);
            if path.ends_with("bin/tool") {
                entry.links = 2;
                entry.uid = 1000;
                entry.gid = 100;
            }
            write_bytes(sink, &entry, bytes).unwrap();
            if path.ends_with("bin/tool") {
                let mut link = entry.clone();
                link.path = "containers/services/svc/rootfs/bin/tool2".into();
                link.kind = Kind::HardLink {
                    target: entry.path.clone(),
                };
                link.size = 0;
                sink.entry(&link).unwrap();
            }
        }
        let link = Entry::symlink("sbin/init", "/init", MTIME);
        sink.entry(&dir("sbin", 0o755)).unwrap();
        sink.entry(&link).unwrap();
    }

    /// Builds [`stream`] into `dir` in `formats`; returns the artifacts.
    fn build(dir: &Path, formats: &[Format]) -> std::io::Result<Vec<PathBuf>> {
        let mut pending = Pending::new(dir);
        let mut writers = Writers::new(
            &mut pending,
            "image",
            formats,
            Compression::Gzip,
            MTIME,
            Default::default(),
        )?;
        stream(writers.sink());
        writers
            .finish(&mut pending)
            .map_err(std::io::Error::other)?;
        pending.commit()
    }

    /// Every path under `dir`: its kind, mode, owner, time and bytes or
    /// target.
    fn tree(dir: &Path) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(at) = stack.pop() {
            for entry in std::fs::read_dir(&at).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let what = if meta.is_dir() {
                    stack.push(path.clone());
                    "directory".to_string()
                } else if meta.file_type().is_symlink() {
                    format!("-> {}", std::fs::read_link(&path).unwrap().display())
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    use sha2::Digest;
                    format!("file {:x}", sha2::Sha256::digest(&bytes))
                };
                let mode = meta.permissions().mode() & 0o7777;
                let line = format!(
                    "{what} {mode:o} {}:{} {}",
                    meta.uid(),
                    meta.gid(),
                    meta.mtime()
                );
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.insert(relative, line);
            }
        }
        found
    }

    fn run(command: &mut Command) -> String {
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn unsquashfs_lists_and_extracts_the_tree_the_tar_format_gives() {
        let (Some(unsquashfs), Some(tar)) = (tool_or_skip("unsquashfs"), tool_or_skip("tar"))
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        build(&out, &[Format::Tar, Format::KernelSquashfs]).unwrap();
        let image = out.join("image-squashfs.img");
        let listing = run(Command::new(&unsquashfs).arg("-l").arg(&image));
        for path in [
            "squashfs-root/init",
            "squashfs-root/sbin/init",
            "squashfs-root/containers/services/svc/rootfs/bin/tool2",
            "squashfs-root/var/big",
        ] {
            assert!(listing.lines().any(|l| l == path), "{path} in {listing}");
        }
        let superblock = run(Command::new(&unsquashfs).arg("-s").arg(&image));
        assert!(superblock.contains("Compression zstd"), "{superblock}");
        // The kernel is its own file, not in the tree.
        assert!(!listing.contains("boot"), "{listing}");
        let from_squashfs = dir.path().join("squashfs");
        run(Command::new(&unsquashfs)
            .arg("-no-progress")
            .arg("-d")
            .arg(&from_squashfs)
            .arg(&image));
        let from_tar = dir.path().join("tar");
        std::fs::create_dir(&from_tar).unwrap();
        run(Command::new(&tar)
            .args(["--same-owner", "-xpf"])
            .arg(out.join("image.tar"))
            .arg("-C")
            .arg(&from_tar));
        std::fs::remove_dir_all(from_tar.join("boot")).unwrap();
        let (squashfs_tree, tar_tree) = (tree(&from_squashfs), tree(&from_tar));
        // GNU tar leaves some directories with the time of the extraction:
        // directories are compared without it, and the image's are checked
        // on their own.
        let without_directory_times =
            |tree: &BTreeMap<String, String>| -> BTreeMap<String, String> {
                tree.iter()
                    .map(|(path, line)| match line.starts_with("directory") {
                        true => (path.clone(), line.rsplit_once(' ').unwrap().0.to_string()),
                        false => (path.clone(), line.clone()),
                    })
                    .collect()
            };
        assert_eq!(
            without_directory_times(&squashfs_tree),
            without_directory_times(&tar_tree)
        );
        for (path, line) in &squashfs_tree {
            assert!(line.ends_with(&format!(" {MTIME}")), "{path}: {line}");
        }
        assert_eq!(
            std::fs::read(from_squashfs.join("etc/hostname")).unwrap(),
            b"second\n"
        );
        assert_eq!(
            squashfs_tree["containers/services/svc/rootfs/bin/tool"]
                .split(' ')
                .nth(2),
            Some("4755")
        );
    }

    #[test]
    fn two_builds_give_the_same_bytes_and_the_cmdline_names_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let mut builds = Vec::new();
        // Alone twice, and with tar-kernel-initrd and tar in the same build.
        let alone = [Format::KernelSquashfs];
        let together = [Format::Tar, Format::TarKernelInitrd, Format::KernelSquashfs];
        for (run, formats) in [("a", &alone[..]), ("b", &alone[..]), ("c", &together[..])] {
            let out = dir.path().join(run);
            std::fs::create_dir(&out).unwrap();
            let mut names: Vec<String> = build(&out, formats)
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".tar"))
                .collect();
            names.sort();
            assert_eq!(
                names,
                [
                    "image-cmdline",
                    "image-initrd.img",
                    "image-kernel",
                    "image-squashfs.img"
                ]
            );
            builds.push(out);
        }
        for name in [
            "image-cmdline",
            "image-initrd.img",
            "image-kernel",
            "image-squashfs.img",
        ] {
            let a = read_file(&builds[0].join(name)).unwrap();
            for other in &builds[1..] {
                let b = read_file(&other.join(name)).unwrap();
                assert!(a == b, "{name} differs between {}", other.display());
            }
        }
        let image = read_file(&builds[0].join("image-squashfs.img")).unwrap();
        // The build's time, and a size a block device can have.
        assert_eq!(&image[8..12], &(MTIME as u32).to_le_bytes());
        assert_eq!(image.len() % 4096, 0);
        let id = contract::squashfs::root_id(&image).unwrap();
        let cmdline = read_file(&builds[0].join("image-cmdline")).unwrap();
        assert_eq!(
            String::from_utf8(cmdline).unwrap(),
            format!("console=ttyS0 berth.root=squashfs:{id}")
        );
        assert_eq!(
            read_file(&builds[0].join("image-kernel")).unwrap(),
            b"not really a kernel"
        );
    }

    #[test]
    fn the_small_initrd_holds_only_init_and_the_modules() {
        let Some(cpio) = tool_or_skip("cpio") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), &[Format::KernelSquashfs]).unwrap();
        let initrd = read_file(&dir.path().join("image-initrd.img")).unwrap();
        let mut archive = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&initrd[..])
            .read_to_end(&mut archive)
            .unwrap();
        let listed = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(listed.path(), &archive).unwrap();
        let listing = run(Command::new(&cpio)
            .args(["-it", "--quiet", "-F"])
            .arg(listed.path()));
        // The disk's driver and what it needs, squashfs, their index; not
        // the network card's driver, not depmod's binary index.
        assert_eq!(
            listing.lines().collect::<Vec<_>>(),
            [
                "init",
                "lib",
                "lib/modules",
                "lib/modules/6.1.0",
                "lib/modules/6.1.0/kernel",
                "lib/modules/6.1.0/kernel/drivers",
                "lib/modules/6.1.0/kernel/drivers/block",
                "lib/modules/6.1.0/kernel/drivers/block/virtio_blk.ko",
                "lib/modules/6.1.0/kernel/drivers/virtio",
                "lib/modules/6.1.0/kernel/drivers/virtio/virtio_ring.ko",
                "lib/modules/6.1.0/kernel/fs",
                "lib/modules/6.1.0/kernel/fs/squashfs.ko",
                "lib/modules/6.1.0/modules.alias",
                "lib/modules/6.1.0/modules.dep",
            ]
        );
        let extracted = tempfile::tempdir().unwrap();
        run(Command::new(&cpio)
            .args(["-id", "--quiet", "-F"])
            .arg(listed.path())
            .current_dir(extracted.path()));
        let index = extracted.path().join("lib/modules/6.1.0");
        assert_eq!(
            std::fs::read_to_string(index.join("modules.dep")).unwrap(),
            "kernel/fs/squashfs.ko:\nkernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko\n"
        );
        assert_eq!(
            std::fs::read_to_string(index.join("modules.alias")).unwrap(),
            "alias virtio:d00000002v* virtio_blk\n"
        );
        assert_eq!(
            std::fs::read(extracted.path().join("init")).unwrap(),
            b"berth's init"
        );
    }

    #[test]
    fn kernel_initrd_and_kernel_squashfs_are_not_built_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut pending = Pending::new(dir.path());
        let formats = [Format::KernelInitrd, Format::KernelSquashfs];
        let error = Writers::new(
            &mut pending,
            "image",
            &formats,
            Compression::Gzip,
            MTIME,
            Default::default(),
        )
        .err()
        .unwrap();
        assert_eq!(
            error.to_string(),
            "formats kernel+initrd and kernel+squashfs both write image-initrd.img and \
             image-cmdline: build them one at a time"
        );
    }
}
