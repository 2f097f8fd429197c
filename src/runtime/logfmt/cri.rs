//! The Kubernetes CRI log format, `<RFC3339Nano UTC> <stream> <P|F> <content>\n`: one record per
//! line, a line longer than [`MAX_RECORD`] split into partial (`P`) records ended by a full (`F`)
//! one. Pure and `core`-only: the freestanding `rkube-monitor` includes this file as well.

/// Maximum content of one record before it is split.
pub const MAX_RECORD: usize = 16 * 1024;

/// Length of an RFC 3339 UTC timestamp with nanoseconds (`2016-10-06T00:17:09.669794202Z`).
pub const TIMESTAMP_LEN: usize = 30;

/// Longest stream name a record header holds.
const MAX_STREAM: usize = 16;

/// Formats seconds and nanoseconds since the UNIX epoch as RFC 3339 with nanoseconds in UTC.
pub fn timestamp(secs: i64, nanos: u32) -> [u8; TIMESTAMP_LEN] {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    let fields = [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, rem / 3600),
        (14, 2, rem % 3600 / 60),
        (17, 2, rem % 60),
        (20, 9, i64::from(nanos)),
    ];
    for (at, width, value) in fields {
        put_digits(&mut out[at..at + width], value.unsigned_abs());
    }
    out
}

/// Writes the low decimal digits of `value` into `out`, zero-padded to its length.
fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The text before a record's content: `<timestamp> <stream> <P|F> `.
#[derive(Debug, Clone, Copy)]
pub struct RecordHeader {
    bytes: [u8; TIMESTAMP_LEN + MAX_STREAM + 4],
    len: usize,
}

impl RecordHeader {
    /// The header of a record of `stream` (`stdout` or `stderr`) at the given time.
    pub fn new(secs: i64, nanos: u32, stream: &str, partial: bool) -> Self {
        let mut bytes = [b' '; TIMESTAMP_LEN + MAX_STREAM + 4];
        bytes[..TIMESTAMP_LEN].copy_from_slice(&timestamp(secs, nanos));
        let stream = &stream.as_bytes()[..stream.len().min(MAX_STREAM)];
        let tag = TIMESTAMP_LEN + 1 + stream.len() + 1;
        bytes[TIMESTAMP_LEN + 1..tag - 1].copy_from_slice(stream);
        bytes[tag] = if partial { b'P' } else { b'F' };
        RecordHeader { bytes, len: tag + 2 }
    }

    /// The header text, ending with the space before the content.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Splits the output of one stream into record contents (without the newline), keeping an
/// unfinished line between calls. A line is cut into `P` records only when it grows past
/// [`MAX_RECORD`], so a line of exactly that length is still one `F` record.
pub struct LineSplitter {
    pending: [u8; MAX_RECORD],
    len: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter { pending: [0; MAX_RECORD], len: 0 }
    }
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(partial, content)` for every record they complete.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(bool, &[u8])) {
        while let Some(newline) = data.iter().position(|b| *b == b'\n') {
            self.append(&data[..newline], emit);
            emit(false, &self.pending[..self.len]);
            self.len = 0;
            data = &data[newline + 1..];
        }
        self.append(data, emit);
    }

    /// Emits what remains at end of stream as a full record.
    pub fn finish(&mut self, emit: &mut impl FnMut(bool, &[u8])) {
        if self.len > 0 {
            emit(false, &self.pending[..self.len]);
            self.len = 0;
        }
    }

    /// Adds bytes of the current line, emitting a full buffer as a partial record first.
    fn append(&mut self, mut part: &[u8], emit: &mut impl FnMut(bool, &[u8])) {
        while !part.is_empty() {
            if self.len == MAX_RECORD {
                emit(true, &self.pending);
                self.len = 0;
            }
            let n = (MAX_RECORD - self.len).min(part.len());
            self.pending[self.len..self.len + n].copy_from_slice(&part[..n]);
            self.len += n;
            part = &part[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(splitter: &mut LineSplitter, data: &[u8]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        splitter.feed(data, &mut |partial, content| out.push((partial, content.to_vec())));
        out
    }

    #[test]
    fn formats_timestamps() {
        assert_eq!(&timestamp(1_475_713_029, 669_794_202), b"2016-10-06T00:17:09.669794202Z");
        assert_eq!(&timestamp(0, 0), b"1970-01-01T00:00:00.000000000Z");
        assert_eq!(&timestamp(951_782_400, 0), b"2000-02-29T00:00:00.000000000Z");
        assert_eq!(&timestamp(4_102_444_799, 999_999_999), b"2099-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn headers_name_stream_and_tag() {
        assert_eq!(
            RecordHeader::new(0, 5, "stdout", false).as_bytes(),
            b"1970-01-01T00:00:00.000000005Z stdout F "
        );
        assert_eq!(
            RecordHeader::new(0, 0, "stderr", true).as_bytes(),
            b"1970-01-01T00:00:00.000000000Z stderr P "
        );
    }

    #[test]
    fn splits_lines_across_reads() {
        let mut s = LineSplitter::default();
        assert_eq!(records(&mut s, b"hello\nwor"), vec![(false, b"hello".to_vec())]);
        assert_eq!(records(&mut s, b"ld\n\nx"), vec![(false, b"world".to_vec()), (false, vec![])]);
        let mut rest = Vec::new();
        s.finish(&mut |p, c| rest.push((p, c.to_vec())));
        assert_eq!(rest, vec![(false, b"x".to_vec())]);
        s.finish(&mut |_, _| panic!("nothing left"));
    }

    #[test]
    fn long_lines_become_partial_records() {
        let mut s = LineSplitter::default();
        let mut line = vec![b'x'; 2 * MAX_RECORD + 5];
        line.push(b'\n');
        let got = records(&mut s, &line);
        let shape: Vec<(bool, usize)> = got.iter().map(|(p, c)| (*p, c.len())).collect();
        assert_eq!(shape, vec![(true, MAX_RECORD), (true, MAX_RECORD), (false, 5)]);
        // Exactly MAX_RECORD bytes, even when the newline arrives in a later read: one F record.
        assert!(records(&mut s, &vec![b'y'; MAX_RECORD]).is_empty());
        assert_eq!(records(&mut s, b"\n"), vec![(false, vec![b'y'; MAX_RECORD])]);
    }
}
