//! The Kubernetes CRI log format: `<RFC3339Nano time> <stream> <P|F> <content>\n`, one record per
//! line; lines longer than the buffer are split into partial (`P`) records. Pure logic.

use std::time::{SystemTime, UNIX_EPOCH};

/// Maximum content of one record before it is split.
pub const MAX_RECORD: usize = 16 * 1024;

/// Formats a UNIX time as RFC 3339 with nanoseconds in UTC (`2016-10-06T00:17:09.669794202Z`).
pub fn rfc3339_nanos(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Splits output of one stream into CRI records, keeping an unfinished line between calls.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; returns complete records as (partial, content) without the newline.
    pub fn feed(&mut self, data: &[u8]) -> Vec<(bool, Vec<u8>)> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            out.push((false, line[..line.len() - 1].to_vec()));
        }
        while self.pending.len() >= MAX_RECORD {
            let chunk: Vec<u8> = self.pending.drain(..MAX_RECORD).collect();
            out.push((true, chunk));
        }
        out
    }

    /// Flushes what remains at end of stream (as a full record).
    pub fn finish(&mut self) -> Option<(bool, Vec<u8>)> {
        (!self.pending.is_empty()).then(|| (false, std::mem::take(&mut self.pending)))
    }
}

/// One CRI log record.
pub fn record(time: SystemTime, stream: &str, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{} {stream} {} ", rfc3339_nanos(time), if partial { "P" } else { "F" }).into_bytes();
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_timestamps() {
        let t = UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202);
        assert_eq!(rfc3339_nanos(t), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn splits_lines_and_partials() {
        let mut s = LineSplitter::default();
        assert_eq!(s.feed(b"hello\nwor"), vec![(false, b"hello".to_vec())]);
        assert_eq!(s.feed(b"ld\n"), vec![(false, b"world".to_vec())]);
        let big = vec![b'x'; MAX_RECORD + 5];
        let recs = s.feed(&big);
        assert_eq!(recs.len(), 1);
        assert!(recs[0].0);
        assert_eq!(s.finish(), Some((false, vec![b'x'; 5])));
        let line = record(UNIX_EPOCH, "stdout", false, b"hi");
        assert_eq!(line, b"1970-01-01T00:00:00.000000000Z stdout F hi\n".to_vec());
    }
}
