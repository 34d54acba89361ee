//! The one phone and e-mail normaliser of every sync (leads today; Beteiligte and the 3CX
//! lookup are meant to reuse it rather than grow their own).
//!
//! # Why no `phonenumber` crate
//!
//! The firm's numbers are German (and the odd Austrian or Swiss one) typed into web forms. What
//! the CRM needs is one comparable form: E.164 (`+4930123456`). That is a small, exact set of
//! rules — strip the formatting, `+`/`00` means international, a leading trunk `0` means the
//! default region — which this module implements for a configurable default region instead of
//! pulling libphonenumber's metadata (megabytes of tables) into the worker. What it does *not*
//! do is check that an area code exists; the length bounds of E.164 (and of German numbers)
//! catch typos of the wrong size. Errors never contain the number (personal data).

use std::fmt;

/// A default region: the country calling code national numbers (`0…`) belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// ISO 3166 alpha-2 code, upper case.
    pub iso: &'static str,
    /// Country calling code without `+`.
    pub calling_code: &'static str,
}

/// The regions a default can be set to (all use trunk prefix `0`).
pub const REGIONS: &[Region] = &[
    Region {
        iso: "DE",
        calling_code: "49",
    },
    Region {
        iso: "AT",
        calling_code: "43",
    },
    Region {
        iso: "CH",
        calling_code: "41",
    },
    Region {
        iso: "NL",
        calling_code: "31",
    },
    Region {
        iso: "BE",
        calling_code: "32",
    },
    Region {
        iso: "FR",
        calling_code: "33",
    },
    Region {
        iso: "GB",
        calling_code: "44",
    },
];

impl Region {
    pub const DE: Region = Region {
        iso: "DE",
        calling_code: "49",
    };

    /// `"de"` / `"DE"` → the region; `None` for regions this normaliser does not know.
    pub fn parse(iso: &str) -> Option<Region> {
        REGIONS
            .iter()
            .copied()
            .find(|r| r.iso.eq_ignore_ascii_case(iso.trim()))
    }
}

impl Default for Region {
    fn default() -> Self {
        Self::DE
    }
}

/// Why a phone number was refused. Carries no digits of the number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("is empty")]
    Empty,
    #[error("contains characters other than digits, spaces and + - / . ( )")]
    InvalidCharacter,
    #[error("has no area code (national numbers start with 0, international ones with + or 00)")]
    NoAreaCode,
    #[error("has {0} digits; E.164 allows 8 to 15 including the country code")]
    Length(usize),
}

/// Normalises a typed phone number to E.164 (`+` and digits).
///
/// Accepts the usual ways of writing one: `030 1234567`, `(030) 123-45-67`, `+49 (0)30 1234567`,
/// `0049 30 1234567`, `+49/30/1234567`. A number that starts neither with `+`/`00` nor with the
/// trunk `0` is refused: without an area code it cannot be dialled from outside.
pub fn normalize_phone(raw: &str, default_region: Region) -> Result<String, PhoneError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(PhoneError::Empty);
    }
    let mut plus = false;
    let mut digits = String::with_capacity(trimmed.len());
    let mut rest = trimmed;
    if let Some(r) = rest.strip_prefix('+') {
        plus = true;
        rest = r;
    }
    // "+49 (0)30 …": the "(0)" is the trunk prefix written for national callers; drop it.
    let cleaned = rest.replacen("(0)", "", usize::from(plus));
    for c in cleaned.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '\u{a0}' | '-' | '/' | '.' | '(' | ')' => {}
            _ => return Err(PhoneError::InvalidCharacter),
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }
    let international = if plus {
        digits
    } else if let Some(intl) = digits.strip_prefix("00") {
        intl.to_owned()
    } else if let Some(national) = digits.strip_prefix('0') {
        format!("{}{national}", default_region.calling_code)
    } else {
        return Err(PhoneError::NoAreaCode);
    };
    let n = international.len();
    if !(8..=15).contains(&n) || international.starts_with('0') {
        return Err(PhoneError::Length(n));
    }
    Ok(format!("+{international}"))
}

