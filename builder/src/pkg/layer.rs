//! The files of a package image and how they become an image in the cache:
//! the [`Tree`] (every entry's metadata, sorted by path, and where its bytes
//! are: a file of the host, a region of the build's spool file, or a few
//! bytes of `build.yml`), the layer written from it (a gzip-compressed tar,
//! entries in path order, times capped at the build's time), and the
//! image's configuration and manifest.
//!
//! No file's bytes are held in memory: packages' files are spooled to an
//! unnamed temporary file beside the cache, and the layer is written to
//! another, hashed on the way (the compressed bytes for its digest, the tar
//! for its `diff_id`), then committed to the cache through
//! [`Layout::blob_writer`], which checks it again.
//!
//! Which files go in is decided elsewhere: [`super::debian`] unpacks
//! packages into the tree, [`super`] adds binaries and files, and
//! [`crate::kernel::debian`] rearranges a kernel.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use archive::Clock;
use archive::compress::{Compression, encoder};
use archive::entry::{self, Entry, Sink as _};
use archive::tar::TarWriter;
use oci::digest::HashingWriter;
use oci::layout::{Layout, LayoutError, Named};
use oci_spec::image::MediaType;
use serde::Serialize;

/// Where an entry's bytes are.
#[derive(Debug, Clone)]
pub enum Data {
    /// None: not a regular file, or an empty one.
    None,
    /// Written in `build.yml` (`contents:`).
    Bytes(Vec<u8>),
    /// A file of the host: a built binary, a file of the package directory.
    Host(PathBuf),
    /// A region of the tree's [`Spool`].
    Spooled { offset: u64, size: u64 },
}

/// The files of an image being made, by path.
#[derive(Debug)]
pub struct Tree {
    pub entries: BTreeMap<String, (Entry, Data)>,
    pub spool: Spool,
}

impl Tree {
    /// An empty tree whose spool is a temporary file in `dir`.
    pub fn new_in(dir: &Path) -> io::Result<Tree> {
        Ok(Tree {
            entries: BTreeMap::new(),
            spool: Spool::new_in(dir)?,
        })
    }

    /// The bytes of `data`.
    pub fn open<'a>(&'a self, data: &'a Data) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match data {
            Data::None => Box::new(io::empty()),
            Data::Bytes(bytes) => Box::new(&bytes[..]),
            Data::Host(path) => Box::new(File::open(path)?),
            Data::Spooled { offset, size } => Box::new(self.spool.region(*offset, *size)),
        })
    }
}

/// One unnamed temporary file that the bytes of packages' files (and a
/// kernel's `kernel.tar`) are appended to, read back by offset: the disk
/// holds what memory must not.
#[derive(Debug)]
pub struct Spool {
    file: File,
}

impl Spool {
    fn new_in(dir: &Path) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        Ok(Spool {
            file: tempfile::tempfile_in(dir)?,
        })
    }

    /// Appends exactly `size` bytes of `reader`.
    pub fn append(&self, reader: &mut dyn Read, size: u64) -> io::Result<Data> {
        let data = self.append_with(|out| {
            let copied = io::copy(&mut reader.take(size), out)?;
            if copied != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{copied} bytes of {size}"),
                ));
            }
            Ok(())
        })?;
        Ok(data)
    }

    /// Appends what `write` writes. Reading other regions meanwhile is
    /// fine: reads are positioned, and never move the end.
    pub fn append_with(
        &self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Data> {
        let mut file = &self.file;
        let offset = file.seek(SeekFrom::End(0))?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        write(&mut out)?;
        out.flush()?;
        drop(out);
        let end = file.seek(SeekFrom::End(0))?;
        Ok(Data::Spooled {
            offset,
            size: end - offset,
        })
    }

    fn region(&self, offset: u64, size: u64) -> Region<'_> {
        Region {
            file: &self.file,
            at: offset,
            end: offset + size,
        }
    }
}

