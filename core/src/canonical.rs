//! Canonical JSON per RFC 8785 (JSON Canonicalization Scheme, JCS) and the
//! dedup key derived from it.
//!
//! Two webhook deliveries that carry the same JSON value — whatever their
//! whitespace, key order, string escaping or number spelling — get the same
//! canonical bytes and therefore the same [`dedup_key`].
//!
//! The parser is our own (no map-ordering surprises from a general JSON
//! library) and strict:
//! - input must be valid UTF-8 (no BOM), one JSON value, nothing after it
//!   but whitespace (space, tab, CR, LF);
//! - object keys must be unique (compared after unescaping);
//! - `\u` escapes must not produce lone surrogates;
//! - numbers follow the JSON grammar and are read as IEEE-754 doubles
//!   (correctly rounded); a number that overflows to ±Infinity is rejected;
//! - nesting is limited to [`MAX_DEPTH`] arrays/objects, so hostile input
//!   cannot exhaust the stack (the limit holds on wasm too).
//!
//! Serialisation follows JCS: no whitespace; object members sorted by the
//! UTF-16 code units of their keys; strings escape only `"`, `\` and
//! U+0000–U+001F (`\b \t \n \f \r` in short form, the rest as `\u00xx`),
//! everything else is written as UTF-8; numbers are written by the
//! ECMAScript Number-to-String algorithm (`ryu-js`), so `-0` becomes `0`,
//! `1e21` becomes `1e+21` and `4.50` becomes `4.5`.
//!
//! [`Document`] is the single parse: callers that need both the dedup key
//! and a look at the value (the `webhook_guard` shape check) parse once.
//! The key streams the canonical form into SHA-256 ([`Sha256Sink`]) without
//! building it; strings without escapes and short integers are borrowed from
//! the input and written back unchanged, since they are already canonical.

use sha2::{Digest, Sha256};

/// Maximum nesting depth of arrays and objects.
pub const MAX_DEPTH: usize = 128;

/// Why input could not be canonicalised. Byte offsets refer to the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// The input is not valid UTF-8 (offset of the first bad byte).
    #[error("invalid UTF-8 at byte {0}")]
    InvalidUtf8(usize),
    /// The input ended inside a value (or was empty).
    #[error("unexpected end of input")]
    UnexpectedEnd,
    /// A byte that cannot start or continue a value here.
    #[error("unexpected character at byte {0}")]
    UnexpectedChar(usize),
    /// A number that does not follow the JSON grammar.
    #[error("invalid number at byte {0}")]
    InvalidNumber(usize),
    /// A number whose magnitude overflows an IEEE-754 double.
    #[error("number out of range at byte {0}")]
    NumberOutOfRange(usize),
    /// An unknown or incomplete backslash escape.
    #[error("invalid escape at byte {0}")]
    InvalidEscape(usize),
    /// A `\u` escape of a surrogate without its partner.
    #[error("lone surrogate at byte {0}")]
    LoneSurrogate(usize),
    /// An unescaped control character (U+0000–U+001F) inside a string.
    #[error("unescaped control character at byte {0}")]
    ControlCharacter(usize),
    /// The same key twice in one object (offset of the object's `{`).
    #[error("duplicate object key in object at byte {0}")]
    DuplicateKey(usize),
    /// More than [`MAX_DEPTH`] nested arrays/objects.
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Non-whitespace after the value.
    #[error("trailing data at byte {0}")]
    TrailingData(usize),
}

impl CanonicalError {
    /// A stable code for JSON error bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUtf8(_) => "json_invalid_utf8",
            Self::UnexpectedEnd => "json_unexpected_end",
            Self::UnexpectedChar(_) => "json_unexpected_char",
            Self::InvalidNumber(_) => "json_invalid_number",
            Self::NumberOutOfRange(_) => "json_number_out_of_range",
            Self::InvalidEscape(_) => "json_invalid_escape",
            Self::LoneSurrogate(_) => "json_lone_surrogate",
            Self::ControlCharacter(_) => "json_control_character",
            Self::DuplicateKey(_) => "json_duplicate_key",
            Self::TooDeep => "json_too_deep",
            Self::TrailingData(_) => "json_trailing_data",
        }
    }
}

/// The canonical (RFC 8785) form of `json_bytes`.
pub fn canonicalize(json_bytes: &[u8]) -> Result<Vec<u8>, CanonicalError> {
    let doc = Document::parse(json_bytes)?;
    let mut out = Vec::with_capacity(json_bytes.len());
    doc.write_canonical(&mut out);
    Ok(out)
}

/// Lowercase hex SHA-256 of the canonical form: the dedup key of an event.
pub fn dedup_key(json_bytes: &[u8]) -> Result<String, CanonicalError> {
    Ok(Document::parse(json_bytes)?.dedup_key())
}

