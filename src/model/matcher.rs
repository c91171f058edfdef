//! Alertmanager label matchers: `name op value`, e.g. `severity=~"critical|warning"`.
//!
//! The accepted syntax follows Alertmanager's UTF-8 matcher parser
//! (`matcher/parse`) and its classic predecessor (`pkg/labels`):
//!
//! * Operators `=`, `!=`, `=~` and `!~`; whitespace is allowed around names,
//!   operators and values.
//! * Label names are either classic (`[a-zA-Z_][a-zA-Z0-9_]*`) or double-quoted
//!   UTF-8 (`"my label"="x"`). Empty names are rejected.
//! * Values are either double-quoted (escapes `\"`, `\\`, `\n`, `\t`, `\r`; any
//!   other escape is an error) or unquoted. An unquoted value is a run of
//!   characters up to `,`, `}` or the end of input; it must not contain
//!   whitespace, `{`, `}`, `,`, `=`, `!`, `~`, `"`, `'`, `` ` `` or `\`.
//!   A missing value (`a=`) is the empty string.
//! * Regular expressions are anchored at both ends: `^(?:VALUE)$`.
//! * An absent label matches like an empty one.
//!
//! Error columns are 1-based and counted in characters (not bytes). An error at
//! the end of the input points one past the last character.

use std::fmt;
use std::str::FromStr;

use regex::Regex;

use super::labels::LabelSet;

/// A matcher's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    RegexMatch,
    /// `!~`
    RegexNoMatch,
}

impl MatchOp {
    /// The operator as written in a matcher.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        }
    }

    fn is_regex(self) -> bool {
        matches!(self, MatchOp::RegexMatch | MatchOp::RegexNoMatch)
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parse or construction error.
///
/// `column` is the 1-based character column of the offending position in the
/// parsed input. Errors from [`Matcher::new`], which has no input text, use
/// column 0.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[error("column {column}: {message}")]
pub struct MatcherError {
    pub column: usize,
    pub message: String,
}

/// One label matcher.
#[derive(Clone, Debug)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    /// `^(?:value)$`, present for the regex operators.
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

impl Matcher {
    /// Builds a matcher from its parts. The name must not be empty; for the
    /// regex operators the value must be a valid regular expression. Errors
    /// carry column 0 (there is no input text to point into).
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, MatcherError> {
        if name.is_empty() {
            return Err(MatcherError {
                column: 0,
                message: "label name must not be empty".to_string(),
            });
        }
        let regex = if op.is_regex() {
            Some(compile_anchored(value).map_err(|message| MatcherError { column: 0, message })?)
        } else {
            None
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Parses exactly one matcher, e.g. `severity=~"critical|warning"`,
    /// `team="db"` or `team=db`. Braces and lists are not accepted here; use
    /// [`parse_matchers`] for those.
    pub fn parse(input: &str) -> Result<Matcher, MatcherError> {
        let mut p = Parser::new(input);
        p.skip_ws();
        if p.peek() == Some('{') {
            return Err(p.err_here("braces are not accepted for a single matcher; write `name=\"value\"`"));
        }
        let m = p.matcher()?;
        p.skip_ws();
        match p.peek() {
            None => Ok(m),
            Some(',') => Err(p.err_here("expected a single matcher, found ','")),
            Some(c) => Err(p.err_here(format!(
                "unexpected {} after matcher; expected end of input",
                show(c)
            ))),
        }
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operator.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value (for regex operators, the unanchored pattern).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether the label set satisfies this matcher. An absent label is
    /// treated as the empty string, as Alertmanager does.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let actual = labels.get(&self.name).unwrap_or("");
        self.matches_value(actual)
    }

    /// Whether a single label value satisfies this matcher.
    pub fn matches_value(&self, actual: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => actual == self.value,
            (MatchOp::NotEqual, _) => actual != self.value,
            (MatchOp::RegexMatch, Some(re)) => re.is_match(actual),
            (MatchOp::RegexNoMatch, Some(re)) => !re.is_match(actual),
            // Construction always compiles a regex for the regex operators.
            (MatchOp::RegexMatch | MatchOp::RegexNoMatch, None) => {
                unreachable!("regex matcher without a compiled regex")
            }
        }
    }
}

impl fmt::Display for Matcher {
    /// Canonical form `name op "escaped value"`, e.g. `team="db"`. A name that
    /// is not a classic label name is double-quoted. The output parses back
    /// to an equal matcher.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_classic_name(&self.name) {
            f.write_str(&self.name)?;
        } else {
            write!(f, "\"{}\"", escape(&self.name))?;
        }
        write!(f, "{}\"{}\"", self.op, escape(&self.value))
    }
}

