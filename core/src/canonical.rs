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

use crate::mac::sha256;

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
    let text = std::str::from_utf8(json_bytes)
        .map_err(|e| CanonicalError::InvalidUtf8(e.valid_up_to()))?;
    let mut parser = Parser {
        text,
        bytes: json_bytes,
        pos: 0,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != json_bytes.len() {
        return Err(CanonicalError::TrailingData(parser.pos));
    }
    let mut out = String::with_capacity(json_bytes.len());
    write_value(&mut out, &value);
    Ok(out.into_bytes())
}

/// Lowercase hex SHA-256 of the canonical form: the dedup key of an event.
pub fn dedup_key(json_bytes: &[u8]) -> Result<String, CanonicalError> {
    Ok(hex::encode(sha256(&canonicalize(json_bytes)?)))
}

enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
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

    fn value(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        match self.peek() {
            None => Err(CanonicalError::UnexpectedEnd),
            Some(b'n') => self.expect_literal(b"null").map(|()| Value::Null),
            Some(b't') => self.expect_literal(b"true").map(|()| Value::Bool(true)),
            Some(b'f') => self.expect_literal(b"false").map(|()| Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(_) => Err(CanonicalError::UnexpectedChar(self.pos)),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep);
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                Some(_) => return Err(CanonicalError::UnexpectedChar(self.pos)),
                None => return Err(CanonicalError::UnexpectedEnd),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep);
        }
        let start = self.pos;
        self.pos += 1; // '{'
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
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
        // JCS: sort by the UTF-16 code units of the (unescaped) keys.
        // Compared lazily (no allocation per key); ASCII keys — nearly all in
        // practice — compare the same bytewise.
        members.sort_by(|(a, _), (b, _)| {
            if a.is_ascii() && b.is_ascii() {
                a.as_bytes().cmp(b.as_bytes())
            } else {
                a.encode_utf16().cmp(b.encode_utf16())
            }
        });
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(CanonicalError::DuplicateKey(start));
        }
        Ok(Value::Object(members))
    }

    /// Parses a string starting at the opening quote; returns it unescaped.
    fn string(&mut self) -> Result<String, CanonicalError> {
        self.pos += 1; // '"'
        let mut out = String::new();
        let mut run_start = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return Err(CanonicalError::UnexpectedEnd);
            };
            match b {
                b'"' => {
                    out.push_str(&self.text[run_start..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    out.push_str(&self.text[run_start..self.pos]);
                    self.escape(&mut out)?;
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

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, read as f64.
    fn number(&mut self) -> Result<f64, CanonicalError> {
        let start = self.pos;
        let err = CanonicalError::InvalidNumber(start);
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(err),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(err);
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(err);
            }
            self.digits();
        }
        let value: f64 = self.text[start..self.pos].parse().map_err(|_| err)?;
        if !value.is_finite() {
            return Err(CanonicalError::NumberOutOfRange(start));
        }
        Ok(value)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, *n),
        Value::String(s) => write_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, k);
                out.push(':');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

/// ECMAScript Number-to-String of a finite double (`-0` → `0`).
fn write_number(out: &mut String, n: f64) {
    if n == 0.0 {
        out.push('0');
    } else {
        let mut buf = ryu_js::Buffer::new();
        out.push_str(buf.format_finite(n));
    }
}

/// Writes `s` as a JSON string literal with JCS escaping (also used for the
/// Advoware token body, which is therefore deterministic).
pub(crate) fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut run_start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            0x08 => Some("\\b"),
            0x09 => Some("\\t"),
            0x0a => Some("\\n"),
            0x0c => Some("\\f"),
            0x0d => Some("\\r"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[run_start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        run_start = i + 1;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
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
