//! The Dockerfile parser (pure), with BuildKit's rules: a BOM and parser directives (`escape`,
//! `syntax`, `check`) at the top, comments, line continuations with the escape character, JSON
//! (exec) and shell forms, heredocs, builder flags, and every instruction of the reference.
//! Variables are not expanded here: instructions keep their raw words and the executor expands
//! them with [`super::lex`] where Docker does.

use std::fmt;

/// A parse error: the line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { line, message: message.into() })
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` unless the `escape` directive says `` ` ``).
    pub escape: char,
    /// `ARG`s before the first `FROM`.
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

/// One `FROM` and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The lowercased `AS` name.
    pub name: Option<String>,
    /// The base (unexpanded: global ARGs apply).
    pub base: String,
    pub platform: Option<String>,
    pub line: usize,
    pub instructions: Vec<Instruction>,
}

/// One instruction with its first line and its text as written (continuations joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    pub original: String,
    pub kind: Kind,
}

/// A command: exec form (JSON array, never expanded) or shell form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

/// A heredoc body (`<<EOF` … `EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// Variables are expanded in it (the delimiter was not quoted).
    pub expand: bool,
    /// The `<<-` form: leading tabs were stripped.
    pub chomp: bool,
}

/// `COPY`/`ADD` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyArgs {
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// Sources (raw words; a heredoc source is `<<NAME` with its body in `heredocs`).
    pub sources: Vec<String>,
    pub dest: String,
    pub heredocs: Vec<Heredoc>,
}

/// `HEALTHCHECK` settings (durations in nanoseconds, as the image config stores them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", s]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u64>,
}

/// RUN's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunNetwork {
    /// A private network namespace.
    #[default]
    Default,
    /// Only loopback.
    None,
}

/// What an instruction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `ARG a[=x] ...`: raw name and raw default.
    Arg(Vec<(String, Option<String>)>),
    /// `ENV`: raw (unexpanded, quoted) key/value words.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Run {
        command: Command,
        heredocs: Vec<Heredoc>,
        network: RunNetwork,
    },
    Copy(CopyArgs),
    Add(CopyArgs),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Cmd(Command),
    Entrypoint(Command),
    Shell(Vec<String>),
    StopSignal(String),
    /// `None` is `HEALTHCHECK NONE`.
    Healthcheck(Healthcheck),
    /// The trigger's text.
    OnBuild(String),
    Maintainer(String),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Exec(v) => write!(f, "{}", serde_json::to_string(v).unwrap_or_default()),
            Command::Shell(s) => f.write_str(s),
        }
    }
}

