//! The Dockerfile parser: text to a list of [`Instruction`]s, and the
//! variable substitution (`$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR:+alt}`) and word splitting the builder applies to their arguments.
//!
//! Written here rather than taken from a crate: the Rust crates that parse
//! Dockerfiles are either unmaintained or build a full syntax tree (with
//! `pest` or `rowan`) for editor tooling, pulling in more code than the
//! whole grammar needs. The grammar is small: directives on the first
//! lines (`# escape=`), comments, logical lines joined at the escape
//! character, a keyword, `--flag=value` options, and the exec (JSON array)
//! or shell form. Every error names the line it was found on.

use std::collections::BTreeMap;

/// A Dockerfile that cannot be parsed; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile line {line}: {message}")]
pub struct Error {
    pub line: usize,
    pub message: String,
}

type Result<T> = std::result::Result<T, Error>;

/// The arguments of `RUN`, `CMD`, `ENTRYPOINT` and `SHELL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `["executable", "arg"]`: run as given.
    Exec(Vec<String>),
    /// Anything else: run through the stage's `SHELL`.
    Shell(String),
}

/// One instruction, as written (variables are substituted by the builder,
/// which knows their values at that point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Where the instruction starts (1-based).
    pub line: usize,
    /// Upper case: `FROM`, `RUN`, …
    pub keyword: String,
    /// `--name=value` options before the arguments, in order.
    pub flags: Vec<(String, String)>,
    /// The arguments after the flags, continuation lines joined.
    pub rest: String,
    /// The escape character in force (`\` or `` ` ``).
    pub escape: char,
    /// The here-documents of a `RUN`, `COPY` or `ADD` (`<<EOF` … `EOF`),
    /// in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
}

/// A here-document: the lines after the instruction up to its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    /// Each line with its newline; `<<-` strips leading tabs.
    pub body: String,
    /// Variables are substituted unless the name was quoted (`<<'EOF'`).
    pub expand: bool,
}

const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// The flags each instruction takes; any other is an error.
fn allowed_flags(keyword: &str) -> &'static [&'static str] {
    match keyword {
        "FROM" => &["platform"],
        "COPY" => &["from", "chown", "chmod", "link"],
        "ADD" => &["chown", "chmod", "link", "checksum"],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    }
}

impl Instruction {
    /// The instruction as docker prints it in `STEP n/m:` lines.
    pub fn text(&self) -> String {
        let mut out = self.keyword.clone();
        for (k, v) in &self.flags {
            out.push_str(&format!(" --{k}={v}"));
        }
        if !self.rest.is_empty() {
            out.push(' ');
            out.push_str(&self.rest);
        }
        out
    }

    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `RUN`, `CMD`, `ENTRYPOINT`, `SHELL`: exec form if the arguments are
    /// a JSON array of strings, else shell form (as docker decides).
    pub fn command(&self) -> Command {
        if self.keyword == "RUN" && !self.heredocs.is_empty() {
            // `RUN <<EOF` alone runs the document as the script; otherwise
            // the shell reads the documents where the command names them.
            let only = heredoc_markers(&self.rest);
            if self.heredocs.len() == 1 && only.len() == 1 && self.rest.trim() == only[0].3 {
                return Command::Shell(self.heredocs[0].body.clone());
            }
            let mut script = self.rest.clone();
            for h in &self.heredocs {
                script.push('\n');
                script.push_str(&h.body);
                script.push_str(&h.name);
            }
            return Command::Shell(script);
        }
        if self.rest.trim_start().starts_with('[') {
            if let Ok(words) = serde_json::from_str::<Vec<String>>(self.rest.trim()) {
                return Command::Exec(words);
            }
        }
        Command::Shell(self.rest.clone())
    }

    pub fn error(&self, message: impl Into<String>) -> Error {
        Error {
            line: self.line,
            message: message.into(),
        }
    }
}

