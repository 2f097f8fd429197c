//! Decoding a layer stream on a helper thread, so inflating and hashing overlap the file writes.
//!
//! The helper reads the raw (compressed) stream to EOF, hashes it (blob digest), optionally copies it
//! to a file (the blob kept for push), decompresses it, hashes the tar bytes (diffID) and hands them
//! over in chunks through a bounded channel. It always reads to EOF, even after the tar parser has
//! seen the end-of-archive, so both digests and the compression trailer are checked; it stops early
//! only when the consumer [`DecodeHandle::abort`]s.

use crate::image::compression::{self, CompressionError};
use crate::image::digest::{Digest, HashingReader};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

/// Bytes per chunk handed to the tar parser.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the threads (bounded memory: `CHUNK * DEPTH`).
const DEPTH: usize = 4;

/// Why decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Compression(#[from] CompressionError),
    #[error("reading the layer stream: {0}")]
    Read(#[source] io::Error),
    #[error("writing the blob copy: {0}")]
    Copy(#[source] io::Error),
    #[error("decoding stopped because unpacking failed")]
    Aborted,
}

/// What the helper saw once the stream ended.
#[derive(Debug)]
pub struct Decoded<W> {
    /// sha256 of the raw bytes (the blob digest).
    pub blob: Digest,
    /// sha256 of the decompressed bytes (the diffID).
    pub diff_id: Digest,
    /// The copy writer, flushed.
    pub copy: Option<W>,
}

/// The consumer's side: a reader of the decoded tar bytes, and the helper's result.
pub struct DecodeHandle<'scope, W> {
    pub tar: ChunkReader,
    abort: Arc<AtomicBool>,
    thread: ScopedJoinHandle<'scope, Result<Decoded<W>, DecodeError>>,
}

impl<W> DecodeHandle<'_, W> {
    /// Tells the helper to stop reading (the unpack failed) and waits for it.
    pub fn abort(self) -> Result<Decoded<W>, DecodeError> {
        self.abort.store(true, Ordering::SeqCst);
        self.finish()
    }

    /// Stops consuming and waits for the helper to read the stream to EOF.
    pub fn finish(self) -> Result<Decoded<W>, DecodeError> {
        drop(self.tar);
        self.thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// Starts decoding `raw` (declared `media_type`) on a thread of `scope`; `copy` receives the raw bytes.
pub fn spawn_decoder<'scope, R, W>(
    scope: &'scope Scope<'scope, '_>,
    media_type: &str,
    raw: R,
    copy: Option<W>,
) -> DecodeHandle<'scope, W>
where
    R: Read + Send + 'scope,
    W: Write + Send + 'scope,
{
    let (tx, rx) = sync_channel(DEPTH);
    let abort = Arc::new(AtomicBool::new(false));
    let media_type = media_type.to_string();
    let flag = abort.clone();
    let thread = scope.spawn(move || decode(&media_type, raw, copy, &tx, &flag));
    DecodeHandle { tar: ChunkReader { rx, current: Vec::new(), pos: 0 }, abort, thread }
}

fn decode<R: Read, W: Write>(
    media_type: &str,
    raw: R,
    copy: Option<W>,
    tx: &SyncSender<Vec<u8>>,
    abort: &AtomicBool,
) -> Result<Decoded<W>, DecodeError> {
    let copy_error = RefCell::new(None);
    let failed =
        |e: io::Error| copy_error.borrow_mut().take().map(DecodeError::Copy).unwrap_or(DecodeError::Read(e));
    let mut tee = Tee { inner: HashingReader::new(raw), copy, copy_error: &copy_error };
    let diff_id = {
        let (_, tar_stream) = compression::decompress(media_type, &mut tee)?;
        let mut tar = HashingReader::new(tar_stream);
        let mut consumer_gone = false;
        loop {
            if abort.load(Ordering::SeqCst) {
                return Err(DecodeError::Aborted);
            }
            let mut chunk = vec![0u8; CHUNK];
            let n = read_some(&mut tar, &mut chunk).map_err(failed)?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            // After the tar parser is done (receiver dropped), keep reading to hash the trailer.
            if !consumer_gone && tx.send(chunk).is_err() {
                consumer_gone = true;
            }
        }
        tar.finish().0
    };
    // Anything after the compressed stream's end still belongs to the blob digest.
    io::copy(&mut tee, &mut io::sink()).map_err(failed)?;
    let Tee { inner, copy, .. } = tee;
    let mut copy = copy;
    if let Some(w) = &mut copy {
        w.flush().map_err(DecodeError::Copy)?;
    }
    Ok(Decoded { blob: inner.finish().0, diff_id, copy })
}

/// Reads until `buf` is full or EOF, so chunks stay large whatever the source's read sizes.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Hashes the raw stream and copies it to the blob file; a copy failure is kept apart from read errors.
struct Tee<'a, R, W> {
    inner: HashingReader<R>,
    copy: Option<W>,
    copy_error: &'a RefCell<Option<io::Error>>,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = &mut self.copy
            && let Err(e) = w.write_all(&buf[..n])
        {
            let kind = e.kind();
            *self.copy_error.borrow_mut() = Some(e);
            return Err(io::Error::new(kind, "writing the blob copy failed"));
        }
        Ok(n)
    }
}

/// Reads the chunks the helper sends; EOF when the helper stops sending (end or error: the caller
/// checks the helper's result, never this EOF alone).
pub struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn hands_over_every_byte_and_both_digests() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let gz = gzip(&data);
        std::thread::scope(|s| {
            let mut h = spawn_decoder(s, GZ, &gz[..], Some(Vec::new()));
            let mut out = Vec::new();
            h.tar.read_to_end(&mut out).unwrap();
            let done = h.finish().unwrap();
            assert_eq!(out, data);
            assert_eq!(done.diff_id, Digest::sha256_of(&data));
            assert_eq!(done.blob, Digest::sha256_of(&gz));
            assert_eq!(done.copy.unwrap(), gz);
        });
    }

    #[test]
    fn reads_to_eof_after_the_consumer_stops() {
        let data = vec![7u8; 5_000_000];
        let gz = gzip(&data);
        std::thread::scope(|s| {
            let mut h = spawn_decoder::<_, Vec<u8>>(s, GZ, &gz[..], None);
            let mut first = [0u8; 10];
            h.tar.read_exact(&mut first).unwrap();
            let done = h.finish().unwrap();
            assert_eq!(done.diff_id, Digest::sha256_of(&data), "hashed to the end");
        });
    }

    #[test]
    fn truncated_input_is_an_error_not_a_short_stream() {
        let data = vec![1u8; 2_000_000];
        let gz = gzip(&data);
        std::thread::scope(|s| {
            let mut h = spawn_decoder::<_, Vec<u8>>(s, GZ, &gz[..gz.len() - 10], None);
            let mut out = Vec::new();
            let _ = h.tar.read_to_end(&mut out);
            assert!(matches!(h.finish(), Err(DecodeError::Read(_))));
        });
    }
}