/// Receives the canonical form piece by piece (every piece is whole UTF-8).
pub trait Sink {
    /// Appends `s`.
    fn write_str(&mut self, s: &str);
}

impl Sink for String {
    fn write_str(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl Sink for Vec<u8> {
    fn write_str(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

/// Bytes gathered before a hasher update (a multiple of the 64-byte block).
const HASH_BUF: usize = 1024;

/// Streams canonical output into SHA-256 without building it in memory.
///
/// Small pieces (keys, `,`, `:`) are gathered in a fixed buffer so that the
/// hasher sees a few large updates instead of thousands of tiny ones.
pub struct Sha256Sink {
    hasher: Sha256,
    buf: [u8; HASH_BUF],
    len: usize,
}

impl std::fmt::Debug for Sha256Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256Sink")
            .field("buffered", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for Sha256Sink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Sink {
    /// An empty hash.
    pub fn new() -> Self {
        Sha256Sink {
            hasher: Sha256::new(),
            buf: [0; HASH_BUF],
            len: 0,
        }
    }

    /// The digest of everything written.
    pub fn finalize(mut self) -> [u8; 32] {
        self.flush();
        self.hasher.finalize().into()
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.hasher.update(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Sink for Sha256Sink {
    fn write_str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        if bytes.len() > HASH_BUF - self.len {
            self.flush();
            if bytes.len() >= HASH_BUF {
                self.hasher.update(bytes);
                return;
            }
        }
        let end = self.len + bytes.len();
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }
}

/// A parsed JSON document, borrowing unescaped strings and plain integers
/// from the input. Parse once, then write the canonical form and inspect
/// the shape without reading the bytes again.
#[derive(Debug)]
pub struct Document<'a> {
    root: Value<'a>,
}

impl<'a> Document<'a> {
    /// Parses `json_bytes` strictly (see the module docs).
    pub fn parse(json_bytes: &'a [u8]) -> Result<Self, CanonicalError> {
        let text = std::str::from_utf8(json_bytes)
            .map_err(|e| CanonicalError::InvalidUtf8(e.valid_up_to()))?;
        let mut parser = Parser {
            text,
            bytes: json_bytes,
            pos: 0,
        };
        parser.skip_ws();
        let root = parser.value(0)?;
        parser.skip_ws();
        if parser.pos != json_bytes.len() {
            return Err(CanonicalError::TrailingData(parser.pos));
        }
        Ok(Document { root })
    }

    /// The top-level value.
    pub fn root(&self) -> &Value<'a> {
        &self.root
    }

    /// Writes the canonical (RFC 8785) form to `sink`.
    pub fn write_canonical<S: Sink + ?Sized>(&self, sink: &mut S) {
        write_value(sink, &self.root);
    }

    /// SHA-256 of the canonical form.
    pub fn canonical_sha256(&self) -> [u8; 32] {
        let mut sink = Sha256Sink::new();
        self.write_canonical(&mut sink);
        sink.finalize()
    }

    /// The dedup key: lowercase hex SHA-256 of the canonical form.
    pub fn dedup_key(&self) -> String {
        hex::encode(self.canonical_sha256())
    }
}

/// The kind of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// One value of a [`Document`]; object members are in canonical order.
#[derive(Debug)]
pub struct Value<'a>(Node<'a>);

#[derive(Debug)]
enum Node<'a> {
    Null,
    Bool(bool),
    /// `-?[0-9]{1,15}` without fraction or exponent (and not `-0`): its
    /// ECMAScript form is the text itself.
    Int(&'a str),
    Float(f64),
    Str(Text<'a>),
    Array(Vec<Value<'a>>),
    Object(Vec<(Text<'a>, Value<'a>)>),
}

/// A string value or key.
#[derive(Debug)]
enum Text<'a> {
    /// The input between the quotes had no backslash; since it cannot hold
    /// `"` or control characters either, it is already in canonical form.
    Raw(&'a str),
    /// Unescaped from input with escapes; re-escaped when written.
    Unescaped(String),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Text::Raw(s) => s,
            Text::Unescaped(s) => s,
        }
    }
}

impl<'a> Value<'a> {
    /// The kind of this value.
    pub fn kind(&self) -> Kind {
        match self.0 {
            Node::Null => Kind::Null,
            Node::Bool(_) => Kind::Bool,
            Node::Int(_) | Node::Float(_) => Kind::Number,
            Node::Str(_) => Kind::String,
            Node::Array(_) => Kind::Array,
            Node::Object(_) => Kind::Object,
        }
    }

    /// The (unescaped) string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.0 {
            Node::Str(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match &self.0 {
            Node::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The member named `key` (compared unescaped), if this is an object
    /// that has one.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match &self.0 {
            Node::Object(members) => members
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// JCS member order: the UTF-16 code units of the (unescaped) keys.
///
/// Bytewise order agrees with it whenever the first differing bytes are both
/// ASCII (then they start two different ASCII characters after an equal
/// prefix), which is nearly always; otherwise compare as UTF-16.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    match x.iter().zip(y).position(|(p, q)| p != q) {
        None => x.len().cmp(&y.len()),
        Some(i) if x[i].is_ascii() && y[i].is_ascii() => x[i].cmp(&y[i]),
        Some(_) => a.encode_utf16().cmp(b.encode_utf16()),
    }
}

/// Whether any of the 8 bytes in `w` is `"`, `\` or below 0x20 (exact:
/// the classic "has zero byte" / "has byte less than" bit tricks).
fn has_string_special(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (below_space | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))))
        != 0
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, lit: &[u8]) -> Result<(), CanonicalError> {
        for &want in lit {
            match self.peek() {
                None => return Err(CanonicalError::UnexpectedEnd),
                Some(b) if b == want => self.pos += 1,
                Some(_) => return Err(CanonicalError::UnexpectedChar(self.pos)),
            }
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, CanonicalError> {
        let node = match self.peek() {
            None => return Err(CanonicalError::UnexpectedEnd),
            Some(b'n') => self.expect_literal(b"null").map(|()| Node::Null)?,
            Some(b't') => self.expect_literal(b"true").map(|()| Node::Bool(true))?,
            Some(b'f') => self.expect_literal(b"false").map(|()| Node::Bool(false))?,
            Some(b'"') => Node::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(b'[') => self.array(depth + 1)?,
            Some(b'{') => self.object(depth + 1)?,
            Some(_) => return Err(CanonicalError::UnexpectedChar(self.pos)),
        };
        Ok(Value(node))
    }

    fn array(&mut self, depth: usize) -> Result<Node<'a>, CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep);
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Node::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node::Array(items));
                }
                Some(_) => return Err(CanonicalError::UnexpectedChar(self.pos)),
                None => return Err(CanonicalError::UnexpectedEnd),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Node<'a>, CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep);
        }
        let start = self.pos;
        self.pos += 1; // '{'
        let mut members: Vec<(Text<'a>, Value<'a>)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Node::Object(members));
        }
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'"') => {}
                Some(_) => return Err(CanonicalError::UnexpectedChar(self.pos)),
                None => return Err(CanonicalError::UnexpectedEnd),
            }
            let key = self.string()?;
            self.skip_ws();
            match self.peek() {
                Some(b':') => self.pos += 1,
                Some(_) => return Err(CanonicalError::UnexpectedChar(self.pos)),
                None => return Err(CanonicalError::UnexpectedEnd),
            }
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => return Err(CanonicalError::UnexpectedChar(self.pos)),
                None => return Err(CanonicalError::UnexpectedEnd),
            }
        }
        members.sort_by(|(a, _), (b, _)| key_order(a.as_str(), b.as_str()));
        if members
            .windows(2)
            .any(|w| w[0].0.as_str() == w[1].0.as_str())
        {
            return Err(CanonicalError::DuplicateKey(start));
        }
        Ok(Node::Object(members))
    }

    /// Parses a string starting at the opening quote. Without escapes it
    /// borrows the input; otherwise it is unescaped into a `String`.
    fn string(&mut self) -> Result<Text<'a>, CanonicalError> {
        self.pos += 1; // '"'
        let start = self.pos;
        let mut out: Option<String> = None;
        let mut run_start = self.pos;
        loop {
            // Skip 8 ordinary bytes at a time.
            while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                if has_string_special(u64::from_le_bytes(word)) {
                    break;
                }
                self.pos += 8;
            }
            let Some(b) = self.peek() else {
                return Err(CanonicalError::UnexpectedEnd);
            };
            match b {
                b'"' => {
                    let run = &self.text[run_start..self.pos];
                    self.pos += 1;
                    return Ok(match out {
                        None => Text::Raw(&self.text[start..self.pos - 1]),
                        Some(mut s) => {
                            s.push_str(run);
                            Text::Unescaped(s)
                        }
                    });
                }
                b'\\' => {
                    let s = out.get_or_insert_with(String::new);
                    s.push_str(&self.text[run_start..self.pos]);
                    self.escape(s)?;
                    run_start = self.pos;
                }
                0x00..=0x1f => return Err(CanonicalError::ControlCharacter(self.pos)),
                // Input is valid UTF-8 and we only split at ASCII bytes, so
                // runs of other bytes are whole characters.
                _ => self.pos += 1,
            }
        }
    }

    /// Parses one escape sequence at `self.pos` (the backslash).
    fn escape(&mut self, out: &mut String) -> Result<(), CanonicalError> {
        let at = self.pos;
        self.pos += 1;
        let Some(c) = self.peek() else {
            return Err(CanonicalError::UnexpectedEnd);
        };
        self.pos += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                if (0xDC00..=0xDFFF).contains(&hi) {
                    return Err(CanonicalError::LoneSurrogate(at));
                }
                if (0xD800..=0xDBFF).contains(&hi) {
                    if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                        return Err(CanonicalError::LoneSurrogate(at));
                    }
                    self.pos += 2;
                    let lo = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&lo) {
                        return Err(CanonicalError::LoneSurrogate(at));
                    }
                    let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    char::from_u32(cp).ok_or(CanonicalError::LoneSurrogate(at))?
                } else {
                    char::from_u32(hi).ok_or(CanonicalError::LoneSurrogate(at))?
                }
            }
            _ => return Err(CanonicalError::InvalidEscape(at)),
        };
        out.push(ch);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, CanonicalError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let Some(b) = self.peek() else {
                return Err(CanonicalError::UnexpectedEnd);
            };
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(CanonicalError::InvalidEscape(self.pos)),
            };
            v = (v << 4) | u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, read as f64 unless
    /// it is a short plain integer (whose canonical form is its text).
    fn number(&mut self) -> Result<Node<'a>, CanonicalError> {
        let start = self.pos;
        let err = CanonicalError::InvalidNumber(start);
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(err),
        }
        let int_digits = self.pos - int_start;
        let mut plain = true;
        if self.peek() == Some(b'.') {
            plain = false;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(err);
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            plain = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(err);
            }
            self.digits();
        }
        let text = &self.text[start..self.pos];
        // ≤ 15 digits are exact in a double and below 1e21, so ECMAScript
        // prints them back unchanged; only `-0` becomes `0`.
        if plain && int_digits <= 15 && text != "-0" {
            return Ok(Node::Int(text));
        }
        let value: f64 = text.parse().map_err(|_| err)?;
        if !value.is_finite() {
            return Err(CanonicalError::NumberOutOfRange(start));
        }
        Ok(Node::Float(value))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