/// Why an e-mail address was refused. Carries no part of the address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("is empty")]
    Empty,
    #[error("is longer than 254 characters")]
    TooLong,
    #[error("needs exactly one @ with text on both sides")]
    NoAt,
    #[error("has an invalid part before the @")]
    LocalPart,
    #[error("has an invalid domain (letters, digits, hyphens, at least one dot)")]
    Domain,
}

/// Normalises an e-mail address: trimmed, lower case (EspoCRM compares addresses
/// case-insensitively, so this is the form duplicates are found by), syntax-checked against the
/// practical subset of RFC 5321 web forms produce (dot-atom local part, ASCII host name with a
/// top-level domain of letters). Quoted local parts, IP literals and non-ASCII are refused.
pub fn normalize_email(raw: &str) -> Result<String, EmailError> {
    let email = raw.trim().to_ascii_lowercase();
    if email.is_empty() {
        return Err(EmailError::Empty);
    }
    if email.len() > 254 {
        return Err(EmailError::TooLong);
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(EmailError::NoAt);
    };
    if local.is_empty() || domain.is_empty() {
        return Err(EmailError::NoAt);
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if local.len() > 64
        || local
            .split('.')
            .any(|p| p.is_empty() || !p.chars().all(atext))
    {
        return Err(EmailError::LocalPart);
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let tld_ok = labels
        .last()
        .is_some_and(|t| t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic()));
    if labels.len() < 2 || !labels.iter().all(label_ok) || !tld_ok {
        return Err(EmailError::Domain);
    }
    Ok(email)
}

/// A person's name from a form: first and last name, trimmed, inner whitespace collapsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersonName {
    pub first: Option<String>,
    pub last: Option<String>,
}

impl fmt::Display for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.first, &self.last) {
            (Some(a), Some(b)) => write!(f, "{a} {b}"),
            (Some(a), None) | (None, Some(a)) => f.write_str(a),
            (None, None) => Ok(()),
        }
    }
}

/// Trims and collapses whitespace; `None` when nothing is left.
pub fn clean_text(s: &str) -> Option<String> {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    (!joined.is_empty()).then_some(joined)
}

