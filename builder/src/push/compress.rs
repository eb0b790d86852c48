//! Parallel compression of one layer stream, pigz style: the input is cut
//! into fixed-size chunks, worker threads compress the chunks independently,
//! and one writer thread puts the results out in input order while it
//! computes the sha256 and size of the compressed bytes (the blob digest), so
//! nothing is read twice.
//!
//! - gzip: every chunk is a complete gzip member (RFC 1952: header, raw
//!   deflate, CRC-32 and size trailer), and the blob is their concatenation,
//!   which every gzip reader (Go's `compress/gzip` in Docker and containerd,
//!   zlib, `gzip -d`) reads as one stream. A chunk that does not compress
//!   (already compressed or random data: a sample of it does not shrink) is
//!   written as stored deflate blocks instead of being run through the
//!   compressor, which would only make it bigger and cost most of the time.
//! - zstd: every chunk is an independent zstd frame; concatenated frames are
//!   one valid zstd stream.
//!
//! The output depends only on the input and the [`Compression`] (fixed chunk
//! size and level, whatever the number of threads), so the same layer always
//! gives the same blob digest: that is what lets the push cache and the
//! registry recognise a layer pushed before.
//!
//! Memory is bounded: at most about `2 × threads + 2` chunks (input and
//! output) are in flight. This module does not open files or sockets; the
//! caller hands in a reader and a writer.

use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest, Sha256};

/// How layers are compressed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip: every registry and engine reads it.
    #[default]
    Gzip,
    /// zstd: much faster and smaller; needs containerd 1.5+ / Docker 23+ to pull.
    Zstd,
}

impl Compression {
    /// The OCI layer media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// Uncompressed bytes per independently compressed chunk.
    pub(crate) fn chunk_size(self) -> usize {
        match self {
            Compression::Gzip => 1 << 20,
            Compression::Zstd => 4 << 20,
        }
    }

    /// Names the exact output format (chunking, levels, store rule): blobs
    /// cached under one format are never taken for another.
    pub(crate) fn format_id(self) -> String {
        match self {
            Compression::Gzip => format!("gzip-l{GZIP_LEVEL}-c1m-s1"),
            Compression::Zstd => format!("zstd-l{ZSTD_LEVEL}-c4m"),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            _ => Err(format!("unknown compression {s:?}: use gzip or zstd")),
        }
    }
}

/// The deflate level for gzip chunks.
const GZIP_LEVEL: u32 = 1;
/// The zstd level (zstd's own default).
const ZSTD_LEVEL: i32 = 3;

/// A chunk is stored, not deflated, when its samples shrink by less than this (per mille).
const STORE_THRESHOLD_PER_MILLE: usize = 985;
/// Bytes of each of the four samples that decide whether a chunk compresses.
const SAMPLE: usize = 16 << 10;

/// What a compressed stream came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// `sha256:<hex>` of the compressed bytes.
    pub digest: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// Uncompressed size in bytes.
    pub uncompressed: u64,
}

/// Compress everything `input` yields into `output`, with `threads` workers
/// (at least one). Errors reading, compressing or writing end it; the output
/// is then incomplete and must be thrown away.
pub fn compress(
    input: &mut dyn Read,
    output: &mut (dyn Write + Send),
    compression: Compression,
    threads: usize,
) -> io::Result<Compressed> {
    let threads = threads.max(1);
    let chunk_size = compression.chunk_size();
    type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);
    let (job_tx, job_rx) = sync_channel::<Job>(threads);
    let job_rx = Mutex::new(job_rx);
    // The results, in input order; its bound is what keeps memory small.
    let (order_tx, order_rx) = sync_channel::<Receiver<io::Result<Vec<u8>>>>(threads * 2);

    std::thread::scope(|scope| {
        for _ in 0..threads {
            let job_rx = &job_rx;
            scope.spawn(move || {
                let mut worker = Worker::new(compression);
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((chunk, reply)) = job else { return };
                    // The writer may be gone after an error; nothing to do then.
                    let _ = reply.send(worker.compress(&chunk));
                }
            });
        }
        let writer = scope.spawn(move || -> io::Result<(String, u64)> {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            for result in order_rx {
                let bytes = result
                    .recv()
                    .map_err(|_| io::Error::other("a compression worker stopped"))??;
                hasher.update(&bytes);
                output.write_all(&bytes)?;
                size += bytes.len() as u64;
            }
            output.flush()?;
            Ok((digest_string(&hasher.finalize()), size))
        });

        let mut uncompressed = 0u64;
        let mut first = true;
        let read_result: io::Result<()> = loop {
            let mut chunk = Vec::with_capacity(chunk_size);
            match read_full(input, &mut chunk, chunk_size) {
                Ok(0) if !first => break Ok(()),
                Ok(n) => {
                    uncompressed += n as u64;
                    first = false;
                    let (reply_tx, reply_rx) = sync_channel(1);
                    // A failed send means the writer stopped: its error says why.
                    if order_tx.send(reply_rx).is_err() || job_tx.send((chunk, reply_tx)).is_err() {
                        break Ok(());
                    }
                    if n < chunk_size {
                        break Ok(());
                    }
                }
                Err(e) => break Err(e),
            }
        };
        drop(order_tx);
        drop(job_tx);
        let written = writer
            .join()
            .map_err(|_| io::Error::other("the compressed-output writer panicked"))?;
        read_result?;
        let (digest, size) = written?;
        Ok(Compressed {
            digest,
            size,
            uncompressed,
        })
    })
}

