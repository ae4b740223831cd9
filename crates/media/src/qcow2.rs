//! qcow2 from a raw disk image, for OpenStack (Glance) and QEMU: QEMU's
//! copy-on-write format, written in one pass with 64 KiB clusters and
//! all-zero clusters left unallocated (they read as zeros, as there is no
//! backing file).
//!
//! Version 2 (QEMU's `compat=0.10`): every qemu-img since 0.10 and every
//! image inspector (Glance's among them) reads it, and version 3's
//! additions (zero-cluster flag, lazy refcounts, external data files,
//! compression types) serve images that are written to later, not one
//! written once. The layout follows QEMU's `docs/interop/qcow2.txt`:
//!
//! ```text
//! cluster 0        header
//! 1..              L1 table (one entry per 512 MiB of the disk)
//! then, in order   the data clusters of each 512 MiB, each span followed by its L2 table
//! then             the refcount table and the refcount blocks (16-bit, every cluster 1)
//! ```
//!
//! The header and the L1 table are written last, over the place kept for
//! them, so the output must be seekable. No identifier, no timestamp: the
//! same raw disk gives the same bytes.

use std::io::{Seek, Write};
use std::path::Path;

use crate::raw_image::{Error, Output, RawImage};

const FORMAT: &str = "qcow2";
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Entries of an L2 table (8 bytes each), so an L1 entry maps 512 MiB.
const L2_ENTRIES: u64 = CLUSTER / 8;
/// 16-bit refcounts per refcount block (refcount_order 4, version 2's only one).
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
/// "The cluster's refcount is exactly one": `qemu-img check` wants it set
/// on every L1 and L2 entry of an image without snapshots.
const COPIED: u64 = 1 << 63;
/// QEMU's limit on the L1 table (`QCOW_MAX_L1_SIZE`, 32 MiB).
const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;

/// Writes the qcow2 image of the raw disk at `raw` to `out`, from where
/// `out` stands. Returns the disk's virtual size (the raw disk's size).
pub fn write<W: Write + Seek>(raw: &Path, out: &mut W) -> Result<u64, Error> {
    let mut image = RawImage::open(raw)?;
    let size = image.size_in_sectors(FORMAT)?;
    let clusters = size.div_ceil(CLUSTER);
    image.at_most(size, MAX_L1_ENTRIES * L2_ENTRIES * CLUSTER, FORMAT)?;
    let l1_entries = clusters.div_ceil(L2_ENTRIES);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);

    let mut output = Output::seekable(out, FORMAT, &image)?;
    output.write_zeros((1 + l1_clusters) * CLUSTER)?;
    let mut l1 = vec![0u64; l1_entries as usize];
    let mut l2 = vec![0u64; L2_ENTRIES as usize];
    let mut cluster = vec![0u8; CLUSTER as usize];
    for (index, l1_entry) in l1.iter_mut().enumerate() {
        let first = index as u64 * L2_ENTRIES;
        let count = L2_ENTRIES.min(clusters - first) as usize;
        l2.fill(0);
        for l2_entry in &mut l2[..count] {
            if image.next_block(&mut cluster)? {
                continue;
            }
            *l2_entry = output.position() | COPIED;
            output.write(&cluster)?;
        }
        if l2.iter().any(|&entry| entry != 0) {
            *l1_entry = output.position() | COPIED;
            output.write(&big_endian(&l2))?;
        }
    }

    let refcount_table_offset = output.position();
    let used = refcount_table_offset / CLUSTER;
    let (table_clusters, blocks) = refcount_layout(used);
    let total = used + table_clusters + blocks;
    let table: Vec<u64> = (0..blocks)
        .map(|block| refcount_table_offset + (table_clusters + block) * CLUSTER)
        .collect();
    let mut table = big_endian(&table);
    table.resize((table_clusters * CLUSTER) as usize, 0);
    output.write(&table)?;
    let mut refcounts = vec![0u8; CLUSTER as usize];
    for block in 0..blocks {
        refcounts.fill(0);
        let first = block * REFCOUNTS_PER_BLOCK;
        let counted = (total - first).min(REFCOUNTS_PER_BLOCK) as usize;
        for refcount in refcounts.chunks_exact_mut(2).take(counted) {
            refcount.copy_from_slice(&1u16.to_be_bytes());
        }
        output.write(&refcounts)?;
    }

    let header = header(size, l1_entries, refcount_table_offset, table_clusters);
    output.write_at(0, &header)?;
    output.write_at(CLUSTER, &big_endian(&l1))?;
    output.flush()?;
    Ok(size)
}

