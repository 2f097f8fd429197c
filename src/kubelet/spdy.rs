//! The SPDY/3.1 subset `kubectl port-forward` speaks (as moby/spdystream does): frame encoding and
//! decoding, and header blocks compressed with zlib primed with the SPDY/3 dictionary (one
//! compression stream per direction per connection, sync-flushed per frame). Pure: bytes in, bytes
//! out; the connection logic is in `server::portforward`.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Errors decoding or encoding SPDY.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY: unsupported version {0}")]
    Version(u16),
    #[error("SPDY: {frame} frame too short")]
    Short { frame: &'static str },
    #[error("SPDY: header block: {0}")]
    HeaderBlock(String),
    #[error("SPDY: header compression: {0}")]
    Zlib(String),
}

/// Control frame types.
pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

/// FLAG_FIN on data and SYN frames: the sender half-closes the stream.
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes we send.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_CANCEL: u32 = 5;

/// A decoded frame (header blocks still compressed: they must be inflated in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
    SynStream {
        stream: u32,
        associated: u32,
        flags: u8,
        headers: Vec<u8>,
    },
    SynReply {
        stream: u32,
        flags: u8,
        headers: Vec<u8>,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_stream: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        flags: u8,
        headers: Vec<u8>,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown types: spdystream ignores them, so do we.
    Ignored {
        kind: u16,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes one frame from the front of `buf`: `Ok(None)` until a whole frame is there, else
/// the frame and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, SpdyError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let flags = buf[4];
    let len = (u32_at(buf, 4) & 0x00ff_ffff) as usize;
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let body = &buf[8..8 + len];
    let used = 8 + len;
    if buf[0] & 0x80 == 0 {
        let stream = u32_at(buf, 0) & 0x7fff_ffff;
        return Ok(Some((Frame::Data { stream, flags, data: body.to_vec() }, used)));
    }
    let version = u16::from_be_bytes([buf[0], buf[1]]) & 0x7fff;
    if version != 3 {
        return Err(SpdyError::Version(version));
    }
    let kind = u16::from_be_bytes([buf[2], buf[3]]);
    let need =
        |n: usize, frame: &'static str| if body.len() < n { Err(SpdyError::Short { frame }) } else { Ok(()) };
    let frame = match kind {
        SYN_STREAM => {
            need(10, "SYN_STREAM")?;
            Frame::SynStream {
                stream: u32_at(body, 0) & 0x7fff_ffff,
                associated: u32_at(body, 4) & 0x7fff_ffff,
                flags,
                headers: body[10..].to_vec(),
            }
        }
        SYN_REPLY => {
            need(4, "SYN_REPLY")?;
            Frame::SynReply { stream: u32_at(body, 0) & 0x7fff_ffff, flags, headers: body[4..].to_vec() }
        }
        RST_STREAM => {
            need(8, "RST_STREAM")?;
            Frame::RstStream { stream: u32_at(body, 0) & 0x7fff_ffff, status: u32_at(body, 4) }
        }
        PING => {
            need(4, "PING")?;
            Frame::Ping { id: u32_at(body, 0) }
        }
        GOAWAY => {
            need(8, "GOAWAY")?;
            Frame::GoAway { last_stream: u32_at(body, 0) & 0x7fff_ffff, status: u32_at(body, 4) }
        }
        HEADERS => {
            need(4, "HEADERS")?;
            Frame::Headers { stream: u32_at(body, 0) & 0x7fff_ffff, flags, headers: body[4..].to_vec() }
        }
        kind => Frame::Ignored { kind },
    };
    Ok(Some((frame, used)))
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(0x8003u16).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A data frame (at most 16 MiB − 1 of payload; callers send smaller chunks).
pub fn data(stream: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SYN_REPLY carrying an already compressed header block.
pub fn syn_reply(stream: u32, flags: u8, headers: &[u8]) -> Vec<u8> {
    let mut body = stream.to_be_bytes().to_vec();
    body.extend_from_slice(headers);
    control(SYN_REPLY, flags, &body)
}

/// A SYN_STREAM carrying an already compressed header block (tests play the client with it).
pub fn syn_stream(stream: u32, flags: u8, headers: &[u8]) -> Vec<u8> {
    let mut body = stream.to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(headers);
    control(SYN_STREAM, flags, &body)
}

pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
    let mut body = stream.to_be_bytes().to_vec();
    body.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &body)
}

pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

pub fn goaway(last_stream: u32) -> Vec<u8> {
    let mut body = last_stream.to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    control(GOAWAY, 0, &body)
}

/// Header names and values (names lower case; several values of one name NUL-joined).
pub type HeaderList = Vec<(String, String)>;

/// The uncompressed header block: u32 count, then length-prefixed names and values.
pub fn encode_header_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = (headers.len() as u32).to_be_bytes().to_vec();
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Parses an uncompressed header block.
pub fn decode_header_block(block: &[u8]) -> Result<HeaderList, SpdyError> {
    let bad = |what: &str| SpdyError::HeaderBlock(what.to_string());
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let end = at.checked_add(n).filter(|e| *e <= block.len()).ok_or_else(|| bad("truncated"))?;
        let s = &block[at..end];
        at = end;
        Ok(s)
    };
    let len = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = len(take(4)?);
    let mut out = Vec::new();
    for _ in 0..count {
        let n = len(take(4)?);
        let name = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("name is not UTF-8"))?;
        let n = len(take(4)?);
        let value = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad("value is not UTF-8"))?;
        out.push((name, value));
    }
    Ok(out)
}

/// The value of header `name` (first value if several).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or_default())
}