/// Longest line BuildKit accepts.
const MAX_LINE: usize = 64 * 1024;

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut escape = '\\';
    let mut i = 0;
    // Parser directives: only at the very top, each at most once.
    let mut seen_directives = Vec::new();
    while i < lines.len() {
        let Some((key, value)) = directive(lines[i]) else { break };
        if seen_directives.contains(&key) {
            return err(i + 1, format!("only one {key} parser directive can be used"));
        }
        if key == "escape" {
            escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                other => return err(i + 1, format!("invalid escape token {other:?} does not match ` or \\")),
            };
        }
        seen_directives.push(key);
        i += 1;
    }

    let mut raw = Vec::new();
    while i < lines.len() {
        let start = i;
        let line = lines[i];
        i += 1;
        if line.len() > MAX_LINE {
            return err(start + 1, "line too long");
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.trim().is_empty() {
            continue;
        }
        let (mut joined, mut done) = trim_continuation(trimmed, escape);
        while !done && i < lines.len() {
            let next = lines[i];
            i += 1;
            if next.trim_start().starts_with('#') || next.trim().is_empty() {
                // Comments inside a continuation are dropped; empty lines only warned about.
                continue;
            }
            let (part, end) = trim_continuation(next, escape);
            joined.push_str(&part);
            done = end;
        }
        if joined.trim().is_empty() {
            continue;
        }
        let (keyword, rest) = split_command(&joined);
        // Heredoc bodies follow the instruction line.
        let mut heredocs = Vec::new();
        if matches!(keyword.as_str(), "run" | "copy" | "add") {
            for marker in heredoc_markers(rest, escape) {
                let mut content = String::new();
                let mut terminated = false;
                while i < lines.len() {
                    let body_line = lines[i];
                    i += 1;
                    let compare = if marker.chomp { body_line.trim_start_matches('\t') } else { body_line };
                    if compare == marker.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(compare);
                    content.push('\n');
                }
                if !terminated {
                    return err(start + 1, format!("unterminated heredoc {}", marker.name));
                }
                heredocs.push(Heredoc { content, ..marker });
            }
        }
        raw.push(RawInstruction {
            line: start + 1,
            keyword,
            rest: rest.to_string(),
            original: joined,
            heredocs,
        });
    }

    let mut file = Dockerfile { escape, global_args: Vec::new(), stages: Vec::new() };
    for r in raw {
        let line = r.line;
        if r.keyword == "from" {
            let (flags, rest) = extract_flags(&r.rest, line)?;
            let mut platform = None;
            for (k, v) in flags {
                match k.as_str() {
                    "platform" => platform = Some(v),
                    _ => return err(line, format!("unknown flag: --{k}")),
                }
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    let name = name.to_ascii_lowercase();
                    if !valid_stage_name(&name) {
                        return err(
                            line,
                            format!(
                                "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                            ),
                        );
                    }
                    if file.stages.iter().any(|s| s.name.as_deref() == Some(&name)) {
                        return err(line, format!("duplicate stage name {name:?}"));
                    }
                    Some(name)
                }
                _ => return err(line, "FROM requires either one or three arguments"),
            };
            file.stages.push(Stage {
                name,
                base: words[0].to_string(),
                platform,
                line,
                instructions: Vec::new(),
            });
            continue;
        }
        let instruction = parse_instruction(&r.keyword, &r.rest, &r.original, r.heredocs, line, escape)?;
        match file.stages.last_mut() {
            Some(stage) => stage.instructions.push(instruction),
            None if matches!(instruction.kind, Kind::Arg(_)) => file.global_args.push(instruction),
            None => {
                return err(
                    line,
                    format!("no build stage in current context: {} before FROM", r.keyword.to_uppercase()),
                );
            }
        }
    }
    if file.stages.is_empty() {
        return err(lines.len().max(1), "the Dockerfile has no FROM instruction");
    }
    Ok(file)
}

struct RawInstruction {
    line: usize,
    keyword: String,
    rest: String,
    original: String,
    heredocs: Vec<Heredoc>,
}

