//! IBAN (ISO 13616) and BIC (ISO 9362) checks, and the IBAN mask every log line and error
//! message uses.
//!
//! An IBAN is checked before any write to Advoware: characters, the country's length from the
//! SWIFT IBAN registry ([`COUNTRY_LENGTHS`]), check digits 02–98 and the ISO 7064 mod-97-10
//! checksum. A BIC: 8 or 11 characters — 4 letters (bank), 2 letters (country), 2 alphanumerics
//! (location), optionally 3 alphanumerics (branch).
//!
//! # Masking
//!
//! [`mask`] shows the first and the last four characters of an IBAN in groups of four
//! (`DE89 **** **** **** **30 00`); a value too short to be an IBAN shows only two. It never
//! reveals more than 8 characters. [`mask_ibans`] masks every IBAN-shaped run inside free text
//! (an upstream error body echoing what we sent, a validation message), so a message can be
//! logged or written to the CRM whatever it quotes.

use std::fmt;

/// IBAN length per country (SWIFT IBAN registry): every SEPA country and the other registered ones.
pub const COUNTRY_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// The registered IBAN length of `country` (two upper-case letters).
pub fn country_length(country: &str) -> Option<usize> {
    COUNTRY_LENGTHS
        .iter()
        .find(|(c, _)| *c == country)
        .map(|(_, n)| *n)
}

/// Why an IBAN was refused. Carries the masked IBAN only, so `Display` is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IbanError {
    #[error("IBAN fehlt")]
    Empty,
    #[error("IBAN {masked}: nur Buchstaben A–Z und Ziffern erlaubt")]
    Characters { masked: String },
    #[error("IBAN {masked}: beginnt nicht mit Ländercode und Prüfziffern")]
    Shape { masked: String },
    #[error("IBAN {masked}: unbekannter Ländercode {country}")]
    UnknownCountry { masked: String, country: String },
    #[error("IBAN {masked}: {country} verlangt {expected} Zeichen, angegeben {actual}")]
    Length {
        masked: String,
        country: String,
        expected: usize,
        actual: usize,
    },
    #[error("IBAN {masked}: Prüfsumme (mod 97) falsch")]
    Checksum { masked: String },
}

/// A checked IBAN in electronic form (upper case, no spaces). `Debug`/`Display` are masked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Iban(String);

impl Iban {
    /// Checks `input` (spaces allowed, any case) and returns the electronic form.
    pub fn parse(input: &str) -> Result<Self, IbanError> {
        let compact: String = input
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if compact.is_empty() {
            return Err(IbanError::Empty);
        }
        let masked = mask(&compact);
        if !compact.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(IbanError::Characters { masked });
        }
        let b = compact.as_bytes();
        if b.len() < 4
            || !b[..2].iter().all(u8::is_ascii_alphabetic)
            || !b[2..4].iter().all(u8::is_ascii_digit)
        {
            return Err(IbanError::Shape { masked });
        }
        let country = compact[..2].to_owned();
        let Some(expected) = country_length(&country) else {
            return Err(IbanError::UnknownCountry { masked, country });
        };
        if b.len() != expected {
            return Err(IbanError::Length {
                masked,
                country,
                expected,
                actual: b.len(),
            });
        }
        let check: u32 = compact[2..4].parse().unwrap_or(0);
        if !(2..=98).contains(&check) || mod97(&compact) != 1 {
            return Err(IbanError::Checksum { masked });
        }
        Ok(Self(compact))
    }

    /// The electronic form, e.g. `DE89370400440532013000`. Client data: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn country(&self) -> &str {
        &self.0[..2]
    }

    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Debug for Iban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iban({})", self.masked())
    }
}

impl fmt::Display for Iban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// ISO 7064 mod 97-10 of an IBAN: the first four characters moved to the end, letters as
/// 10–35, computed digit by digit (no big integers).
fn mod97(compact: &str) -> u32 {
    let (head, tail) = compact.split_at(4);
    let mut r: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return 0,
        };
        r = if v >= 10 {
            (r * 100 + v) % 97
        } else {
            (r * 10 + v) % 97
        };
    }
    r
}

/// Computes the check digits for `country` + `bban` (test data and the sandbox).
pub fn with_check_digits(country: &str, bban: &str) -> String {
    let probe = format!("{country}00{bban}").to_ascii_uppercase();
    let check = 98 - mod97(&probe);
    format!("{country}{check:02}{bban}").to_ascii_uppercase()
}

