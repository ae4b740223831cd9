//! Compression of output streams: gzip (compressed in parallel, pigz-style),
//! zstd (its own worker threads) or none.
//!
//! Both codecs give the same bytes whatever the number of cores: gzip blocks
//! are fixed-size and each is primed with the 32 KiB before it, and zstd is
//! always run with the same number of workers.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression as Level, FlushCompress, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            _ => Err(format!("unknown compression {s:?} (gzip, zstd or none)")),
        }
    }
}

/// A writer that must be told when the stream ends.
pub trait Encoder: Write + Send {
    /// Writes the codec's trailer and flushes everything to the inner writer.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// gzip level: 6 matches gzip(1) and Go's default, which LinuxKit users know.
const GZIP_LEVEL: u32 = 6;
/// zstd level 3 is zstd's own default: several times faster than gzip -6.
const ZSTD_LEVEL: i32 = 3;
/// Fixed so that the output does not depend on the machine.
const ZSTD_WORKERS: u32 = 4;

pub fn encoder<'a, W: Write + Send + 'a>(
    compression: Compression,
    inner: W,
) -> io::Result<Box<dyn Encoder + 'a>> {
    Ok(match compression {
        Compression::Gzip => Box::new(ParallelGzip::new(inner, GZIP_LEVEL)),
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?;
            encoder.multithread(ZSTD_WORKERS)?;
            encoder.include_checksum(true)?;
            Box::new(ZstdEncoder(encoder))
        }
        Compression::None => Box::new(Plain(inner)),
    })
}

struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> Encoder for Plain<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

struct ZstdEncoder<'a, W: Write>(zstd::stream::write::Encoder<'a, W>);

impl<W: Write> Write for ZstdEncoder<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> Encoder for ZstdEncoder<'_, W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut inner = self.0.finish()?;
        inner.flush()
    }
}

/// Uncompressed bytes per gzip block: large enough that the sync markers
/// between blocks cost nothing, small enough to keep every core busy.
const BLOCK: usize = 1 << 20;
const DICTIONARY: usize = 32 * 1024;

struct Job {
    data: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
    /// Store the block (deflate level 0) when it looks incompressible.
    store_incompressible: bool,
    reply: Sender<io::Result<Vec<u8>>>,
}

