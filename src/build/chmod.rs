//! `COPY --chmod` modes, pure: octal (`0755`, at most `07777`) or, as BuildKit's Dockerfile
//! frontend accepts since 1.14, chmod(1)-style symbolic clauses (`u+x`, `u=rwx,go=rx`, `a-w`,
//! `+x`, `g=u`) applied to each copied file's own mode.
//!
//! Semantics follow BSD `setmode(3)` with a zero umask, as BuildKit's mode parser does: an empty
//! "who" means all classes; `=` clears the classes named (set-id bits included, not the sticky
//! bit) before setting; `X` sets execute only on directories and on files that already had an
//! execute bit before the clause list started; `s` touches set-id bits only when "who" is empty
//! or names `u`/`g`, `t` only with an empty "who" or one naming more than `o`; `u`/`g`/`o`
//! after an operator copy that class's current bits.

const SUID: u32 = 0o4000;
const SGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
const USER: u32 = 0o700;
const GROUP: u32 = 0o070;
const OTHER: u32 = 0o007;
const READ: u32 = 0o444;
const WRITE: u32 = 0o222;
const EXEC: u32 = 0o111;
/// What an empty "who" and `a` cover (`=` clears these; the sticky bit is not among them).
const STANDARD: u32 = SUID | SGID | USER | GROUP | OTHER;

/// One step of a symbolic mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Clear these bits.
    Clear(u32),
    /// Set these bits.
    Set(u32),
    /// Set these bits on a directory or an executable file (`X`).
    SetIfExec(u32),
    /// Copy class `from` (a shift: 6 user, 3 group, 0 other) into the classes of `to` (a mask of
    /// `USER`/`GROUP`/`OTHER`), adding (`+`), removing (`-`) or replacing (`=`) bits.
    Copy { from: u32, to: u32, op: char },
}

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An octal mode: every file and directory gets exactly these bits.
    Octal(u32),
    /// Symbolic clauses applied to each entry's own mode.
    Symbolic(Vec<Op>),
}

impl Chmod {
    /// Parses a `--chmod` value; the error is one phrase for the caller's line.
    pub fn parse(s: &str) -> Result<Chmod, String> {
        let invalid = || format!("invalid --chmod {s:?}: octal up to 07777, or symbolic like u+x,go=rx");
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(invalid);
        }
        parse_symbolic(s).map(Chmod::Symbolic).ok_or_else(invalid)
    }

    /// The mode an entry whose current mode is `mode` (permission bits) gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let ops = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(ops) => ops,
        };
        let original = mode & 0o7777;
        let mut m = original;
        for op in ops {
            match *op {
                Op::Clear(bits) => m &= !bits,
                Op::Set(bits) => m |= bits,
                Op::SetIfExec(bits) => {
                    if is_dir || original & EXEC != 0 {
                        m |= bits;
                    }
                }
                Op::Copy { from, to, op } => {
                    let value = (m >> from) & 0o7;
                    for (class, shift) in [(USER, 6), (GROUP, 3), (OTHER, 0)] {
                        if to & class == 0 {
                            continue;
                        }
                        match op {
                            '+' => m |= value << shift,
                            '-' => m &= !(value << shift),
                            _ => m = (m & !(0o7 << shift)) | (value << shift),
                        }
                    }
                }
            }
        }
        m
    }
}