/// Parses a Dockerfile into its instructions, checking what can be checked
/// without running anything: known keywords, their flags, argument counts.
pub fn parse(text: &str) -> Result<Vec<Instruction>> {
    let out = parse_instructions(text)?;
    check(&out)?;
    Ok(out)
}

/// Parses instructions without the whole-file rules (no `FROM` needed):
/// `ONBUILD` triggers and `import --change` lines.
pub fn parse_instructions(text: &str) -> Result<Vec<Instruction>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut i = 0;
    // Parser directives: `# key=value` lines before anything else.
    while i < lines.len() {
        let Some(body) = lines[i].trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = body.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.contains(' ') || key.is_empty() {
            break;
        }
        if key == "escape" {
            escape = match value.trim() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(Error {
                        line: i + 1,
                        message: format!("invalid escape character {other:?}: use \\ or `"),
                    })
                }
            };
        }
        i += 1;
    }
    let mut out = Vec::new();
    while i < lines.len() {
        let start = i;
        let first = lines[i].trim();
        i += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        // Join continuation lines; comment and empty lines inside are dropped.
        let mut logical = String::new();
        let mut current = first.to_string();
        loop {
            let trimmed = current.trim_end();
            match trimmed.strip_suffix(escape) {
                Some(head) if i <= lines.len() => {
                    logical.push_str(head);
                    let mut next = None;
                    while i < lines.len() {
                        let l = lines[i];
                        i += 1;
                        let t = l.trim();
                        if t.starts_with('#') || t.is_empty() {
                            continue;
                        }
                        next = Some(l.to_string());
                        break;
                    }
                    match next {
                        Some(l) => current = l,
                        None => break,
                    }
                }
                _ => {
                    logical.push_str(trimmed);
                    break;
                }
            }
        }
        let mut parsed = instruction(start + 1, logical.trim(), escape)?;
        if matches!(parsed.keyword.as_str(), "RUN" | "COPY" | "ADD")
            && !parsed.rest.trim_start().starts_with('[')
        {
            for (name, strip_tabs, expand, _) in heredoc_markers(&parsed.rest) {
                let mut body = String::new();
                loop {
                    let Some(line) = lines.get(i) else {
                        return Err(parsed.error(format!(
                            "unterminated heredoc <<{name}: no line '{name}' ends it"
                        )));
                    };
                    i += 1;
                    let line = if strip_tabs {
                        line.trim_start_matches('\t')
                    } else {
                        line
                    };
                    if line == name {
                        break;
                    }
                    body.push_str(line);
                    body.push('\n');
                }
                parsed.heredocs.push(Heredoc { name, body, expand });
            }
        }
        out.push(parsed);
    }
    Ok(out)
}

