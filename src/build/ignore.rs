//! `.dockerignore` with Docker's exact semantics (moby/patternmatcher and its `ignorefile`):
//! not gitignore. Patterns are cleaned like Go's `filepath.Clean` and anchored at the context
//! root (`/foo` ≡ `foo`); `*` and `?` stay within one path component, `**` spans any number of
//! them; `!` re-includes; the last matching pattern wins; a pattern matching a parent
//! directory excludes everything beneath it. Pure.

use regex::Regex;

/// Why an ignore file could not be used.
#[derive(Debug, thiserror::Error)]
#[error(".dockerignore line {line}: bad pattern {pattern:?}")]
pub struct IgnoreError {
    pub line: usize,
    pub pattern: String,
}

#[derive(Debug, Clone)]
struct Pattern {
    regex: Regex,
    exclusion: bool,
    text: String,
}

/// The compiled patterns of one `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Reads a `.dockerignore`'s text: a BOM stripped, `#` lines skipped, blanks trimmed.
    pub fn parse(text: &str) -> Result<Matcher, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
            }
            if p.is_empty() {
                continue;
            }
            let mut cleaned = clean(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let regex =
                compile(&cleaned).ok_or_else(|| IgnoreError { line: i + 1, pattern: raw.to_string() })?;
            patterns.push(Pattern { regex, exclusion, text: cleaned });
        }
        Ok(Matcher { patterns })
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any `!` pattern exists (then excluded directories must still be walked).
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative to the context root, `/`-separated) is excluded: the last pattern
    /// matching it or one of its parent directories decides.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion pattern cannot change an unmatched path, nor an exclusion a matched one.
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.regex.is_match(&path);
            if !hit {
                for i in 0..parents.len() {
                    if p.regex.is_match(&parents[..=i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// The cleaned pattern texts, in order (`!` prefix for exceptions).
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| if p.exclusion { format!("!{}", p.text) } else { p.text.clone() })
            .collect()
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// The pattern as a regular expression, the way patternmatcher translates it.
fn compile(pattern: &str) -> Option<Regex> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        if in_class {
            match c {
                ']' => {
                    in_class = false;
                    re.push(']');
                }
                '\\' => {
                    i += 1;
                    re.push_str(&regex::escape(&chars.get(i)?.to_string()));
                }
                '[' | '&' | '~' => re.push_str(&regex::escape(&c.to_string())),
                _ => re.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    i += 1;
                    // A `/` right after `**` is part of it.
                    if chars.get(i + 1) == Some(&'/') {
                        i += 1;
                    }
                    if i + 1 >= chars.len() {
                        re.push_str(".*");
                    } else {
                        re.push_str("(.*/)?");
                    }
                } else {
                    re.push_str("[^/]*");
                }
            }
            '?' => re.push_str("[^/]"),
            '\\' => {
                i += 1;
                re.push_str(&regex::escape(&chars.get(i)?.to_string()));
            }
            '[' => {
                in_class = true;
                re.push('[');
                if chars.get(i + 1) == Some(&'^') || chars.get(i + 1) == Some(&'!') {
                    i += 1;
                    re.push('^');
                }
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    if in_class {
        return None;
    }
    re.push('$');
    Regex::new(&re).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Matcher {
        Matcher::parse(text).unwrap()
    }

    #[test]
    fn anchored_at_the_root_not_gitignore() {
        let p = m("foo\n");
        assert!(p.excluded("foo"));
        assert!(p.excluded("foo/bar"), "a matching parent excludes the subtree");
        assert!(!p.excluded("a/foo"), "unlike gitignore, foo is only ./foo");
        let p = m("/foo/\n./bar\n");
        assert_eq!(p.patterns(), ["foo", "bar"], "leading / and ./ and trailing / cleaned");
        assert!(p.excluded("foo/x"));
        assert!(p.excluded("bar"));
    }

    #[test]
    fn stars_and_question_marks() {
        let p = m("*.md\n");
        assert!(p.excluded("README.md"));
        assert!(!p.excluded("docs/README.md"), "* does not cross /");
        let p = m("**/*.md\n");
        assert!(p.excluded("README.md"), "**/ matches zero directories");
        assert!(p.excluded("a/b/c.md"));
        let p = m("a/**/b\n");
        assert!(p.excluded("a/b"));
        assert!(p.excluded("a/x/y/b"));
        assert!(!p.excluded("a/xb"));
        let p = m("dir/**\n");
        assert!(p.excluded("dir/x/y"));
        assert!(!p.excluded("dirx"));
        let p = m("fil?.txt\n");
        assert!(p.excluded("file.txt"));
        assert!(!p.excluded("fil/.txt"));
        let p = m("[a-c].txt\n[!x]y\n");
        assert!(p.excluded("b.txt"));
        assert!(!p.excluded("d.txt"));
        assert!(p.excluded("zy"));
        assert!(!p.excluded("xy"));
        let p = m("\\*x\n");
        assert!(p.excluded("*x"));
        assert!(!p.excluded("ax"));
        assert!(Matcher::parse("[abc\n").is_err());
    }

    #[test]
    fn exceptions_and_order() {
        let p = m("*.md\n!README.md\n");
        assert!(p.excluded("CHANGES.md"));
        assert!(!p.excluded("README.md"));
        let p = m("!README.md\n*.md\n");
        assert!(p.excluded("README.md"), "the last match wins");
        let p = m("docs\n!docs/keep.txt\n");
        assert!(p.excluded("docs/other"));
        assert!(!p.excluded("docs/keep.txt"), "an exception re-includes inside an excluded dir");
        assert!(p.has_exclusions());
        let p = m("\u{feff}# comment\n  \n   spaced   \n! spaced2\n");
        assert_eq!(p.patterns(), ["spaced", "!spaced2"]);
        assert!(!m("").has_exclusions());
    }

    #[test]
    fn comments_only_in_column_one() {
        let p = m(" #notacomment\n");
        assert!(p.excluded("#notacomment"));
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("a//b/./c/"), "a/b/c");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("a/.."), ".");
    }
}
