//! The Advoware proxy's `endpoint` query parameter.
//!
//! Clients call the gateway as `GET /advoware/proxy?endpoint=Beteiligte/123&x=1`;
//! the `advoware_auth` filter turns that into the upstream request
//! `GET /api/v1/advonet/Beteiligte/123?x=1` with a bearer token. Because the
//! endpoint becomes part of an authenticated upstream path, it is validated
//! strictly before use ([`advoware_path`]). Advoware runs on IIS/ASP.NET, which
//! normalises paths more liberally than RFC 3986 (backslash as separator,
//! trailing dots and spaces stripped from segments, `;` parameters, `%uXXXX`,
//! case-insensitive), so the rules reject everything such a server could read
//! differently from us:
//!
//! 1. empty → `endpoint_missing`; longer than [`MAX_ENDPOINT_LEN`] →
//!    `endpoint_invalid`.
//! 2. The raw value and every further percent-decoding of it (up to
//!    [`MAX_DECODE_LAYERS`], catching double encoding such as `%252e`) must
//!    not contain, checked in this order so the most specific reason wins:
//!    control or invisible format characters (raw or `%00`, `%0d`, C1
//!    controls, bidi overrides, …) → `endpoint_control_chars`; a dot segment,
//!    i.e. a segment of only dots and spaces (`..`, `.`, `...`, `.. `,
//!    `%2e%2e`, `..;x` — its `;` parameter ignored; `\` counts as a
//!    separator) → `endpoint_traversal`; an absolute URL (a scheme `x:` in
//!    the first segment, or a leading `//` after one leading `/` is stripped)
//!    → `endpoint_absolute`; a backslash, `?` or `#` → `endpoint_invalid`;
//!    a `;` (path parameter) → `endpoint_path_parameter`; bytes that are not
//!    UTF-8 (e.g. the overlong `%c0%ae`) → `endpoint_not_utf8`.
//! 3. The value decoded once is the path. It must not contain `%` any more
//!    (`endpoint_double_encoded`): the upstream decodes once, and a server
//!    that decodes again (or knows `%u002e`) must find nothing to decode.
//!    It has no empty segments (`a//b`, `endpoint_invalid`); one leading `/`
//!    is stripped.
//! 4. If it already starts with an allowed prefix (segment-wise: prefix
//!    `api/v1/Akten` matches `api/v1/Akten` and `api/v1/Akten/5`, not
//!    `api/v1/AktenX`; case-sensitive), it is kept; otherwise the default
//!    prefix (e.g. `api/v1/advonet/`) is put in front. The result must
//!    start with an allowed prefix → else `endpoint_not_allowed`.
//! 5. Returned with a leading `/`, and bytes outside the RFC 3986 path
//!    alphabet percent-encoded.
//!
//! Because no accepted path has a dot segment, a `;`, a backslash or a `%`
//! after decoding, no normalisation (RFC 3986 dot-segment removal, IIS/ASP.NET
//! rules, case folding) can move it out of its prefix; the property test
//! `normalised_paths_stay_under_their_prefix` checks exactly that.
//!
//! `+` is not treated as a space (it is a legal path character).

/// Maximum length of the raw endpoint value.
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// How many percent-decoding layers are inspected.
pub const MAX_DECODE_LAYERS: usize = 4;