impl FromStr for Matcher {
    type Err = MatcherError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Matcher::parse(s)
    }
}

/// Parses several matchers: the brace form `{a="b", c=~"d|e"}`, a bare
/// comma-separated list `a="b",c=~"d|e"`, or a single matcher. A trailing comma
/// is allowed. Empty input and `{}` give an empty list.
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, MatcherError> {
    let mut p = Parser::new(input);
    let mut out = Vec::new();
    p.skip_ws();
    let braced = p.peek() == Some('{');
    if braced {
        p.bump();
    }
    loop {
        p.skip_ws();
        match p.peek() {
            None if braced => return Err(p.err_here("missing closing '}'")),
            None => return Ok(out),
            Some('}') if braced => {
                p.bump();
                break;
            }
            Some('}') => return Err(p.err_here("unexpected '}' without an opening '{'")),
            _ => {}
        }
        out.push(p.matcher()?);
        p.skip_ws();
        match p.peek() {
            Some(',') => p.bump(),
            None | Some('}') => {}
            Some(c) => {
                let expected = if braced {
                    "',' or '}'"
                } else {
                    "',' or end of input"
                };
                return Err(p.err_here(format!("expected {expected} after matcher, found {}", show(c))));
            }
        }
    }
    p.skip_ws();
    match p.peek() {
        None => Ok(out),
        Some(c) => Err(p.err_here(format!("unexpected {} after closing '}}'", show(c)))),
    }
}

/// Characters that end an unquoted value or are not allowed inside one.
fn is_reserved(c: char) -> bool {
    c.is_whitespace() || matches!(c, '{' | '}' | ',' | '=' | '!' | '~' | '"' | '\'' | '`' | '\\')
}

fn is_classic_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// OpenMetrics-style escaping, the inverse of the quoted-string parser.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Human-readable rendering of a character in messages.
fn show(c: char) -> String {
    match c {
        '\'' => "\"'\"".to_string(),
        '"' | '\\' => format!("'{c}'"),
        c => format!("'{}'", c.escape_debug()),
    }
}