/// The SPDY/3 header-compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1): these
/// words, each preceded by its length as a big-endian u32, then [`DICTIONARY_TAIL`].
const DICTIONARY_WORDS: [&str; 62] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
];
const DICTIONARY_WORDS_2: [&str; 3] = ["set-cookie", "keep-alive", "origin"];
const DICTIONARY_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 \
Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found\
500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec \
00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,\
application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,\
utf-,*,enq=0.";

/// The dictionary bytes (1423 of them).
pub fn dictionary() -> Vec<u8> {
    let mut out = Vec::with_capacity(1423);
    for w in DICTIONARY_WORDS.iter().chain(&DICTIONARY_WORDS_2) {
        out.extend_from_slice(&(w.len() as u32).to_be_bytes());
        out.extend_from_slice(w.as_bytes());
    }
    out.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    out
}

/// One direction's header compression state (zlib stream with the dictionary).
pub struct HeaderCompressor {
    z: Compress,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::best(), true);
        // Cannot fail on a fresh stream.
        let _ = z.set_dictionary(&dictionary());
        HeaderCompressor { z }
    }

    /// Compresses one header block, sync-flushed so the peer can inflate it at once.
    pub fn compress(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let input = encode_header_block(headers);
        let mut out = Vec::with_capacity(input.len() + 64);
        let start = self.z.total_in();
        loop {
            let consumed = (self.z.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.z
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            let done = (self.z.total_in() - start) as usize == input.len();
            // A sync flush is complete once zlib left room in the output buffer.
            if done && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The other direction: inflates header blocks in order, priming the dictionary when zlib
/// asks for it.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        HeaderDecompressor { z: Decompress::new(true) }
    }

    /// Inflates one compressed header block and parses it.
    pub fn decompress(&mut self, block: &[u8]) -> Result<HeaderList, SpdyError> {
        let zerr = |e: flate2::DecompressError| SpdyError::Zlib(e.to_string());
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.z.total_in();
        loop {
            let consumed = (self.z.total_in() - start) as usize;
            if out.capacity() - out.len() < 256 {
                out.reserve(1024);
            }
            match self.z.decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(&dictionary()).map_err(zerr)?;
                    continue;
                }
                Err(e) => return Err(zerr(e)),
            }
            let consumed = (self.z.total_in() - start) as usize;
            if consumed == block.len() && out.len() < out.capacity() {
                break;
            }
        }
        decode_header_block(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderList {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
        // zlib's dictionary id (adler32), as the peer's inflate checks it.
        let mut z = Decompress::new(true);
        let mut c = Compress::new(Compression::best(), true);
        c.set_dictionary(&d).unwrap();
        let mut out = Vec::with_capacity(64);
        c.compress_vec(b"x", &mut out, FlushCompress::Sync).unwrap();
        let mut plain = Vec::with_capacity(8);
        let err = z.decompress_vec(&out, &mut plain, FlushDecompress::Sync).unwrap_err();
        assert_eq!(err.needs_dictionary(), Some(0xe3c6_a7c2));
    }

    #[test]
    fn header_blocks_round_trip_across_frames() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        let first = h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]);
        let second = h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]);
        let a = c.compress(&first).unwrap();
        let b = c.compress(&second).unwrap();
        assert_eq!(d.decompress(&a).unwrap(), first);
        assert_eq!(d.decompress(&b).unwrap(), second);
        assert_eq!(header(&second, "streamType"), Some("data"));
    }

    #[test]
    fn frames_round_trip() {
        let mut c = HeaderCompressor::new();
        let block = c.compress(&h(&[("a", "b")])).unwrap();
        let mut wire = syn_stream(1, FLAG_FIN, &block);
        wire.extend(data(3, FLAG_FIN, b"hello"));
        wire.extend(ping(7));
        wire.extend(rst_stream(3, RST_CANCEL));
        wire.extend(syn_reply(1, 0, &block));
        wire.extend(goaway(5));
        let mut at = 0;
        let mut frames = Vec::new();
        while let Some((f, n)) = decode(&wire[at..]).unwrap() {
            frames.push(f);
            at += n;
        }
        assert_eq!(at, wire.len());
        assert_eq!(
            frames[0],
            Frame::SynStream { stream: 1, associated: 0, flags: FLAG_FIN, headers: block.clone() }
        );
        assert_eq!(frames[1], Frame::Data { stream: 3, flags: FLAG_FIN, data: b"hello".to_vec() });
        assert_eq!(frames[2], Frame::Ping { id: 7 });
        assert_eq!(frames[3], Frame::RstStream { stream: 3, status: RST_CANCEL });
        assert_eq!(frames[4], Frame::SynReply { stream: 1, flags: 0, headers: block });
        assert_eq!(frames[5], Frame::GoAway { last_stream: 5, status: 0 });
        // Partial input waits for more.
        assert_eq!(decode(&wire[..5]).unwrap(), None);
        assert_eq!(decode(&data(1, 0, b"abc")[..10]).unwrap(), None);
    }

    #[test]
    fn settings_and_window_updates_are_ignored_and_bad_input_refused() {
        let settings = control(SETTINGS, 0, &[0, 0, 0, 0]);
        assert_eq!(decode(&settings).unwrap(), Some((Frame::Ignored { kind: SETTINGS }, 12)));
        let mut v2 = control(PING, 0, &[0, 0, 0, 1]);
        v2[1] = 2;
        assert!(matches!(decode(&v2), Err(SpdyError::Version(2))));
        assert!(matches!(decode(&control(RST_STREAM, 0, &[0])), Err(SpdyError::Short { .. })));
        assert!(decode_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
    }
}