/// Parses comma-separated clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`.
fn parse_symbolic(s: &str) -> Option<Vec<Op>> {
    let mut ops = Vec::new();
    for clause in s.split(',') {
        let chars: Vec<char> = clause.chars().collect();
        let mut i = 0;
        let mut who = 0;
        while let Some(c) = chars.get(i) {
            who |= match c {
                'a' => STANDARD,
                'u' => SUID | USER,
                'g' => SGID | GROUP,
                'o' => OTHER,
                _ => break,
            };
            i += 1;
        }
        // At least one operator per clause.
        if !matches!(chars.get(i), Some('+' | '-' | '=')) {
            return None;
        }
        while let Some(&op) = chars.get(i) {
            if !matches!(op, '+' | '-' | '=') {
                return None;
            }
            i += 1;
            let mut perm = 0;
            let mut exec_if = 0;
            let mut sticky = 0;
            let mut copied = false;
            while let Some(&c) = chars.get(i) {
                match c {
                    'r' => perm |= READ,
                    'w' => perm |= WRITE,
                    'x' => perm |= EXEC,
                    'X' if op == '-' => perm |= EXEC,
                    'X' => exec_if |= EXEC,
                    's' if who == 0 || who & !OTHER != 0 => perm |= SUID | SGID,
                    't' if who == 0 || who & !OTHER != 0 => {
                        sticky = STICKY;
                        perm |= STICKY;
                    }
                    's' | 't' => {}
                    'u' | 'g' | 'o' => {
                        // A copy stands alone after its operator.
                        if perm != 0 || exec_if != 0 || copied {
                            return None;
                        }
                        let from = match c {
                            'u' => 6,
                            'g' => 3,
                            _ => 0,
                        };
                        let to = if who == 0 { USER | GROUP | OTHER } else { who & (USER | GROUP | OTHER) };
                        ops.push(Op::Copy { from, to, op });
                        copied = true;
                    }
                    _ => break,
                }
                i += 1;
            }
            if copied {
                continue;
            }
            // Which bits the clause may touch: its classes, else all of them.
            let scope = if who == 0 { STANDARD } else { who } | sticky;
            match op {
                '=' => {
                    ops.push(Op::Clear(if who == 0 { STANDARD } else { who }));
                    ops.push(Op::Set(scope & perm));
                }
                '+' => ops.push(Op::Set(scope & perm)),
                _ => ops.push(Op::Clear(scope & perm)),
            }
            if exec_if != 0 {
                ops.push(Op::SetIfExec(scope & exec_if));
            }
        }
    }
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(spec: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(spec).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal_modes() {
        assert_eq!(Chmod::parse("0755").unwrap(), Chmod::Octal(0o755));
        assert_eq!(apply("644", 0o777, true), 0o644, "octal replaces, directories included");
        assert_eq!(apply("4755", 0, false), 0o4755);
        assert!(Chmod::parse("10000").is_err(), "above 07777");
        assert!(Chmod::parse("0789").is_err(), "not octal");
    }

    #[test]
    fn symbolic_modes_as_chmod_does() {
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("+x", 0o644, false), 0o755, "empty who is all classes");
        assert_eq!(apply("a-w", 0o775, true), 0o555);
        assert_eq!(apply("u=rwx,go=rx", 0o600, false), 0o755);
        assert_eq!(apply("go=", 0o777, false), 0o700);
        assert_eq!(apply("=r", 0o4777, false), 0o444, "= clears set-id bits too");
        assert_eq!(apply("=r", 0o1777, false), 0o1444, "but not the sticky bit");
        assert_eq!(apply("u=rw", 0o4755, false), 0o655, "u= clears setuid");
        assert_eq!(apply("o-rwx,g+w", 0o755, true), 0o770);
        assert_eq!(apply("u+r-w", 0o200, false), 0o400, "several operators in one clause");
        assert_eq!(apply("u+s,g+s", 0o755, false), 0o6755);
        assert_eq!(apply("o+s", 0o755, false), 0o755, "s means nothing for o alone");
        assert_eq!(apply("+t", 0o755, true), 0o1755);
        assert_eq!(apply("o+t", 0o755, true), 0o755);
        assert_eq!(apply("+tx", 0o644, true), 0o1755);
        assert_eq!(apply("g=u", 0o740, false), 0o770, "copy a class");
        assert_eq!(apply("go-u", 0o777, false), 0o700);
        assert_eq!(apply("a+r,u+w", 0o000, false), 0o644);
    }

    #[test]
    fn capital_x_only_for_directories_and_executables() {
        assert_eq!(apply("a+X", 0o644, false), 0o644, "a plain file stays");
        assert_eq!(apply("a+X", 0o644, true), 0o755, "a directory gets it");
        assert_eq!(apply("a+X", 0o744, false), 0o755, "an executable gets it");
        // X looks at the mode before the clauses: u-x first does not hide it.
        assert_eq!(apply("u-x,go+X", 0o744, false), 0o655);
        assert_eq!(apply("a-X", 0o755, false), 0o644, "-X is -x");
        assert_eq!(apply("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(apply("u=rwX,go=rX", 0o600, false), 0o644);
    }

    #[test]
    fn invalid_modes() {
        for bad in ["", "u", "u+x,", ",u+x", "z+x", "u*x", "u+xq", "u+rg", "ug", "+", "rwx"] {
            let spec = Chmod::parse(bad);
            // `+` alone is valid chmod syntax that changes nothing; everything else is refused.
            if bad == "+" {
                assert_eq!(spec.unwrap().apply(0o640, false), 0o640);
                continue;
            }
            let err = spec.unwrap_err();
            assert!(err.starts_with("invalid --chmod"), "{bad}: {err}");
        }
    }
}
