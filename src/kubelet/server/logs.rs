//! `GET /containerLogs/{ns}/{pod}/{container}`: the container's CRI log file as plain text, with
//! the kubelet's options. The filtering is pure ([`LogOptions`], [`LogFilter`]); the shell reads
//! the file on a blocking thread and, with `follow`, polls it until the container is gone.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Query options of a log request (kubelet names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    /// Unix seconds: only lines at or after this time.
    pub since: Option<u64>,
    pub limit_bytes: Option<u64>,
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v == "1")
}

impl LogOptions {
    /// Parses the query; `now` resolves `sinceSeconds`. Errors are the message of a 400.
    pub fn parse(q: &HashMap<String, String>, now: SystemTime) -> Result<Self, String> {
        let num = |name: &str| -> Result<Option<i64>, String> {
            q.get(name)
                .map(|v| v.parse::<i64>().map_err(|_| format!("{name}: invalid value {v:?}")))
                .transpose()
        };
        let tail_lines = match num("tailLines")? {
            Some(n) if n < 0 => return Err("tailLines: must be greater than or equal to 0".into()),
            n => n.map(|n| n as usize),
        };
        let limit_bytes = match num("limitBytes")? {
            Some(n) if n < 1 => return Err("limitBytes: must be greater than 0".into()),
            n => n.map(|n| n as u64),
        };
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let since = match (num("sinceSeconds")?, q.get("sinceTime")) {
            (Some(_), Some(_)) => {
                return Err("at most one of sinceTime or sinceSeconds may be specified".into());
            }
            (Some(s), None) if s < 1 => return Err("sinceSeconds: must be greater than 0".into()),
            (Some(s), None) => Some(now_s.saturating_sub(s as u64)),
            (None, Some(t)) => Some(
                crate::api::time::parse_rfc3339(t)
                    .ok_or_else(|| format!("sinceTime: invalid time {t:?}"))?
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
            ),
            (None, None) => None,
        };
        Ok(LogOptions {
            follow: flag(q, "follow"),
            previous: flag(q, "previous"),
            timestamps: flag(q, "timestamps"),
            tail_lines,
            since,
            limit_bytes,
        })
    }
}

/// One CRI record split into its fields.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses a CRI log line (without or with its newline); `None` if malformed.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    Some(Record { time, stream, partial: tag == b"P", content })
}

/// Which records a request wants and how they print. Times compare as strings: CRI timestamps
/// are fixed-width UTC.
#[derive(Debug)]
pub struct LogFilter {
    /// Only records at or after this timestamp.
    pub from: Option<String>,
    /// Only records before this timestamp (`previous`: the runs before the current one).
    pub until: Option<String>,
    pub timestamps: bool,
    /// Bytes still allowed (`limitBytes`).
    pub remaining: Option<u64>,
}

/// The CRI timestamp of a whole second.
pub fn cri_time(unix_secs: u64) -> String {
    crate::runtime::logfmt::rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(unix_secs))
}

impl LogFilter {
    pub fn new(opts: &LogOptions, previous_run_before: Option<u64>) -> Self {
        LogFilter {
            from: opts.since.map(cri_time),
            until: previous_run_before.map(cri_time),
            timestamps: opts.timestamps,
            remaining: opts.limit_bytes,
        }
    }

    /// Whether the record is selected (times only).
    pub fn selects(&self, r: &Record<'_>) -> bool {
        self.from.as_deref().is_none_or(|f| r.time >= f) && self.until.as_deref().is_none_or(|u| r.time < u)
    }

