//! Shell-style word processing of Dockerfile arguments, as BuildKit's `shell/lex.go` does it:
//! quotes removed, the escape character honoured, `$VAR`/`${VAR}` and the `-`, `:-`, `+`, `:+`,
//! `?`, `:?` forms substituted from the build's environment. Pure.

use std::collections::BTreeMap;

/// Why a word could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("unterminated quote in {0:?}")]
    UnterminatedQuote(String),
    #[error("missing '}}' in {0:?}")]
    MissingBrace(String),
    #[error("bad substitution in {0:?}")]
    BadSubstitution(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("unsupported modifier {modifier:?} in ${{{name}}} (only -, :-, +, :+, ?, :? are supported)")]
    UnsupportedModifier { name: String, modifier: String },
}

/// The variables a word is expanded with: a name is either set (maybe empty) or absent.
pub type Env = BTreeMap<String, String>;

/// Processes one word: quotes removed, escapes applied, variables substituted.
pub fn process_word(word: &str, env: &Env, escape: char) -> Result<String, LexError> {
    let mut lexer = Lexer { chars: word.chars().collect(), pos: 0, env, escape, word };
    let mut words = lexer.process(None, false)?;
    Ok(words.pop().map(|w| w.text).unwrap_or_default())
}

/// Processes a word and splits the result on unquoted whitespace (as the shell would):
/// `a "b c"` → `["a", "b c"]`.
pub fn process_words(word: &str, env: &Env, escape: char) -> Result<Vec<String>, LexError> {
    let mut lexer = Lexer { chars: word.chars().collect(), pos: 0, env, escape, word };
    Ok(lexer.process(None, true)?.into_iter().filter(|w| w.started).map(|w| w.text).collect())
}

#[derive(Default)]
struct Word {
    text: String,
    /// Something (maybe an empty quoted string) was seen.
    started: bool,
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a Env,
    escape: char,
    word: &'a str,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    /// Processes until end of input or (inside `${..:-word}`) the unquoted `stop` character.
    fn process(&mut self, stop: Option<char>, split: bool) -> Result<Vec<Word>, LexError> {
        let mut words = vec![Word::default()];
        loop {
            let Some(c) = self.peek() else {
                if stop.is_some() {
                    return Err(LexError::MissingBrace(self.word.into()));
                }
                break;
            };
            if Some(c) == stop {
                break;
            }
            let cur = words.last_mut().expect("never empty");
            if split && c.is_whitespace() {
                self.pos += 1;
                if cur.started {
                    words.push(Word::default());
                }
                continue;
            }
            match c {
                '\'' => {
                    self.pos += 1;
                    cur.started = true;
                    loop {
                        match self.next() {
                            None => return Err(LexError::UnterminatedQuote(self.word.into())),
                            Some('\'') => break,
                            Some(ch) => cur.text.push(ch),
                        }
                    }
                }
                '"' => {
                    self.pos += 1;
                    cur.started = true;
                    let text = self.double_quoted()?;
                    words.last_mut().expect("never empty").text.push_str(&text);
                }
                '$' => {
                    self.pos += 1;
                    let value = self.dollar()?;
                    let cur = words.last_mut().expect("never empty");
                    if split {
                        // Unquoted expansions are split like the shell does.
                        if value.starts_with(char::is_whitespace) && cur.started {
                            words.push(Word::default());
                        }
                        for (n, part) in value.split_whitespace().enumerate() {
                            if n > 0 {
                                words.push(Word::default());
                            }
                            let w = words.last_mut().expect("never empty");
                            w.text.push_str(part);
                            w.started = true;
                        }
                        if value.ends_with(char::is_whitespace) && words.last().is_some_and(|w| w.started) {
                            words.push(Word::default());
                        }
                    } else {
                        cur.text.push_str(&value);
                        cur.started = true;
                    }
                }
                c if c == self.escape => {
                    self.pos += 1;
                    cur.started = true;
                    match self.next() {
                        Some(ch) => cur.text.push(ch),
                        None => cur.text.push(c),
                    }
                }
                c => {
                    self.pos += 1;
                    cur.text.push(c);
                    cur.started = true;
                }
            }
        }
        Ok(words)
    }

