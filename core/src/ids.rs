//! Typed identifiers passed between modules instead of bare strings.
//!
//! - [`Kuerzel`]: an Advoware employee code (`SB`, `MM2`): 1–16 ASCII
//!   letters/digits, case preserved.
//! - [`FrNr`]: an Advoware appointment number (`frNr`).
//! - [`BetNr`]: an Advoware participant number (`betNr`).
//! - [`EspoId`]: an EspoCRM record id: 1–64 ASCII letters/digits.
//!
//! All implement `FromStr`, `Display` and serde. The numeric ids serialise as
//! JSON numbers and deserialise from numbers or decimal strings (Advoware
//! sends numbers in JSON bodies, query parameters are strings).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty input.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// Longer than allowed.
    #[error("{kind} is longer than {max} characters")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
        /// The maximum length.
        max: usize,
    },
    /// A character outside the allowed alphabet.
    #[error("{0} contains an invalid character")]
    InvalidChar(&'static str),
    /// Not a decimal number in range.
    #[error("{0} is not a valid number")]
    InvalidNumber(&'static str),
}

fn check_alnum(s: &str, kind: &'static str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty(kind));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(IdError::InvalidChar(kind));
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Maximum length in characters.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_alnum(&s, $kind, $max)?;
                Ok(Self(s))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// An Advoware employee code (Kürzel): 1–16 ASCII letters or digits.
    Kuerzel, "Kuerzel", 16
);
string_id!(
    /// An EspoCRM record id: 1–64 ASCII letters or digits.
    EspoId, "EspoId", 64
);

macro_rules! number_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// The number.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            /// Decimal digits only (no sign, no whitespace).
            fn from_str(s: &str) -> Result<Self, IdError> {
                if s.is_empty() {
                    return Err(IdError::Empty($kind));
                }
                if !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IdError::InvalidNumber($kind));
                }
                s.parse().map(Self).map_err(|_| IdError::InvalidNumber($kind))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u64(self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a non-negative integer or decimal string ({})", $kind)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        Ok($name(v))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        u64::try_from(v).map($name).map_err(|_| E::custom(IdError::InvalidNumber($kind)))
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$name, E> {
                        // Only whole, non-negative, exactly representable values.
                        if v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0 {
                            Ok($name(v as u64))
                        } else {
                            Err(E::custom(IdError::InvalidNumber($kind)))
                        }
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

number_id!(
    /// An Advoware appointment number (`frNr`).
    FrNr, "FrNr"
);
number_id!(
    /// An Advoware participant number (`betNr`).
    BetNr, "BetNr"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kuerzel() {
        assert_eq!("SB".parse::<Kuerzel>().unwrap().as_str(), "SB");
        assert_eq!(Kuerzel::new("mm2").unwrap().to_string(), "mm2");
        assert!(Kuerzel::new("A".repeat(16)).is_ok());
        assert_eq!(
            Kuerzel::new("A".repeat(17)),
            Err(IdError::TooLong {
                kind: "Kuerzel",
                max: 16
            })
        );
        assert_eq!(Kuerzel::new(""), Err(IdError::Empty("Kuerzel")));
        for bad in ["S B", "SB ", "SB/1", "Ä", "SB\n", "ALL*"] {
            assert!(bad.parse::<Kuerzel>().is_err(), "{bad}");
        }
    }

    #[test]
    fn espo_id() {
        assert!("6745a1b2c3d4e5f60".parse::<EspoId>().is_ok());
        assert!(EspoId::new("a".repeat(64)).is_ok());
        assert!(EspoId::new("a".repeat(65)).is_err());
        assert!(EspoId::new("abc-def").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!("12345".parse::<FrNr>(), Ok(FrNr(12345)));
        assert_eq!(BetNr(7).to_string(), "7");
        for bad in ["", "-1", "+1", " 1", "1.0", "18446744073709551616", "x"] {
            assert!(bad.parse::<BetNr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_roundtrips() {
        let k: Kuerzel = serde_json::from_str("\"SB\"").unwrap();
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"SB\"");
        assert!(serde_json::from_str::<Kuerzel>("\"S B\"").is_err());
        let f: FrNr = serde_json::from_str("4711").unwrap();
        assert_eq!(f, FrNr(4711));
        assert_eq!(
            serde_json::from_str::<FrNr>("\"4711\"").unwrap(),
            FrNr(4711)
        );
        assert_eq!(serde_json::from_str::<FrNr>("4711.0").unwrap(), FrNr(4711));
        assert!(serde_json::from_str::<FrNr>("-1").is_err());
        assert!(serde_json::from_str::<FrNr>("1.5").is_err());
        assert!(serde_json::from_str::<FrNr>("\"abc\"").is_err());
        assert_eq!(serde_json::to_string(&BetNr(9)).unwrap(), "9");
        let e: EspoId = serde_json::from_str("\"abc123\"").unwrap();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!("abc123")
        );
    }
}
