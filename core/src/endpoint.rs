//! The Advoware proxy's `endpoint` query parameter.
//!
//! Clients call the gateway as `GET /advoware/proxy?endpoint=Beteiligte/123&x=1`;
//! the `advoware_auth` filter turns that into the upstream request
//! `GET /api/v1/advonet/Beteiligte/123?x=1` with a bearer token. Because the
//! endpoint becomes part of an authenticated upstream path, it is validated
//! strictly before use ([`advoware_path`]):
//!
//! 1. empty → `endpoint_missing`; longer than [`MAX_ENDPOINT_LEN`] →
//!    `endpoint_invalid`.
//! 2. The raw value and every further percent-decoding of it (up to
//!    [`MAX_DECODE_LAYERS`], catching double encoding such as `%252e`) must
//!    not contain: control characters (raw or `%00`, `%0d`, `%0a`, …) →
//!    `endpoint_control_chars`; `.` or `..` segments (`..`, `%2e%2e`,
//!    `%2E.`, `.%2e`, `%252e%252e`, …) → `endpoint_traversal`; an absolute
//!    URL (a scheme `x:` in the first segment, or a leading `//` after one
//!    leading `/` is stripped) → `endpoint_absolute`; a backslash, `?` or
//!    `#` → `endpoint_invalid`. Still-changing encoding after the last
//!    layer is `endpoint_invalid` too.
//! 3. The value decoded once is the path. It must be UTF-8 and have no
//!    empty segments (`a//b`); one leading `/` is stripped.
//! 4. If it already starts with an allowed prefix (segment-wise: prefix
//!    `api/v1/Akten` matches `api/v1/Akten` and `api/v1/Akten/5`, not
//!    `api/v1/AktenX`; case-sensitive), it is kept; otherwise the default
//!    prefix (e.g. `api/v1/advonet/`) is put in front. The result must
//!    start with an allowed prefix → else `endpoint_not_allowed`.
//! 5. Returned with a leading `/`, and bytes outside the RFC 3986 path
//!    alphabet percent-encoded (existing `%XX` kept).
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
    /// A `.` or `..` segment, in any encoding.
    #[error("endpoint contains a dot segment")]
    Traversal,
    /// An absolute URL or network-path reference.
    #[error("endpoint is an absolute URL")]
    Absolute,
    /// A control character (CR, LF, NUL, …), in any encoding.
    #[error("endpoint contains control characters")]
    ControlChars,
    /// Backslash, `?`, `#`, empty segment, bad UTF-8, too long or too
    /// deeply encoded.
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
    let mut settled = false;
    for _ in 0..MAX_DECODE_LAYERS {
        let next = percent_decode(layers.last().map(Vec::as_slice).unwrap_or_default());
        if layers.last() == Some(&next) {
            settled = true;
            break;
        }
        layers.push(next);
    }
    // Checked category by category so the most specific reason wins
    // (`a%0d%0aX:1` is a control-character problem, not a scheme).
    for check in [check_control, check_traversal, check_absolute, check_chars] {
        for layer in &layers {
            check(layer)?;
        }
    }
    if !settled {
        return Err(EndpointError::Invalid("too deeply encoded"));
    }
    let decoded = layers
        .get(1)
        .cloned()
        .unwrap_or_else(|| endpoint.as_bytes().to_vec());
    let decoded = String::from_utf8(decoded).map_err(|_| EndpointError::Invalid("not UTF-8"))?;
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

fn check_control(layer: &[u8]) -> Result<(), EndpointError> {
    if layer.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(EndpointError::ControlChars);
    }
    Ok(())
}

/// `.`/`..` segments; a backslash counts as a separator here (IIS does).
fn check_traversal(layer: &[u8]) -> Result<(), EndpointError> {
    if layer
        .split(|&b| b == b'/' || b == b'\\')
        .any(|seg| seg == b"." || seg == b"..")
    {
        return Err(EndpointError::Traversal);
    }
    Ok(())
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
/// (unreserved, sub-delims, `:`, `@`, `/`); keeps valid `%XX` sequences.
fn encode_path(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        let keep = c.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@/".contains(&c)
            || (c == b'%'
                && b.get(i + 1).copied().and_then(hex_val).is_some()
                && b.get(i + 2).copied().and_then(hex_val).is_some());
        if keep {
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
        ok("100%", "/api/v1/advonet/100%25");
        ok("x%2541", "/api/v1/advonet/x%41");
        ok("..a/b..", "/api/v1/advonet/..a/b..");
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
            ("a%FFb", E::Invalid("not UTF-8")),
            ("%2525252525252e", E::Invalid("too deeply encoded")),
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

    #[test]
    fn codes() {
        assert_eq!(EndpointError::Missing.code(), "endpoint_missing");
        assert_eq!(EndpointError::Traversal.code(), "endpoint_traversal");
        assert_eq!(EndpointError::Absolute.code(), "endpoint_absolute");
        assert_eq!(EndpointError::ControlChars.code(), "endpoint_control_chars");
        assert_eq!(EndpointError::NotAllowed.code(), "endpoint_not_allowed");
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

    proptest! {
        #[test]
        fn never_panics_and_output_is_safe(e in any::<String>()) {
            let allowed = vec!["api/v1/advonet/".to_string(), "api/v1/Akten".to_string()];
            if let Ok(p) = advoware_path(&e, &allowed, "api/v1/advonet/") {
                prop_assert!(p.starts_with("/api/v1/advonet/") || p == "/api/v1/Akten" || p.starts_with("/api/v1/Akten/"));
                prop_assert!(p.bytes().all(|b| b.is_ascii_graphic()));
                prop_assert!(!p.contains('?') && !p.contains('#') && !p.contains('\\'));
                // no dot segments, even after the upstream decodes it again
                let twice = percent_decode(&percent_decode(p.as_bytes()));
                prop_assert!(!twice.split(|&b| b == b'/').any(|s| s == b".." || s == b"."));
            }
            let _ = extract_endpoint(&e);
            let _ = split_query(&e);
        }

        #[test]
        fn encoded_traversal_always_rejected(prefix in "[A-Za-z0-9/]{0,10}",
                                             dots in prop::sample::select(vec!["..", "%2e%2e", "%2E.", ".%2e", "%252e%252e", "%2e%252E"])) {
            let e = format!("{prefix}/{dots}/x");
            prop_assert!(advoware_path(&e, &["api/v1/advonet/".to_string()], "api/v1/advonet/").is_err());
        }
    }
}
