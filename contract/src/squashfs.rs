//! How init finds the root of a `kernel+squashfs` build: the builder puts
//! `berth.root=squashfs:ID` on the kernel command line, and init mounts the
//! block device whose squashfs superblock gives the same `ID`.
//!
//! squashfs has no UUID or label field, so the id is derived from the
//! superblock, the first 96 bytes of the image (squashfs 4.0: magic, inode
//! count, mkfs time, block size, fragment count, compressor, flags, id count,
//! root inode, bytes used and the start of every table). It names the image
//! by its size and layout, and init can check a device by reading 96 bytes of
//! it: the first 16 bytes of the SHA-256 of the superblock, with the version
//! and variant bits of an RFC 9562 version 8 ("custom") UUID, written as a
//! UUID. It identifies an image; it does not verify its contents: two images
//! whose tables and sizes agree byte for byte have the same id.

use sha2::{Digest, Sha256};

/// The bytes of a squashfs 4.0 superblock.
pub const SUPERBLOCK_SIZE: usize = 96;

/// The superblock's first four bytes (little-endian `0x73717368`).
pub const MAGIC: &[u8; 4] = b"hsqs";

/// The kernel command-line option that names the root.
pub const ROOT_OPTION: &str = "berth.root";

/// The prefix of its value for a squashfs root.
pub const SQUASHFS_PREFIX: &str = "squashfs:";

/// Why 96 bytes are not the superblock of a squashfs 4.0 image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    #[error("{0} bytes, shorter than a squashfs superblock (96)")]
    Short(usize),
    #[error("no squashfs magic (hsqs)")]
    NotSquashfs,
    #[error("squashfs version {0}.{1}, not 4.0")]
    Version(u16, u16),
}

/// The id of the squashfs image that starts with `superblock` (at least
/// [`SUPERBLOCK_SIZE`] bytes; more are ignored).
pub fn root_id(superblock: &[u8]) -> Result<String, SuperblockError> {
    let block = superblock
        .get(..SUPERBLOCK_SIZE)
        .ok_or(SuperblockError::Short(superblock.len()))?;
    if &block[..4] != MAGIC {
        return Err(SuperblockError::NotSquashfs);
    }
    let major = u16::from_le_bytes([block[28], block[29]]);
    let minor = u16::from_le_bytes([block[30], block[31]]);
    if (major, minor) != (4, 0) {
        return Err(SuperblockError::Version(major, minor));
    }
    let hash = Sha256::digest(block);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash[..16]);
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// The command-line word that names the squashfs root `id`.
pub fn root_option(id: &str) -> String {
    format!("{ROOT_OPTION}={SQUASHFS_PREFIX}{id}")
}

/// The squashfs id a kernel command line asks for: `Ok(None)` without
/// `berth.root`, an error naming the word when its value is not
/// `squashfs:ID`. The last `berth.root` wins, as with the kernel's `root=`.
pub fn requested_root(cmdline: &str) -> Result<Option<String>, String> {
    let Some(value) = cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix(ROOT_OPTION)?.strip_prefix('='))
        .next_back()
    else {
        return Ok(None);
    };
    match value.strip_prefix(SQUASHFS_PREFIX) {
        Some(id) if !id.is_empty() => Ok(Some(id.to_ascii_lowercase())),
        _ => Err(format!(
            "{ROOT_OPTION}={value}: expected {ROOT_OPTION}={SQUASHFS_PREFIX}ID"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock() -> Vec<u8> {
        let mut block = vec![0u8; SUPERBLOCK_SIZE];
        block[..4].copy_from_slice(MAGIC);
        block[28..30].copy_from_slice(&4u16.to_le_bytes());
        block[40..48].copy_from_slice(&4096u64.to_le_bytes());
        block
    }

    #[test]
    fn the_id_is_a_version_8_uuid_of_the_superblock() {
        let block = superblock();
        let id = root_id(&block).unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "8", "version 8: {id}");
        assert!("89ab".contains(&id[19..20]), "variant: {id}");
        // Bytes after the superblock do not count; any byte of it does.
        let mut longer = block.clone();
        longer.extend_from_slice(b"data");
        assert_eq!(root_id(&longer).unwrap(), id);
        let mut other = block.clone();
        other[40] = 1;
        assert_ne!(root_id(&other).unwrap(), id);
    }

    #[test]
    fn what_is_not_a_squashfs_superblock_is_named() {
        assert_eq!(root_id(&[0; 10]), Err(SuperblockError::Short(10)));
        assert_eq!(root_id(&[0; 96]), Err(SuperblockError::NotSquashfs));
        let mut old = superblock();
        old[28] = 3;
        assert_eq!(root_id(&old), Err(SuperblockError::Version(3, 0)));
    }

    #[test]
    fn the_command_line_names_the_root() {
        let id = "0123abcd-0000-8000-8000-000000000000";
        let cmdline = format!("console=ttyS0 {} quiet", root_option(id));
        assert_eq!(requested_root(&cmdline), Ok(Some(id.to_string())));
        assert_eq!(requested_root("console=ttyS0 root=/dev/vda"), Ok(None));
        assert_eq!(
            requested_root("berth.root=/dev/vda"),
            Err("berth.root=/dev/vda: expected berth.root=squashfs:ID".into())
        );
        // berth.rootwait or the like are other options.
        assert_eq!(requested_root("berth.rooted=1"), Ok(None));
    }
}