/// How many clusters the refcount table and the refcount blocks take when
/// `used` clusters come before them: the blocks count themselves and the
/// table too, so grow both until they cover everything.
fn refcount_layout(used: u64) -> (u64, u64) {
    let (mut table_clusters, mut blocks) = (1, 1);
    loop {
        let total = used + table_clusters + blocks;
        let needed_blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let needed_table = (needed_blocks * 8).div_ceil(CLUSTER);
        if (needed_table, needed_blocks) == (table_clusters, blocks) {
            return (table_clusters, blocks);
        }
        (table_clusters, blocks) = (needed_table, needed_blocks);
    }
}

/// The version 2 header: 72 bytes, big-endian, no extensions.
fn header(size: u64, l1_entries: u64, refcount_table_offset: u64, table_clusters: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(72);
    header.extend_from_slice(b"QFI\xfb");
    header.extend_from_slice(&2u32.to_be_bytes()); // version
    header.extend_from_slice(&0u64.to_be_bytes()); // backing file offset: none
    header.extend_from_slice(&0u32.to_be_bytes()); // backing file name length
    header.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    header.extend_from_slice(&(l1_entries as u32).to_be_bytes());
    header.extend_from_slice(&CLUSTER.to_be_bytes()); // L1 table offset
    header.extend_from_slice(&refcount_table_offset.to_be_bytes());
    header.extend_from_slice(&(table_clusters as u32).to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // no snapshots
    header.extend_from_slice(&0u64.to_be_bytes()); // snapshot table offset
    header
}

fn big_endian(entries: &[u64]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|entry| entry.to_be_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw_image::MIB;
    use crate::raw_image::tests::*;
    use std::fs::File;
    use std::io::Cursor;

    #[test]
    fn refcounts_cover_the_refcount_structures_themselves() {
        assert_eq!(refcount_layout(10), (1, 1));
        assert_eq!(refcount_layout(REFCOUNTS_PER_BLOCK - 2), (1, 1));
        assert_eq!(refcount_layout(REFCOUNTS_PER_BLOCK - 1), (1, 2));
        let (table, blocks) = refcount_layout(8192 * REFCOUNTS_PER_BLOCK);
        assert_eq!((table, blocks), (2, 8193));
    }

    #[test]
    fn qemu_img_reads_back_the_raw_disk() {
        let Some(_) = qemu_img_or_skip() else { return };
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        // A sector more than 40 MiB: the last cluster is partly past the end.
        let bytes = write_test_disk(&raw, 40 * MIB + 512).unwrap();
        let qcow2 = dir.path().join("disk.qcow2");
        assert_eq!(
            write(&raw, &mut File::create(&qcow2).unwrap()).unwrap(),
            40 * MIB + 512
        );
        assert_qemu_check(&qcow2, "qcow2");
        assert_qemu_reads(&qcow2, "qcow2", true, &bytes);
        let info = qemu_img(&["info", "--output=json", qcow2.to_str().unwrap()]);
        assert!(info.contains("\"compat\": \"0.10\""), "{info}");
        // Only the clusters with data take room: header, L1, 9 data
        // clusters, one L2 table, refcount table and block.
        assert_eq!(std::fs::metadata(&qcow2).unwrap().len(), 14 * CLUSTER);
    }

    #[test]
    fn the_same_raw_disk_gives_the_same_bytes() {
        let bytes = written_twice(write);
        assert_eq!(&bytes[..8], b"QFI\xfb\0\0\0\x02");
    }

    #[test]
    fn a_disk_that_is_not_whole_sectors_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("odd.raw");
        std::fs::write(&raw, [7; 700]).unwrap();
        let error = write(&raw, &mut Cursor::new(Vec::new())).unwrap_err();
        assert!(
            matches!(error, Error::NotWholeSectors { size: 700, .. }),
            "{error}"
        );
    }
}
