//! Image layers to one stream of filesystem entries, with the OCI layer
//! semantics applied: later layers override earlier ones, whiteouts
//! (`.wh.NAME`) delete, opaque markers (`.wh..wh..opq`) hide what lower
//! layers put in a directory.
//!
//! Two passes over the layers, each streaming: the first reads only headers
//! and builds an index of what survives; the second emits the survivors with
//! their data, never holding a file in memory. Parents are emitted before
//! children, with the image's own metadata when it has the directory.
//!
//! Entries that would land outside the image root are refused, naming the
//! image, the layer and the entry: `..` in a name or a hard link target, a
//! name or link target that passes through a symbolic link, a hard link to
//! something that is not a regular file of the image, a whiteout outside the
//! root, an owner of `(uid_t)-1`. Device nodes, setuid and setgid files and
//! world-writable directories are kept (docs/compatibility.md, "What image
//! layers may carry"). Nothing is written to the host in any case: the
//! stream goes into archives.
//!
//! What the stream is *for* (prefixing into bundles, LinuxKit's fix-ups of
//! `/etc/hosts` and friends, picking the kernel out of a kernel image) is the
//! caller's business.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read};

use archive::Clock;
use archive::entry::{self, Entry, Kind};
use oci::{ImageSource, ResolvedImage, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("image {image}: layer {layer}: entry {entry:?} refused: {reason}")]
    Hostile {
        image: String,
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("image {image}: layer {layer}")]
    Read {
        image: String,
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] SourceError),
    /// An error of the consumer of the stream, passed through.
    #[error("{0}")]
    Emit(String),
}

/// The uid and gid that no file can have (`(uid_t)-1`); see docs/compatibility.md.
const NO_OWNER: u32 = u32::MAX;

/// A layer's (or `kernel.tar`'s) uid or gid, unless it is `(uid_t)-1`,
/// chown(2)'s "leave it": unpacked by the kernel (an initrd) or by tar as
/// root, the entry would stay root's, a setuid file too.
pub(crate) fn owner(id: u32) -> Result<u32, String> {
    match id {
        NO_OWNER => Err(format!("uid or gid {NO_OWNER} (-1) is no owner")),
        id => Ok(id),
    }
}

/// Where an entry stands: layer index and position in that layer.
type Position = (usize, usize);

#[derive(Debug, Clone)]
struct Record {
    at: Position,
    kind: RecordKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RecordKind {
    Directory,
    File,
    Symlink,
    /// A hard link to the file that stood at `target` when it was read.
    HardLink {
        target: String,
        file: Position,
    },
    Other,
}

/// The result of the first pass.
#[derive(Debug, Default)]
struct Index {
    records: BTreeMap<String, Record>,
    /// Number of names of each surviving file (itself and its links).
    links: HashMap<Position, u32>,
    /// Hard links whose file a later layer replaced or deleted: the file's
    /// bytes are emitted under the first link's name instead.
    orphans: HashMap<Position, Vec<String>>,
}

/// A layer's tar stream, decompressed according to its first bytes (gzip,
/// zstd, or plain tar), whatever the media type claims.
fn layer_reader(
    source: &dyn ImageSource,
    image: &ResolvedImage,
    digest: &str,
) -> Result<Box<dyn Read + Send>, FlattenError> {
    let blob = source.open_blob(&image.reference, digest)?;
    let mut buffered = BufReader::with_capacity(1 << 20, blob);
    let head = buffered.fill_buf().map_err(|source| FlattenError::Read {
        image: image.reference.clone(),
        layer: digest.into(),
        source,
    })?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::stream::read::Decoder::with_buffer(buffered).map_err(|source| {
            FlattenError::Read {
                image: image.reference.clone(),
                layer: digest.into(),
                source,
            }
        })?;
        Box::new(decoder)
    } else {
        Box::new(buffered)
    })
}

/// What one tar header says, with the name cleaned.
struct Header {
    name: String,
    kind: RecordKind,
    link: Option<String>,
    entry: Entry,
}

struct Context<'a> {
    image: &'a str,
    layer: &'a str,
}

impl Context<'_> {
    fn hostile(&self, entry: &str, reason: impl Into<String>) -> FlattenError {
        FlattenError::Hostile {
            image: self.image.into(),
            layer: self.layer.into(),
            entry: entry.into(),
            reason: reason.into(),
        }
    }

    fn read(&self, source: io::Error) -> FlattenError {
        FlattenError::Read {
            image: self.image.into(),
            layer: self.layer.into(),
            source,
        }
    }
}