    /// Appends what `line` prints to `out`; returns false once `limitBytes` is used up.
    pub fn render(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        if self.remaining == Some(0) {
            return false;
        }
        let Some(r) = parse_record(line) else { return true };
        if !self.selects(&r) {
            return true;
        }
        let start = out.len();
        if self.timestamps {
            out.extend_from_slice(r.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(r.content);
        if !r.partial {
            out.push(b'\n');
        }
        if let Some(left) = &mut self.remaining {
            let n = (out.len() - start) as u64;
            if n >= *left {
                out.truncate(start + *left as usize);
                *left = 0;
                return false;
            }
            *left -= n;
        }
        true
    }
}

/// The last `n` complete lines of `data` (all of them if fewer).
pub fn tail(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &data[data.len()..];
    }
    let mut seen = 0;
    let end = if data.ends_with(b"\n") { data.len() - 1 } else { data.len() };
    for (i, b) in data[..end].iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

/// What the streaming reader needs to know about the container while following.
pub trait Liveness: Send + 'static {
    /// True while more output may come.
    fn alive(&self) -> bool;
}

/// Streams the log at `path` into `tx` (chunks of rendered text) until the end of the file, or,
/// with `follow`, until `live` says the container is gone or the receiver is dropped. Runs on a
/// blocking thread.
pub fn stream(
    path: PathBuf,
    opts: LogOptions,
    mut filter: LogFilter,
    live: impl Liveness,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    let file = loop {
        match std::fs::File::open(&path) {
            Ok(f) => break f,
            Err(_) if opts.follow && live.alive() && !tx.is_closed() => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(_) => return,
        }
    };
    let mut reader = BufReader::new(file);
    if let Some(n) = opts.tail_lines {
        let mut all = Vec::new();
        if std::io::Read::read_to_end(&mut reader, &mut all).is_err() {
            return;
        }
        // Keep only complete lines; a trailing partial one is read again when followed.
        let complete = all.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let mut out = Vec::new();
        for line in tail(&all[..complete], n).split_inclusive(|b| *b == b'\n') {
            if !filter.render(line, &mut out) {
                let _ = tx.blocking_send(out);
                return;
            }
        }
        if !out.is_empty() && tx.blocking_send(out).is_err() {
            return;
        }
        if reader.seek(SeekFrom::Start(complete as u64)).is_err() {
            return;
        }
    }
    let mut line = Vec::new();
    loop {
        let mut out = Vec::new();
        loop {
            line.clear();
            let n = match reader.read_until(b'\n', &mut line) {
                Ok(n) => n,
                Err(_) => return,
            };
            if n == 0 {
                break;
            }
            if !line.ends_with(b"\n") {
                // A line still being written: read it again once complete.
                let _ = reader.seek_relative(-(n as i64));
                break;
            }
            if !filter.render(&line, &mut out) {
                let _ = tx.blocking_send(out);
                return;
            }
            if out.len() > 32 * 1024 {
                break;
            }
        }
        let read_more = out.len() > 32 * 1024;
        if !out.is_empty() && tx.blocking_send(out).is_err() {
            return;
        }
        if read_more {
            continue;
        }
        if !opts.follow || tx.is_closed() || !live.alive() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn parses_options_like_the_kubelet() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let o = LogOptions::parse(&q(&[("follow", "true"), ("tailLines", "2"), ("sinceSeconds", "10")]), now)
            .unwrap();
        assert_eq!(
            o,
            LogOptions { follow: true, tail_lines: Some(2), since: Some(990), ..Default::default() }
        );
        let o = LogOptions::parse(&q(&[("sinceTime", "1970-01-01T00:01:40Z"), ("limitBytes", "5")]), now)
            .unwrap();
        assert_eq!((o.since, o.limit_bytes), (Some(100), Some(5)));
        assert!(LogOptions::parse(&q(&[("tailLines", "-1")]), now).is_err());
        assert!(
            LogOptions::parse(&q(&[("sinceSeconds", "1"), ("sinceTime", "1970-01-01T00:00:00Z")]), now)
                .is_err()
        );
        assert!(LogOptions::parse(&q(&[("limitBytes", "x")]), now).is_err());
    }

    #[test]
    fn renders_records_with_options() {
        let log = b"1970-01-01T00:00:05.000000000Z stdout F one\n\
1970-01-01T00:00:06.000000000Z stderr P par\n\
1970-01-01T00:00:06.100000000Z stderr F tial\n\
1970-01-01T00:00:09.000000000Z stdout F three\n";
        let render = |opts: &LogOptions, before: Option<u64>| {
            let mut f = LogFilter::new(opts, before);
            let mut out = Vec::new();
            for line in log.split_inclusive(|b| *b == b'\n') {
                if !f.render(line, &mut out) {
                    break;
                }
            }
            String::from_utf8(out).unwrap()
        };
        assert_eq!(render(&LogOptions::default(), None), "one\npartial\nthree\n");
        assert_eq!(render(&LogOptions { since: Some(6), ..Default::default() }, None), "partial\nthree\n");
        assert_eq!(render(&LogOptions::default(), Some(9)), "one\npartial\n");
        assert_eq!(render(&LogOptions { limit_bytes: Some(6), ..Default::default() }, None), "one\npa");
        let ts = render(&LogOptions { timestamps: true, ..Default::default() }, Some(6));
        assert_eq!(ts, "1970-01-01T00:00:05.000000000Z one\n");
        assert_eq!(tail(log, 1), &b"1970-01-01T00:00:09.000000000Z stdout F three\n"[..]);
        assert_eq!(tail(log, 9), &log[..]);
        assert!(tail(log, 0).is_empty());
        assert_eq!(parse_record(b"bad"), None);
    }
}