/// Why a BIC was refused (a BIC names a bank, not a client: quoted when it has a BIC's length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BicError {
    /// Not quoted: a value of another length may be an IBAN typed into the wrong field.
    #[error("BIC: 8 oder 11 Zeichen erwartet, angegeben {0}")]
    Length(usize),
    #[error("BIC {0:?}: die ersten 4 Zeichen (Bank) müssen Buchstaben sein")]
    BankCode(String),
    #[error("BIC {0:?}: Zeichen 5–6 müssen ein Ländercode sein")]
    Country(String),
    #[error("BIC {0:?}: Ort (Zeichen 7–8) und Filiale (9–11) nur A–Z und Ziffern")]
    Location(String),
}

/// Checks a BIC (spaces allowed, any case) and returns it upper case without spaces.
pub fn parse_bic(input: &str) -> Result<String, BicError> {
    let bic: String = input
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let quoted: String = bic.chars().take(11).collect();
    if bic.len() != 8 && bic.len() != 11 {
        return Err(BicError::Length(bic.chars().count()));
    }
    let b = bic.as_bytes();
    if !b[..4].iter().all(u8::is_ascii_uppercase) {
        return Err(BicError::BankCode(quoted));
    }
    if !b[4..6].iter().all(u8::is_ascii_uppercase) {
        return Err(BicError::Country(quoted));
    }
    if !b[6..]
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(BicError::Location(quoted));
    }
    Ok(bic)
}

/// Masks an IBAN (or anything typed as one): letters and digits only, first and last four
/// shown (two when shorter than the shortest IBAN, 15), the rest `*`, groups of four.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let n = chars.len();
    let (head, tail) = if n >= 15 { (4, 4) } else { (2.min(n), 0) };
    let mut out = String::with_capacity(n + n / 4);
    for (i, c) in chars.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(' ');
        }
        if i < head || i >= n - tail {
            out.push(*c);
        } else {
            out.push('*');
        }
    }
    out
}