fn header<R: Read>(cx: &Context, entry: &tar::Entry<R>) -> Result<Option<Header>, FlattenError> {
    let raw_bytes = entry.path_bytes();
    let raw = std::str::from_utf8(&raw_bytes)
        .map_err(|_| cx.hostile(&String::from_utf8_lossy(&raw_bytes), "name is not UTF-8"))?
        .to_string();
    let name = entry::clean_path(&raw).map_err(|reason| cx.hostile(&raw, reason))?;
    if name.is_empty() {
        return Ok(None);
    }
    let h = entry.header();
    let number = |v: io::Result<u64>| v.map_err(|e| cx.read(e));
    let id = |v: u64| match u32::try_from(v) {
        Err(_) => Err(cx.hostile(&raw, "uid or gid beyond 32 bits")),
        Ok(id) => owner(id).map_err(|reason| cx.hostile(&raw, reason)),
    };
    let link = entry
        .link_name_bytes()
        .map(|l| {
            std::str::from_utf8(&l)
                .map(str::to_string)
                .map_err(|_| cx.hostile(&raw, "link target is not UTF-8"))
        })
        .transpose()?;
    let device = || -> Result<(u32, u32), FlattenError> {
        let major = h.device_major().map_err(|e| cx.read(e))?.unwrap_or(0);
        let minor = h.device_minor().map_err(|e| cx.read(e))?.unwrap_or(0);
        Ok((major, minor))
    };
    let (record_kind, kind) = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => (RecordKind::File, Kind::File),
        tar::EntryType::Directory => (RecordKind::Directory, Kind::Directory),
        tar::EntryType::Symlink => {
            let target = link
                .clone()
                .ok_or_else(|| cx.hostile(&raw, "symbolic link without a target"))?;
            (RecordKind::Symlink, Kind::Symlink { target })
        }
        tar::EntryType::Link => {
            let target = link
                .clone()
                .ok_or_else(|| cx.hostile(&raw, "hard link without a target"))?;
            let target = entry::clean_path(&target)
                .map_err(|reason| cx.hostile(&raw, format!("hard link target {reason}")))?;
            (
                RecordKind::HardLink {
                    target: target.clone(),
                    file: (0, 0),
                },
                Kind::HardLink { target },
            )
        }
        tar::EntryType::Char => {
            let (major, minor) = device()?;
            (RecordKind::Other, Kind::CharDevice { major, minor })
        }
        tar::EntryType::Block => {
            let (major, minor) = device()?;
            (RecordKind::Other, Kind::BlockDevice { major, minor })
        }
        tar::EntryType::Fifo => (RecordKind::Other, Kind::Fifo),
        // PAX and GNU extension headers are consumed by the tar reader;
        // anything else has no place in a filesystem.
        other => {
            return Err(cx.hostile(&raw, format!("unsupported tar entry type {other:?}")));
        }
    };
    let size = if kind == Kind::File {
        number(h.entry_size())?
    } else {
        0
    };
    Ok(Some(Header {
        name: name.clone(),
        kind: record_kind,
        link,
        entry: Entry {
            path: name,
            kind,
            mode: number(h.mode().map(u64::from))? as u32 & 0o7777,
            uid: id(number(h.uid())?)?,
            gid: id(number(h.gid())?)?,
            mtime: number(h.mtime())?,
            size,
            links: 1,
        },
    }))
}

/// Removes `path` and everything below it that came from a layer before
/// `layer`.
fn remove_tree(records: &mut BTreeMap<String, Record>, path: &str, layer: usize) {
    if records.get(path).is_some_and(|r| r.at.0 < layer) {
        records.remove(path);
    }
    remove_below(records, path, layer);
}

fn remove_below(records: &mut BTreeMap<String, Record>, path: &str, layer: usize) {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let doomed: Vec<String> = records
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, r)| r.at.0 < layer)
        .map(|(k, _)| k.clone())
        .collect();
    for key in doomed {
        records.remove(&key);
    }
}