fn write_value<S: Sink + ?Sized>(out: &mut S, value: &Value<'_>) {
    match &value.0 {
        Node::Null => out.write_str("null"),
        Node::Bool(true) => out.write_str("true"),
        Node::Bool(false) => out.write_str("false"),
        Node::Int(text) => out.write_str(text),
        Node::Float(n) => {
            let mut buf = ryu_js::Buffer::new();
            out.write_str(number_text(&mut buf, *n));
        }
        Node::Str(t) => write_text(out, t),
        Node::Array(items) => {
            out.write_str("[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_str(",");
                }
                write_value(out, item);
            }
            out.write_str("]");
        }
        Node::Object(members) => {
            out.write_str("{");
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.write_str(",");
                }
                write_text(out, k);
                out.write_str(":");
                write_value(out, v);
            }
            out.write_str("}");
        }
    }
}

fn write_text<S: Sink + ?Sized>(out: &mut S, t: &Text<'_>) {
    match t {
        Text::Raw(s) => {
            out.write_str("\"");
            out.write_str(s);
            out.write_str("\"");
        }
        Text::Unescaped(s) => write_escaped(out, s),
    }
}

/// ECMAScript Number-to-String of a finite double (`-0` → `0`).
fn number_text(buf: &mut ryu_js::Buffer, n: f64) -> &str {
    if n == 0.0 {
        "0"
    } else {
        buf.format_finite(n)
    }
}