/// Compiles `^(?:pattern)$`. The bare pattern is checked first so that an
/// unbalanced value like `a)|(b` cannot escape the anchoring group.
fn compile_anchored(pattern: &str) -> Result<Regex, String> {
    let describe = |e: regex::Error| {
        let text = e.to_string();
        // Syntax errors are a multi-line diagram ending in "error: <reason>".
        let reason = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(text.trim())
            .to_string();
        format!("invalid regular expression \"{}\": {reason}", escape(pattern))
    };
    Regex::new(pattern).map_err(describe)?;
    Regex::new(&format!("^(?:{pattern})$")).map_err(describe)
}

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.src[self.pos..].chars().nth(1)
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// 1-based character column of a byte offset.
    fn column(&self, byte_pos: usize) -> usize {
        self.src[..byte_pos].chars().count() + 1
    }

    fn err_at(&self, byte_pos: usize, message: impl Into<String>) -> MatcherError {
        MatcherError {
            column: self.column(byte_pos),
            message: message.into(),
        }
    }

    fn err_here(&self, message: impl Into<String>) -> MatcherError {
        self.err_at(self.pos, message)
    }

    /// `name op value`, with leading whitespace; stops after the value.
    fn matcher(&mut self) -> Result<Matcher, MatcherError> {
        let name = self.name()?;
        let op = self.op()?;
        self.skip_ws();
        let value_pos = self.pos;
        let value = self.value(op)?;
        let regex = if op.is_regex() {
            Some(compile_anchored(&value).map_err(|m| self.err_at(value_pos, m))?)
        } else {
            None
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    fn name(&mut self) -> Result<String, MatcherError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => Err(self.err_here("expected a label name, found end of input")),
            Some('"') => {
                let name = self.quoted()?;
                if name.is_empty() {
                    return Err(self.err_at(start, "label name must not be empty"));
                }
                Ok(name)
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.bump();
                }
                match self.peek() {
                    Some(c) if !is_reserved(c) => Err(self.err_here(format!(
                        "invalid character {} in label name; unquoted label names must \
                         match [a-zA-Z_][a-zA-Z0-9_]*, double-quote the name to use other characters",
                        show(c)
                    ))),
                    _ => Ok(self.src[start..self.pos].to_string()),
                }
            }
            Some(c @ ('=' | '!' | '~')) => Err(self.err_here(format!(
                "expected a label name before the operator, found {}",
                show(c)
            ))),
            Some(c) if is_reserved(c) => {
                Err(self.err_here(format!("expected a label name, found {}", show(c))))
            }
            Some(c) => Err(self.err_here(format!(
                "invalid character {} at start of label name; unquoted label names must \
                 match [a-zA-Z_][a-zA-Z0-9_]*, double-quote the name to use other characters",
                show(c)
            ))),
        }
    }

    fn op(&mut self) -> Result<MatchOp, MatcherError> {
        const EXPECTED: &str = "expected an operator ('=', '!=', '=~' or '!~')";
        self.skip_ws();
        let op = match (self.peek(), self.peek_second()) {
            (Some('='), Some('~')) => MatchOp::RegexMatch,
            (Some('='), _) => MatchOp::Equal,
            (Some('!'), Some('=')) => MatchOp::NotEqual,
            (Some('!'), Some('~')) => MatchOp::RegexNoMatch,
            (Some('!'), _) => return Err(self.err_here("invalid operator '!'; expected '!=' or '!~'")),
            (Some('~'), _) => return Err(self.err_here(format!("invalid operator '~'; {EXPECTED}"))),
            (None, _) => {
                return Err(self.err_here(format!("{EXPECTED} after the label name, found end of input")))
            }
            (Some(c), _) => {
                return Err(self.err_here(format!("{EXPECTED} after the label name, found {}", show(c))))
            }
        };
        for _ in 0..op.as_str().len() {
            self.bump();
        }
        Ok(op)
    }

    /// A quoted or unquoted value; whitespace before it is already skipped.
    fn value(&mut self, op: MatchOp) -> Result<String, MatcherError> {
        let start = self.pos;
        match self.peek() {
            // `a=` (also `a=,` and `a=}`) means the empty value.
            None | Some(',' | '}') => return Ok(String::new()),
            Some('"') => return self.quoted(),
            Some(c @ ('=' | '!' | '~')) => {
                return Err(self.err_here(format!(
                    "unexpected {} after operator '{op}'; double-quote the value if it \
                     starts with {}",
                    show(c),
                    show(c)
                )))
            }
            _ => {}
        }
        while self.peek().is_some_and(|c| !is_reserved(c)) {
            self.bump();
        }
        let end = self.pos;
        match self.peek() {
            None | Some(',' | '}') => {}
            Some(c) if c.is_whitespace() => {
                self.skip_ws();
                if let Some(c) = self.peek().filter(|c| !matches!(c, ',' | '}')) {
                    return Err(self.err_here(format!(
                        "unexpected {} after unquoted value \"{}\"; unquoted values cannot \
                         contain whitespace, double-quote the value",
                        show(c),
                        escape(&self.src[start..end])
                    )));
                }
            }
            Some('\\') => {
                return Err(self.err_here(
                    "'\\' is not allowed in an unquoted value; escape sequences need a \
                     double-quoted value",
                ))
            }
            Some(c @ ('\'' | '`')) => {
                return Err(self.err_here(format!(
                    "{} is not allowed in an unquoted value; use double quotes for quoting",
                    show(c)
                )))
            }
            Some(c) => {
                return Err(self.err_here(format!(
                    "{} is not allowed in an unquoted value; double-quote the whole value",
                    show(c)
                )))
            }
        }
        Ok(self.src[start..end].to_string())
    }

    /// A double-quoted string starting at the current `"`; returns it unescaped.
    fn quoted(&mut self) -> Result<String, MatcherError> {
        let open = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            let here = self.pos;
            match self.peek() {
                None => return Err(self.err_at(open, "unterminated quoted string: missing closing '\"'")),
                Some('"') => {
                    self.bump();
                    return Ok(out);
                }
                Some('\\') => {
                    self.bump();
                    let unescaped = match self.peek() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        None => {
                            return Err(self.err_at(open, "unterminated quoted string: missing closing '\"'"))
                        }
                        Some(c) => {
                            return Err(self.err_at(
                                here,
                                format!(
                                    "unknown escape sequence '\\{}' in quoted string; supported \
                                     are \\\", \\\\, \\n, \\t and \\r (write \\\\ for a literal \
                                     backslash, e.g. \"\\\\d+\")",
                                    c.escape_debug()
                                ),
                            ))
                        }
                    };
                    out.push(unescaped);
                    self.bump();
                }
                Some(c) => {
                    out.push(c);
                    self.bump();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().copied().collect()
    }

    fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher::new(name, op, value).unwrap()
    }

    use MatchOp::{Equal as Eq_, NotEqual as Ne, RegexMatch as Re, RegexNoMatch as Nre};

    #[test]
    fn parse_single_ok() {
        let cases: &[(&str, &str, MatchOp, &str)] = &[
            (r#"team="db""#, "team", Eq_, "db"),
            ("team=db", "team", Eq_, "db"),
            (
                r#"severity=~"critical|warning""#,
                "severity",
                Re,
                "critical|warning",
            ),
            ("severity=~critical|warning", "severity", Re, "critical|warning"),
            (r#"foo!="bar""#, "foo", Ne, "bar"),
            (r#"foo!~"bar.*""#, "foo", Nre, "bar.*"),
            ("foo=~[a-z]+", "foo", Re, "[a-z]+"),
            ("foo!~[a-z]+", "foo", Nre, "[a-z]+"),
            ("statuscode=~5..", "statuscode", Re, "5.."),
            // Whitespace variants.
            ("  foo  =  bar  ", "foo", Eq_, "bar"),
            ("foo =~ \"a b\"", "foo", Re, "a b"),
            ("\tfoo\n!=\r\n\"x\"\n", "foo", Ne, "x"),
            ("foo\u{3000}=\u{3000}bar", "foo", Eq_, "bar"),
            // Empty values.
            (r#"foo="""#, "foo", Eq_, ""),
            ("foo=", "foo", Eq_, ""),
            ("foo = ", "foo", Eq_, ""),
            (r#"foo!~"""#, "foo", Nre, ""),
            ("foo!=", "foo", Ne, ""),
            // Escapes in quoted values.
            (r#"foo="\"bar\"""#, "foo", Eq_, "\"bar\""),
            (r#"foo="bar\\""#, "foo", Eq_, "bar\\"),
            (r#"foo="bar\n""#, "foo", Eq_, "bar\n"),
            (r#"foo="a\tb\rc""#, "foo", Eq_, "a\tb\rc"),
            (r#"foo=~"\\d+""#, "foo", Re, "\\d+"),
            ("foo=\"line1\nline2\"", "foo", Eq_, "line1\nline2"),
            (r#"contains_quote != "\"""#, "contains_quote", Ne, "\""),
            (r#"contains_comma !~ "foo,bar""#, "contains_comma", Nre, "foo,bar"),
            (r#"q="{a=b}""#, "q", Eq_, "{a=b}"),
            (
                r#"quote="She said: \"Hi, ladies! That's gender-neutral…\"""#,
                "quote",
                Eq_,
                "She said: \"Hi, ladies! That's gender-neutral…\"",
            ),
            // Unicode.
            (
                "alertname=\"数据库连接数过高\"",
                "alertname",
                Eq_,
                "数据库连接数过高",
            ),
            ("alertname=数据库连接数过高", "alertname", Eq_, "数据库连接数过高"),
            ("foo=🙂", "foo", Eq_, "🙂"),
            ("foo=🙂bar", "foo", Eq_, "🙂bar"),
            // Quoted (UTF-8) names.
            (r#""my label"="x""#, "my label", Eq_, "x"),
            (r#""foo"="bar""#, "foo", Eq_, "bar"),
            (r#""服务"=~"a|b""#, "服务", Re, "a|b"),
            (r#""a\"b"=x"#, "a\"b", Eq_, "x"),
            (r#""foo.bar" != baz"#, "foo.bar", Ne, "baz"),
            ("_x9=1", "_x9", Eq_, "1"),
        ];
        for (input, name, op, value) in cases {
            let got = Matcher::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(
                (got.name(), got.op(), got.value()),
                (*name, *op, *value),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn parse_single_errors() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "expected a label name, found end of input"),
            ("   ", 4, "expected a label name"),
            (r#"{team="db"}"#, 1, "braces are not accepted"),
            ("a=b,c=d", 4, "expected a single matcher"),
            ("a=b,", 4, "expected a single matcher"),
            ("a=b}", 4, "unexpected '}' after matcher"),
            ("foo", 4, "expected an operator"),
            ("foo bar", 5, "expected an operator"),
            ("foo~bar", 4, "invalid operator '~'"),
            ("foo!bar", 4, "invalid operator '!'"),
            ("=bar", 1, "expected a label name before the operator"),
            (r#"""="x""#, 1, "label name must not be empty"),
            (
                r#"invalid-name = "valid label""#,
                8,
                "invalid character '-' in label name",
            ),
            ("foo:bar=x", 4, "invalid character ':' in label name"),
            ("9lives=x", 1, "invalid character '9' at start of label name"),
            ("名字=x", 1, "invalid character '名' at start of label name"),
            // Duplicate operators.
            ("a==b", 3, "unexpected '=' after operator '='"),
            ("a=~~b", 4, "unexpected '~' after operator '=~'"),
            ("a!=!=b", 4, "unexpected '!' after operator '!='"),
            ("a = =b", 5, "unexpected '=' after operator '='"),
            // Quoting problems.
            (r#"job="value"#, 5, "unterminated quoted string"),
            (r#"job="value\"#, 5, "unterminated quoted string"),
            (r#"job="value\""#, 5, "unterminated quoted string"),
            (r#""job=x"#, 1, "unterminated quoted string"),
            (r#"job=value""#, 10, "'\"' is not allowed in an unquoted value"),
            (r#"contains_unescaped_quote = foo"bar"#, 31, "'\"' is not allowed"),
            (r#"job="a"b""#, 8, "unexpected 'b' after matcher"),
            (r#"foo="bar\w""#, 9, "unknown escape sequence '\\w'"),
            (r#"foo=~"\d+""#, 7, "unknown escape sequence '\\d'"),
            (r#"foo="数据\x""#, 8, "unknown escape sequence '\\x'"),
            ("foo=bar\\n", 8, "'\\' is not allowed in an unquoted value"),
            ("foo=bar baz", 9, "unquoted values cannot contain whitespace"),
            (
                "foo='bar'",
                5,
                "not allowed in an unquoted value; use double quotes",
            ),
            ("foo=a{2}", 6, "'{' is not allowed in an unquoted value"),
            ("foo=a=b", 6, "'=' is not allowed in an unquoted value"),
            ("foo=数据 库", 8, "unquoted values cannot contain whitespace"),
            // Invalid regexes point at the value.
            (r#"foo=~"invalid[regexp""#, 6, "invalid regular expression"),
            ("foo =~ (a", 8, "invalid regular expression \"(a\""),
            (r#"foo=~"a)|(b""#, 6, "invalid regular expression"),
            (r#"数="x""#, 1, "at start of label name"),
        ];
        for (input, column, fragment) in cases {
            let err = Matcher::parse(input).expect_err(input);
            assert_eq!(err.column, *column, "input {input:?}: {err}");
            assert!(
                err.message.contains(fragment),
                "input {input:?}: message {:?} lacks {fragment:?}",
                err.message
            );
        }
    }

    #[test]
    fn parse_matchers_ok() {
        let cases: Vec<(&str, Vec<Matcher>)> = vec![
            ("", vec![]),
            ("   ", vec![]),
            ("{}", vec![]),
            ("{ }", vec![]),
            (" { } ", vec![]),
            ("{foo=bar}", vec![m("foo", Eq_, "bar")]),
            ("{foo=bar,}", vec![m("foo", Eq_, "bar")]),
            ("{foo=bar , }", vec![m("foo", Eq_, "bar")]),
            ("foo=bar", vec![m("foo", Eq_, "bar")]),
            ("foo=bar,", vec![m("foo", Eq_, "bar")]),
            (r#""foo"="bar","#, vec![m("foo", Eq_, "bar")]),
            ("{foo=}", vec![m("foo", Eq_, "")]),
            ("{foo=,bar=x}", vec![m("foo", Eq_, ""), m("bar", Eq_, "x")]),
            ("foo=,bar!=", vec![m("foo", Eq_, ""), m("bar", Ne, "")]),
            (
                r#"{foo="bar", baz!~"quux.*"}"#,
                vec![m("foo", Eq_, "bar"), m("baz", Nre, "quux.*")],
            ),
            (
                r#"{foo="bar",baz!~".*quux", derp="wat"}"#,
                vec![
                    m("foo", Eq_, "bar"),
                    m("baz", Nre, ".*quux"),
                    m("derp", Eq_, "wat"),
                ],
            ),
            (
                r#"{foo="bar,quux", job="job1"}"#,
                vec![m("foo", Eq_, "bar,quux"), m("job", Eq_, "job1")],
            ),
            (
                r#"{foo = "bar", dings != "bums", }"#,
                vec![m("foo", Eq_, "bar"), m("dings", Ne, "bums")],
            ),
            (
                "foo=bar,dings!=bums",
                vec![m("foo", Eq_, "bar"), m("dings", Ne, "bums")],
            ),
            (
                "foo=bar, dings!=bums",
                vec![m("foo", Eq_, "bar"), m("dings", Ne, "bums")],
            ),
            (
                r#"contains_quote != "\"" , contains_comma !~ "foo,bar" , "#,
                vec![m("contains_quote", Ne, "\""), m("contains_comma", Nre, "foo,bar")],
            ),
            (r#"{q="}", r="{"}"#, vec![m("q", Eq_, "}"), m("r", Eq_, "{")]),
            (
                "{\n  team = \"db\",\n  severity =~ \"critical|warning\",\n}\n",
                vec![m("team", Eq_, "db"), m("severity", Re, "critical|warning")],
            ),
            (
                r#"{"my label"="x", alertname="数据库连接数过高"}"#,
                vec![m("my label", Eq_, "x"), m("alertname", Eq_, "数据库连接数过高")],
            ),
            ("{foo=🙂bar}", vec![m("foo", Eq_, "🙂bar")]),
        ];
        for (input, want) in cases {
            let got = parse_matchers(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got, want, "input {input:?}");
        }
    }

    #[test]
    fn parse_matchers_errors() {
        let cases: &[(&str, usize, &str)] = &[
            (",", 1, "expected a label name, found ','"),
            ("{,}", 2, "expected a label name, found ','"),
            ("a=b,,c=d", 5, "expected a label name, found ','"),
            ("{", 2, "missing closing '}'"),
            ("{foo=bar", 9, "missing closing '}'"),
            ("{foo=bar,", 10, "missing closing '}'"),
            ("{数据=\"x\"", 1 + 1, "at start of label name"),
            ("{alertname=\"数据库\"", 17, "missing closing '}'"),
            ("}", 1, "unexpected '}' without an opening '{'"),
            ("foo=bar}", 8, "unexpected '}' without an opening '{'"),
            ("{foo=bar}}", 10, "unexpected '}' after closing '}'"),
            ("{foo=bar} x", 11, "unexpected 'x' after closing '}'"),
            ("{foo=bar}{", 10, "unexpected '{' after closing '}'"),
            ("a=b,{c=d}", 5, "expected a label name, found '{'"),
            ("{{a=b}}", 2, "expected a label name, found '{'"),
            (
                r#"{foo="bar" baz="x"}"#,
                12,
                "expected ',' or '}' after matcher, found 'b'",
            ),
            (
                r#"foo="bar" baz="x""#,
                11,
                "expected ',' or end of input after matcher",
            ),
            (r#"{foo=:"bar"}"#, 7, "'\"' is not allowed in an unquoted value"),
            (r#"{foo="bar\w"}"#, 10, "unknown escape sequence"),
            (r#"{foo="bar}"#, 6, "unterminated quoted string"),
            ("{foo=bar\\n}", 9, "'\\' is not allowed"),
            ("{a=b,c==d}", 8, "unexpected '=' after operator '='"),
            ("{a=b, c}", 8, "expected an operator"),
            (
                r#"{x="数据", foo=~"invalid[regexp"}"#,
                15,
                "invalid regular expression",
            ),
            (r#""{foo=\"bar\"}""#, 16, "expected an operator"),
        ];
        for (input, column, fragment) in cases {
            let err = parse_matchers(input).expect_err(input);
            assert_eq!(err.column, *column, "input {input:?}: {err}");
            assert!(
                err.message.contains(fragment),
                "input {input:?}: message {:?} lacks {fragment:?}",
                err.message
            );
        }
    }

    #[test]
    fn matching_semantics() {
        // (matcher, labels, expected)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            // Equality, absent vs empty.
            (r#"foo="bar""#, &[("foo", "bar")], true),
            (r#"foo="bar""#, &[("foo", "baz")], false),
            (r#"foo="bar""#, &[], false),
            (r#"foo="""#, &[], true),
            (r#"foo="""#, &[("foo", "")], true),
            (r#"foo="""#, &[("foo", "x")], false),
            ("foo=", &[], true),
            (r#"foo!="""#, &[], false),
            (r#"foo!="""#, &[("foo", "")], false),
            (r#"foo!="""#, &[("foo", "x")], true),
            (r#"foo!="bar""#, &[], true),
            (r#"foo!="bar""#, &[("foo", "bar")], false),
            // Empty regexes.
            (r#"foo=~"""#, &[], true),
            (r#"foo=~"""#, &[("foo", "x")], false),
            (r#"foo!~"""#, &[], false),
            (r#"foo!~"""#, &[("foo", "")], false),
            (r#"foo!~"""#, &[("foo", "x")], true),
            (r#"foo=~".+""#, &[], false),
            (r#"foo=~".*""#, &[], true),
            (r#"foo!~".+""#, &[], true),
            // Anchoring and special characters.
            (r#"foo=~"a.b""#, &[("foo", "aXb")], true),
            (r#"foo=~"a.b""#, &[("foo", "axxb")], false),
            (r#"foo=~"a|b""#, &[("foo", "a")], true),
            (r#"foo=~"a|b""#, &[("foo", "b")], true),
            (r#"foo=~"a|b""#, &[("foo", "xa")], false),
            (r#"foo=~"a|b""#, &[("foo", "bx")], false),
            (r#"foo=~"a|b""#, &[("foo", "ab")], false),
            (r#"foo=~"bar""#, &[("foo", "foobar")], false),
            (r#"foo=~"bar""#, &[("foo", "barfoo")], false),
            (r#"foo=~"a\\.b""#, &[("foo", "a.b")], true),
            (r#"foo=~"a\\.b""#, &[("foo", "aXb")], false),
            (r#"foo=~"\\d+""#, &[("foo", "123")], true),
            (r#"foo=~"\\d+""#, &[("foo", "12a")], false),
            (r#"foo=~"5..""#, &[("foo", "503")], true),
            (r#"foo=~"5..""#, &[("foo", "5033")], false),
            (r#"foo!~"a|b""#, &[("foo", "xa")], true),
            (r#"foo!~"a|b""#, &[("foo", "a")], false),
            (r#"foo=~"a.b""#, &[("foo", "a\nb")], false),
            (r#"foo=~"(?s)a.b""#, &[("foo", "a\nb")], true),
            (r#"foo=~"a\nb""#, &[("foo", "a\nb")], true),
            (r#"foo=~"(?i)CRIT""#, &[("foo", "crit")], true),
            // Escaped quotes and backslashes.
            (r#"foo="\"x\"""#, &[("foo", "\"x\"")], true),
            (r#"foo="a\\b""#, &[("foo", "a\\b")], true),
            (r#"foo="a\\b""#, &[("foo", "a\\\\b")], false),
            (r#"foo="a\nb""#, &[("foo", "a\nb")], true),
            // Unicode.
            (
                "alertname=\"数据库连接数过高\"",
                &[("alertname", "数据库连接数过高")],
                true,
            ),
            (
                "alertname=~\"数据库.*\"",
                &[("alertname", "数据库连接数过高")],
                true,
            ),
            ("alertname=~\"数据.\"", &[("alertname", "数据库")], true),
            (r#""my label"="x""#, &[("my label", "x")], true),
            (r#""my label"="x""#, &[("my_label", "x")], false),
            // Other labels don't matter.
            (r#"foo="bar""#, &[("foo", "bar"), ("other", "1")], true),
        ];
        for (input, pairs, want) in cases {
            let matcher = Matcher::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(
                matcher.matches(&labels(pairs)),
                *want,
                "{input:?} against {pairs:?}"
            );
        }
    }

    #[test]
    fn new_validates() {
        let err = Matcher::new("", Eq_, "x").unwrap_err();
        assert_eq!(err.column, 0);
        assert!(err.message.contains("empty"));
        let err = Matcher::new("foo", Re, "a(").unwrap_err();
        assert_eq!(err.column, 0);
        assert!(
            err.message.starts_with("invalid regular expression \"a(\""),
            "{err}"
        );
        assert!(!err.message.contains('\n'), "{err}");
        // Unbalanced groups cannot break out of the anchoring.
        assert!(Matcher::new("foo", Re, "a)|(b").is_err());
        // Any text is a fine value for the equality operators.
        assert!(Matcher::new("foo", Eq_, "a)|(b").is_ok());
        assert!(Matcher::new("any name", Ne, "\"").is_ok());
        let re = m("foo", Re, "a|b");
        assert!(re.matches_value("a") && !re.matches_value("xa"));
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let cases: &[(Matcher, &str)] = &[
            (m("team", Eq_, "db"), r#"team="db""#),
            (
                m("severity", Re, "critical|warning"),
                r#"severity=~"critical|warning""#,
            ),
            (m("foo", Ne, ""), r#"foo!="""#),
            (m("foo", Nre, ""), r#"foo!~"""#),
            (m("foo", Eq_, "a\"b\\c\nd"), r#"foo="a\"b\\c\nd""#),
            (m("foo", Re, "\\d+"), r#"foo=~"\\d+""#),
            (m("my label", Eq_, "x"), r#""my label"="x""#),
            (m("a\"b", Eq_, "x"), r#""a\"b"="x""#),
            (m("9x", Eq_, "x"), r#""9x"="x""#),
            (
                m("alertname", Eq_, "数据库连接数过高"),
                "alertname=\"数据库连接数过高\"",
            ),
            (m("foo", Eq_, "a\tb"), "foo=\"a\tb\""),
        ];
        for (matcher, want) in cases {
            let shown = matcher.to_string();
            assert_eq!(&shown, want);
            let back: Matcher = shown.parse().unwrap_or_else(|e| panic!("{shown:?}: {e}"));
            assert_eq!(&back, matcher);
        }
        assert_eq!(Matcher::parse(" team = db ").unwrap().to_string(), r#"team="db""#);
        assert_eq!(MatchOp::RegexNoMatch.to_string(), "!~");
    }

    #[test]
    fn error_display_and_unicode_columns() {
        let err = parse_matchers("{alertname=\"数据库\", x=~\"(\"}").unwrap_err();
        assert_eq!(err.column, 22);
        assert!(err
            .to_string()
            .starts_with("column 22: invalid regular expression"));
        // Columns count characters, not bytes.
        let err = Matcher::parse("🙂🙂=x").unwrap_err();
        assert_eq!(err.column, 1);
        let err = Matcher::parse(r#""🙂🙂"=x y"#).unwrap_err();
        assert_eq!(err.column, 8);
    }

    #[test]
    fn clone_keeps_regex() {
        let a = Matcher::parse(r#"foo=~"a|b""#).unwrap();
        let b = a.clone();
        assert!(b.matches(&labels(&[("foo", "b")])));
        assert!(!b.matches(&labels(&[("foo", "c")])));
        assert!(format!("{b:?}").contains("RegexMatch"));
    }
}
