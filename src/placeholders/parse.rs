//! Splitting a string into literal text and placeholders, and parsing one reference.
//!
//! The grammar is documented in the module doc of [`crate::placeholders`]; the rules that
//! matter here: `${` always opens a placeholder (so a malformed one is reported), `$<` opens one
//! only when a well-formed reference and `>` follow (shell snippets are full of `$<`), and
//! `$${` / `$$<` are the escapes for the literal `${` / `$<`.

/// One step of the path after the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(i64),
    Wildcard,
}

/// A well-formed reference: `${<stage><path>}`, with at least one path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    pub stage: String,
    pub path: Vec<Segment>,
}

/// The segment after `results`, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskRef<'r> {
    /// `taskN`: always position N, even when some task is named like that.
    Position(usize),
    Name(&'r str),
}

impl Reference {
    /// The task this reference reads results of, when its path starts with `results.<task>`.
    pub fn task(&self) -> Option<TaskRef<'_>> {
        match self.path.as_slice() {
            [Segment::Key(results), Segment::Key(task), ..] if results == "results" => {
                Some(match task_position(task) {
                    Some(n) => TaskRef::Position(n),
                    None => TaskRef::Name(task),
                })
            }
            _ => None,
        }
    }
}

/// `task` followed by a positive number without leading zero: the only spellings that are keys of
/// a stage's `results`, so `task0` or `task01` are looked up as names instead.
pub(crate) fn task_position(key: &str) -> Option<usize> {
    let digits = key.strip_prefix("task")?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'s> {
    Text(&'s str),
    /// `text` is the placeholder exactly as written (what `keep` leaves and errors quote).
    Placeholder {
        text: &'s str,
        reference: Result<Reference, String>,
    },
}

/// Splits `s` into text and placeholders, escapes already turned into their literal text.
pub(crate) fn split(s: &str) -> Vec<Piece<'_>> {
    scan(s).0
}

/// [`split`], with how many bytes it examined on the way: at most a small multiple of the
/// text's length whatever the text (tests hold it to that). Parsing a placeholder looks at most
/// as far as its end; a malformed `${…}` ends at its first `}` or the next `${`, and what a
/// failed parse looked at beyond that can only be re-read inside a quoted key of another
/// candidate (a quote closes at its first unescaped twin, so regions of one quote kind never
/// nest).
pub(crate) fn scan(s: &str) -> (Vec<Piece<'_>>, usize) {
    let bytes = s.as_bytes();
    let mut pieces = Vec::new();
    let mut examined = 0;
    let mut text_start = 0;
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'$') {
        examined += offset + 1;
        let dollar = i + offset;
        match (bytes.get(dollar + 1), bytes.get(dollar + 2)) {
            (Some(b'$'), Some(b'{' | b'<')) => {
                push_text(&mut pieces, &s[text_start..dollar]);
                // The escape's literal text is the two characters after the first `$`.
                pieces.push(Piece::Text(&s[dollar + 1..dollar + 3]));
                i = dollar + 3;
                text_start = i;
            }
            (Some(b'{'), _) => {
                push_text(&mut pieces, &s[text_start..dollar]);
                let (parsed, looked_at) = parse_reference(s, dollar + 2, '}');
                examined += looked_at - dollar;
                let (reference, end) = match parsed {
                    Ok((reference, end)) => (Ok(reference), end),
                    Err(e) => {
                        let end = broken_end(bytes, dollar);
                        examined += end - dollar;
                        (Err(e), end)
                    }
                };
                pieces.push(Piece::Placeholder {
                    text: &s[dollar..end],
                    reference,
                });
                i = end;
                text_start = i;
            }
            (Some(b'<'), _) => {
                let (parsed, looked_at) = parse_reference(s, dollar + 2, '>');
                examined += looked_at - dollar;
                match parsed {
                    Ok((reference, end)) => {
                        push_text(&mut pieces, &s[text_start..dollar]);
                        pieces.push(Piece::Placeholder {
                            text: &s[dollar..end],
                            reference: Ok(reference),
                        });
                        i = end;
                        text_start = i;
                    }
                    Err(_) => i = dollar + 1,
                }
            }
            _ => i = dollar + 1,
        }
    }
    examined += bytes.len() - i;
    push_text(&mut pieces, &s[text_start..]);
    (pieces, examined)
}

/// Where a malformed `${…}` ends: after its first `}`, or before the next `${` so one typo does
/// not swallow the placeholder after it, or at the end. `keep` leaves exactly this text and
/// errors quote it. One scan that stops at whichever comes first: searching for each of them
/// to the end of the text made a text of many `${` cost its length squared.
fn broken_end(bytes: &[u8], dollar: usize) -> usize {
    let mut i = dollar + 2;
    while i < bytes.len() {
        match bytes[i] {
            b'}' => return i + 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// At most 60 characters of a placeholder or of text around an error, for messages: a
/// malformed placeholder may run to the end of a long text.
pub(crate) fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 60;
    match text.char_indices().nth(SHOWN) {
        None => text.into(),
        Some((cut, _)) => format!("{}… ({} more bytes)", &text[..cut], text.len() - cut).into(),
    }
}

fn push_text<'s>(pieces: &mut Vec<Piece<'s>>, text: &'s str) {
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | ':')
}

/// Parses the reference starting at byte `start` (just after `${` or `$<`) up to `close`.
/// Returns it with the byte offset just after `close`, and, either way, how far it looked.
pub(crate) fn parse_reference(
    s: &str,
    start: usize,
    close: char,
) -> (Result<(Reference, usize), String>, usize) {
    let open = if close == '}' { "${" } else { "$<" };
    let mut p = Parser {
        s,
        pos: start,
        start,
        open,
        looked_at: std::cell::Cell::new(start),
    };
    let parsed = p.reference(close);
    (parsed, p.looked_at.get().min(s.len()))
}