/// Why an endpoint was rejected. [`EndpointError::code`] is the stable
/// string for JSON error bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No (or an empty) `endpoint` parameter.
    #[error("endpoint parameter missing or empty")]
    Missing,
    /// The `endpoint` parameter appears more than once.
    #[error("endpoint parameter given more than once")]
    Duplicate,
    /// A segment of only dots and spaces (`.`, `..`, `...`, `.. `, `..;x`),
    /// in any encoding.
    #[error("endpoint contains a dot segment")]
    Traversal,
    /// An absolute URL or network-path reference.
    #[error("endpoint is an absolute URL")]
    Absolute,
    /// A control character (CR, LF, NUL, C1, …) or an invisible format
    /// character (bidi overrides, zero-width), in any encoding.
    #[error("endpoint contains control characters")]
    ControlChars,
    /// A `;` path parameter (`..;/` is read as `../` by some servers).
    #[error("endpoint contains a path parameter (;)")]
    PathParameter,
    /// Bytes that are not UTF-8 in some decoding layer (overlong `%c0%ae`, …).
    #[error("endpoint is not UTF-8")]
    NotUtf8,
    /// A `%` is left after decoding once: double encoding, `%uXXXX` or a
    /// stray `%`, which a second decoder upstream would read differently.
    #[error("endpoint still contains % after decoding (double encoding)")]
    DoubleEncoded,
    /// Backslash, `?`, `#`, empty segment or too long.
    #[error("endpoint is invalid: {0}")]
    Invalid(&'static str),
    /// The resulting path is not under an allowed prefix.
    #[error("endpoint is not under an allowed prefix")]
    NotAllowed,
}

impl EndpointError {
    /// A stable code for JSON errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "endpoint_missing",
            Self::Duplicate => "endpoint_duplicate",
            Self::Traversal => "endpoint_traversal",
            Self::Absolute => "endpoint_absolute",
            Self::ControlChars => "endpoint_control_chars",
            Self::PathParameter => "endpoint_path_parameter",
            Self::NotUtf8 => "endpoint_not_utf8",
            Self::DoubleEncoded => "endpoint_double_encoded",
            Self::Invalid(_) => "endpoint_invalid",
            Self::NotAllowed => "endpoint_not_allowed",
        }
    }
}

/// Validates the raw (still percent-encoded) `endpoint` value and maps it to
/// the upstream Advoware path (with a leading `/`). See the module docs.
pub fn advoware_path(
    endpoint: &str,
    allowed_prefixes: &[String],
    default_prefix: &str,
) -> Result<String, EndpointError> {
    if endpoint.is_empty() {
        return Err(EndpointError::Missing);
    }
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(EndpointError::Invalid("too long"));
    }
    // Every decoding layer, raw first, until decoding changes nothing.
    let mut layers: Vec<Vec<u8>> = vec![endpoint.as_bytes().to_vec()];
    for _ in 0..MAX_DECODE_LAYERS {
        let next = percent_decode(layers.last().map(Vec::as_slice).unwrap_or_default());
        if layers.last() == Some(&next) {
            break;
        }
        layers.push(next);
    }
    // Checked category by category so the most specific reason wins
    // (`a%0d%0aX:1` is a control-character problem, not a scheme).
    for check in [
        check_control,
        check_traversal,
        check_absolute,
        check_chars,
        check_path_parameter,
        check_utf8,
    ] {
        for layer in &layers {
            check(layer)?;
        }
    }
    let decoded = layers
        .get(1)
        .cloned()
        .unwrap_or_else(|| endpoint.as_bytes().to_vec());
    // Every layer passed `check_utf8`; this only converts.
    let decoded = String::from_utf8(decoded).map_err(|_| EndpointError::NotUtf8)?;
    if decoded.contains('%') {
        return Err(EndpointError::DoubleEncoded);
    }
    let path = decoded.strip_prefix('/').unwrap_or(&decoded);
    if path.is_empty() {
        return Err(EndpointError::Missing);
    }
    if path.split('/').rev().skip(1).any(str::is_empty) {
        return Err(EndpointError::Invalid("empty path segment"));
    }

    let full = if allowed_prefixes.iter().any(|p| under_prefix(path, p)) {
        path.to_owned()
    } else {
        let base = default_prefix.trim_start_matches('/').trim_end_matches('/');
        if base.is_empty() {
            path.to_owned()
        } else {
            format!("{base}/{path}")
        }
    };
    if !allowed_prefixes.iter().any(|p| under_prefix(&full, p)) {
        return Err(EndpointError::NotAllowed);
    }
    Ok(format!("/{}", encode_path(&full)))
}

/// Segment-wise prefix test; leading/trailing `/` of the prefix ignored;
/// an empty prefix never matches.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    let p = prefix.trim_start_matches('/').trim_end_matches('/');
    if p.is_empty() {
        return false;
    }
    match path.strip_prefix(p) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// ASCII controls in any layer; in UTF-8 layers also C1 controls and the