/// First/last name from the separate fields if given, otherwise split from a full name at the
/// last space (`"Anna Maria Schmidt"` → `"Anna Maria"` + `"Schmidt"`; one word is the last name).
pub fn split_name(first: Option<&str>, last: Option<&str>, full: Option<&str>) -> PersonName {
    let first = first.and_then(clean_text);
    let last = last.and_then(clean_text);
    if first.is_some() || last.is_some() {
        return PersonName { first, last };
    }
    let Some(full) = full.and_then(clean_text) else {
        return PersonName::default();
    };
    match full.rsplit_once(' ') {
        Some((f, l)) => PersonName {
            first: Some(f.to_owned()),
            last: Some(l.to_owned()),
        },
        None => PersonName {
            first: None,
            last: Some(full),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn german_numbers_in_their_usual_spellings() {
        let de = Region::DE;
        for raw in [
            "030 1234567",
            "(030) 123-45-67",
            "+49 (0)30 1234567",
            "0049 30 1234567",
            "+49/30/1234567",
            " 030.123.45.67 ",
        ] {
            assert_eq!(normalize_phone(raw, de), Ok("+49301234567".into()), "{raw}");
        }
        assert_eq!(
            normalize_phone("0171 2345678", de),
            Ok("+491712345678".into())
        );
        assert_eq!(
            normalize_phone("01 234 5678", Region::parse("at").unwrap_or_default()),
            Ok("+4312345678".into())
        );
        assert_eq!(
            normalize_phone("+41 44 668 18 00", de),
            Ok("+41446681800".into())
        );
    }

    #[test]
    fn refuses_what_cannot_be_dialled() {
        let de = Region::DE;
        assert_eq!(normalize_phone("", de), Err(PhoneError::Empty));
        assert_eq!(normalize_phone("1234567", de), Err(PhoneError::NoAreaCode));
        assert_eq!(
            normalize_phone("030 12 ab", de),
            Err(PhoneError::InvalidCharacter)
        );
        assert_eq!(normalize_phone("0301", de), Err(PhoneError::Length(5)));
        assert_eq!(
            normalize_phone("+49 30 1234567890123", de),
            Err(PhoneError::Length(17))
        );
        assert!(normalize_phone("+0 30 12345678", de).is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("  Max.Mustermann+Miete@Example.DE "),
            Ok("max.mustermann+miete@example.de".into())
        );
        assert_eq!(normalize_email(""), Err(EmailError::Empty));
        assert_eq!(normalize_email("max.example.de"), Err(EmailError::NoAt));
        assert_eq!(normalize_email("a@b@c.de"), Err(EmailError::NoAt));
        assert_eq!(
            normalize_email("max..m@example.de"),
            Err(EmailError::LocalPart)
        );
        assert_eq!(
            normalize_email("max m@example.de"),
            Err(EmailError::LocalPart)
        );
        assert_eq!(normalize_email("max@localhost"), Err(EmailError::Domain));
        assert_eq!(normalize_email("max@-x.de"), Err(EmailError::Domain));
        assert_eq!(normalize_email("max@example.d3"), Err(EmailError::Domain));
        assert_eq!(
            normalize_email("mäx@example.de"),
            Err(EmailError::LocalPart)
        );
    }

    #[test]
    fn names() {
        let n = split_name(None, None, Some("  Anna  Maria   Schmidt "));
        assert_eq!(n.first.as_deref(), Some("Anna Maria"));
        assert_eq!(n.last.as_deref(), Some("Schmidt"));
        assert_eq!(n.to_string(), "Anna Maria Schmidt");
        let n = split_name(Some(" Max "), Some(" "), Some("ignored"));
        assert_eq!((n.first.as_deref(), n.last), (Some("Max"), None));
        assert_eq!(
            split_name(None, None, Some("Cher")).last.as_deref(),
            Some("Cher")
        );
        assert_eq!(split_name(None, None, None), PersonName::default());
    }

    proptest! {
        /// Any formatting of the same national number gives the same E.164 form, and that
        /// form is a fixed point.
        #[test]
        fn formatting_does_not_matter(
            area in "[1-9][0-9]{1,4}",
            sub in "[0-9]{4,8}",
            sep in prop::sample::select(vec![" ", "-", "/", ".", ""]),
            intl in any::<bool>(),
        ) {
            let national = format!("0{area}{sep}{sub}");
            let written = if intl { format!("+49 (0){area}{sep}{sub}") } else { national.clone() };
            let a = normalize_phone(&national, Region::DE);
            let b = normalize_phone(&written, Region::DE);
            prop_assert_eq!(&a, &b);
            if let Ok(e164) = a {
                prop_assert!(e164.starts_with("+49"));
                prop_assert_eq!(normalize_phone(&e164, Region::DE), Ok(e164.clone()));
            }
        }

        /// Never panics; whatever is accepted is `+` and 8–15 digits.
        #[test]
        fn accepted_numbers_are_e164(raw in ".{0,30}") {
            if let Ok(n) = normalize_phone(&raw, Region::DE) {
                prop_assert!(n.starts_with('+'));
                prop_assert!((9..=16).contains(&n.len()));
                prop_assert!(n[1..].bytes().all(|b| b.is_ascii_digit()));
            }
        }

        /// Normalising twice changes nothing, and case never matters.
        #[test]
        fn email_normalisation_is_idempotent(
            local in "[A-Za-z0-9][A-Za-z0-9._+-]{0,20}[A-Za-z0-9]",
            domain in "[A-Za-z0-9]{1,10}\\.[A-Za-z]{2,6}",
        ) {
            let raw = format!("{local}@{domain}");
            if let Ok(n) = normalize_email(&raw) {
                prop_assert_eq!(normalize_email(&n), Ok(n.clone()));
                prop_assert_eq!(normalize_email(&raw.to_uppercase()), Ok(n));
            }
        }
    }
}