impl Parser<'_> {
    fn reference(&mut self, close: char) -> Result<(Reference, usize), String> {
        let open = self.open;
        let p = self;
        let stage = match p.peek() {
            Some('[') => {
                p.bump('[');
                match p.peek() {
                    Some(q @ ('\'' | '"')) => {
                        let stage = p.quoted(q)?;
                        p.expect(']')?;
                        stage
                    }
                    _ => return Err(p.unexpected("a quoted stage name")),
                }
            }
            _ => p.name().ok_or_else(|| p.unexpected("a stage name"))?,
        };
        let mut path = Vec::new();
        loop {
            match p.peek() {
                Some(c) if c == close => {
                    if path.is_empty() {
                        return Err(format!(
                            "expected a path after the stage, e.g. `{open}{}.status{close}`",
                            shown(&stage)
                        ));
                    }
                    return Ok((Reference { stage, path }, p.pos + c.len_utf8()));
                }
                Some('.') => {
                    p.bump('.');
                    match p.peek() {
                        Some('*') => {
                            p.bump('*');
                            path.push(Segment::Wildcard);
                        }
                        Some('.') => return Err("`..` (descendant search) is not supported".into()),
                        _ => match p.name() {
                            Some(key) => path.push(Segment::Key(key)),
                            None => return Err(p.unexpected("a key or `*`")),
                        },
                    }
                }
                Some('[') => {
                    p.bump('[');
                    match p.peek() {
                        Some('*') => {
                            p.bump('*');
                            path.push(Segment::Wildcard);
                        }
                        Some(q @ ('\'' | '"')) => path.push(Segment::Key(p.quoted(q)?)),
                        Some(c) if c == '-' || c.is_ascii_digit() => {
                            path.push(Segment::Index(p.index()?))
                        }
                        _ => return Err(p.unexpected("an index, `*` or a quoted key")),
                    }
                    p.expect(']')?;
                }
                None => return Err(format!("missing closing `{close}`")),
                Some(_) => return Err(p.unexpected(&format!("`.`, `[` or `{close}`"))),
            }
        }
    }
}

struct Parser<'s> {
    s: &'s str,
    pos: usize,
    start: usize,
    open: &'static str,
    /// The furthest byte examined (exclusive), for [`scan`]'s count of work.
    looked_at: std::cell::Cell<usize>,
}

impl Parser<'_> {
    fn saw(&self, up_to: usize) {
        self.looked_at.set(self.looked_at.get().max(up_to));
    }

    fn peek(&self) -> Option<char> {
        let c = self.s[self.pos..].chars().next();
        self.saw(self.pos + c.map_or(0, char::len_utf8));
        c
    }

    fn bump(&mut self, c: char) {
        self.pos += c.len_utf8();
    }

    fn unexpected(&self, wanted: &str) -> String {
        let after = format!("{}{}", self.open, shown(&self.s[self.start..self.pos]));
        match self.peek() {
            Some(c) => format!("expected {wanted} after `{after}`, found `{c}`"),
            None => format!("expected {wanted} after `{after}`, found the end of the text"),
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.bump(c);
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{c}`")))
        }
    }

    fn name(&mut self) -> Option<String> {
        let rest = &self.s[self.pos..];
        let len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
        self.saw(self.pos + len + 1);
        if len == 0 {
            return None;
        }
        self.pos += len;
        Some(rest[..len].to_owned())
    }

    fn index(&mut self) -> Result<i64, String> {
        let rest = &self.s[self.pos..];
        let digits_from = usize::from(rest.starts_with('-'));
        let len = rest[digits_from..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - digits_from);
        self.saw(self.pos + digits_from + len + 1);
        if len == 0 {
            self.pos += digits_from;
            return Err(self.unexpected("digits"));
        }
        let text = &rest[..digits_from + len];
        // i64::MIN has no positive counterpart: jsonpath-rust negates indexes and would overflow.
        let index = text
            .parse()
            .ok()
            .filter(|n| *n != i64::MIN)
            .ok_or_else(|| format!("index {text} is too large"))?;
        self.pos += text.len();
        Ok(index)
    }

    /// A quoted key; only `\\` and the two quotes may be escaped, so a stray backslash is an
    /// error rather than silently meaning something.
    fn quoted(&mut self, quote: char) -> Result<String, String> {
        self.bump(quote);
        let mut key = String::new();
        let mut chars = self.s[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            self.saw(self.pos + i + 2);
            match c {
                '\\' => match chars.next() {
                    Some((_, e @ ('\\' | '\'' | '"'))) => key.push(e),
                    Some((_, e)) => {
                        return Err(format!(
                            "unsupported escape `\\{e}` in a quoted key (only \\\\, \\' and \\\")"
                        ))
                    }
                    None => break,
                },
                c if c == quote => {
                    self.pos += i + c.len_utf8();
                    return Ok(key);
                }
                c => key.push(c),
            }
        }
        self.saw(self.s.len());
        Err(format!("unterminated quoted key (missing closing {quote})"))
    }
}

/// Appends `key` readably: `.key` when it is a plain name, `['key']` otherwise.
pub(crate) fn push_key(out: &mut String, key: &str) {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-'))
    {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
    } else {
        out.push_str("['");
        for c in key.chars() {
            if matches!(c, '\\' | '\'') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("']");
    }
}

/// The path as a reader would write it, for messages: `vm.ip`, `vms[0]`, `['a b']`.
pub(crate) fn render_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => push_key(&mut out, key),
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Wildcard => out.push_str("[*]"),
        }
    }
    out
}