/// A region of the spool, read with positioned reads.
struct Region<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spool file ended early",
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// A layer written to a temporary file, not yet in the cache.
#[derive(Debug)]
pub struct Layer {
    /// Of the compressed bytes.
    pub digest: String,
    /// Of the tar.
    pub diff_id: String,
    pub size: u64,
    file: File,
}

/// Writes `tree` (missing parents added, as directories made at the
/// build's time) as a gzip-compressed tar to a temporary file in `dir`.
/// Every time is capped at the build's time.
pub fn write(tree: &mut Tree, clock: Clock, dir: &Path) -> io::Result<Layer> {
    let made = clock.made();
    let paths: Vec<String> = tree.entries.keys().cloned().collect();
    for path in paths {
        for parent in entry::ancestors(&path) {
            if !tree.entries.contains_key(parent) {
                let directory = Entry::directory(parent, 0o755, made);
                tree.entries
                    .insert(parent.to_string(), (directory, Data::None));
            }
        }
    }
    tree.entries.remove("");
    let mut compressed = HashingWriter::new(BufWriter::with_capacity(
        1 << 16,
        tempfile::tempfile_in(dir)?,
    ));
    let diff_id;
    {
        let gzip = encoder(Compression::Gzip, &mut compressed)?;
        let mut tar = TarWriter::new(HashingWriter::new(gzip));
        for (entry, data) in tree.entries.values() {
            let mut entry = entry.clone();
            entry.mtime = entry.mtime.min(made);
            entry::copy_entry(&mut tar, &entry, &mut tree.open(data)?)?;
        }
        tar.finish()?;
        let (plain, gzip) = tar.into_inner().finish();
        diff_id = plain;
        gzip.finish()?;
    }
    let size = compressed.written();
    let (digest, buffered) = compressed.finish();
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    Ok(Layer {
        digest,
        diff_id,
        size,
        file,
    })
}

/// The image's runtime configuration, as the image configuration's
/// `config` holds it.
///
/// serde structs rather than oci-spec's types: oci-spec keeps labels in a
/// `HashMap`, whose order would change the configuration's bytes from one
/// run to the next. Fields are in alphabetical order, the order these
/// documents have always been written in, so the same inputs keep giving
/// the same digests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunConfig {
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Env")]
    pub env: Vec<String>,
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "WorkingDir", skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// The image configuration (OCI image spec, `config.md`).
#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'static str,
    config: &'a RunConfig,
    os: &'static str,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RootFs {
    diff_ids: Vec<String>,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The image manifest (OCI image spec, `manifest.md`).
#[derive(Serialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
}

#[derive(Serialize)]
struct Descriptor {
    digest: String,
    #[serde(rename = "mediaType")]
    media_type: String,
    size: u64,
}