/// The here-document markers of an instruction's arguments: (name, `<<-`,
/// unquoted, the marker as written), in order. `<<<` is no marker.
fn heredoc_markers(rest: &str) -> Vec<(String, bool, bool, String)> {
    let mut out = Vec::new();
    let mut s = rest;
    while let Some(n) = s.find("<<") {
        let start = &s[n..];
        let mut after = &s[n + 2..];
        if after.starts_with('<') {
            s = after.trim_start_matches('<');
            continue;
        }
        let strip = after.starts_with('-');
        if strip {
            after = &after[1..];
        }
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
        if let Some(q) = quote {
            after = &after[q.len_utf8()..];
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_.-/".contains(c)))
            .unwrap_or(after.len());
        let name = &after[..len];
        let mut next = &after[len..];
        if let Some(q) = quote {
            match next.strip_prefix(q) {
                Some(r) => next = r,
                None => {
                    s = next;
                    continue;
                }
            }
        }
        if !name.is_empty() {
            let written = &start[..start.len() - next.len()];
            out.push((
                name.to_string(),
                strip,
                quote.is_none(),
                written.to_string(),
            ));
        }
        s = next;
    }
    out
}

fn instruction(line: usize, text: &str, escape: char) -> Result<Instruction> {
    let err = |message: String| Error { line, message };
    let (word, mut rest) = match text.find(char::is_whitespace) {
        Some(n) => (&text[..n], text[n..].trim_start()),
        None => (text, ""),
    };
    let keyword = word.to_ascii_uppercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        return Err(err(format!("unknown instruction: {word}")));
    }
    let mut flags = Vec::new();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let flag = &after[..end];
        let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
        if !allowed_flags(&keyword).contains(&name) {
            return Err(err(format!("{keyword} has no flag --{name}")));
        }
        flags.push((name.to_string(), value.to_string()));
        rest = after[end..].trim_start();
    }
    let parsed = Instruction {
        line,
        keyword,
        flags,
        rest: rest.to_string(),
        escape,
        heredocs: Vec::new(),
    };
    let needs_args = !matches!(parsed.keyword.as_str(), "CMD" | "ENTRYPOINT");
    if needs_args && parsed.rest.is_empty() {
        return Err(err(format!(
            "{} requires at least one argument",
            parsed.keyword
        )));
    }
    match parsed.keyword.as_str() {
        "COPY" | "ADD"
            if words(&parsed.rest, escape, &|_| None).map_err(err)?.len() < 2
                && !parsed.rest.trim_start().starts_with('[') =>
        {
            return Err(err(format!(
                "{} requires at least two arguments: a source and a destination",
                parsed.keyword
            )));
        }
        "SHELL" if !matches!(parsed.command(), Command::Exec(_)) => {
            return Err(err(
                "SHELL requires the arguments as a JSON array, e.g. [\"/bin/sh\", \"-c\"]".into(),
            ))
        }
        "ONBUILD" => {
            let inner = instruction(line, &parsed.rest, escape)?;
            if matches!(inner.keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(err(format!("ONBUILD cannot trigger {}", inner.keyword)));
            }
        }
        _ => {}
    }
    Ok(parsed)
}

/// Whole-file rules: the first instruction is `FROM` (after `ARG`s), and
/// `FROM` has the form `IMAGE [AS NAME]`.
fn check(instructions: &[Instruction]) -> Result<()> {
    let first = instructions.iter().find(|i| i.keyword != "ARG");
    match first {
        None => {
            return Err(Error {
                line: instructions.last().map_or(1, |i| i.line),
                message: "no FROM instruction: a Dockerfile starts with FROM IMAGE".into(),
            })
        }
        Some(i) if i.keyword != "FROM" => {
            return Err(i.error(format!(
                "{} before the first FROM: a Dockerfile starts with FROM IMAGE (only ARG may come before it)",
                i.keyword
            )))
        }
        _ => {}
    }
    for i in instructions.iter().filter(|i| i.keyword == "FROM") {
        let parts: Vec<&str> = i.rest.split_whitespace().collect();
        let ok = parts.len() == 1 || (parts.len() == 3 && parts[1].eq_ignore_ascii_case("as"));
        if !ok {
            return Err(i.error("FROM takes IMAGE [AS NAME]"));
        }
    }
    Ok(())
}