/// [`number_text`] appended to a `String`.
#[cfg(test)]
fn write_number(out: &mut String, n: f64) {
    let mut buf = ryu_js::Buffer::new();
    out.push_str(number_text(&mut buf, n));
}

/// Writes `s` as a JSON string literal with JCS escaping (also used for the
/// Advoware token body, which is therefore deterministic).
pub(crate) fn write_json_string(out: &mut String, s: &str) {
    write_escaped(out, s);
}

/// JCS string escaping: runs of ordinary characters are written whole.
fn write_escaped<S: Sink + ?Sized>(out: &mut S, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.write_str("\"");
    let mut run_start = 0;
    for (i, b) in s.bytes().enumerate() {
        let mut unicode = [b'\\', b'u', b'0', b'0', 0, 0];
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x09 => "\\t",
            0x0a => "\\n",
            0x0c => "\\f",
            0x0d => "\\r",
            0x00..=0x1f => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 0xf)];
                // Only ASCII was written, so this cannot fail.
                std::str::from_utf8(&unicode).unwrap_or("")
            }
            _ => continue,
        };
        // `i` is an ASCII byte, so both slices end on char boundaries.
        out.write_str(&s[run_start..i]);
        out.write_str(esc);
        run_start = i + 1;
    }
    out.write_str(&s[run_start..]);
    out.write_str("\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        match canonicalize(s.as_bytes()) {
            Ok(v) => String::from_utf8(v).unwrap(),
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    fn num(s: &str) -> String {
        canon(s)
    }

    #[test]
    fn rfc8785_main_example() {
        let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
        let expected = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
        assert_eq!(canon(input), expected);
    }

    #[test]
    fn rfc8785_sorting_example() {
        let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canon(input), expected);
    }

    #[test]
    fn number_formatting_cases() {
        for (input, want) in [
            ("1e21", "1e+21"),
            ("1E21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("0e10", "0"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("1E30", "1e+30"),
            ("333333333.33333329", "333333333.3333333"),
            ("0.000000000000000000000000001", "1e-27"),
            ("100", "100"),
            ("-1.5", "-1.5"),
            ("123456789012345678901234567890", "1.2345678901234568e+29"),
            ("9007199254740993", "9007199254740992"),
            ("1e-400", "0"),
        ] {
            assert_eq!(num(input), want, "{input}");
        }
    }

    /// RFC 8785 Appendix B: IEEE-754 bit patterns and their JCS form.
    #[test]
    fn rfc8785_appendix_b() {
        let cases: [(u64, &str); 24] = [
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, want) in cases {
            let f = f64::from_bits(bits);
            let mut out = String::new();
            write_number(&mut out, f);
            assert_eq!(out, want, "{bits:#x}");
            // and through the parser, from Rust's own shortest spelling
            assert_eq!(num(&format!("{f:e}")), want, "{bits:#x} parsed");
        }
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(canon(r#""\u0000\u001f\u007f""#), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(canon(r#""\b\f\n\r\t\/""#), r#""\b\f\n\r\t/""#);
        assert_eq!(canon(r#""\u2028\u00e9""#), "\"\u{2028}\u{e9}\"");
        assert_eq!(canon("\"caf\u{e9} \u{1f600}\""), "\"caf\u{e9} \u{1f600}\"");
        assert_eq!(canon(r#""\uD83D\uDE00""#), "\"\u{1f600}\"");
    }

    #[test]
    fn whitespace_and_order_insensitive() {
        let a =
            canon(" { \"b\" : [ 1 , 2.0 , { \"y\":null, \"x\":true } ] ,\n\t\"a\":\"s\" } \r\n");
        let b = canon(r#"{"a":"s","b":[1,2,{"x":true,"y":null}]}"#);
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":"s","b":[1,2,{"x":true,"y":null}]}"#);
        assert_eq!(canon("[]"), "[]");
        assert_eq!(canon("{}"), "{}");
        assert_eq!(canon(" [ ] "), "[]");
        assert_eq!(canon("\"\""), "\"\"");
        assert_eq!(canon("true"), "true");
    }

    #[test]
    fn rejects_bad_input() {
        use CanonicalError as E;
        let cases: Vec<(&[u8], E)> = vec![
            (b"", E::UnexpectedEnd),
            (b"   ", E::UnexpectedEnd),
            (b"{\"a\":1,\"a\":2}", E::DuplicateKey(0)),
            (b"{\"a\":1,\"\\u0061\":2}", E::DuplicateKey(0)),
            (b"\"\xff\"", E::InvalidUtf8(1)),
            (b"\xef\xbb\xbf{}", E::UnexpectedChar(0)),
            (b"\"\\ud800\"", E::LoneSurrogate(1)),
            (b"\"\\udc00\"", E::LoneSurrogate(1)),
            (b"\"\\ud800\\u0041\"", E::LoneSurrogate(1)),
            (b"\"\\ud800x\"", E::LoneSurrogate(1)),
            (b"\"\\x\"", E::InvalidEscape(1)),
            (b"\"\\u12g4\"", E::InvalidEscape(5)),
            (b"\"a\nb\"", E::ControlCharacter(2)),
            (b"1e400", E::NumberOutOfRange(0)),
            (b"-1e400", E::NumberOutOfRange(0)),
            (b"NaN", E::UnexpectedChar(0)),
            (b"Infinity", E::UnexpectedChar(0)),
            (b"01", E::TrailingData(1)),
            (b"1.", E::InvalidNumber(0)),
            (b".5", E::UnexpectedChar(0)),
            (b"-", E::InvalidNumber(0)),
            (b"+1", E::UnexpectedChar(0)),
            (b"1e", E::InvalidNumber(0)),
            (b"{} x", E::TrailingData(3)),
            (b"[1,]", E::UnexpectedChar(3)),
            (b"{\"a\":1,}", E::UnexpectedChar(7)),
            (b"{\"a\" 1}", E::UnexpectedChar(5)),
            (b"{1:2}", E::UnexpectedChar(1)),
            (b"[1 2]", E::UnexpectedChar(3)),
            (b"\"abc", E::UnexpectedEnd),
            (b"[", E::UnexpectedEnd),
            (b"nul", E::UnexpectedEnd),
            (b"nulx", E::UnexpectedChar(3)),
            (b"[1]\x00", E::TrailingData(3)),
            (b"\x0c1", E::UnexpectedChar(0)),
        ];
        for (input, want) in cases {
            assert_eq!(
                canonicalize(input),
                Err(want.clone()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(!want.code().is_empty());
        }
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(canonicalize(ok.as_bytes()).is_ok());
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            canonicalize(too_deep.as_bytes()),
            Err(CanonicalError::TooDeep)
        );
        let objs = format!(
            "{}1{}",
            "{\"a\":".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(canonicalize(objs.as_bytes()), Err(CanonicalError::TooDeep));
        // hostile: a megabyte of brackets must fail fast, not overflow the stack
        let hostile = "[".repeat(1 << 20);
        assert_eq!(
            canonicalize(hostile.as_bytes()),
            Err(CanonicalError::TooDeep)
        );
    }

    #[test]
    fn dedup_key_is_sha256_hex_of_canonical_form() {
        // sha256("{\"a\":1}") computed independently (python3 hashlib)
        assert_eq!(
            dedup_key(b" { \"a\" : 1.0 } ").unwrap(),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
        assert_eq!(dedup_key(b"[1]").unwrap().len(), 64);
        assert_ne!(dedup_key(b"[1]").unwrap(), dedup_key(b"[2]").unwrap());
    }

    #[test]
    fn espocrm_batch_example() {
        let a = br#"[{"id":"6745a1b2c3d4e5f60","name":"Max Mustermann","modifiedAt":"2026-11-23 13:58:02","syncStatus":"dirty"}]"#;
        let b = br#"[ { "syncStatus": "dirty", "modifiedAt": "2026-11-23 13:58:02",
                      "name": "Max Mustermann", "id": "6745a1b2c3d4e5f60" } ]"#;
        assert_eq!(dedup_key(a).unwrap(), dedup_key(b).unwrap());
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// A JSON value for generators; object keys are unique.
    #[derive(Debug, Clone)]
    enum J {
        Null,
        Bool(bool),
        Num(f64),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    fn finite_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            proptest::num::f64::NORMAL
                | proptest::num::f64::SUBNORMAL
                | proptest::num::f64::ZERO
                | proptest::num::f64::POSITIVE
                | proptest::num::f64::NEGATIVE,
            any::<i32>().prop_map(f64::from),
            (any::<i32>(), 0u32..6).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e as i32)),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{0,3}",
            any::<String>(),
            proptest::collection::vec(any::<char>(), 0..3).prop_map(|v| v.into_iter().collect()),
        ]
    }

    fn leaf() -> impl Strategy<Value = J> {
        prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            finite_f64().prop_map(J::Num),
            key().prop_map(J::Str),
        ]
    }

    fn json() -> impl Strategy<Value = J> {
        leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
                proptest::collection::btree_map(key(), inner, 0..6)
                    .prop_map(|m| J::Obj(m.into_iter().collect())),
            ]
        })
    }

    /// A tiny deterministic PRNG for rendering choices.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn ws(out: &mut String, rng: &mut Rng) {
        for _ in 0..rng.pick(3) {
            out.push([' ', '\t', '\n', '\r'][rng.pick(4) as usize]);
        }
    }

    fn render_str(out: &mut String, s: &str, rng: &mut Rng) {
        out.push('"');
        for c in s.chars() {
            let force = c == '"' || c == '\\' || (c as u32) < 0x20;
            if !force && rng.pick(3) != 0 {
                out.push(c);
                continue;
            }
            match (c, rng.pick(2)) {
                ('"', 0) => out.push_str("\\\""),
                ('\\', 0) => out.push_str("\\\\"),
                ('\n', 0) => out.push_str("\\n"),
                ('/', 0) => out.push_str("\\/"),
                _ => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        if rng.pick(2) == 0 {
                            out.push_str(&format!("\\u{:04x}", u));
                        } else {
                            out.push_str(&format!("\\u{:04X}", u));
                        }
                    }
                }
            }
        }
        out.push('"');
    }

    fn render(out: &mut String, j: &J, rng: &mut Rng) {
        ws(out, rng);
        match j {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => match rng.pick(2) {
                0 => out.push_str(&format!("{n}")),
                _ => out.push_str(&format!("{n:e}")),
            },
            J::Str(s) => render_str(out, s, rng),
            J::Arr(items) => {
                out.push('[');
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render(out, it, rng);
                }
                ws(out, rng);
                out.push(']');
            }
            J::Obj(members) => {
                let mut order: Vec<usize> = (0..members.len()).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.pick(i as u64 + 1) as usize);
                }
                out.push('{');
                for (n, &i) in order.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    ws(out, rng);
                    render_str(out, &members[i].0, rng);
                    ws(out, rng);
                    out.push(':');
                    render(out, &members[i].1, rng);
                }
                ws(out, rng);
                out.push('}');
            }
        }
        ws(out, rng);
    }

    fn to_text(j: &J, seed: u64) -> String {
        let mut out = String::new();
        render(&mut out, j, &mut Rng(seed | 1));
        out
    }

    fn count_scalars(j: &J) -> usize {
        match j {
            J::Arr(v) => v.iter().map(count_scalars).sum(),
            J::Obj(m) => m.iter().map(|(_, v)| count_scalars(v)).sum(),
            _ => 1,
        }
    }

    /// Replaces the `n`-th scalar (depth-first) with `new`; returns the old one.
    fn replace_scalar(j: &mut J, n: &mut usize, new: &J) -> Option<J> {
        match j {
            J::Arr(v) => v.iter_mut().find_map(|c| replace_scalar(c, n, new)),
            J::Obj(m) => m.iter_mut().find_map(|(_, c)| replace_scalar(c, n, new)),
            _ if *n == 0 => Some(std::mem::replace(j, new.clone())),
            _ => {
                *n -= 1;
                None
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(out) = canonicalize(&bytes) {
                prop_assert_eq!(canonicalize(&out).ok(), Some(out));
            }
        }

        #[test]
        fn json_ish_bytes_never_panic(s in r#"[\[\]{}",:0-9eE.+\-\\u ntrufalsebdx\x00-\x1f]{0,64}"#) {
            if let Ok(out) = canonicalize(s.as_bytes()) {
                prop_assert_eq!(canonicalize(&out).ok(), Some(out));
            }
        }

        #[test]
        fn idempotent_and_valid(j in json(), seed in any::<u64>()) {
            let text = to_text(&j, seed);
            let once = canonicalize(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e} in {text}")))?;
            let twice = canonicalize(&once).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&once, &twice);
            // the canonical form is valid JSON for a general parser too
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&once).is_ok());
        }

        #[test]
        fn layout_and_key_order_do_not_matter(j in json(), s1 in any::<u64>(), s2 in any::<u64>()) {
            let a = dedup_key(to_text(&j, s1).as_bytes());
            let b = dedup_key(to_text(&j, s2).as_bytes());
            prop_assert!(a.is_ok());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn changing_a_scalar_changes_the_key(j in json(), idx in any::<usize>(), new in leaf(), seed in any::<u64>()) {
            let scalars = count_scalars(&j);
            prop_assume!(scalars > 0);
            let mut changed = j.clone();
            let mut n = idx % scalars;
            let old = replace_scalar(&mut changed, &mut n, &new);
            let old = old.ok_or_else(|| TestCaseError::fail("no scalar replaced"))?;
            let canon_leaf = |x: &J| canonicalize(to_text(x, 7).as_bytes()).ok();
            prop_assume!(canon_leaf(&old) != canon_leaf(&new));
            let a = dedup_key(to_text(&j, seed).as_bytes());
            let b = dedup_key(to_text(&changed, seed).as_bytes());
            prop_assert!(a.is_ok() && b.is_ok());
            prop_assert_ne!(a, b);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod document_tests {
    use super::*;

    fn canon_string(s: &str) -> String {
        let mut out = String::new();
        Document::parse(s.as_bytes())
            .unwrap()
            .write_canonical(&mut out);
        out
    }

    #[test]
    fn plain_integers_are_written_as_read() {
        for (input, want) in [
            ("0", "0"),
            ("-0", "0"),
            ("7", "7"),
            ("-7", "-7"),
            ("123456789012345", "123456789012345"),
            ("-123456789012345", "-123456789012345"),
            ("999999999999999", "999999999999999"),
            ("1234567890123456", "1234567890123456"),
            ("12345678901234567", "12345678901234568"),
            ("100000000000000000000", "100000000000000000000"),
            ("1000000000000000000000", "1e+21"),
        ] {
            assert_eq!(canon_string(input), want, "{input}");
        }
    }

    #[test]
    fn raw_and_escaped_strings() {
        assert_eq!(canon_string(r#""plain ü €""#), "\"plain ü €\"");
        assert_eq!(canon_string(r#""a\u0041\"""#), "\"aA\\\"\"");
        assert_eq!(
            canon_string(r#"{"k\u0001":"\u001fx\\","long key without escapes":1}"#),
            "{\"k\\u0001\":\"\\u001fx\\\\\",\"long key without escapes\":1}"
        );
        // escapes and specials beyond the first 8-byte chunk
        assert_eq!(
            canon_string(r#""0123456789abcdef\n0123456789""#),
            "\"0123456789abcdef\\n0123456789\""
        );
        assert_eq!(
            canonicalize(b"\"0123456789abcdef\x01\""),
            Err(CanonicalError::ControlCharacter(17))
        );
        assert_eq!(
            canonicalize(b"\"0123456789abcdef"),
            Err(CanonicalError::UnexpectedEnd)
        );
    }

    #[test]
    fn special_byte_detection_is_exact() {
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut word = [b'a'; 8];
                word[pos] = b;
                let want = b == b'"' || b == b'\\' || b < 0x20;
                assert_eq!(
                    has_string_special(u64::from_le_bytes(word)),
                    want,
                    "{b:#x} at {pos}"
                );
            }
        }
        // neighbours that could borrow into each other
        assert!(!has_string_special(u64::from_le_bytes(
            *b"\x20\x21\x23\x5b\x5d\xff\x80\x7f"
        )));
        assert!(has_string_special(u64::from_le_bytes(
            *b"\x20\x21\x23\x5b\x5d\xff\x80\x1f"
        )));
    }

    #[test]
    fn sinks_agree() {
        let input =
            br#"[{"id":"6745a1b2c3d4e5f60","n":[1.5,-0,1e21,null,true],"s":"\u00e9\t"},{}]"#;
        let doc = Document::parse(input).unwrap();
        let mut bytes = Vec::new();
        doc.write_canonical(&mut bytes);
        let mut text = String::new();
        doc.write_canonical(&mut text);
        assert_eq!(bytes, text.as_bytes());
        assert_eq!(canonicalize(input).unwrap(), bytes);
        assert_eq!(
            doc.canonical_sha256(),
            <[u8; 32]>::from(Sha256::digest(&bytes))
        );
        assert_eq!(
            dedup_key(input).unwrap(),
            hex::encode(Sha256::digest(&bytes))
        );
    }

    #[test]
    fn sha256_sink_matches_one_shot_digest() {
        // pieces of every size around the buffer length, in varying order
        let data: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let text = std::str::from_utf8(&data).unwrap();
        for sizes in [
            &[1usize, 63, 64, 65][..],
            &[HASH_BUF - 1, 1, HASH_BUF, 2][..],
            &[HASH_BUF + 1, 3][..],
            &[7, HASH_BUF * 2 + 5][..],
        ] {
            let mut sink = Sha256Sink::new();
            let mut fed = 0;
            let mut i = 0;
            while fed < text.len() {
                let n = sizes[i % sizes.len()].min(text.len() - fed);
                sink.write_str(&text[fed..fed + n]);
                fed += n;
                i += 1;
            }
            assert_eq!(
                sink.finalize(),
                <[u8; 32]>::from(Sha256::digest(&data)),
                "{sizes:?}"
            );
        }
        assert_eq!(
            Sha256Sink::default().finalize(),
            <[u8; 32]>::from(Sha256::digest(b""))
        );
    }

    #[test]
    fn key_order_is_utf16_order() {
        use std::cmp::Ordering::*;
        for (a, b, want) in [
            ("a", "b", Less),
            ("ab", "a", Greater),
            ("", "a", Less),
            ("id", "id", Equal),
            ("a\u{e9}", "a\u{e8}", Greater),
            // U+FB33 (one UTF-16 unit 0xFB33) sorts after U+1F600 (0xD83D ...)
            ("\u{fb33}", "\u{1f600}", Greater),
            ("x\u{ffff}", "x\u{10000}", Greater),
            ("\u{7f}", "\u{80}", Less),
        ] {
            assert_eq!(key_order(a, b), want, "{a:?} {b:?}");
            assert_eq!(key_order(a, b), a.encode_utf16().cmp(b.encode_utf16()));
            assert_eq!(key_order(b, a), want.reverse());
        }
    }

    #[test]
    fn document_accessors() {
        let doc = Document::parse(br#"[{"b":1,"id":"x\u0041"},"s",2.5,null,false,[]]"#).unwrap();
        let root = doc.root();
        assert_eq!(root.kind(), Kind::Array);
        let items = root.as_array().unwrap();
        assert_eq!(items.len(), 6);
        assert_eq!(items[0].kind(), Kind::Object);
        assert_eq!(items[0].get("id").and_then(Value::as_str), Some("xA"));
        assert!(items[0].get("a").is_none());
        assert_eq!(items[0].get("b").map(Value::kind), Some(Kind::Number));
        assert_eq!(items[1].as_str(), Some("s"));
        assert_eq!(items[2].kind(), Kind::Number);
        assert_eq!(items[3].kind(), Kind::Null);
        assert_eq!(items[4].kind(), Kind::Bool);
        assert_eq!(items[5].as_array().map(<[_]>::len), Some(0));
        assert!(root.get("id").is_none());
        assert!(root.as_str().is_none());
        assert!(items[1].as_array().is_none());
    }
}