/// Replaces every IBAN-shaped run in `text` by its [`mask`]: two letters, two digits, then
/// either 11 or more letters/digits in one run, or space-separated groups of four (the
/// printed form) with at least 15 characters in all. Over-masking a neighbouring word is
/// accepted; leaking an IBAN is not.
pub fn mask_ibans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // No word boundary required: an IBAN glued to other text is still masked.
        if let Some(end) = iban_run(&chars, i) {
            let run: String = chars[i..end].iter().collect();
            out.push_str(&mask(&run));
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The end of an IBAN-shaped run starting at `start`, if there is one.
fn iban_run(c: &[char], start: usize) -> Option<usize> {
    let at = |k: usize| c.get(start + k).copied();
    let starts = at(0).is_some_and(|x| x.is_ascii_alphabetic())
        && at(1).is_some_and(|x| x.is_ascii_alphabetic())
        && at(2).is_some_and(|x| x.is_ascii_digit())
        && at(3).is_some_and(|x| x.is_ascii_digit());
    if !starts {
        return None;
    }
    // Compact form: one alphanumeric run.
    let mut end = start + 4;
    while end < c.len() && c[end].is_ascii_alphanumeric() {
        end += 1;
    }
    let compact_len = end - start;
    if compact_len >= 15 {
        // Longer than any IBAN: masked whole rather than let a glued IBAN through.
        return Some(end);
    }
    if compact_len != 4 {
        return None;
    }
    // Printed form: groups of four separated by one space; the first group of another length
    // ends it and is included whole (a last group glued to the next word is masked with it).
    let mut count = 4;
    let mut pos = end;
    loop {
        if pos + 1 >= c.len() || c[pos] != ' ' {
            break;
        }
        let mut g = pos + 1;
        while g < c.len() && c[g].is_ascii_alphanumeric() {
            g += 1;
        }
        let len = g - (pos + 1);
        if len == 0 {
            break;
        }
        count += len;
        pos = g;
        if len != 4 {
            break;
        }
    }
    (count >= 15).then_some(pos)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn iso_and_swift_examples_are_valid() {
        for (input, compact) in [
            ("GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432"),
            ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
            ("de89370400440532013000", "DE89370400440532013000"),
            (
                "FR14 2004 1010 0505 0001 3M02 606",
                "FR1420041010050500013M02606",
            ),
            ("NL91ABNA0417164300", "NL91ABNA0417164300"),
            ("BE68539007547034", "BE68539007547034"),
            ("NO9386011117947", "NO9386011117947"),
            ("CH9300762011623852957", "CH9300762011623852957"),
            ("AT611904300234573201", "AT611904300234573201"),
            (
                "MT84MALT011000012345MTLCAST001S",
                "MT84MALT011000012345MTLCAST001S",
            ),
            ("SA0380000000608010167519", "SA0380000000608010167519"),
        ] {
            let iban = Iban::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(iban.expose(), compact);
        }
    }

    #[test]
    fn invalid_vectors_are_refused_with_the_reason() {
        type Case = (&'static str, fn(&IbanError) -> bool);
        let cases: [Case; 9] = [
            ("", |e| matches!(e, IbanError::Empty)),
            ("   ", |e| matches!(e, IbanError::Empty)),
            ("DE89 3704 0044 0532 0130 01", |e| {
                matches!(e, IbanError::Checksum { .. })
            }),
            ("GB82 WEST 1234 5698 7654 33", |e| {
                matches!(e, IbanError::Checksum { .. })
            }),
            ("DE89 3704 0044 0532 0130 0", |e| {
                matches!(
                    e,
                    IbanError::Length {
                        expected: 22,
                        actual: 21,
                        ..
                    }
                )
            }),
            ("XX89370400440532013000", |e| {
                matches!(e, IbanError::UnknownCountry { .. })
            }),
            ("DE89-3704-0044-0532-0130-00", |e| {
                matches!(e, IbanError::Characters { .. })
            }),
            ("1289370400440532013000", |e| {
                matches!(e, IbanError::Shape { .. })
            }),
            // Transposed digits: mod 97 catches them.
            ("DE89 3704 0044 0532 0103 00", |e| {
                matches!(e, IbanError::Checksum { .. })
            }),
        ];
        for (input, expected) in cases {
            let e = Iban::parse(input).expect_err(input);
            assert!(expected(&e), "{input}: {e:?}");
        }
    }

    #[test]
    fn check_digits_outside_02_to_98_are_refused() {
        // "DE00…" can satisfy mod 97 only by accident; ISO 13616 reserves 00, 01 and 99.
        let valid = with_check_digits("DE", "370400440532013000");
        assert_eq!(valid, "DE89370400440532013000");
        assert!(Iban::parse("DE00370400440532013000").is_err());
        assert!(Iban::parse("DE01370400440532013000").is_err());
        assert!(Iban::parse("DE99370400440532013000").is_err());
    }

    #[test]
    fn every_sepa_country_has_a_length() {
        for c in [
            "AD", "AL", "AT", "BE", "BG", "CH", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR",
            "GB", "GI", "GR", "HR", "HU", "IE", "IS", "IT", "LI", "LT", "LU", "LV", "MC", "MD",
            "ME", "MK", "MT", "NL", "NO", "PL", "PT", "RO", "RS", "SE", "SI", "SK", "SM", "VA",
        ] {
            assert!(country_length(c).is_some(), "{c}");
        }
        assert_eq!(country_length("DE"), Some(22));
        assert_eq!(country_length("NO"), Some(15));
        assert_eq!(country_length("MT"), Some(31));
    }

    #[test]
    fn errors_never_quote_the_whole_iban() {
        let e = Iban::parse("DE89 3704 0044 0532 0130 01").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("DE89 **** **** **** **30 01"), "{text}");
        assert!(!text.contains("37040044"), "{text}");
        let iban = Iban::parse("DE89370400440532013000").unwrap();
        assert_eq!(format!("{iban:?}"), "Iban(DE89 **** **** **** **30 00)");
        assert_eq!(iban.to_string(), "DE89 **** **** **** **30 00");
    }

    #[test]
    fn mask_matches_the_issue_example() {
        assert_eq!(
            mask("DE89370400440532013000"),
            "DE89 **** **** **** **30 00"
        );
        assert_eq!(
            mask("DE89 3704 0044 0532 0130 00"),
            "DE89 **** **** **** **30 00"
        );
        assert_eq!(
            mask("GB82WEST12345698765432"),
            "GB82 **** **** **** **54 32"
        );
        assert_eq!(mask("NO9386011117947"), "NO93 **** ***7 947");
        assert_eq!(mask("DE12"), "DE**");
        assert_eq!(mask(""), "");
    }

    #[test]
    fn ibans_in_text_are_masked() {
        let text = r#"Advoware answered 400: {"Message":"IBAN DE89370400440532013000 ungültig"}"#;
        let masked = mask_ibans(text);
        assert!(!masked.contains("DE89370400440532013000"), "{masked}");
        assert!(masked.contains("DE89 **** **** **** **30 00"), "{masked}");
        assert!(masked.starts_with("Advoware answered 400"));
        let printed = mask_ibans("Konto GB82 WEST 1234 5698 7654 32, bitte prüfen");
        assert_eq!(printed, "Konto GB82 **** **** **** **54 32, bitte prüfen");
        // Ordinary text, ids and short codes stay.
        for plain in [
            "betNr 50001, id 9001",
            "path api/v1/advonet/Beteiligte/50001/Bankverbindungen",
            "BIC COBADEFFXXX",
            "DE89 is not enough",
        ] {
            assert_eq!(mask_ibans(plain), plain);
        }
    }

    #[test]
    fn bic_format() {
        for ok in [
            "COBADEFFXXX",
            "COBADEFF",
            "deutdeff500",
            "NEDSZAJJ",
            "DABA DK KK",
        ] {
            assert!(parse_bic(ok).is_ok(), "{ok}");
        }
        assert_eq!(parse_bic("cobadeffxxx").unwrap(), "COBADEFFXXX");
        assert!(matches!(parse_bic("COBADEF"), Err(BicError::Length(_))));
        assert!(matches!(parse_bic("COBADEFFXX"), Err(BicError::Length(_))));
        // An IBAN in the BIC field is not quoted back.
        let e = parse_bic("DE89370400440532013000").unwrap_err().to_string();
        assert!(!e.contains("3704"), "{e}");
        assert!(matches!(parse_bic("C0BADEFF"), Err(BicError::BankCode(_))));
        assert!(matches!(parse_bic("COBAD3FF"), Err(BicError::Country(_))));
        assert!(matches!(parse_bic("COBADEF-"), Err(BicError::Location(_))));
        assert!(matches!(
            parse_bic("COBADEFFXX_"),
            Err(BicError::Location(_))
        ));
    }

    /// A valid IBAN of a random registered country.
    fn any_iban() -> impl Strategy<Value = String> {
        (
            0..COUNTRY_LENGTHS.len(),
            proptest::collection::vec(0u8..36, 34),
        )
            .prop_map(|(idx, raw)| {
                let (country, len) = COUNTRY_LENGTHS[idx];
                let bban: String = raw
                    .iter()
                    .take(len - 4)
                    .map(|v| char::from_digit(u32::from(*v), 36).unwrap_or('0'))
                    .collect();
                with_check_digits(country, &bban)
            })
    }

    fn revealed(masked: &str) -> usize {
        masked.chars().filter(char::is_ascii_alphanumeric).count()
    }

    proptest! {
        #[test]
        fn generated_ibans_validate(iban in any_iban()) {
            prop_assert!(Iban::parse(&iban).is_ok(), "{}", iban);
        }

        #[test]
        fn mask_never_reveals_more_than_8(value in "[A-Za-z0-9 ]{0,40}") {
            let m = mask(&value);
            prop_assert!(revealed(&m) <= 8, "{} -> {}", value, m);
        }

        #[test]
        fn masked_iban_reveals_8_and_keeps_the_ends(iban in any_iban()) {
            let m = mask(&iban);
            prop_assert_eq!(revealed(&m), 8);
            prop_assert!(m.starts_with(&iban[..4]));
            prop_assert_eq!(m.replace(' ', "").len(), iban.len());
        }

        #[test]
        fn ibans_inside_text_never_survive(
            iban in any_iban(),
            printed in any::<bool>(),
            before in "[a-z ,:\"{}]{0,12}",
            after in "[a-z ,:\"{}.]{0,12}",
        ) {
            let shown = if printed {
                iban.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
            } else {
                iban.clone()
            };
            let text = format!("{before}{shown}{after}");
            let masked = mask_ibans(&text);
            prop_assert!(!masked.contains(&iban), "{}", masked);
            prop_assert!(!masked.contains(&shown), "{}", masked);
            // The hidden middle never appears as a whole.
            let middle = &iban[4..iban.len() - 4];
            prop_assert!(!masked.replace(' ', "").contains(middle), "{}", masked);
        }
    }
}