/// invisible format characters that make a path look unlike what it is.
fn check_control(layer: &[u8]) -> Result<(), EndpointError> {
    if layer.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(EndpointError::ControlChars);
    }
    if let Ok(text) = std::str::from_utf8(layer) {
        let invisible = |c: char| {
            matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
        };
        if text.chars().any(|c| c.is_control() || invisible(c)) {
            return Err(EndpointError::ControlChars);
        }
    }
    Ok(())
}

/// Dot segments as IIS/ASP.NET see them: a backslash separates too, a `;`
/// parameter is ignored, and trailing dots and spaces are stripped, so any
/// segment of only dots and spaces (with at least one dot) is `.` or `..`.
fn check_traversal(layer: &[u8]) -> Result<(), EndpointError> {
    let dot_segment = |seg: &[u8]| {
        let name = seg.split(|&b| b == b';').next().unwrap_or_default();
        name.contains(&b'.') && name.iter().all(|&b| b == b'.' || b == b' ')
    };
    if layer.split(|&b| b == b'/' || b == b'\\').any(dot_segment) {
        return Err(EndpointError::Traversal);
    }
    Ok(())
}

fn check_path_parameter(layer: &[u8]) -> Result<(), EndpointError> {
    if layer.contains(&b';') {
        return Err(EndpointError::PathParameter);
    }
    Ok(())
}

fn check_utf8(layer: &[u8]) -> Result<(), EndpointError> {
    std::str::from_utf8(layer)
        .map(|_| ())
        .map_err(|_| EndpointError::NotUtf8)
}

fn check_absolute(layer: &[u8]) -> Result<(), EndpointError> {
    let body = layer.strip_prefix(b"/").unwrap_or(layer);
    if body.starts_with(b"/") {
        return Err(EndpointError::Absolute);
    }
    let first_segment = body.split(|&b| b == b'/').next().unwrap_or_default();
    if first_segment.contains(&b':') {
        return Err(EndpointError::Absolute);
    }
    Ok(())
}