/// Commits `layer`, then the configuration and manifest of the image made
/// of it with `config`, to `cache`, and names the image `name`. Returns the
/// manifest's digest.
pub fn commit(
    cache: &Layout,
    mut layer: Layer,
    config: &RunConfig,
    name: &str,
) -> Result<String, LayoutError> {
    let io = |source| LayoutError::Io {
        root: cache.root().to_path_buf(),
        source,
    };
    if !cache.has_blob(&layer.digest) {
        let mut blob = cache.blob_writer(&layer.digest, layer.size)?;
        layer.file.seek(SeekFrom::Start(0)).map_err(io)?;
        io::copy(&mut layer.file, &mut blob).map_err(io)?;
        blob.commit()?;
    }
    let image_config = ImageConfig {
        architecture: "amd64",
        config,
        os: "linux",
        rootfs: RootFs {
            diff_ids: vec![layer.diff_id.clone()],
            kind: "layers",
        },
    };
    let config_bytes = serde_json::to_vec(&image_config).expect("the configuration serialises");
    let config_digest = oci::digest::sha256(&config_bytes);
    let manifest = Manifest {
        config: Descriptor {
            digest: config_digest.clone(),
            media_type: MediaType::ImageConfig.to_string(),
            size: config_bytes.len() as u64,
        },
        layers: vec![Descriptor {
            digest: layer.digest.clone(),
            media_type: MediaType::ImageLayerGzip.to_string(),
            size: layer.size,
        }],
        media_type: MediaType::ImageManifest.to_string(),
        schema_version: 2,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("the manifest serialises");
    let manifest_digest = oci::digest::sha256(&manifest_bytes);
    cache.write_blob(&config_digest, &config_bytes)?;
    cache.write_blob(&manifest_digest, &manifest_bytes)?;
    cache.tag(&Named {
        name: name.to_string(),
        digest: manifest_digest.clone(),
        media_type: MediaType::ImageManifest.to_string(),
        size: manifest_bytes.len() as u64,
    })?;
    Ok(manifest_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_regions_read_back_while_the_spool_grows() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new_in(dir.path()).unwrap();
        let first = tree.spool.append(&mut &b"hello world"[..], 5).unwrap();
        let second = tree
            .spool
            .append_with(|out| {
                let mut earlier = String::new();
                tree.open(&first)?.read_to_string(&mut earlier)?;
                out.write_all(earlier.to_uppercase().as_bytes())
            })
            .unwrap();
        let read = |data: &Data| {
            let mut text = String::new();
            tree.open(data).unwrap().read_to_string(&mut text).unwrap();
            text
        };
        assert_eq!(
            (read(&first), read(&second)),
            ("hello".into(), "HELLO".into())
        );
        let short = tree.spool.append(&mut &b"abc"[..], 5).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn the_layer_is_hashed_as_written_and_the_image_is_written_in_a_fixed_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::new_in(dir.path()).unwrap();
        let data = tree.spool.append(&mut &b"motd\n"[..], 5).unwrap();
        let entry = Entry::file("etc/motd", 0o644, 5, 4_000_000_000);
        tree.entries.insert("etc/motd".into(), (entry, data));
        let mut layer = write(&mut tree, Clock::at(1_700_000_000), dir.path()).unwrap();
        let mut bytes = Vec::new();
        layer.file.seek(SeekFrom::Start(0)).unwrap();
        layer.file.read_to_end(&mut bytes).unwrap();
        assert_eq!(layer.digest, oci::digest::sha256(&bytes));
        assert_eq!(layer.size, bytes.len() as u64);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(layer.diff_id, oci::digest::sha256(&tar));
        let listing: Vec<(String, u64)> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                (path, e.header().mtime().unwrap())
            })
            .collect();
        assert_eq!(
            listing,
            [
                ("etc/".to_string(), 1_700_000_000),
                ("etc/motd".to_string(), 1_700_000_000)
            ]
        );

        let cache = Layout::open(dir.path().join("cache")).unwrap();
        let (layer_digest, diff_id, size) =
            (layer.digest.clone(), layer.diff_id.clone(), layer.size);
        let config = RunConfig {
            cmd: Some(vec!["/bin/true".into()]),
            env: vec!["PATH=/bin".into()],
            labels: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
            ..RunConfig::default()
        };
        let digest = commit(&cache, layer, &config, "docker.io/berth/x:1").unwrap();
        assert!(cache.has_blob(&layer_digest));
        let manifest = cache.read_small_blob("x", &digest).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let config = cache.read_small_blob("x", config_digest).unwrap();
        assert_eq!(
            String::from_utf8(config).unwrap(),
            format!(
                r#"{{"architecture":"amd64","config":{{"Cmd":["/bin/true"],"Env":["PATH=/bin"],"Labels":{{"a":"1","b":"2"}}}},"os":"linux","rootfs":{{"diff_ids":["{diff_id}"],"type":"layers"}}}}"#
            )
        );
        assert_eq!(manifest["layers"][0]["size"], size);
        assert_eq!(cache.named("docker.io/berth/x:1").unwrap().digest, digest);
    }
}