/// Refuses a path whose ancestors include a symbolic link or a non-directory
/// already in the image: writing it would follow the link.
fn check_ancestors(
    cx: &Context,
    records: &BTreeMap<String, Record>,
    path: &str,
    entry: &str,
) -> Result<(), FlattenError> {
    for ancestor in entry::ancestors(path) {
        match records.get(ancestor).map(|r| &r.kind) {
            Some(RecordKind::Symlink) => {
                return Err(cx.hostile(
                    entry,
                    format!("it passes through the symbolic link {ancestor:?}"),
                ));
            }
            Some(RecordKind::Directory) | None => {}
            Some(_) => {
                return Err(cx.hostile(entry, format!("{ancestor:?} is not a directory")));
            }
        }
    }
    Ok(())
}

fn index(
    source: &dyn ImageSource,
    image: &ResolvedImage,
    hidden: &[&str],
) -> Result<Index, FlattenError> {
    let mut records: BTreeMap<String, Record> = BTreeMap::new();
    for_each_entry(source, image, &mut |cx, (layer, ordinal), h, _| {
        let base = h.name.rsplit('/').next().unwrap_or(&h.name);
        let dir = entry::parent(&h.name);
        if base == ".wh..wh..opq" {
            check_ancestors(cx, &records, &h.name, &h.name)?;
            remove_below(&mut records, dir, layer);
            return Ok(());
        }
        if let Some(hidden) = base.strip_prefix(".wh.") {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(cx.hostile(&h.name, "whiteout of a path outside the image"));
            }
            check_ancestors(cx, &records, &h.name, &h.name)?;
            let target = if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            };
            remove_tree(&mut records, &target, layer);
            return Ok(());
        }
        check_ancestors(cx, &records, &h.name, &h.name)?;
        let kind = match h.kind {
            RecordKind::HardLink { target, .. } => {
                check_ancestors(cx, &records, &target, &h.name)?;
                let file = match records.get(&target).map(|r| (&r.kind, r.at)) {
                    Some((RecordKind::File, at)) => at,
                    Some((RecordKind::HardLink { file, .. }, _)) => *file,
                    _ => {
                        return Err(cx.hostile(
                            &h.name,
                            format!(
                                "hard link to {:?}, which is not a regular file of the image",
                                h.link.unwrap_or_default()
                            ),
                        ));
                    }
                };
                let target = match records.get(&target).map(|r| &r.kind) {
                    Some(RecordKind::HardLink { target, .. }) => target.clone(),
                    _ => target,
                };
                RecordKind::HardLink { target, file }
            }
            other => other,
        };
        if kind != RecordKind::Directory {
            // A file replacing a directory replaces what was in it.
            remove_below(&mut records, &h.name, layer + 1);
        }
        records.insert(
            h.name,
            Record {
                at: (layer, ordinal),
                kind,
                mode: h.entry.mode,
                uid: h.entry.uid,
                gid: h.entry.gid,
                mtime: h.entry.mtime,
            },
        );
        Ok(())
    })?;
    // Paths the caller replaces or drops go as if a last layer whited them
    // out, so hard links to them keep their bytes.
    for path in hidden {
        remove_tree(&mut records, path, usize::MAX);
    }
    let mut index = Index {
        records,
        ..Index::default()
    };
    let mut orphans: BTreeMap<Position, Vec<String>> = BTreeMap::new();
    for (name, record) in &index.records {
        if let RecordKind::HardLink { target, file } = &record.kind {
            let alive = index.records.get(target).is_some_and(|t| t.at == *file);
            if alive {
                *index.links.entry(*file).or_insert(1) += 1;
            } else {
                orphans.entry(*file).or_default().push(name.clone());
            }
        }
    }
    // The first orphan carries the data, the others link to it.
    index.orphans = orphans.into_iter().collect();
    Ok(index)
}