/// Parses one instruction line (also the text of an `ONBUILD` trigger).
pub fn parse_instruction(
    keyword: &str,
    rest: &str,
    original: &str,
    heredocs: Vec<Heredoc>,
    line: usize,
    escape: char,
) -> Result<Instruction, ParseError> {
    let keyword = keyword.to_ascii_lowercase();
    let upper = keyword.to_uppercase();
    let (flags, rest) = extract_flags(rest, line)?;
    let allowed: &[&str] = match keyword.as_str() {
        "copy" => &["from", "chown", "chmod", "link"],
        "add" => &["chown", "chmod", "link"],
        "run" => &["network", "mount", "security"],
        "healthcheck" => &["interval", "timeout", "start-period", "start-interval", "retries"],
        _ => &[],
    };
    for (k, _) in &flags {
        if !allowed.contains(&k.as_str()) {
            return err(line, format!("unknown flag for {upper}: --{k}"));
        }
    }
    let flag = |name: &str| flags.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let need_args = |what: &str| -> Result<(), ParseError> {
        if rest.trim().is_empty() {
            err(line, format!("{what} requires at least one argument"))
        } else {
            Ok(())
        }
    };
    let kind = match keyword.as_str() {
        "arg" => {
            need_args("ARG")?;
            let mut args = Vec::new();
            for word in split_words(rest, escape) {
                match word.split_once('=') {
                    Some((k, v)) => args.push((k.to_string(), Some(v.to_string()))),
                    None => args.push((word.clone(), None)),
                }
                let name = &args.last().expect("pushed").0;
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return err(line, format!("ARG names can only be letters, digits and _, not {name:?}"));
                }
            }
            Kind::Arg(args)
        }
        "env" | "label" => {
            need_args(&upper)?;
            let pairs = name_values(rest, escape, &upper, line)?;
            if keyword == "env" { Kind::Env(pairs) } else { Kind::Label(pairs) }
        }
        "run" => {
            need_args("RUN")?;
            if flag("mount").is_some() {
                return err(line, "RUN --mount is not supported");
            }
            if flag("security").is_some() {
                return err(line, "RUN --security is not supported");
            }
            let network = match flag("network").as_deref() {
                None | Some("default") => RunNetwork::Default,
                Some("none") => RunNetwork::None,
                Some(other) => {
                    return err(line, format!("RUN --network={other} is not supported (default or none)"));
                }
            };
            Kind::Run { command: maybe_json(rest), heredocs, network }
        }
        "cmd" | "entrypoint" => {
            let command = maybe_json(rest);
            if keyword == "cmd" { Kind::Cmd(command) } else { Kind::Entrypoint(command) }
        }
        "shell" => match maybe_json(rest) {
            Command::Exec(v) if !v.is_empty() => Kind::Shell(v),
            _ => return err(line, "SHELL requires the arguments to be in JSON form"),
        },
        "copy" | "add" => {
            let mut words = match maybe_json(rest) {
                Command::Exec(v) => v,
                Command::Shell(s) => s.split_whitespace().map(str::to_string).collect(),
            };
            if words.len() < 2 {
                return err(line, format!("{upper} requires at least two arguments"));
            }
            let dest = words.pop().expect("two words");
            let args = CopyArgs {
                from: flag("from"),
                chown: flag("chown"),
                chmod: flag("chmod"),
                link: flags.iter().any(|(k, _)| k == "link"),
                sources: words,
                dest,
                heredocs,
            };
            if keyword == "copy" { Kind::Copy(args) } else { Kind::Add(args) }
        }
        "workdir" => {
            need_args("WORKDIR")?;
            Kind::Workdir(rest.trim().to_string())
        }
        "user" => {
            need_args("USER")?;
            Kind::User(rest.trim().to_string())
        }
        "stopsignal" => {
            need_args("STOPSIGNAL")?;
            Kind::StopSignal(rest.trim().to_string())
        }
        "maintainer" => {
            need_args("MAINTAINER")?;
            Kind::Maintainer(rest.trim().to_string())
        }
        "expose" => {
            need_args("EXPOSE")?;
            Kind::Expose(rest.split_whitespace().map(str::to_string).collect())
        }
        "volume" => {
            need_args("VOLUME")?;
            let list = match maybe_json(rest) {
                Command::Exec(v) => v,
                Command::Shell(s) => s.split_whitespace().map(str::to_string).collect(),
            };
            if list.iter().any(|v| v.trim().is_empty()) {
                return err(line, "VOLUME specified can not be an empty string");
            }
            Kind::Volume(list)
        }
        "healthcheck" => {
            need_args("HEALTHCHECK")?;
            let (sub, sub_rest) = split_command(rest);
            let mut hc = Healthcheck::default();
            match sub.as_str() {
                "none" => {
                    if !sub_rest.trim().is_empty() || !flags.is_empty() {
                        return err(line, "HEALTHCHECK NONE takes no arguments");
                    }
                    hc.test = vec!["NONE".into()];
                }
                "cmd" => {
                    hc.test = match maybe_json(sub_rest) {
                        Command::Exec(v) if !v.is_empty() => {
                            std::iter::once("CMD".to_string()).chain(v).collect()
                        }
                        Command::Shell(s) if !s.trim().is_empty() => vec!["CMD-SHELL".into(), s],
                        _ => return err(line, "HEALTHCHECK CMD requires a command"),
                    };
                    let dur = |name: &str| -> Result<Option<u64>, ParseError> {
                        flag(name)
                            .map(|v| {
                                parse_duration(&v)
                                    .ok_or(())
                                    .or_else(|_| err(line, format!("--{name}: invalid duration {v:?}")))
                            })
                            .transpose()
                    };
                    hc.interval = dur("interval")?;
                    hc.timeout = dur("timeout")?;
                    hc.start_period = dur("start-period")?;
                    hc.start_interval = dur("start-interval")?;
                    hc.retries = match flag("retries") {
                        Some(v) => Some(
                            v.parse().or_else(|_| err(line, format!("--retries: invalid number {v:?}")))?,
                        ),
                        None => None,
                    };
                }
                other => {
                    return err(
                        line,
                        format!("unknown type for HEALTHCHECK: {:?} (CMD or NONE)", other.to_uppercase()),
                    );
                }
            }
            Kind::Healthcheck(hc)
        }
        "onbuild" => {
            need_args("ONBUILD")?;
            let (trigger, trigger_rest) = split_command(rest);
            match trigger.as_str() {
                "onbuild" => return err(line, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
                "from" | "maintainer" => {
                    return err(
                        line,
                        format!("{} isn't allowed as an ONBUILD trigger", trigger.to_uppercase()),
                    );
                }
                _ => {}
            }
            // The trigger must itself be a valid instruction.
            parse_instruction(&trigger, trigger_rest, rest, Vec::new(), line, escape)?;
            Kind::OnBuild(rest.trim().to_string())
        }
        "from" => return err(line, "FROM cannot be used here"),
        other => return err(line, format!("unknown instruction: {}", other.to_uppercase())),
    };
    Ok(Instruction { line, original: original.trim().to_string(), kind })
}