fn check_chars(layer: &[u8]) -> Result<(), EndpointError> {
    if layer.contains(&b'\\') {
        return Err(EndpointError::Invalid("backslash"));
    }
    if layer.iter().any(|&b| b == b'?' || b == b'#') {
        return Err(EndpointError::Invalid("query or fragment"));
    }
    Ok(())
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` sequences; a `%` not followed by two hex digits stays.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex_val(input[i + 1]), hex_val(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Percent-encodes bytes outside the RFC 3986 path alphabet
/// (unreserved, sub-delims, `:`, `@`, `/`). The path holds no `%` and no `;`
/// (both rejected before), so every `%` in the output is ours.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &c in path.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&c) {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Splits a raw query string (without or with a leading `?`) into raw
/// `(key, value)` pairs, in order, without decoding. A piece without `=`
/// gives an empty value; empty pieces (`a=1&&b=2`) are skipped.
pub fn split_query(query: &str) -> Vec<(String, String)> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

/// Removes every occurrence of parameter `name` (key compared after
/// percent-decoding) from a raw query string.
///
/// Returns the raw value of the parameter (if present) and the remaining
/// query with the other parameters' raw text and order unchanged (empty
/// pieces dropped, no leading `?`). More than one occurrence of `name` →
/// [`EndpointError::Duplicate`] (a client cannot smuggle a second value past
/// a validator that reads the first).
pub fn extract_param(query: &str, name: &str) -> Result<(Option<String>, String), EndpointError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut value = None;
    let mut rest: Vec<&str> = Vec::new();
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        if percent_decode(k.as_bytes()) == name.as_bytes() {
            if value.is_some() {
                return Err(EndpointError::Duplicate);
            }
            value = Some(v.to_owned());
        } else {
            rest.push(piece);
        }
    }
    Ok((value, rest.join("&")))
}

/// [`extract_param`] for `endpoint`; absent → [`EndpointError::Missing`].
/// Returns `(raw endpoint value, remaining query)`.
pub fn extract_endpoint(query: &str) -> Result<(String, String), EndpointError> {
    match extract_param(query, "endpoint")? {
        (Some(v), rest) => Ok((v, rest)),
        (None, _) => Err(EndpointError::Missing),
    }
}

/// The whole upstream `:path` for a proxy request's raw query string:
/// the validated [`advoware_path`] plus `?` and the remaining parameters
/// (no `?` when none remain).
pub fn upstream_path_and_query(
    query: &str,
    allowed_prefixes: &[String],
    default_prefix: &str,
) -> Result<String, EndpointError> {
    let (endpoint, rest) = extract_endpoint(query)?;
    let path = advoware_path(&endpoint, allowed_prefixes, default_prefix)?;
    Ok(if rest.is_empty() {
        path
    } else {
        format!("{path}?{rest}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec![
            "api/v1/advonet/".into(),
            "/api/v1/Akten".into(),
            "api/v1/NewActivities".into(),
        ]
    }

    fn map(e: &str) -> Result<String, EndpointError> {
        advoware_path(e, &allowed(), "api/v1/advonet/")
    }

    #[test]
    fn maps_valid_endpoints() {
        let ok = |e: &str, want: &str| assert_eq!(map(e).as_deref(), Ok(want), "{e}");
        ok("Beteiligte/123", "/api/v1/advonet/Beteiligte/123");
        ok("/Beteiligte/123", "/api/v1/advonet/Beteiligte/123");
        ok(
            "api/v1/advonet/Beteiligte/123",
            "/api/v1/advonet/Beteiligte/123",
        );
        ok(
            "/api/v1/advonet/TermineActiveSync",
            "/api/v1/advonet/TermineActiveSync",
        );
        ok("api/v1/Akten", "/api/v1/Akten");
        ok("api/v1/Akten/42", "/api/v1/Akten/42");
        ok("api%2Fv1%2FAkten%2F42", "/api/v1/Akten/42");
        ok("api/v1/NewActivities", "/api/v1/NewActivities");
        // not a real prefix match → default prefix in front
        ok("api/v1/AktenX", "/api/v1/advonet/api/v1/AktenX");
        ok(
            "Beteiligte/1/Kommunikationen/",
            "/api/v1/advonet/Beteiligte/1/Kommunikationen/",
        );
        ok("Suche/M%C3%BCller", "/api/v1/advonet/Suche/M%C3%BCller");
        ok("Suche/a%20b", "/api/v1/advonet/Suche/a%20b");
        ok("a+b", "/api/v1/advonet/a+b");
        ok("..a/b..", "/api/v1/advonet/..a/b..");
        ok("a.b/.c/d.", "/api/v1/advonet/a.b/.c/d.");
        ok(
            "Suche/M%C3%BCller%20GmbH",
            "/api/v1/advonet/Suche/M%C3%BCller%20GmbH",
        );
    }

    #[test]
    fn rejects() {
        use EndpointError as E;
        let cases: &[(&str, E)] = &[
            ("", E::Missing),
            ("/", E::Missing),
            ("..", E::Traversal),
            ("../x", E::Traversal),
            ("Beteiligte/../../Token", E::Traversal),
            ("api/v1/Akten/../advonet", E::Traversal),
            ("a/./b", E::Traversal),
            ("%2e%2e/x", E::Traversal),
            ("%2E./x", E::Traversal),
            (".%2e/x", E::Traversal),
            ("a%2F..%2Fb", E::Traversal),
            ("%252e%252e/x", E::Traversal),
            ("%25252e%25252e/x", E::Traversal),
            ("a/..%5cb", E::Traversal),
            ("..%5cb", E::Traversal),
            ("http://evil.example/x", E::Absolute),
            ("https:evil", E::Absolute),
            ("http%3A%2F%2Fevil", E::Absolute),
            ("//evil.example/x", E::Absolute),
            ("/%2Fevil", E::Absolute),
            ("a\\b", E::Invalid("backslash")),
            ("a%5Cb", E::Invalid("backslash")),
            ("a\r\nb", E::ControlChars),
            ("a%0d%0aX-Injected:1", E::ControlChars),
            ("a%0Ab", E::ControlChars),
            ("a%00b", E::ControlChars),
            ("a%2500b", E::ControlChars),
            ("a\u{7f}", E::ControlChars),
            ("a?b=1", E::Invalid("query or fragment")),
            ("a%3Fb=1", E::Invalid("query or fragment")),
            ("a#frag", E::Invalid("query or fragment")),
            ("a%23frag", E::Invalid("query or fragment")),
            ("a//b", E::Invalid("empty path segment")),
            ("a%FFb", E::NotUtf8),
            ("%2525252525252e", E::DoubleEncoded),
        ];
        for (e, want) in cases {
            assert_eq!(map(e).as_ref(), Err(want), "{e}");
            assert!(want.code().starts_with("endpoint_"));
        }
        assert_eq!(
            map(&"a".repeat(MAX_ENDPOINT_LEN + 1)),
            Err(E::Invalid("too long"))
        );
        // default prefix outside the allow-list
        assert_eq!(
            advoware_path("Beteiligte/1", &["api/v1/Akten".into()], "api/v1/advonet/"),
            Err(E::NotAllowed)
        );
        assert_eq!(advoware_path("x", &[], ""), Err(E::NotAllowed));
        assert_eq!(
            advoware_path("x", &["".into(), "/".into()], ""),
            Err(E::NotAllowed)
        );
    }

    /// The cases seen in issue 16 item 5, and their neighbours.
    #[test]
    fn rejects_what_iis_and_aspnet_would_normalise() {
        use EndpointError as E;
        let cases: &[(&str, E)] = &[
            // seen: forwarded as /api/v1/advonet/Termine/..;/..;/Token
            ("Termine/..;/..;/Token", E::Traversal),
            ("Termine/..%3B/..%3B/Token", E::Traversal),
            ("Termine/..;x=1/Token", E::Traversal),
            ("Termine/.;/Token", E::Traversal),
            ("Termine;jsessionid=1/5", E::PathParameter),
            ("Termine/5;x", E::PathParameter),
            ("Termine/5%3Bx", E::PathParameter),
            ("Termine/5%253Bx", E::PathParameter),
            // seen: forwarded as ..%20
            ("Termine/.. /x", E::Traversal),
            ("Termine/..%20/x", E::Traversal),
            ("Termine/.%20/x", E::Traversal),
            ("Termine/...", E::Traversal),
            ("Termine/..../x", E::Traversal),
            ("Termine/.. . /x", E::Traversal),
            ("Termine/..%2e%20%20/x", E::Traversal),
            ("Termine\\.. /x", E::Traversal),
            // seen: %25c0%25ae forwarded an overlong %c0%ae
            ("Termine/%25c0%25ae%25c0%25ae/Token", E::NotUtf8),
            ("Termine/%c0%ae%c0%ae/Token", E::NotUtf8),
            ("Termine/%ff", E::NotUtf8),
            // a % left after decoding once
            ("Termine/%u002e%u002e/Token", E::DoubleEncoded),
            ("Termine/100%", E::DoubleEncoded),
            ("Termine/%2541", E::DoubleEncoded),
            ("Termine/%25zz", E::DoubleEncoded),
            // control and invisible characters, also outside ASCII
            ("Termine/%C2%85x", E::ControlChars),
            ("Termine/%E2%80%AEx", E::ControlChars),
            ("Termine/a%E2%80%8Bb", E::ControlChars),
            ("Termine/%EF%BB%BFx", E::ControlChars),
        ];
        for (e, want) in cases {
            assert_eq!(map(e).as_ref(), Err(want), "{e}");
        }
    }

    #[test]
    fn codes() {
        assert_eq!(EndpointError::Missing.code(), "endpoint_missing");
        assert_eq!(EndpointError::Traversal.code(), "endpoint_traversal");
        assert_eq!(EndpointError::Absolute.code(), "endpoint_absolute");
        assert_eq!(EndpointError::ControlChars.code(), "endpoint_control_chars");
        assert_eq!(EndpointError::NotAllowed.code(), "endpoint_not_allowed");
        assert_eq!(
            EndpointError::PathParameter.code(),
            "endpoint_path_parameter"
        );
        assert_eq!(EndpointError::NotUtf8.code(), "endpoint_not_utf8");
        assert_eq!(
            EndpointError::DoubleEncoded.code(),
            "endpoint_double_encoded"
        );
    }

    #[test]
    fn query_helpers() {
        assert_eq!(
            split_query("?a=1&b&&c=x%20y=z"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), "x%20y=z".into())
            ]
        );
        assert_eq!(
            extract_endpoint("from=2026-01-01&endpoint=TermineActiveSync&to=2026%2D02&kuerzel=SB"),
            Ok((
                "TermineActiveSync".into(),
                "from=2026-01-01&to=2026%2D02&kuerzel=SB".into()
            ))
        );
        assert_eq!(
            extract_endpoint("?endpoint=a%2Fb"),
            Ok(("a%2Fb".into(), String::new()))
        );
        assert_eq!(
            extract_endpoint("%65ndpoint=x&y"),
            Ok(("x".into(), "y".into()))
        );
        assert_eq!(extract_endpoint("a=1"), Err(EndpointError::Missing));
        assert_eq!(extract_endpoint(""), Err(EndpointError::Missing));
        assert_eq!(
            extract_endpoint("endpoint=a&endpoint=b"),
            Err(EndpointError::Duplicate)
        );
        assert_eq!(extract_param("a=1&b=2", "c"), Ok((None, "a=1&b=2".into())));
        assert_eq!(
            upstream_path_and_query(
                "endpoint=TermineActiveSync&from=2026-01-01&kuerzel=SB",
                &allowed(),
                "api/v1/advonet/"
            ),
            Ok("/api/v1/advonet/TermineActiveSync?from=2026-01-01&kuerzel=SB".into())
        );
        assert_eq!(
            upstream_path_and_query("endpoint=Beteiligte%2F5", &allowed(), "api/v1/advonet/"),
            Ok("/api/v1/advonet/Beteiligte/5".into())
        );
        assert_eq!(
            upstream_path_and_query("endpoint=", &allowed(), "api/v1/advonet/"),
            Err(EndpointError::Missing)
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%2Fb%2fc"), b"a/b/c");
        assert_eq!(percent_decode(b"%"), b"%");
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%zz%41"), b"%zzA");
        assert_eq!(percent_decode(b"%%41"), b"%A");
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn allowed() -> Vec<String> {
        vec![
            "api/v1/advonet/".to_string(),
            "api/v1/Akten".to_string(),
            "api/v1/NewActivities".to_string(),
        ]
    }

    /// IIS's non-standard `%uXXXX` (only what it would turn into ASCII).
    fn decode_percent_u(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            if let Some(&[b'%', b'u' | b'U', b'0', b'0', h, l]) = input.get(i..i + 6) {
                if let (Some(h), Some(l)) = (hex_val(h), hex_val(l)) {
                    out.push(h << 4 | l);
                    i += 6;
                    continue;
                }
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }

    /// A liberal server's reading of a path (already decoded): backslash as
    /// separator, `;` parameters dropped, trailing dots and spaces stripped,
    /// RFC 3986 dot-segment removal (a segment of only dots and spaces counts
    /// as `..`, the worst case), empty segments collapsed, case folded.
    fn normalise(decoded: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(decoded).replace('\\', "/");
        let mut out: Vec<String> = Vec::new();
        for seg in text.split('/') {
            let name = seg.split(';').next().unwrap_or_default();
            if name.contains('.') && name.chars().all(|c| c == '.' || c == ' ') {
                out.pop();
                continue;
            }
            let name = name.trim_end_matches(['.', ' ']);
            if !name.is_empty() {
                out.push(name.to_lowercase());
            }
        }
        out
    }

    /// Every way the upstream might read `path`: decoded once, twice, with
    /// `%u`, then [`normalise`]d.
    fn server_views(path: &str) -> Vec<Vec<String>> {
        let once = percent_decode(path.as_bytes());
        let twice = percent_decode(&once);
        vec![
            normalise(&once),
            normalise(&twice),
            normalise(&decode_percent_u(&once)),
            normalise(&decode_percent_u(&twice)),
        ]
    }

    fn under_some_prefix(segments: &[String]) -> bool {
        allowed().iter().any(|p| {
            let prefix: Vec<String> = p
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_lowercase)
                .collect();
            segments.len() >= prefix.len() && segments[..prefix.len()] == prefix[..]
        })
    }

    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "..",
            ".",
            "...",
            ".. ",
            ". ",
            " ",
            "/",
            "//",
            "\\",
            ";",
            "..;",
            ";x=1",
            "%2e",
            "%2E",
            "%2f",
            "%2F",
            "%5c",
            "%3b",
            "%20",
            "%25",
            "%252e",
            "%252f",
            "%25c0%25ae",
            "%c0%ae",
            "%c0%af",
            "%u002e",
            "%u002f",
            "%e2%80%ae",
            "%ef%bc%8e",
            "%00",
            "%0a",
            ":",
            "?",
            "#",
            "a",
            "Termine",
            "Token",
            "api",
            "API",
            "v1",
            "advonet",
            "Akten",
            "akten",
            "NewActivities",
            "5",
            "x.",
            "y ",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Issue 16 item 5: whatever the upstream does to an accepted path
        /// (RFC 3986, IIS and ASP.NET rules), it stays under an allowed prefix.
        #[test]
        fn normalised_paths_stay_under_their_prefix(pieces in prop::collection::vec(piece(), 1..12)) {
            let e = pieces.concat();
            if let Ok(p) = advoware_path(&e, &allowed(), "api/v1/advonet/") {
                for view in server_views(&p) {
                    prop_assert!(under_some_prefix(&view), "{e:?} → {p} → {view:?}");
                }
                prop_assert!(!percent_decode(p.as_bytes()).contains(&b'%'), "{e:?} → {p}");
            }
        }

        #[test]
        fn never_panics_and_output_is_safe(e in any::<String>()) {
            if let Ok(p) = advoware_path(&e, &allowed(), "api/v1/advonet/") {
                prop_assert!(p.starts_with("/api/v1/advonet/") || p == "/api/v1/Akten" || p.starts_with("/api/v1/Akten/")
                    || p == "/api/v1/NewActivities" || p.starts_with("/api/v1/NewActivities/"));
                prop_assert!(p.bytes().all(|b| b.is_ascii_graphic()));
                prop_assert!(!p.contains('?') && !p.contains('#') && !p.contains('\\') && !p.contains(';'));
                for view in server_views(&p) {
                    prop_assert!(under_some_prefix(&view), "{e:?} → {p} → {view:?}");
                }
            }
            let _ = extract_endpoint(&e);
            let _ = split_query(&e);
        }

        #[test]
        fn encoded_traversal_always_rejected(prefix in "[A-Za-z0-9/]{0,10}",
                                             dots in prop::sample::select(vec!["..", "%2e%2e", "%2E.", ".%2e", "%252e%252e", "%2e%252E", "..;", "..%3b", ".. ", "..%20", "...", "%2e%2e%2e"])) {
            let e = format!("{prefix}/{dots}/x");
            prop_assert!(advoware_path(&e, &allowed(), "api/v1/advonet/").is_err());
        }
    }

    #[test]
    fn the_model_sees_what_it_should() {
        // Sanity of the test's own normaliser: these would escape if accepted.
        for escaping in [
            "/api/v1/advonet/..;/..;/Token",
            "/api/v1/advonet/.. /.. /x",
            "/api/v1/advonet/%2e%2e/%2e%2e/x",
            "/api/v1/advonet/%252e%252e/%252e%252e/x",
            "/api/v1/advonet/%u002e%u002e/%u002e%u002e/x",
            "/api/v1/advonet\\..\\..\\x",
        ] {
            assert!(
                server_views(escaping).iter().any(|v| !under_some_prefix(v)),
                "{escaping}"
            );
        }
        assert!(server_views("/API/V1/Advonet/Termine./5")
            .iter()
            .all(|v| under_some_prefix(v)));
    }
}
