//! How a container's exit is reported: the wait status decoded into exit code and signal, the
//! cgroup's OOM-kill counter, and the `exit.json` text (the JSON of [`crate::runtime::state::ExitInfo`]).
//! Pure and `core`-only: the freestanding `rkube-monitor` includes this file as well.

/// Exit code and terminating signal of a wait status (`128 + signal` when killed by a signal);
/// `None` for a stop or continue report.
pub fn decode_wait_status(status: i32) -> Option<(i32, Option<i32>)> {
    let signal = status & 0x7f;
    match signal {
        0 => Some(((status >> 8) & 0xff, None)),
        0x7f => None,
        _ if status == 0xffff => None,
        _ => Some((128 + signal, Some(signal))),
    }
}

/// The `oom_kill` count in a cgroup's `memory.events` (v2) or `memory.oom_control` (v1).
pub fn oom_kills(content: &[u8]) -> u64 {
    content
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"oom_kill "))
        .map(|digits| {
            digits
                .iter()
                .take_while(|d| d.is_ascii_digit())
                .fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0')))
        })
        .unwrap_or(0)
}

/// The text of `exit.json`, formatted without allocating.
#[derive(Debug, Clone, Copy)]
pub struct ExitJson {
    bytes: [u8; 80],
    len: usize,
}

impl ExitJson {
    /// `{"code":…,"signal":…|null,"oom_killed":true|false}`.
    pub fn new(code: i32, signal: Option<i32>, oom_killed: bool) -> Self {
        let mut json = ExitJson { bytes: [0; 80], len: 0 };
        json.push(b"{\"code\":");
        json.push_int(code);
        json.push(b",\"signal\":");
        match signal {
            Some(signal) => json.push_int(signal),
            None => json.push(b"null"),
        }
        json.push(b",\"oom_killed\":");
        json.push(if oom_killed { b"true}" } else { b"false}" });
        json
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn push(&mut self, text: &[u8]) {
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text);
        self.len += text.len();
    }

    fn push_int(&mut self, value: i32) {
        if value < 0 {
            self.push(b"-");
        }
        let mut digits = [0u8; 10];
        let mut rest = value.unsigned_abs();
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.push(&digits[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::ExitInfo;

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(decode_wait_status(0), Some((0, None)));
        assert_eq!(decode_wait_status(3 << 8), Some((3, None)));
        assert_eq!(decode_wait_status(9), Some((137, Some(9))));
        assert_eq!(decode_wait_status(15 | 0x80), Some((143, Some(15))), "core dump flag");
        assert_eq!(decode_wait_status((19 << 8) | 0x7f), None, "stopped");
        assert_eq!(decode_wait_status(0xffff), None, "continued");
    }

    #[test]
    fn reads_oom_kill_counters() {
        assert_eq!(oom_kills(b"low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n"), 2);
        assert_eq!(oom_kills(b"oom_kill_disable 0\nunder_oom 0\noom_kill 17\n"), 17);
        assert_eq!(oom_kills(b"oom_kill_disable 0\nunder_oom 0\n"), 0);
        assert_eq!(oom_kills(b""), 0);
    }

    #[test]
    fn exit_json_matches_the_state_format() {
        for (code, signal, oom_killed) in [
            (0, None, false),
            (3, None, true),
            (137, Some(9), true),
            (-1, None, false),
            (i32::MIN, Some(i32::MAX), false),
        ] {
            let expected = serde_json::to_vec(&ExitInfo { code, signal, oom_killed }).unwrap();
            let ours = ExitJson::new(code, signal, oom_killed);
            assert_eq!(ours.as_bytes(), &expected[..], "{}", String::from_utf8_lossy(&expected));
            let parsed: ExitInfo = serde_json::from_slice(ours.as_bytes()).unwrap();
            assert_eq!(parsed, ExitInfo { code, signal, oom_killed });
        }
    }
}