/// A gzip writer that deflates 1 MiB blocks on all cores and writes them in
/// order: one gzip member, readable by any gunzip and by the kernel.
pub struct ParallelGzip<W: Write> {
    inner: W,
    level: u32,
    buffer: Vec<u8>,
    dictionary: Vec<u8>,
    crc: crc32fast::Hasher,
    length: u64,
    header_written: bool,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    max_pending: usize,
    /// A whole block of zeros after 32 KiB of zeros, deflated: the same
    /// bytes every time, so a long run of zeros (a disk image's free space)
    /// is deflated once.
    zeros: Option<Vec<u8>>,
    /// The checksum of a block of zeros, combined into the stream's for
    /// each one [`ParallelGzip::write_zeros`] skips.
    zero_block_crc: Option<crc32fast::Hasher>,
    store_incompressible: bool,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(inner: W, level: u32) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let result = deflate_block(&job, level);
                        let _ = job.reply.send(result);
                    }
                })
            })
            .collect();
        ParallelGzip {
            inner,
            level,
            buffer: Vec::with_capacity(BLOCK),
            dictionary: Vec::new(),
            crc: crc32fast::Hasher::new(),
            length: 0,
            header_written: false,
            pending: VecDeque::new(),
            jobs: Some(jobs),
            workers,
            max_pending: threads * 2,
            zeros: None,
            zero_block_crc: None,
            store_incompressible: false,
        }
    }

    /// Blocks that [`looks_incompressible`] says will not shrink are
    /// stored rather than deflated: for streams of data compressed already
    /// (a disk of kernels and initrds), where deflating costs much and
    /// saves next to nothing. The bytes still depend only on the data.
    pub fn storing_incompressible(mut self) -> Self {
        self.store_incompressible = true;
        self
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        if !self.header_written {
            // No name, no time (reproducible), OS "unknown".
            let xfl = match self.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            self.inner
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
            self.header_written = true;
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(BLOCK));
        let tail = data.len().saturating_sub(DICTIONARY);
        let dictionary = std::mem::replace(&mut self.dictionary, data[tail..].to_vec());
        let (reply, result) = channel();
        let zeros = all_zero;
        if !last
            && data.len() == BLOCK
            && dictionary.len() == DICTIONARY
            && zeros(&dictionary)
            && zeros(&data)
        {
            let deflated = match &self.zeros {
                Some(deflated) => deflated.clone(),
                None => {
                    let job = Job {
                        data,
                        dictionary,
                        last,
                        store_incompressible: false,
                        reply: channel().0,
                    };
                    let deflated = deflate_block(&job, self.level)?;
                    self.zeros = Some(deflated.clone());
                    deflated
                }
            };
            let _ = reply.send(Ok(deflated));
            self.pending.push_back(result);
            while self.pending.len() > self.max_pending {
                self.write_oldest()?;
            }
            return Ok(());
        }
        let job = Job {
            data,
            dictionary,
            last,
            store_incompressible: self.store_incompressible,
            reply,
        };
        self.jobs
            .as_ref()
            .expect("gzip writer used after finish")
            .send(job)
            .map_err(|_| io::Error::other("gzip worker threads stopped"))?;
        self.pending.push_back(result);
        while self.pending.len() > self.max_pending {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.pending.pop_front() {
            let block = result
                .recv()
                .map_err(|_| io::Error::other("gzip worker thread died"))??;
            self.inner.write_all(&block)?;
        }
        Ok(())
    }

    /// Writes `count` zeros, as `write` would, but a whole block of them
    /// after 32 KiB of zeros costs neither a copy nor a deflate: its
    /// deflated bytes are reused and its checksum combined.
    pub fn write_zeros(&mut self, mut count: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        loop {
            let dictionary_zero = self.dictionary.len() == DICTIONARY && all_zero(&self.dictionary);
            if self.buffer.is_empty() && dictionary_zero && count >= BLOCK as u64 {
                if self.zeros.is_none() {
                    let (reply, _) = channel();
                    let job = Job {
                        data: vec![0; BLOCK],
                        dictionary: vec![0; DICTIONARY],
                        last: false,
                        store_incompressible: false,
                        reply,
                    };
                    self.zeros = Some(deflate_block(&job, self.level)?);
                }
                let block_crc = self.zero_block_crc.get_or_insert_with(|| {
                    let mut crc = crc32fast::Hasher::new();
                    crc.update(&vec![0; BLOCK]);
                    crc
                });
                self.crc.combine(block_crc);
                self.length += BLOCK as u64;
                let (reply, result) = channel();
                let _ = reply.send(Ok(self.zeros.clone().unwrap_or_default()));
                self.pending.push_back(result);
                while self.pending.len() > self.max_pending {
                    self.write_oldest()?;
                }
                count -= BLOCK as u64;
                continue;
            }
            if count == 0 {
                return Ok(());
            }
            // Up to the end of the block, or of the zeros.
            let room = (BLOCK - self.buffer.len()) as u64;
            let take = count.min(room).min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..take])?;
            count -= take as u64;
        }
    }

    fn finish_stream(&mut self) -> io::Result<()> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.inner.write_all(&(self.length as u32).to_le_bytes())?;
        self.inner.flush()
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Whether `bytes` are all zero; OR-ing a page at a time lets the compiler
/// use vector instructions.
fn all_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(4096)
        .all(|page| page.iter().fold(0u8, |acc, &byte| acc | byte) == 0)
}

/// Whether `data` looks like it will not shrink: a few 4 KiB samples of it,
/// deflated at the fastest level, each keep more than 97% of their size.
/// Deterministic: the samples' places depend on the length alone.
pub fn looks_incompressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 4096;
    const SAMPLES: usize = 4;
    if data.len() < SAMPLE {
        return false;
    }
    let step = (data.len() - SAMPLE) / (SAMPLES - 1);
    let mut deflate = Compress::new(Level::new(1), false);
    let mut out = Vec::with_capacity(SAMPLE * 2);
    (0..SAMPLES).all(|index| {
        let sample = &data[index * step..index * step + SAMPLE];
        deflate.reset();
        out.clear();
        match deflate.compress_vec(sample, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => out.len() * 100 > sample.len() * 97,
            _ => false,
        }
    })
}