/// Streams the image's filesystem to `emit`, parents first. `emit` gets
/// each entry and, for regular files, a reader holding exactly its bytes.
/// `hidden` paths (and what is below them) are left out as if deleted.
pub fn flatten(
    source: &dyn ImageSource,
    image: &ResolvedImage,
    hidden: &[&str],
    clock: Clock,
    emit: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<(), FlattenError>,
) -> Result<(), FlattenError> {
    let index = index(source, image, hidden)?;
    let mut emitted: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut empty: &[u8] = &[];
    for_each_entry(source, image, &mut |_, at, h, entry| {
        let survives = index.records.get(&h.name).is_some_and(|r| r.at == at);
        let orphan_names = index.orphans.get(&at);
        if !survives && orphan_names.is_none() {
            return Ok(());
        }
        if survives
            && let RecordKind::HardLink { file, .. } = &index.records[&h.name].kind
            && index.orphans.contains_key(file)
        {
            // Emitted with the orphaned file's bytes instead.
            return Ok(());
        }
        let mut names: Vec<&str> = Vec::new();
        if survives {
            names.push(&h.name);
        }
        if let Some(orphans) = orphan_names {
            names.extend(orphans.iter().map(String::as_str));
        }
        // A file that survives keeps all its links; one that a later layer
        // replaced lives on only under its orphaned links' names.
        let links = match orphan_names {
            Some(orphans) if !survives => orphans.len() as u32,
            _ => index.links.get(&at).copied().unwrap_or(1),
        };
        let first = names[0].to_string();
        for (i, name) in names.iter().enumerate() {
            ensure_parents(&index, clock, &mut emitted, name, emit)?;
            let mut out = h.entry.clone();
            out.path = (*name).to_string();
            if let Kind::HardLink { target } = &mut out.kind {
                // Links to a file that was orphaned point at its new name.
                if let RecordKind::HardLink { file, .. } = &index.records[&h.name].kind
                    && let Some(o) = index.orphans.get(file)
                {
                    *target = o[0].clone();
                }
            }
            if i == 0 {
                if out.kind == Kind::Directory && !emitted.insert(out.path.clone()) {
                    continue;
                }
                out.links = links;
                emit(&out, entry)?;
            } else {
                out.kind = Kind::HardLink {
                    target: first.clone(),
                };
                out.size = 0;
                emit(&out, &mut empty)?;
            }
        }
        Ok(())
    })
}

/// What [`for_each_entry`] calls for each entry.
type Visitor<'a> =
    dyn FnMut(&Context, Position, Header, &mut dyn Read) -> Result<(), FlattenError> + 'a;

/// Reads every layer in order and calls `visit` with each entry's position,
/// its cleaned header and its bytes; each layer is read to its end, so its
/// digest is checked.
fn for_each_entry(
    source: &dyn ImageSource,
    image: &ResolvedImage,
    visit: &mut Visitor<'_>,
) -> Result<(), FlattenError> {
    for (layer, descriptor) in image.layers.iter().enumerate() {
        let digest = descriptor.digest().to_string();
        let cx = Context {
            image: &image.reference,
            layer: &digest,
        };
        let mut archive = tar::Archive::new(layer_reader(source, image, &digest)?);
        for (ordinal, entry) in archive.entries().map_err(|e| cx.read(e))?.enumerate() {
            let mut entry = entry.map_err(|e| cx.read(e))?;
            if let Some(h) = header(&cx, &entry)? {
                visit(&cx, (layer, ordinal), h, &mut entry)?;
            }
        }
        drain(&cx, archive.into_inner())?;
    }
    Ok(())
}

/// Reads a layer to its very end: a tar archive ends before its blob does
/// (padding, trailing blocks), and the blob's digest is checked only when
/// the last byte has been read.
fn drain(cx: &Context, mut rest: impl Read) -> Result<(), FlattenError> {
    io::copy(&mut rest, &mut io::sink())
        .map(drop)
        .map_err(|e| cx.read(e))
}

/// Emits the directories above `path` that have not been emitted yet, with
/// the image's metadata where the image has them.
fn ensure_parents(
    index: &Index,
    clock: Clock,
    emitted: &mut std::collections::HashSet<String>,
    path: &str,
    emit: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<(), FlattenError>,
) -> Result<(), FlattenError> {
    for ancestor in entry::ancestors(path) {
        if emitted.contains(ancestor) {
            continue;
        }
        // A parent the image does not have is one berth makes: it gets the
        // build's time, like every other entry berth makes.
        let mut dir = Entry::directory(ancestor, 0o755, clock.made());
        if let Some(r) = index.records.get(ancestor)
            && r.kind == RecordKind::Directory
        {
            dir.mode = r.mode;
            dir.uid = r.uid;
            dir.gid = r.gid;
            dir.mtime = r.mtime;
        }
        emitted.insert(ancestor.to_string());
        emit(&dir, &mut io::empty())?;
    }
    Ok(())
}