/// Substitutes variables in `text`: `$NAME`, `${NAME}`, `${NAME:-default}`
/// (default when unset or empty), `${NAME:+alt}` (alt when set and not
/// empty); the escape character keeps a `$` literal. Unset names are empty.
pub fn expand(
    text: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == escape && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        if chars.get(i) == Some(&'{') {
            let close = chars[i..]
                .iter()
                .position(|&c| c == '}')
                .ok_or_else(|| format!("missing '}}' in {text:?}"))?;
            let inner: String = chars[i + 1..i + close].iter().collect();
            i += close + 1;
            let (name, op) = match inner.find(':') {
                Some(n) => (&inner[..n], Some(&inner[n + 1..])),
                None => (inner.as_str(), None),
            };
            if !valid_name(name) {
                return Err(format!("bad substitution ${{{inner}}} in {text:?}"));
            }
            let value = vars(name).filter(|v| !v.is_empty());
            match op {
                None => out.push_str(&value.unwrap_or_default()),
                Some(op) => {
                    if let Some(default) = op.strip_prefix('-') {
                        match value {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&expand(default, escape, vars)?),
                        }
                    } else if let Some(alt) = op.strip_prefix('+') {
                        if value.is_some() {
                            out.push_str(&expand(alt, escape, vars)?);
                        }
                    } else {
                        return Err(format!(
                            "bad substitution ${{{inner}}} in {text:?}: only :- and :+ are supported"
                        ));
                    }
                }
            }
        } else {
            let len = chars[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .count();
            if len == 0 {
                out.push('$');
                continue;
            }
            let name: String = chars[i..i + len].iter().collect();
            i += len;
            out.push_str(&vars(&name).unwrap_or_default());
        }
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits `text` into words at unquoted whitespace, substituting variables
/// outside single quotes; quotes are removed and the escape character
/// keeps the next character literal (as `ENV`, `LABEL`, `COPY` … read
/// their arguments).
pub fn words(
    text: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    // Text waiting for substitution (outside single quotes).
    let mut pending = String::new();
    let flush = |pending: &mut String, word: &mut String| -> std::result::Result<(), String> {
        word.push_str(&expand(pending, escape, vars)?);
        pending.clear();
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    flush(&mut pending, &mut word)?;
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                flush(&mut pending, &mut word)?;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unmatched ' in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) if c == escape => match chars.next() {
                            Some('$') => pending.push_str(&format!("{escape}$")),
                            Some(n) => pending.push(n),
                            None => return Err(format!("unmatched \" in {text:?}")),
                        },
                        Some(c) => pending.push(c),
                        None => return Err(format!("unmatched \" in {text:?}")),
                    }
                }
            }
            c if c == escape => {
                in_word = true;
                match chars.next() {
                    Some('$') => pending.push_str(&format!("{escape}$")),
                    Some(n) => pending.push(n),
                    None => {}
                }
            }
            c => {
                in_word = true;
                pending.push(c);
            }
        }
    }
    if in_word {
        flush(&mut pending, &mut word)?;
        out.push(word);
    }
    Ok(out)
}

/// `KEY=VALUE …` pairs (`ENV`, `LABEL`, `ARG`), or the legacy
/// `ENV KEY VALUE WITH SPACES` when the first word has no `=`.
pub fn pairs(
    instruction: &Instruction,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Option<String>)>> {
    let split =
        words(&instruction.rest, instruction.escape, vars).map_err(|m| instruction.error(m))?;
    let legacy = split.first().is_some_and(|w| !w.contains('='));
    if legacy && instruction.keyword != "ARG" {
        let (key, value) = instruction
            .rest
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| {
                instruction.error(format!(
                    "{} needs KEY=VALUE (or KEY VALUE)",
                    instruction.keyword
                ))
            })?;
        let value = words(value, instruction.escape, vars)
            .map_err(|m| instruction.error(m))?
            .join(" ");
        return Ok(vec![(key.to_string(), Some(value))]);
    }
    let mut out = Vec::new();
    for w in split {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), Some(v.to_string()))),
            None if instruction.keyword == "ARG" => out.push((w, None)),
            _ => {
                return Err(
                    instruction.error(format!("{}: {w:?} is not KEY=VALUE", instruction.keyword))
                )
            }
        }
    }
    Ok(out)
}

