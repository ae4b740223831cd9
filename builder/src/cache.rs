//! Writing to the cache: blobs and names, crash-safe and shared.
//!
//! The cache is an OCI image layout ([`crate::store::LocalLayout`] reads it).
//! A blob is written under a temporary name beside its final place, checked
//! against its digest and size, synced, and only then renamed into
//! `blobs/sha256/`: a build killed at any moment leaves either no blob or a
//! whole, correct one. `index.json` is rewritten the same way, under an
//! exclusive lock, so two builds sharing a cache never lose each other's
//! names. `berth cache clean` takes a second lock exclusively, which every
//! build holds shared, so it never deletes a blob a running build is about
//! to name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::store::REF_NAME;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {}: {source}", root.display())]
    Io { root: PathBuf, source: io::Error },
    #[error(
        "blob {digest}: received {actual} ({size} bytes), expected {digest} ({expected_size} bytes)"
    )]
    Mismatch {
        digest: String,
        actual: String,
        size: u64,
        expected_size: u64,
    },
    #[error("cache {}: index.json is not valid: {message}", root.display())]
    Index { root: PathBuf, message: String },
    #[error("no image named {0} in the cache")]
    NoSuchImage(String),
}

/// A writable cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A lock held for as long as the value lives.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] File);

/// An entry of `index.json`: a name and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Cache, CacheError> {
        let cache = Cache { root: root.into() };
        fs::create_dir_all(cache.root.join("blobs/sha256")).map_err(|e| cache.io(e))?;
        let marker = cache.root.join("oci-layout");
        if !marker.exists() {
            cache.write_atomically(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(&self, source: io::Error) -> CacheError {
        CacheError::Io {
            root: self.root.clone(),
            source,
        }
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<Lock, CacheError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(name))
            .map_err(|e| self.io(e))?;
        if exclusive {
            file.lock().map_err(|e| self.io(e))?;
        } else {
            file.lock_shared().map_err(|e| self.io(e))?;
        }
        Ok(Lock(file))
    }

    /// Held by every build for its whole run; `clean` waits for it.
    pub fn use_lock(&self) -> Result<Lock, CacheError> {
        self.lock(".berth-use.lock", false)
    }

    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| self.root.join("blobs/sha256").join(hex))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_some_and(|p| p.is_file())
    }

    /// Starts writing the blob `digest` of `size` bytes.
    pub fn blob_writer(&self, digest: &str, size: u64) -> Result<BlobWriter, CacheError> {
        let path = self.blob_path(digest).ok_or_else(|| {
            self.io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported digest {digest}"),
            ))
        })?;
        let temp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(self.root.join("blobs/sha256"))
            .map_err(|e| self.io(e))?;
        Ok(BlobWriter {
            temp,
            path,
            hasher: Sha256::new(),
            written: 0,
            digest: digest.to_string(),
            size,
        })
    }

    /// Writes a small blob held in memory (manifests, configs).
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), CacheError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut writer = self.blob_writer(digest, bytes.len() as u64)?;
        writer.write_all(bytes).map_err(|e| self.io(e))?;
        writer.commit()
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
        let dir = path.parent().unwrap_or(&self.root);
        let mut temp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)
            .map_err(|e| self.io(e))?;
        temp.write_all(bytes).map_err(|e| self.io(e))?;
        temp.as_file().sync_all().map_err(|e| self.io(e))?;
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(|e| self.io(e))?;
        temp.persist(path).map_err(|e| self.io(e.error))?;
        Ok(())
    }

    fn read_index(&self) -> Result<Value, CacheError> {
        match fs::read(self.root.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CacheError::Index {
                root: self.root.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(json!({"schemaVersion": 2, "manifests": []}))
            }
            Err(e) => Err(self.io(e)),
        }
    }

    /// Changes `index.json` under the index lock.
    fn edit_index(&self, edit: impl FnOnce(&mut Vec<Value>)) -> Result<(), CacheError> {
        let _lock = self.lock(".berth-index.lock", true)?;
        let mut index = self.read_index()?;
        let manifests = index
            .get_mut("manifests")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| CacheError::Index {
                root: self.root.clone(),
                message: "no manifests array".into(),
            })?;
        edit(manifests);
        // Sorted by name, so the file does not depend on the order of pulls.
        manifests.sort_by_key(name_of);
        let mut bytes = serde_json::to_vec(&index).expect("JSON values serialise");
        bytes.push(b'\n');
        self.write_atomically(&self.root.join("index.json"), &bytes)
    }

    /// Names `digest` (already in the cache) `name`, replacing what the name
    /// pointed at before.
    pub fn tag(&self, named: &Named) -> Result<(), CacheError> {
        let entry = json!({
            "mediaType": named.media_type,
            "digest": named.digest,
            "size": named.size,
            "annotations": { REF_NAME: named.name },
        });
        self.edit_index(|manifests| {
            manifests.retain(|m| name_of(m).as_deref() != Some(named.name.as_str()));
            manifests.push(entry);
        })
    }

    /// Removes a name; the blobs stay until [`Cache::clean`].
    pub fn untag(&self, name: &str) -> Result<(), CacheError> {
        let mut found = false;
        self.edit_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|m| name_of(m).as_deref() != Some(name));
            found = manifests.len() != before;
        })?;
        if found {
            Ok(())
        } else {
            Err(CacheError::NoSuchImage(name.into()))
        }
    }

    /// Every name in the cache.
    pub fn list(&self) -> Result<Vec<Named>, CacheError> {
        let index = self.read_index()?;
        let mut all: Vec<Named> = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                Some(Named {
                    name: name_of(m)?,
                    digest: m["digest"].as_str()?.to_string(),
                    media_type: m["mediaType"].as_str().unwrap_or_default().to_string(),
                    size: m["size"].as_u64().unwrap_or_default(),
                })
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The entry named `name`.
    pub fn named(&self, name: &str) -> Result<Named, CacheError> {
        self.list()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| CacheError::NoSuchImage(name.into()))
    }

    /// The blobs reachable from the index: indexes, manifests, configs and
    /// layers. Missing blobs are skipped (a partial pull).
    pub fn reachable(&self) -> Result<BTreeSet<String>, CacheError> {
        let index = self.read_index()?;
        let roots: Vec<String> = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["digest"].as_str().map(str::to_string))
            .collect();
        Ok(self.reachable_from(roots))
    }

    fn reachable_from(&self, roots: Vec<String>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue = roots;
        while let Some(digest) = queue.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some(path) = self.blob_path(&digest) else {
                continue;
            };
            let Ok(bytes) = fs::read(&path) else { continue };
            // Only JSON documents refer to other blobs; layers are skipped
            // cheaply by their first byte.
            if bytes.first() != Some(&b'{') {
                continue;
            }
            let Ok(document) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            for key in ["manifests", "layers"] {
                for child in document[key].as_array().into_iter().flatten() {
                    if let Some(d) = child["digest"].as_str() {
                        queue.push(d.to_string());
                    }
                }
            }
            if let Some(d) = document["config"]["digest"].as_str() {
                queue.push(d.to_string());
            }
        }
        seen
    }

    /// Writes the image named `name` as an OCI archive: a tar of an OCI
    /// image layout holding just that image, readable by skopeo
    /// (`oci-archive:FILE`) and `berth cache import`.
    pub fn export(&self, name: &str, out: impl Write) -> Result<(), CacheError> {
        use crate::entry::{DEFAULT_MTIME, Entry, Sink, copy_entry, write_bytes};
        let named = self.named(name)?;
        let io = |e| self.io(e);
        let mut tar = crate::outputs::tar::TarWriter::new(out);
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        write_bytes(
            &mut tar,
            &Entry::file("oci-layout", 0o644, layout.len() as u64, DEFAULT_MTIME),
            layout,
        )
        .map_err(io)?;
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": named.media_type, "digest": named.digest, "size": named.size,
            "annotations": { REF_NAME: named.name },
        }]});
        let index = serde_json::to_vec(&index).expect("JSON values serialise");
        write_bytes(
            &mut tar,
            &Entry::file("index.json", 0o644, index.len() as u64, DEFAULT_MTIME),
            &index,
        )
        .map_err(io)?;
        for dir in ["blobs", "blobs/sha256"] {
            tar.entry(&Entry::directory(dir, 0o755, DEFAULT_MTIME))
                .map_err(io)?;
        }
        for digest in self.reachable_from(vec![named.digest.clone()]) {
            let path = self
                .blob_path(&digest)
                .expect("reachable digests are valid");
            let mut file = File::open(&path).map_err(io)?;
            let size = file.metadata().map_err(io)?.len();
            let hex = digest.trim_start_matches("sha256:");
            let entry = Entry::file(format!("blobs/sha256/{hex}"), 0o644, size, DEFAULT_MTIME);
            copy_entry(&mut tar, &entry, &mut file).map_err(io)?;
        }
        tar.finish().map_err(io)
    }

    /// Reads an OCI archive (as written by [`Cache::export`] or skopeo):
    /// every blob is verified on the way in, then every named image of its
    /// `index.json` is named in the cache. Returns the names.
    pub fn import(&self, archive: impl io::Read) -> Result<Vec<String>, CacheError> {
        let invalid = |message: String| CacheError::Index {
            root: self.root.clone(),
            message,
        };
        let mut archive = tar::Archive::new(archive);
        let mut index = None;
        for entry in archive.entries().map_err(|e| self.io(e))? {
            let mut entry = entry.map_err(|e| self.io(e))?;
            let path = entry.path().map_err(|e| self.io(e))?.display().to_string();
            let path = path.trim_start_matches("./").to_string();
            if path == "index.json" {
                let mut text = Vec::new();
                io::Read::read_to_end(&mut entry, &mut text).map_err(|e| self.io(e))?;
                index = Some(
                    serde_json::from_slice::<Value>(&text)
                        .map_err(|e| invalid(format!("archive index.json: {e}")))?,
                );
            } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                if hex.is_empty() {
                    continue;
                }
                let digest = format!("sha256:{hex}");
                if self.has_blob(&digest) {
                    continue;
                }
                let mut writer = self.blob_writer(&digest, entry.size())?;
                io::copy(&mut entry, &mut writer).map_err(|e| self.io(e))?;
                writer.commit()?;
            }
        }
        let index = index.ok_or_else(|| invalid("the archive has no index.json".into()))?;
        let mut names = Vec::new();
        for manifest in index["manifests"].as_array().into_iter().flatten() {
            let name = name_of(manifest)
                .ok_or_else(|| invalid("an image in the archive has no name annotation".into()))?;
            let digest = manifest["digest"].as_str().unwrap_or_default().to_string();
            if !self.has_blob(&digest) {
                return Err(invalid(format!(
                    "{name}: blob {digest} is not in the archive"
                )));
            }
            self.tag(&Named {
                name: name.clone(),
                digest,
                media_type: manifest["mediaType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                size: manifest["size"].as_u64().unwrap_or_default(),
            })?;
            names.push(name);
        }
        Ok(names)
    }

    /// Deletes blobs no name reaches, and leftovers of interrupted writes.
    /// Returns how many files and bytes were removed.
    pub fn clean(&self) -> Result<(usize, u64), CacheError> {
        let _lock = self.lock(".berth-use.lock", true)?;
        let keep = self.reachable()?;
        let mut removed = (0, 0);
        let dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&dir).map_err(|e| self.io(e))? {
            let entry = entry.map_err(|e| self.io(e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&format!("sha256:{name}")) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(entry.path()).map_err(|e| self.io(e))?;
            removed.0 += 1;
            removed.1 += size;
        }
        Ok(removed)
    }

    /// Checks every blob against its digest; returns the ones that fail.
    pub fn verify(&self) -> Result<Vec<String>, CacheError> {
        let mut bad = Vec::new();
        let dir = self.root.join("blobs/sha256");
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(|e| self.io(e))? {
            let entry = entry.map_err(|e| self.io(e))?;
            names.insert(
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            );
        }
        for (name, path) in names {
            if name.starts_with(".partial-") {
                continue;
            }
            let mut hasher = Sha256::new();
            let mut file = File::open(&path).map_err(|e| self.io(e))?;
            io::copy(&mut file, &mut hasher).map_err(|e| self.io(e))?;
            if format!("{:x}", hasher.finalize()) != name {
                bad.push(format!("sha256:{name}"));
            }
        }
        Ok(bad)
    }
}