/// Read until `buf` holds `want` bytes or the input ends; the count read.
fn read_full(input: &mut dyn Read, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    buf.resize(want, 0);
    let mut filled = 0;
    while filled < want {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(filled)
}

/// `sha256:<hex>` of a finished sha256.
pub(crate) fn digest_string(hash: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(7 + hash.len() * 2);
    s.push_str("sha256:");
    for b in hash {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of some bytes.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    digest_string(&Sha256::digest(bytes))
}

/// One worker thread's compressor state, reused from chunk to chunk.
enum Worker {
    Gzip {
        deflate: Box<flate2::Compress>,
        sample: Box<flate2::Compress>,
    },
    Zstd(Option<zstd::bulk::Compressor<'static>>),
}

impl Worker {
    fn new(compression: Compression) -> Worker {
        match compression {
            Compression::Gzip => Worker::Gzip {
                deflate: Box::new(flate2::Compress::new(
                    flate2::Compression::new(GZIP_LEVEL),
                    false,
                )),
                sample: Box::new(flate2::Compress::new(flate2::Compression::new(1), false)),
            },
            Compression::Zstd => Worker::Zstd(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()),
        }
    }

    fn compress(&mut self, chunk: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Worker::Gzip { deflate, sample } => gzip_member(deflate, sample, chunk),
            Worker::Zstd(compressor) => match compressor {
                Some(c) => c.compress(chunk),
                None => Err(io::Error::other("cannot set up a zstd compressor")),
            },
        }
    }
}

/// The gzip header labforge writes: no name, no time, unknown OS, so the
/// bytes depend on the content only.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// One gzip member holding `chunk`.
fn gzip_member(
    deflate: &mut flate2::Compress,
    sample: &mut flate2::Compress,
    chunk: &[u8],
) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 64 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    if incompressible(sample, chunk)? {
        stored_blocks(chunk, &mut out);
    } else {
        deflate.reset();
        loop {
            let consumed = deflate.total_in() as usize;
            if out.capacity() - out.len() < 1024 {
                out.reserve(64 << 10);
            }
            let status = deflate
                .compress_vec(&chunk[consumed..], &mut out, flate2::FlushCompress::Finish)
                .map_err(io::Error::other)?;
            if status == flate2::Status::StreamEnd {
                break;
            }
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(chunk);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the size modulo 2^32 (RFC 1952).
    out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
    Ok(out)
}

/// Does deflate fail to shrink four samples spread over the chunk?
fn incompressible(sample: &mut flate2::Compress, chunk: &[u8]) -> io::Result<bool> {
    if chunk.len() < 8 * SAMPLE {
        return Ok(false);
    }
    let step = (chunk.len() - SAMPLE) / 3;
    let mut scratch = Vec::with_capacity(SAMPLE + SAMPLE / 8 + 64);
    let mut compressed = 0;
    for i in 0..4 {
        let part = &chunk[i * step..i * step + SAMPLE];
        sample.reset();
        scratch.clear();
        loop {
            let consumed = sample.total_in() as usize;
            if scratch.capacity() - scratch.len() < 256 {
                scratch.reserve(SAMPLE);
            }
            let status = sample
                .compress_vec(
                    &part[consumed..],
                    &mut scratch,
                    flate2::FlushCompress::Finish,
                )
                .map_err(io::Error::other)?;
            if status == flate2::Status::StreamEnd {
                break;
            }
        }
        compressed += scratch.len();
    }
    Ok(compressed * 1000 >= 4 * SAMPLE * STORE_THRESHOLD_PER_MILLE)
}

/// `data` as raw deflate stored blocks (at most 65,535 bytes each), the last
/// one final. Empty data is one empty final block.
fn stored_blocks(data: &[u8], out: &mut Vec<u8>) {
    const MAX: usize = 65_535;
    let mut blocks = data.chunks(MAX).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        return;
    }
    while let Some(block) = blocks.next() {
        let last = blocks.peek().is_none();
        let len = block.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Deterministic pseudo-random bytes (xorshift), incompressible.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn text(len: usize) -> Vec<u8> {
        let words = [
            "layer", "image", "registry", "blob", "digest", "manifest", "tar",
        ];
        let mut out = Vec::with_capacity(len + 16);
        let mut i = 0usize;
        while out.len() < len {
            out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
            out.push(if i.is_multiple_of(11) { b'\n' } else { b' ' });
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn run(data: &[u8], c: Compression, threads: usize) -> (Vec<u8>, Compressed) {
        let mut out = Vec::new();
        let info = compress(&mut Cursor::new(data), &mut out, c, threads).expect("compress");
        (out, info)
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut d = flate2::read::MultiGzDecoder::new(bytes);
        let mut out = Vec::new();
        d.read_to_end(&mut out).expect("valid gzip");
        out
    }

    #[test]
    fn gzip_round_trips_and_is_deterministic() {
        let mut data = text(3 << 20);
        data.extend(noise((2 << 20) + 12_345, 7));
        data.extend(text(100_000));
        let (a, info) = run(&data, Compression::Gzip, 3);
        assert_eq!(gunzip(&a), data);
        assert_eq!(info.size, a.len() as u64);
        assert_eq!(info.uncompressed, data.len() as u64);
        assert_eq!(info.digest, sha256_digest(&a));
        // The thread count never changes the bytes.
        let (b, _) = run(&data, Compression::Gzip, 1);
        assert_eq!(a, b);
        // Text shrinks; noise is stored with only a few bytes per block.
        let (t, _) = run(&text(2 << 20), Compression::Gzip, 2);
        assert!(t.len() < (2 << 20) / 4, "{}", t.len());
        let n = noise(2 << 20, 3);
        let (s, _) = run(&n, Compression::Gzip, 2);
        assert!(s.len() < n.len() + n.len() / 1000 + 100, "{}", s.len());
        assert_eq!(gunzip(&s), n);
    }

    #[test]
    fn gzip_members_are_read_by_a_plain_single_stream_reader_per_member() {
        // Each member stands alone: the first 1 MiB decodes by itself.
        let data = text((1 << 20) + 10);
        let (out, _) = run(&data, Compression::Gzip, 2);
        let mut first = flate2::read::GzDecoder::new(&out[..]);
        let mut head = Vec::new();
        first.read_to_end(&mut head).expect("first member");
        assert_eq!(head, &data[..1 << 20]);
    }

    #[test]
    fn zstd_round_trips() {
        let mut data = text(5 << 20);
        data.extend(noise(300_000, 9));
        let (a, info) = run(&data, Compression::Zstd, 2);
        assert_eq!(zstd::stream::decode_all(&a[..]).expect("valid zstd"), data);
        assert_eq!(info.digest, sha256_digest(&a));
        let (b, _) = run(&data, Compression::Zstd, 1);
        assert_eq!(a, b);
    }

    #[test]
    fn empty_input_is_a_valid_stream() {
        let (g, info) = run(&[], Compression::Gzip, 2);
        assert_eq!(gunzip(&g), b"");
        assert_eq!(info.uncompressed, 0);
        let (z, _) = run(&[], Compression::Zstd, 2);
        assert_eq!(zstd::stream::decode_all(&z[..]).expect("valid zstd"), b"");
        let mut out = Vec::new();
        stored_blocks(&[], &mut out);
        let mut d = flate2::read::DeflateDecoder::new(&out[..]);
        let mut back = Vec::new();
        d.read_to_end(&mut back).expect("valid deflate");
        assert!(back.is_empty());
    }

    #[test]
    fn read_and_write_errors_end_it() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        let mut out = Vec::new();
        let err = compress(&mut Failing, &mut out, Compression::Gzip, 2).expect_err("fails");
        assert!(err.to_string().contains("disk gone"));

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("no space left"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = text(5 << 20);
        let err =
            compress(&mut Cursor::new(&data), &mut Full, Compression::Gzip, 2).expect_err("fails");
        assert!(err.to_string().contains("no space left"));
    }

    #[test]
    fn names() {
        assert_eq!("gzip".parse::<Compression>(), Ok(Compression::Gzip));
        assert_eq!("ZSTD".parse::<Compression>(), Ok(Compression::Zstd));
        assert!("lz4".parse::<Compression>().is_err());
        assert_eq!(Compression::Zstd.to_string(), "zstd");
        assert_eq!(sha256_digest(b"").len(), 71);
    }
}