/// A variable lookup over a map of values.
pub fn lookup(vars: &BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| vars.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn continuations_comments_and_line_numbers() {
        let text = "# a comment\nFROM busybox AS base\n\nRUN echo one \\\n  # inside\n  two\nCMD [\"sh\"]\n";
        let got = parse(text).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].keyword, "FROM");
        assert_eq!(got[0].line, 2);
        assert_eq!(got[1].line, 4);
        assert_eq!(got[1].rest, "echo one   two");
        assert_eq!(got[2].command(), Command::Exec(vec!["sh".into()]));
        assert_eq!(got[1].command(), Command::Shell("echo one   two".into()));
    }

    #[test]
    fn escape_directive_changes_the_continuation_character() {
        let text = "# escape=`\nFROM scratch\nCOPY a `\n  C:\\dir\\\n";
        let got = parse(text).unwrap();
        assert_eq!(got[1].rest, "a   C:\\dir\\");
        assert_eq!(got[1].escape, '`');
        let bad = parse("# escape=x\nFROM scratch\n").unwrap_err();
        assert_eq!(bad.line, 1);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("FROM busybox\n\nRUNN echo\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(
            err.to_string().contains("unknown instruction: RUNN"),
            "{err}"
        );
        let err = parse("RUN echo\n").unwrap_err();
        assert!(err.to_string().contains("before the first FROM"), "{err}");
        let err = parse("FROM a b c d\n").unwrap_err();
        assert_eq!(err.line, 1);
        let err = parse("FROM busybox\nCOPY onlyone\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse("FROM busybox\nCOPY --own=1 a b\n").unwrap_err();
        assert!(err.to_string().contains("no flag --own"), "{err}");
        let err = parse("FROM busybox\nSHELL sh -c\n").unwrap_err();
        assert!(err.to_string().contains("JSON array"), "{err}");
    }

    #[test]
    fn arg_may_come_before_from_and_flags_are_parsed() {
        let got =
            parse("ARG V=1\nFROM busybox:${V}\nCOPY --from=build --chown=1:2 /a /b\n").unwrap();
        assert_eq!(got[0].keyword, "ARG");
        assert_eq!(got[2].flag("from"), Some("build"));
        assert_eq!(got[2].flag("chown"), Some("1:2"));
        assert_eq!(got[2].rest, "/a /b");
    }

    #[test]
    fn substitution_forms() {
        let e = |s: &str| expand(s, '\\', &vars).unwrap();
        assert_eq!(e("$A/${A}/x$B"), "alpha/alpha/x");
        assert_eq!(e("${B:-def}-${EMPTY:-d2}-${A:-no}"), "def-d2-alpha");
        assert_eq!(e("${A:+yes}${B:+no}"), "yes");
        assert_eq!(e("\\$A costs $"), "$A costs $");
        assert!(expand("${A", '\\', &vars).is_err());
        assert!(expand("${A:?x}", '\\', &vars).is_err());
    }

    #[test]
    fn words_and_pairs_honour_quotes() {
        let w = words("a \"b c\" 'd $A' $A\\ x", '\\', &vars).unwrap();
        assert_eq!(w, vec!["a", "b c", "d $A", "alpha x"]);
        let i = parse("FROM s\nENV X=\"1 2\" Y=$A\nENV OLD some value\n").unwrap();
        assert_eq!(
            pairs(&i[1], &vars).unwrap(),
            vec![
                ("X".to_string(), Some("1 2".to_string())),
                ("Y".to_string(), Some("alpha".to_string()))
            ]
        );
        assert_eq!(
            pairs(&i[2], &vars).unwrap(),
            vec![("OLD".to_string(), Some("some value".to_string()))]
        );
    }

    #[test]
    fn heredocs_are_read_up_to_their_names() {
        let text = "FROM a\nRUN <<EOF\necho hi\n\nEOF\nRUN cat <<-'X' > /f\n\t$KEPT\n\tX\nCOPY <<a.txt <<b.txt /d/\nA\na.txt\nB\nb.txt\nCMD x <<EOF\n";
        let parsed = parse(text).unwrap();
        assert_eq!(parsed[1].command(), Command::Shell("echo hi\n\n".into()));
        assert_eq!(
            parsed[2].command(),
            Command::Shell("cat <<-'X' > /f\n$KEPT\nX".into())
        );
        assert!(!parsed[2].heredocs[0].expand);
        let names: Vec<&str> = parsed[3].heredocs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
        assert_eq!(parsed[3].heredocs[1].body, "B\n");
        // Only RUN, COPY and ADD read documents; `<<<` is no marker.
        assert!(parsed[4].heredocs.is_empty());
        assert!(heredoc_markers("cat <<<word").is_empty());
        let err = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("unterminated heredoc <<EOF"), "{err}");
    }
}