fn deflate_block(job: &Job, level: u32) -> io::Result<Vec<u8>> {
    let level = match job.store_incompressible && looks_incompressible(&job.data) {
        true => 0,
        false => level,
    };
    let mut deflate = Compress::new(Level::new(level), false);
    if !job.dictionary.is_empty() {
        deflate
            .set_dictionary(&job.dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(job.data.len() / 2 + 1024);
    loop {
        let consumed = deflate.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let status = deflate
            .compress_vec(&job.data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = deflate.total_in() as usize == job.data.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is in and the output
            // buffer was not filled to the brim.
            Status::Ok | Status::BufError
                if !job.last && done_input && out.len() < out.capacity() =>
            {
                break;
            }
            _ => {}
        }
    }
    Ok(out)
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        self.crc.update(buf);
        self.length += total as u64;
        while !buf.is_empty() {
            let room = BLOCK - self.buffer.len();
            let take = room.min(buf.len());
            self.buffer.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.buffer.len() == BLOCK {
                self.submit(false)?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send> Encoder for ParallelGzip<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        let result = self.finish_stream();
        self.stop_workers();
        result
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = encoder(Compression::Gzip, &mut out).unwrap();
        // Uneven writes, to cross block boundaries mid-write.
        for chunk in data.chunks(777_777) {
            encoder.write_all(chunk).unwrap();
        }
        encoder.finish().unwrap();
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut state = 12345u32;
        (0..len)
            .map(|i| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 3 == 0 {
                    (state >> 24) as u8
                } else {
                    b"berth"[i % 5]
                }
            })
            .collect()
    }

    #[test]
    fn parallel_gzip_round_trips_as_one_member() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345] {
            let data = sample(len);
            let compressed = gzip(&data);
            let mut decoder = flate2::read::GzDecoder::new(&compressed[..]);
            let mut back = Vec::new();
            decoder.read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "length {len}");
            // GzDecoder reads one member; nothing may follow it.
            let mut multi = flate2::read::MultiGzDecoder::new(&compressed[..]);
            let mut all = Vec::new();
            multi.read_to_end(&mut all).unwrap();
            assert_eq!(all.len(), len);
        }
    }

    #[test]
    fn parallel_gzip_is_deterministic() {
        let data = sample(5 * BLOCK / 2);
        assert_eq!(gzip(&data), gzip(&data));
    }

    /// Runs of zero blocks are deflated once and reused: the stream is the
    /// one the workers would have made, and reads back.
    #[test]
    fn runs_of_zeros_give_the_bytes_of_deflating_each_block() {
        let mut data = sample(BLOCK + 100);
        data.extend(std::iter::repeat_n(0u8, 5 * BLOCK + 7));
        data.extend(sample(BLOCK));
        data.extend(std::iter::repeat_n(0u8, 3 * BLOCK));
        let compressed = gzip(&data);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Each zero block deflated anew, with no reuse.
        let mut fresh = Vec::new();
        let mut writer = ParallelGzip::new(&mut fresh, 6);
        for block in data.chunks(BLOCK) {
            writer.zeros = None;
            writer.write_all(block).unwrap();
        }
        writer.finish_stream().unwrap();
        writer.stop_workers();
        drop(writer);
        assert_eq!(fresh, compressed);
    }

    /// `write_zeros` gives the bytes of writing the zeros.
    #[test]
    fn written_zeros_are_the_bytes_of_zeros_written() {
        for (before, zeros, after) in [
            (0, 5 * BLOCK + 3, 10),
            (BLOCK - 7, 3 * BLOCK, 0),
            (12345, 100, BLOCK + 1),
            (BLOCK, 2 * BLOCK, BLOCK),
        ] {
            let head = sample(before);
            let tail = sample(after);
            let mut data = head.clone();
            data.extend(std::iter::repeat_n(0u8, zeros));
            data.extend(&tail);
            let mut skipped = Vec::new();
            let mut writer = ParallelGzip::new(&mut skipped, 6);
            writer.write_all(&head).unwrap();
            writer.write_zeros(zeros as u64).unwrap();
            writer.write_all(&tail).unwrap();
            writer.finish_stream().unwrap();
            writer.stop_workers();
            drop(writer);
            assert_eq!(skipped, gzip(&data), "{before} + {zeros} zeros + {after}");
        }
    }

    /// Noise is stored, text deflated; the stream reads back and repeats.
    #[test]
    fn incompressible_blocks_are_stored() {
        let mut state = 99u64;
        let mut noise = vec![0u8; 2 * BLOCK];
        for byte in &mut noise {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        assert!(looks_incompressible(&noise));
        let text = sample(2 * BLOCK);
        assert!(!looks_incompressible(&text));
        let data = [noise.clone(), text.clone()].concat();
        let adaptive = |data: &[u8]| {
            let mut out = Vec::new();
            let mut writer = ParallelGzip::new(&mut out, 6).storing_incompressible();
            writer.write_all(data).unwrap();
            writer.finish_stream().unwrap();
            writer.stop_workers();
            drop(writer);
            out
        };
        let stored = adaptive(&data);
        assert_eq!(stored, adaptive(&data));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&stored[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // The noise costs its size and a few bytes a block; the text shrinks
        // as it does without the option.
        let noise_alone = adaptive(&noise).len();
        assert!(noise_alone > noise.len() && noise_alone < noise.len() + 1024);
        assert_eq!(adaptive(&text), gzip(&text));
    }

    #[test]
    fn zstd_round_trips() {
        let data = sample(2 * BLOCK);
        let mut out = Vec::new();
        let mut encoder = encoder(Compression::Zstd, &mut out).unwrap();
        encoder.write_all(&data).unwrap();
        encoder.finish().unwrap();
        assert_eq!(zstd::decode_all(&out[..]).unwrap(), data);
    }
}
