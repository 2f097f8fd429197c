//! The Kubernetes CRI log format: `<RFC3339Nano time> <stream> <P|F> <content>\n`. The pure,
//! `core`-only part lives in [`cri`] (shared with the freestanding `rkube-monitor`); this module
//! adds the `std` conveniences the runtime uses.

use std::time::{SystemTime, UNIX_EPOCH};

mod cri;

pub use cri::{LineSplitter, MAX_RECORD, RecordHeader, TIMESTAMP_LEN};

/// Seconds and nanoseconds since the UNIX epoch (zero before it).
fn since_epoch(time: SystemTime) -> (i64, u32) {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

/// Formats a time as RFC 3339 with nanoseconds in UTC (`2016-10-06T00:17:09.669794202Z`).
pub fn rfc3339_nanos(time: SystemTime) -> String {
    let (secs, nanos) = since_epoch(time);
    String::from_utf8_lossy(&cri::timestamp(secs, nanos)).into_owned()
}

/// One CRI log record.
pub fn record(time: SystemTime, stream: &str, partial: bool, content: &[u8]) -> Vec<u8> {
    let (secs, nanos) = since_epoch(time);
    let header = RecordHeader::new(secs, nanos, stream, partial);
    let mut out = Vec::with_capacity(header.as_bytes().len() + content.len() + 1);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_system_times() {
        let t = UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202);
        assert_eq!(rfc3339_nanos(t), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let line = record(UNIX_EPOCH, "stdout", false, b"hi");
        assert_eq!(line, b"1970-01-01T00:00:00.000000000Z stdout F hi\n".to_vec());
    }
}
