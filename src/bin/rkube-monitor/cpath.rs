//! NUL-terminated paths built on the stack.

use core::ffi::CStr;

/// Longest path the monitor builds (`PATH_MAX`).
const CAPACITY: usize = 4096;

/// A path assembled from parts, always NUL-terminated.
pub struct CPath {
    bytes: [u8; CAPACITY],
    len: usize,
}

impl CPath {
    /// `base` followed by each of `parts`; `None` if too long or containing NUL.
    pub fn join(base: &[u8], parts: &[&[u8]]) -> Option<CPath> {
        let mut path = CPath { bytes: [0; CAPACITY], len: 0 };
        for part in core::iter::once(&base).chain(parts) {
            if part.contains(&0) || path.len + part.len() >= CAPACITY {
                return None;
            }
            path.bytes[path.len..path.len + part.len()].copy_from_slice(part);
            path.len += part.len();
        }
        Some(path)
    }

    /// The path as a C string.
    pub fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.bytes[..=self.len]).unwrap_or(c"")
    }
}

/// Decimal digits of `value` (at most 10), for building names like `exit.tmp<pid>`.
pub fn decimal(value: u32, out: &mut [u8; 10]) -> &[u8] {
    let mut rest = value;
    let mut start = out.len();
    loop {
        start -= 1;
        out[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return &out[start..];
        }
    }
}

/// Parses a non-negative decimal number.
pub fn parse_decimal(text: &[u8]) -> Option<i32> {
    if text.is_empty() || text.len() > 9 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0, |n, d| n * 10 + i32::from(d - b'0')))
}
