//! Layer compression: gzip (multi-member), zstd and uncompressed tar, chosen from the media type and
//! checked against the stream's magic bytes.

use std::io::{self, BufReader, Read};

/// Size of the read buffer in front of decoders and the tar parser.
pub const STREAM_BUFFER: usize = 1 << 20;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Why a layer's compression could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("layer media type {media_type:?} says {declared:?} but the data starts like {found:?}")]
    Mismatch { media_type: String, declared: Compression, found: Compression },
    #[error("reading the start of the layer stream: {0}")]
    Read(#[source] io::Error),
}

impl Compression {
    /// What the media type declares; `None` for media types that do not say (e.g. unknown vendor types),
    /// an error for ones we cannot handle (encrypted layers).
    pub fn from_media_type(media_type: &str) -> Result<Option<Compression>, CompressionError> {
        let mt = media_type.trim();
        if mt.contains("encrypted") {
            return Err(CompressionError::UnsupportedMediaType(mt.into()));
        }
        Ok(if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with("+zstd") || mt.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with(".tar") || mt.ends_with("layer.v1.tar") {
            Some(Compression::None)
        } else {
            None
        })
    }

    /// What the first bytes of a stream look like.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Decides from the declared media type and the sniffed magic. The magic wins when it names a
    /// compression (as containerd does); a compressed media type with uncompressed-looking data is refused.
    pub fn decide(media_type: &str, head: &[u8]) -> Result<Compression, CompressionError> {
        let declared = Compression::from_media_type(media_type)?;
        let found = Compression::sniff(head);
        match (declared, found) {
            (Some(d @ (Compression::Gzip | Compression::Zstd)), Compression::None) => {
                Err(CompressionError::Mismatch { media_type: media_type.into(), declared: d, found })
            }
            (_, found) => Ok(found),
        }
    }
}

/// Wraps a raw (possibly compressed) layer stream in the right decoder, yielding the tar bytes.
///
/// The returned reader drains the compressed stream through gzip's CRC/ISIZE trailer or zstd's frame
/// checksum when read to EOF; read it to EOF before trusting the result.
pub fn decompress<'a, R: Read + 'a>(
    media_type: &str,
    mut raw: R,
) -> Result<(Compression, Box<dyn Read + 'a>), CompressionError> {
    let head = read_head(&mut raw, ZSTD_MAGIC.len()).map_err(CompressionError::Read)?;
    let kind = Compression::decide(media_type, &head)?;
    let buffered = BufReader::with_capacity(STREAM_BUFFER, io::Cursor::new(head).chain(raw));
    let reader: Box<dyn Read + 'a> = match kind {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(CompressionError::Read)?)
        }
    };
    Ok((kind, reader))
}

/// Reads up to `n` bytes (fewer only at EOF), however short the individual reads are.
fn read_head<R: Read>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const OCI_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const OCI_ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    const DOCKER_GZ: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_all(media_type: &str, raw: &[u8]) -> Result<Vec<u8>, String> {
        let (_, mut r) = decompress(media_type, raw).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn media_types_map_to_compression() {
        assert_eq!(Compression::from_media_type(OCI_GZ).unwrap(), Some(Compression::Gzip));
        assert_eq!(Compression::from_media_type(DOCKER_GZ).unwrap(), Some(Compression::Gzip));
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")
                .unwrap(),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_media_type(OCI_ZST).unwrap(), Some(Compression::Zstd));
        assert_eq!(Compression::from_media_type(OCI_TAR).unwrap(), Some(Compression::None));
        assert_eq!(Compression::from_media_type("application/x-whatever").unwrap(), None);
        assert!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted").is_err()
        );
    }

    #[test]
    fn decodes_gzip_multi_member_zstd_and_plain() {
        let data = b"hello tar world ".repeat(5000);
        let mut two_members = gzip(&data[..1000]);
        two_members.extend(gzip(&data[1000..]));
        assert_eq!(read_all(OCI_GZ, &two_members).unwrap(), data);
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(read_all(OCI_ZST, &zst).unwrap(), data);
        assert_eq!(read_all(OCI_TAR, &data).unwrap(), data);
    }

    #[test]
    fn magic_wins_over_media_type_but_compressed_type_needs_compressed_data() {
        let data = b"plain bytes".repeat(100);
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(read_all(OCI_GZ, &zst).unwrap(), data, "zstd data under a gzip type");
        assert_eq!(read_all(OCI_TAR, &gzip(&data)).unwrap(), data, "gzip data under the plain type");
        let err = read_all(OCI_GZ, &data).unwrap_err();
        assert!(err.contains("says Gzip"), "{err}");
    }

    #[test]
    fn truncated_gzip_fails_at_eof() {
        let data = b"0123456789".repeat(10_000);
        let gz = gzip(&data);
        assert!(read_all(OCI_GZ, &gz[..gz.len() - 6]).is_err());
    }
}
