//! Error types at the library boundary.
//!
//! Concrete enums (not `anyhow`) because callers branch on them: the binary prints every
//! missing variable or problem and picks an exit code from the kind. None of them ever
//! carries a rendered secret value — only variable names, paths and rule descriptions.

use std::fmt;

/// Reading a declarative config failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not YAML of the expected shape. The message elides quoted scalars
    /// (serde_yaml quotes the offending value, e.g. `invalid type: string "…"`), since a
    /// rendered config holds secrets.
    #[error("kong config does not parse: {}", elide_quoted(&.0.to_string()))]
    Parse(#[source] serde_yaml::Error),
}

/// `text` with the contents of every `"…"` replaced by `…`.
pub(crate) fn elide_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if inside {
                out.push('…');
            }
            inside = !inside;
            out.push(c);
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// Rendering the template failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Placeholders that could not be filled, all of them at once: `missing` holds every
    /// variable without a (non-empty) value, sorted and deduplicated; `invalid` describes
    /// malformed placeholders (`${lower}`, an unclosed `${`) or values of the wrong type for
    /// an integer/boolean field — by variable name and location, never by value.
    #[error("{}", placeholder_summary(.missing, .invalid))]
    Placeholders {
        missing: Vec<String>,
        invalid: Vec<String>,
    },
    /// The template itself is not YAML.
    #[error("template does not parse as YAML: {0}")]
    Template(#[source] serde_yaml::Error),
    /// Writing the rendered tree back out failed (should not happen for parsed YAML).
    #[error("cannot serialise rendered config: {0}")]
    Serialise(#[source] serde_yaml::Error),
}

impl RenderError {
    /// The names of all missing variables (empty for other kinds of error).
    pub fn missing(&self) -> &[String] {
        match self {
            RenderError::Placeholders { missing, .. } => missing,
            _ => &[],
        }
    }
}

fn placeholder_summary(missing: &[String], invalid: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "missing environment variables: {}",
            missing.join(", ")
        ));
    }
    if !invalid.is_empty() {
        parts.push(format!("invalid placeholders: {}", invalid.join("; ")));
    }
    parts.join("; ")
}

/// One broken rule in a config. `at` is a path such as `services[worker].routes[hook]`;
/// `message` never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: String,
    pub message: String,
}

impl Problem {
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            at: at.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn parse_errors_do_not_quote_values() {
        let err = crate::model::KongConfig::parse("_format_version: \"3.0\"\nservices:\n  - name: s\n    url: u\n    read_timeout: \"topsecret\"\n");
        match err {
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains("topsecret"), "{msg}");
                assert!(msg.contains("invalid type"), "{msg}");
            }
            Ok(_) => panic!("expected a parse error"),
        }
    }
}