    fn double_quoted(&mut self) -> Result<String, LexError> {
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(LexError::UnterminatedQuote(self.word.into())),
                Some('"') => return Ok(out),
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        out.push(n);
                    }
                    _ => out.push(c),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// After a `$`: a name, `{...}`, or a literal `$`.
    fn dollar(&mut self) -> Result<String, LexError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced()
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let name = self.name();
                Ok(self.env.get(&name).cloned().unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            name.push(self.next().expect("peeked"));
            return name;
        }
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn braced(&mut self) -> Result<String, LexError> {
        let name = self.name();
        if name.is_empty() {
            return Err(LexError::BadSubstitution(self.word.into()));
        }
        let value = self.env.get(&name);
        match self.next() {
            Some('}') => Ok(value.cloned().unwrap_or_default()),
            None => Err(LexError::MissingBrace(self.word.into())),
            Some(c) => {
                let colon = c == ':';
                let modifier = if colon { self.next() } else { Some(c) };
                let Some(m @ ('-' | '+' | '?')) = modifier else {
                    let modifier: String =
                        std::iter::once(c).chain(modifier.filter(|_| colon)).collect::<String>();
                    return Err(LexError::UnsupportedModifier { name, modifier });
                };
                // The word is processed (quotes, nested expansions) up to the closing brace.
                let word: String = self.process(Some('}'), false)?.into_iter().map(|w| w.text).collect();
                self.pos += 1; // the '}'
                let set = value.is_some();
                let non_empty = value.is_some_and(|v| !v.is_empty());
                let present = if colon { non_empty } else { set };
                Ok(match m {
                    '-' => {
                        if present {
                            value.cloned().unwrap_or_default()
                        } else {
                            word
                        }
                    }
                    '+' => {
                        if present {
                            word
                        } else {
                            String::new()
                        }
                    }
                    _ => {
                        if present {
                            value.cloned().unwrap_or_default()
                        } else {
                            let message =
                                if word.is_empty() { "is not allowed to be unset".into() } else { word };
                            return Err(LexError::Required { name, message });
                        }
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        [("A", "a"), ("E", ""), ("SP", "x y"), ("PATH", "/bin")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn w(s: &str) -> String {
        process_word(s, &env(), '\\').unwrap()
    }

    #[test]
    fn plain_and_quoted_words() {
        assert_eq!(w("hello"), "hello");
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A\""), "a");
        assert_eq!(w("\\$A"), "$A");
        assert_eq!(w("\"\\$A\""), "$A");
        assert_eq!(w("\"a\\b\""), "a\\b", "escape only before \" $ or itself in double quotes");
        assert_eq!(w("a\\ b"), "a b");
        assert_eq!(w("he'll'o"), "hello");
        assert_eq!(w("$"), "$");
        assert_eq!(w("a$"), "a$");
        assert_eq!(w("$A$A"), "aa");
        assert_eq!(w("${A}b"), "ab");
        assert_eq!(w("$Ab"), "", "the name is Ab, unset");
        assert_eq!(w("$UNSET"), "");
        assert_eq!(w("$PATH:/usr/bin"), "/bin:/usr/bin");
        assert!(matches!(process_word("'abc", &env(), '\\'), Err(LexError::UnterminatedQuote(_))));
        assert!(matches!(process_word("${A", &env(), '\\'), Err(LexError::MissingBrace(_))));
    }

    #[test]
    fn modifiers_follow_bash() {
        assert_eq!(w("${A:-x}"), "a");
        assert_eq!(w("${E:-x}"), "x", ":- also replaces empty");
        assert_eq!(w("${E-x}"), "", "- replaces only unset");
        assert_eq!(w("${U-x}"), "x");
        assert_eq!(w("${U:-x}"), "x");
        assert_eq!(w("${A:+x}"), "x");
        assert_eq!(w("${E:+x}"), "");
        assert_eq!(w("${E+x}"), "x", "+ counts set-but-empty");
        assert_eq!(w("${U+x}"), "");
        assert_eq!(w("${U:-$A}"), "a", "nested expansion in the word");
        assert_eq!(w("${U:-'q }'}"), "q }", "quotes in the word");
        assert_eq!(w("${U:-${A:+y}z}"), "yz");
        assert_eq!(w("${A:?must}"), "a");
        assert!(matches!(process_word("${U:?must be set}", &env(), '\\'), Err(LexError::Required { .. })));
        assert!(matches!(process_word("${A#a}", &env(), '\\'), Err(LexError::UnsupportedModifier { .. })));
    }

    #[test]
    fn backtick_escape() {
        assert_eq!(process_word("c:\\dir`$A", &env(), '`').unwrap(), "c:\\dir$A");
    }

    #[test]
    fn words_split_on_unquoted_space() {
        let ws = |s: &str| process_words(s, &env(), '\\').unwrap();
        assert_eq!(ws("a  b"), ["a", "b"]);
        assert_eq!(ws("a \"b c\" ''"), ["a", "b c", ""]);
        assert_eq!(ws("$SP z"), ["x", "y", "z"]);
        assert_eq!(ws("\"$SP\""), ["x y"]);
        assert_eq!(ws(""), Vec::<String>::new());
    }
}