/// A `# key=value` parser directive, if the line is one.
fn directive(line: &str) -> Option<(String, String)> {
    let body = line.trim().strip_prefix('#')?;
    let (key, value) = body.split_once('=')?;
    let key = key.trim().to_ascii_lowercase();
    if !matches!(key.as_str(), "escape" | "syntax" | "check") {
        return None;
    }
    Some((key, value.trim().to_string()))
}

/// Strips a trailing escape character (blanks after it allowed); `true` when the line ends there.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        // `\\` at the end is an escaped escape, not a continuation (BuildKit's regex needs a
        // character other than the escape before it, or the escape alone on the line).
        if before.is_empty() || !before.ends_with(escape) {
            return (before.to_string(), false);
        }
    }
    (line.to_string(), true)
}

/// The lowercased keyword and the rest of the line.
fn split_command(line: &str) -> (String, &str) {
    let line = line.trim();
    match line.find(char::is_whitespace) {
        Some(i) => (line[..i].to_ascii_lowercase(), line[i..].trim_start()),
        None => (line.to_ascii_lowercase(), ""),
    }
}

/// Leading `--name=value` (or `--name`) words.
/// Builder flags as (name, value) pairs.
type Flags = Vec<(String, String)>;

fn extract_flags(rest: &str, line: usize) -> Result<(Flags, &str), ParseError> {
    let mut flags = Vec::new();
    let mut rest = rest.trim_start();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let word = &after[..end];
        if word.is_empty() {
            // `--` alone ends the flags.
            rest = after[end..].trim_start();
            break;
        }
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, unquote(v)),
            None => (word, String::new()),
        };
        if name.is_empty() {
            return err(line, format!("invalid flag {word:?}"));
        }
        flags.push((name.to_ascii_lowercase(), value));
        rest = after[end..].trim_start();
    }
    Ok((flags, rest))
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// Exec form when the text is a JSON array of strings, else shell form (as written).
fn maybe_json(rest: &str) -> Command {
    let trimmed = rest.trim();
    if trimmed.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(trimmed)
    {
        return Command::Exec(v);
    }
    Command::Shell(rest.trim_start().to_string())
}

/// Words split on unquoted whitespace, quotes and escapes kept (BuildKit's `parseWords`).
fn split_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if quote.is_none() && c.is_whitespace() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        word.push(c);
        if c == escape && quote != Some('\'') {
            if let Some(n) = chars.next() {
                word.push(n);
            }
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            _ => {}
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `k=v k2="v 2"` pairs, or the legacy `k v w` (one pair, the value the rest of the line).
fn name_values(
    rest: &str,
    escape: char,
    what: &str,
    line: usize,
) -> Result<Vec<(String, String)>, ParseError> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return err(line, format!("{what} requires at least one argument"));
    };
    if !first.contains('=') {
        let trimmed = rest.trim();
        let value = trimmed[trimmed.find(char::is_whitespace).unwrap_or(trimmed.len())..].trim();
        if value.is_empty() {
            return err(line, format!("{what} names can not be blank / {what} requires two arguments"));
        }
        return Ok(vec![(first.clone(), value.to_string())]);
    }
    let mut pairs = Vec::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
            _ => {
                return err(
                    line,
                    format!("Syntax error - can't find = in {w:?}. Must be of the form: name=value"),
                );
            }
        }
    }
    Ok(pairs)
}