fn name_of(entry: &Value) -> Option<String> {
    entry["annotations"][REF_NAME].as_str().map(str::to_string)
}

/// A blob being written; it appears in the cache only through
/// [`BlobWriter::commit`], and is deleted if dropped before.
pub struct BlobWriter {
    temp: tempfile::NamedTempFile,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
    digest: String,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.temp.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies digest and size, then moves the blob into place.
    pub fn commit(mut self) -> Result<(), CacheError> {
        let actual = format!("sha256:{:x}", std::mem::take(&mut self.hasher).finalize());
        if actual != self.digest || self.written != self.size {
            return Err(CacheError::Mismatch {
                digest: self.digest,
                actual,
                size: self.written,
                expected_size: self.size,
            });
        }
        let root = self.path.clone();
        let io = |source| CacheError::Io {
            root: root.clone(),
            source,
        };
        self.temp.flush().map_err(io)?;
        self.temp.as_file().sync_all().map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        self.temp
            .as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io)?;
        self.temp.persist(&self.path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(bytes: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(bytes))
    }

    #[test]
    fn a_blob_appears_only_when_whole_and_correct() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let good = digest(b"hello");
        let mut writer = cache.blob_writer(&good, 5).unwrap();
        writer.write_all(b"hel").unwrap();
        assert!(!cache.has_blob(&good));
        drop(writer);
        let leftovers = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0, "a dropped writer leaves nothing");
        let mut writer = cache.blob_writer(&good, 5).unwrap();
        writer.write_all(b"hellO").unwrap();
        let error = writer.commit().unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("blob {good}: received sha256:")),
            "{error}"
        );
        assert!(!cache.has_blob(&good));
        cache.write_blob(&good, b"hello").unwrap();
        assert!(cache.has_blob(&good));
        assert!(cache.verify().unwrap().is_empty());
    }

    #[test]
    fn names_are_replaced_listed_removed_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let layer = b"layer bytes";
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[{{"digest":"{}"}}]}}"#,
            digest(b"{}"),
            digest(layer)
        );
        cache.write_blob(&digest(b"{}"), b"{}").unwrap();
        cache.write_blob(&digest(layer), layer).unwrap();
        cache
            .write_blob(&digest(manifest.as_bytes()), manifest.as_bytes())
            .unwrap();
        cache.write_blob(&digest(b"orphan"), b"orphan").unwrap();
        let named = Named {
            name: "docker.io/x/y:1".into(),
            digest: digest(manifest.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: manifest.len() as u64,
        };
        cache.tag(&named).unwrap();
        cache.tag(&named).unwrap();
        assert_eq!(cache.list().unwrap(), std::slice::from_ref(&named));
        assert_eq!(cache.reachable().unwrap().len(), 3);
        assert_eq!(cache.clean().unwrap(), (1, 6));
        assert!(!cache.has_blob(&digest(b"orphan")));
        cache.untag("docker.io/x/y:1").unwrap();
        assert!(cache.untag("docker.io/x/y:1").is_err());
        assert_eq!(cache.clean().unwrap().0, 3);
    }
}