/// Heredoc markers on an instruction line: words `<<NAME`, `<<-NAME`, `<<"NAME"`.
fn heredoc_markers(rest: &str, escape: char) -> Vec<Heredoc> {
    let mut out = Vec::new();
    for word in split_words(rest, escape) {
        // An fd prefix (`3<<EOF`) is allowed.
        let w = word.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(after) = w.strip_prefix("<<") else { continue };
        if after.starts_with('<') {
            continue;
        }
        let (chomp, name) = match after.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, after),
        };
        let quoted = name.starts_with('"') || name.starts_with('\'');
        let name = unquote(name);
        if name.is_empty() {
            continue;
        }
        out.push(Heredoc { name, content: String::new(), expand: !quoted, chomp });
    }
    out
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Go-style durations (`30s`, `1m30s`, `500ms`) in nanoseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Kind {
        let f = parse(&format!("FROM scratch\n{text}\n")).unwrap();
        f.stages[0].instructions[0].kind.clone()
    }

    fn fails(text: &str) -> ParseError {
        parse(text).unwrap_err()
    }

    #[test]
    fn stages_and_global_args() {
        let f = parse("ARG BASE=busybox\nARG V\nFROM $BASE AS Build\nRUN true\nfrom build\nFROM --platform=linux/amd64 x as final\n").unwrap();
        assert_eq!(f.global_args.len(), 2);
        assert_eq!(f.stages.len(), 3);
        assert_eq!(f.stages[0].name.as_deref(), Some("build"), "names are lowercased");
        assert_eq!(f.stages[0].base, "$BASE", "not expanded by the parser");
        assert_eq!(f.stages[1].base, "build");
        assert_eq!(f.stages[2].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(f.stages[0].instructions[0].line, 4);
        assert_eq!(fails("RUN x\nFROM a").line, 1);
        assert!(fails("FROM a AS 1x").message.contains("invalid name"));
        assert!(fails("FROM a AS b\nFROM c AS B").message.contains("duplicate"));
        assert!(fails("FROM a b").message.contains("one or three"));
        assert!(fails("# just a comment\n").message.contains("no FROM"));
    }

    #[test]
    fn continuations_comments_and_whitespace() {
        let f = parse(
            "FROM a\nRUN echo \\\n    hello \\\n# a comment\n\n    world\n  # indented comment\nRUN a\\\\\n",
        )
        .unwrap();
        let ins = &f.stages[0].instructions;
        assert_eq!(ins.len(), 2);
        assert_eq!(
            ins[0].kind,
            Kind::Run {
                command: Command::Shell("echo     hello     world".into()),
                heredocs: vec![],
                network: RunNetwork::Default
            },
            "continuation lines keep leading whitespace; comments and blank lines dropped"
        );
        assert_eq!(
            ins[1].kind,
            Kind::Run {
                command: Command::Shell("a\\\\".into()),
                heredocs: vec![],
                network: RunNetwork::Default
            },
            "an escaped escape does not continue"
        );
        // Trailing blanks after the escape still continue; # inside a line is literal.
        assert_eq!(
            one("RUN echo 'a # b' \\  \n && true"),
            Kind::Run {
                command: Command::Shell("echo 'a # b'  && true".into()),
                heredocs: vec![],
                network: RunNetwork::Default
            }
        );
        let f = parse("\u{feff}FROM a\r\nUSER x\r\n").unwrap();
        assert_eq!(f.stages[0].instructions[0].kind, Kind::User("x".into()), "BOM and CRLF");
    }

    #[test]
    fn escape_directive() {
        let f = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  && x\nCOPY a\\b c:\\\n").unwrap();
        assert_eq!(f.escape, '`');
        assert_eq!(
            f.stages[0].instructions[0].kind,
            Kind::Run {
                command: Command::Shell("dir c:\\   && x".into()),
                heredocs: vec![],
                network: RunNetwork::Default
            }
        );
        // Directives only count at the top.
        let f = parse("FROM a\n# escape=`\nRUN x \\\n y").unwrap();
        assert_eq!(f.escape, '\\');
        let f = parse("# comment\n# escape=`\nFROM a").unwrap();
        assert_eq!(f.escape, '\\', "after another comment it is a comment");
        assert!(fails("# escape=x\nFROM a").message.contains("invalid escape"));
        assert!(fails("# escape=`\n# ESCAPE = `\nFROM a").message.contains("only one"));
        let f = parse("# syntax=docker/dockerfile:1\n#escape = `\nFROM a").unwrap();
        assert_eq!(f.escape, '`');
    }

    #[test]
    fn exec_and_shell_forms() {
        assert_eq!(one("CMD [\"a\", \"b c\"]"), Kind::Cmd(Command::Exec(vec!["a".into(), "b c".into()])));
        assert_eq!(one("CMD ['a']"), Kind::Cmd(Command::Shell("['a']".into())), "invalid JSON is shell form");
        assert_eq!(one("ENTRYPOINT [\"a\", 1]"), Kind::Entrypoint(Command::Shell("[\"a\", 1]".into())));
        assert_eq!(one("ENTRYPOINT exec top -b"), Kind::Entrypoint(Command::Shell("exec top -b".into())));
        assert_eq!(one("CMD []"), Kind::Cmd(Command::Exec(vec![])));
        assert_eq!(one("SHELL [\"/bin/bash\", \"-c\"]"), Kind::Shell(vec!["/bin/bash".into(), "-c".into()]));
        assert!(fails("FROM a\nSHELL /bin/bash -c").message.contains("JSON"));
        assert_eq!(
            one("RUN [\"echo\", \"$HOME\"]"),
            Kind::Run {
                command: Command::Exec(vec!["echo".into(), "$HOME".into()]),
                heredocs: vec![],
                network: RunNetwork::Default
            }
        );
    }

    #[test]
    fn env_label_arg() {
        assert_eq!(
            one("ENV a=1 b=\"x y\" c=z\\ w"),
            Kind::Env(vec![
                ("a".into(), "1".into()),
                ("b".into(), "\"x y\"".into()),
                ("c".into(), "z\\ w".into())
            ]),
            "raw words: quotes are removed at expansion"
        );
        assert_eq!(
            one("ENV ONE TWO= THREE=world"),
            Kind::Env(vec![("ONE".into(), "TWO= THREE=world".into())])
        );
        assert_eq!(one("LABEL \"com.x\"=y"), Kind::Label(vec![("\"com.x\"".into(), "y".into())]));
        assert_eq!(
            one("ARG a b=2 c="),
            Kind::Arg(vec![
                ("a".into(), None),
                ("b".into(), Some("2".into())),
                ("c".into(), Some(String::new()))
            ])
        );
        assert!(fails("FROM a\nENV a=1 b").message.contains("can't find ="));
        assert!(fails("FROM a\nENV a").message.contains("requires two"));
        assert!(fails("FROM a\nARG").message.contains("at least one"));
    }

    #[test]
    fn copy_and_add() {
        assert_eq!(
            one("COPY --from=build --chown=1:2 --chmod=0755 a b /dst/"),
            Kind::Copy(CopyArgs {
                from: Some("build".into()),
                chown: Some("1:2".into()),
                chmod: Some("0755".into()),
                link: false,
                sources: vec!["a".into(), "b".into()],
                dest: "/dst/".into(),
                heredocs: vec![],
            })
        );
        assert_eq!(
            one("ADD [\"a b\", \"/c\"]"),
            Kind::Add(CopyArgs { sources: vec!["a b".into()], dest: "/c".into(), ..Default::default() })
        );
        assert!(fails("FROM a\nCOPY a").message.contains("two arguments"));
        assert!(fails("FROM a\nADD --from=x a b").message.contains("unknown flag for ADD: --from"));
        assert!(fails("FROM a\nCOPY --bogus a b").message.contains("--bogus"));
    }

    #[test]
    fn heredocs() {
        let f = parse("FROM a\nRUN <<EOF\necho hi\n  echo there\nEOF\nCOPY <<-\"X\" <<Y /dst/\n\tone $A\n\tX\ntwo\nY\nUSER u\n").unwrap();
        let ins = &f.stages[0].instructions;
        let Kind::Run { heredocs, command, .. } = &ins[0].kind else { panic!() };
        assert_eq!(command, &Command::Shell("<<EOF".into()));
        assert_eq!(
            heredocs,
            &vec![Heredoc {
                name: "EOF".into(),
                content: "echo hi\n  echo there\n".into(),
                expand: true,
                chomp: false
            }]
        );
        let Kind::Copy(c) = &ins[1].kind else { panic!() };
        assert_eq!(c.heredocs.len(), 2);
        assert_eq!(
            c.heredocs[0],
            Heredoc { name: "X".into(), content: "one $A\n".into(), expand: false, chomp: true }
        );
        assert_eq!(c.heredocs[1].content, "two\n");
        assert_eq!(ins[2].kind, Kind::User("u".into()));
        assert!(fails("FROM a\nRUN <<EOF\nno end\n").message.contains("unterminated heredoc EOF"));
        // Not in other instructions.
        assert_eq!(one("ENV a=<<EOF"), Kind::Env(vec![("a".into(), "<<EOF".into())]));
    }

    #[test]
    fn metadata_instructions() {
        assert_eq!(one("EXPOSE 80 443/udp"), Kind::Expose(vec!["80".into(), "443/udp".into()]));
        assert_eq!(one("VOLUME [\"/a\", \"/b\"]"), Kind::Volume(vec!["/a".into(), "/b".into()]));
        assert_eq!(one("VOLUME /a /b"), Kind::Volume(vec!["/a".into(), "/b".into()]));
        assert!(fails("FROM a\nVOLUME [\"\"]").message.contains("empty"));
        assert_eq!(one("workdir /x y"), Kind::Workdir("/x y".into()), "keywords are case-insensitive");
        assert_eq!(one("STOPSIGNAL SIGTERM"), Kind::StopSignal("SIGTERM".into()));
        assert_eq!(one("MAINTAINER me"), Kind::Maintainer("me".into()));
        assert_eq!(
            one("HEALTHCHECK NONE"),
            Kind::Healthcheck(Healthcheck { test: vec!["NONE".into()], ..Default::default() })
        );
        assert_eq!(
            one("HEALTHCHECK --interval=5m --timeout=3s --retries=2 CMD curl -f http://x/"),
            Kind::Healthcheck(Healthcheck {
                test: vec!["CMD-SHELL".into(), "curl -f http://x/".into()],
                interval: Some(300_000_000_000),
                timeout: Some(3_000_000_000),
                retries: Some(2),
                ..Default::default()
            })
        );
        assert_eq!(
            one("HEALTHCHECK CMD [\"a\"]"),
            Kind::Healthcheck(Healthcheck { test: vec!["CMD".into(), "a".into()], ..Default::default() })
        );
        assert!(fails("FROM a\nHEALTHCHECK --interval=x CMD a").message.contains("invalid duration"));
        assert_eq!(one("ONBUILD RUN echo hi"), Kind::OnBuild("RUN echo hi".into()));
        assert!(fails("FROM a\nONBUILD ONBUILD RUN x").message.contains("chaining"));
        assert!(fails("FROM a\nONBUILD FROM x").message.contains("isn't allowed"));
        assert!(fails("FROM a\nONBUILD BOGUS x").message.contains("unknown instruction: BOGUS"));
    }

    #[test]
    fn unsupported_and_unknown_name_the_line() {
        let e = fails("FROM a\n\nRUN --mount=type=cache,target=/x true");
        assert_eq!(e.line, 3);
        assert_eq!(e.to_string(), "Dockerfile line 3: RUN --mount is not supported");
        assert_eq!(fails("FROM a\nFOO bar").to_string(), "Dockerfile line 2: unknown instruction: FOO");
        assert_eq!(
            one("RUN --network=none true"),
            Kind::Run { command: Command::Shell("true".into()), heredocs: vec![], network: RunNetwork::None }
        );
        assert!(fails("FROM a\nRUN --network=host x").message.contains("not supported"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
    }
}
