//! Fills the `${VAR}` placeholders of the `kong.yaml` template.
//!
//! Why not plain text substitution: a secret containing `: `, `#`, quotes or a newline would
//! then rewrite the document (add keys, comment out the rest, close a quote). Instead the
//! template is parsed into a YAML tree, placeholders are replaced *inside string scalars*
//! (and mapping keys), and the tree is serialised again — the serialiser quotes whatever needs
//! quoting, so every value stays the one string it replaced. Comments of the template are lost,
//! which is fine for a deploy artefact.
//!
//! Syntax: `${NAME}` (NAME = `[A-Z_][A-Z0-9_]*`), `${NAME:-default}` for non-secrets, and
//! `$${` for a literal `${`. Unset and empty variables are both "missing" — an empty key or
//! password is never what a deploy meant. A value that is the *whole* scalar of a known integer
//! or boolean Kong field (`read_timeout: ${READ_TIMEOUT:-60000}`) becomes a YAML integer/boolean,
//! because Kong rejects a string there; everything else stays a string.

use serde_yaml::{Mapping, Value};

use crate::error::RenderError;

/// Kong fields (services, routes, our plugins' configs) whose values are integers.
const INTEGER_KEYS: &[&str] = &[
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "retries",
    "port",
    "https_redirect_status_code",
    "regex_priority",
    "second",
    "minute",
    "hour",
    "day",
    "month",
    "year",
    "allowed_payload_size",
    "max_age",
    "timeout",
    "database",
    "redis_port",
    "redis_timeout",
    "redis_database",
    "sync_rate",
];

/// Kong fields whose values are booleans.
const BOOLEAN_KEYS: &[&str] = &[
    "enabled",
    "strip_path",
    "preserve_host",
    "hide_credentials",
    "hide_client_headers",
    "fault_tolerant",
    "credentials",
    "preflight_continue",
    "run_on_preflight",
    "ssl",
    "ssl_verify",
    "key_in_header",
    "key_in_query",
    "key_in_body",
    "require_content_length",
];

/// A variable the template refers to, for `kong-config vars`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVar {
    pub name: String,
    /// `Some` only if *every* use of the variable has a default; one bare `${NAME}` makes it required.
    pub default: Option<String>,
}

/// The result of a render, with what the caller needs to keep secrets out of its output.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The rendered YAML document.
    pub yaml: String,
    /// The values taken from the environment (not defaults); pass them to [`redact`] before
    /// printing any message that might quote the rendered document.
    pub secret_values: Vec<String>,
}

impl Rendered {
    /// `text` with every value taken from the environment replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.secret_values)
    }
}

/// Renders the template, taking variable values from `lookup`.
///
/// Errors list every missing variable and every malformed placeholder at once, by name and
/// location only — never a value.
pub fn render(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, RenderError> {
    render_detailed(template, lookup).map(|r| r.yaml)
}

/// [`render`], also returning the substituted values so callers can redact them.
pub fn render_detailed(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Rendered, RenderError> {
    let mut tree: Value = serde_yaml::from_str(template).map_err(RenderError::Template)?;
    // Resolve `<<: *anchor` here so the rendered file is plain YAML, whatever loader reads it.
    tree.apply_merge().map_err(RenderError::Template)?;
    let mut r = Renderer {
        lookup,
        missing: Vec::new(),
        invalid: Vec::new(),
        values: Vec::new(),
    };
    let out = r.value(tree, "", None, false);
    if !r.missing.is_empty() || !r.invalid.is_empty() {
        r.missing.sort();
        r.missing.dedup();
        return Err(RenderError::Placeholders {
            missing: r.missing,
            invalid: r.invalid,
        });
    }
    let yaml = serde_yaml::to_string(&out).map_err(RenderError::Serialise)?;
    let mut secret_values = r.values;
    secret_values.sort();
    secret_values.dedup();
    Ok(Rendered {
        yaml,
        secret_values,
    })
}

/// Every variable the template uses, sorted by name.
pub fn template_vars(template: &str) -> Result<Vec<TemplateVar>, RenderError> {
    let tree: Value = serde_yaml::from_str(template).map_err(RenderError::Template)?;
    let mut strings = Vec::new();
    collect_strings(&tree, "", &mut strings);
    let mut vars: Vec<TemplateVar> = Vec::new();
    let mut invalid = Vec::new();
    for (path, s) in strings {
        match pieces(&s) {
            Err(e) => invalid.push(format!("{}: {e}", show_path(&path))),
            Ok(ps) => {
                for p in ps {
                    if let Piece::Var { name, default } = p {
                        match vars.iter_mut().find(|v| v.name == name) {
                            Some(v) => {
                                if default.is_none() {
                                    v.default = None;
                                }
                            }
                            None => vars.push(TemplateVar { name, default }),
                        }
                    }
                }
            }
        }
    }
    if !invalid.is_empty() {
        return Err(RenderError::Placeholders {
            missing: Vec::new(),
            invalid,
        });
    }
    vars.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(vars)
}

/// Replaces every occurrence of each value (of 4+ characters: shorter ones would blank out
/// ordinary text and are no meaningful secret) with `***`.
pub fn redact(text: &str, values: &[String]) -> String {
    let mut sorted: Vec<&String> = values.iter().filter(|v| v.chars().count() >= 4).collect();
    // Longest first, so a value containing another is replaced whole.
    sorted.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for v in sorted {
        out = out.replace(v.as_str(), "***");
    }
    out
}

/// One part of a string scalar: literal text or a placeholder.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var {
        name: String,
        default: Option<String>,
    },
}

/// Splits a scalar into literal text and placeholders; `Err` says what is malformed
/// (quoting the template's own text, which is committed and holds no secret).
fn pieces(s: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        lit.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            lit.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(format!("unclosed placeholder `{}`", truncate(after)));
            };
            let body = &tail[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d.to_string())),
                None => (body, None),
            };
            if !valid_name(name) {
                return Err(format!(
                    "`${{{body}}}` is not a placeholder (names are A-Z, 0-9 and _, not starting with a digit)"
                ));
            }
            if !lit.is_empty() {
                out.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            out.push(Piece::Var {
                name: name.to_string(),
                default,
            });
            rest = &tail[end + 1..];
        } else {
            lit.push('$');
            rest = &after[1..];
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(30).collect()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `services.0.routes.1` → `services[0].routes[1]`, for messages.
fn show_path(path: &str) -> String {
    if path.is_empty() {
        "<root>".to_string()
    } else {
        path.to_string()
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn collect_strings(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Sequence(seq) => {
            for (i, item) in seq.iter().enumerate() {
                collect_strings(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m {
                let key = key_text(k);
                collect_strings(k, &child(path, &key), out);
                collect_strings(item, &child(path, &key), out);
            }
        }
        Value::Tagged(t) => collect_strings(&t.value, path, out),
        _ => {}
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".to_string(),
    }
}

struct Renderer<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    missing: Vec<String>,
    invalid: Vec<String>,
    values: Vec<String>,
}

impl Renderer<'_> {
    /// Renders one node; `key` is the mapping key it sits under, for integer/boolean coercion,
    /// which is off (`raw`) inside a filter's `config`: there the filter's own JSON Schema
    /// decides types, and a key like `database` is a string for `advoware_auth` but an integer
    /// in a plugin's Redis settings.
    fn value(&mut self, v: Value, path: &str, key: Option<&str>, raw: bool) -> Value {
        match v {
            Value::String(s) => self.string(&s, path, if raw { None } else { key }),
            Value::Sequence(seq) => Value::Sequence(
                seq.into_iter()
                    .enumerate()
                    .map(|(i, item)| self.value(item, &format!("{path}[{i}]"), None, raw))
                    .collect(),
            ),
            Value::Mapping(m) => {
                let mut out = Mapping::new();
                let in_filter = path
                    .rsplit('.')
                    .next()
                    .is_some_and(|last| last.starts_with("filters["));
                for (k, item) in m {
                    let kt = key_text(&k);
                    let p = child(path, &kt);
                    let k = self.value(k, &p, None, raw);
                    let rendered_key = key_text(&k);
                    let item_raw = raw || (in_filter && rendered_key == "config");
                    let item = self.value(item, &p, Some(&rendered_key), item_raw);
                    out.insert(k, item);
                }
                Value::Mapping(out)
            }
            Value::Tagged(mut t) => {
                t.value = self.value(t.value, path, key, raw);
                Value::Tagged(t)
            }
            other => other,
        }
    }

    fn string(&mut self, s: &str, path: &str, key: Option<&str>) -> Value {
        let ps = match pieces(s) {
            Ok(ps) => ps,
            Err(e) => {
                self.invalid.push(format!("{}: {e}", show_path(path)));
                return Value::String(s.to_string());
            }
        };
        if !ps.iter().any(|p| matches!(p, Piece::Var { .. })) {
            // No placeholder, but `$${` escapes may have been resolved.
            return Value::String(
                ps.into_iter()
                    .map(|p| match p {
                        Piece::Lit(l) => l,
                        Piece::Var { .. } => String::new(),
                    })
                    .collect(),
            );
        }
        let whole = ps.len() == 1;
        let mut out = String::new();
        let mut ok = true;
        let mut sole_var = String::new();
        for p in ps {
            match p {
                Piece::Lit(l) => out.push_str(&l),
                Piece::Var { name, default } => {
                    let val = (self.lookup)(&name).filter(|v| !v.is_empty());
                    match (val, default) {
                        (Some(v), _) => {
                            out.push_str(&v);
                            self.values.push(v);
                        }
                        (None, Some(d)) => out.push_str(&d),
                        (None, None) => {
                            self.missing.push(name.clone());
                            ok = false;
                        }
                    }
                    sole_var = name;
                }
            }
        }
        if !ok {
            return Value::String(s.to_string());
        }
        if whole {
            if let Some(k) = key {
                if INTEGER_KEYS.contains(&k) {
                    return match out.trim().parse::<i64>() {
                        Ok(n) => Value::Number(n.into()),
                        Err(_) => {
                            self.invalid.push(format!(
                                "{}: `${{{sole_var}}}` must be an integer",
                                show_path(path)
                            ));
                            Value::String(s.to_string())
                        }
                    };
                }
                if BOOLEAN_KEYS.contains(&k) {
                    return match out.trim() {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        _ => {
                            self.invalid.push(format!(
                                "{}: `${{{sole_var}}}` must be true or false",
                                show_path(path)
                            ));
                            Value::String(s.to_string())
                        }
                    };
                }
            }
        }
        Value::String(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn parse(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).unwrap_or(Value::Null)
    }

    #[test]
    fn substitutes_whole_and_partial_values() -> Result<(), RenderError> {
        let t = "a: ${A}\nb: \"http://${HOST}:8080/x\"\nc: '${C:-dflt}'\n";
        let out = render(t, &env(&[("A", "one"), ("HOST", "worker")]))?;
        let v = parse(&out);
        assert_eq!(v["a"], Value::String("one".into()));
        assert_eq!(v["b"], Value::String("http://worker:8080/x".into()));
        assert_eq!(v["c"], Value::String("dflt".into()));
        Ok(())
    }

    #[test]
    fn lists_every_missing_variable_and_treats_empty_as_missing() {
        let t = "a: ${ZED}\nb: [\"${ALPHA}\", \"x${ZED}y\"]\nc: ${EMPTY}\nd: ${SET}\n";
        match render(t, &env(&[("EMPTY", ""), ("SET", "ok")])) {
            Err(e) => assert_eq!(e.missing(), ["ALPHA", "EMPTY", "ZED"]),
            Ok(_) => panic!("expected missing variables"),
        }
    }

    #[test]
    fn hostile_value_stays_one_string() -> Result<(), RenderError> {
        let hostile = "x\"\nevil: true # ' \n- [1]\n{a: b}: c\n---\n";
        let t = "key: ${SECRET}\nother: fixed\n";
        let out = render(t, &env(&[("SECRET", hostile)]))?;
        let v = parse(&out);
        assert_eq!(v["key"], Value::String(hostile.into()));
        assert_eq!(v["other"], Value::String("fixed".into()));
        assert_eq!(v.as_mapping().map(|m| m.len()), Some(2));
        Ok(())
    }

    #[test]
    fn string_lookalikes_stay_strings() -> Result<(), RenderError> {
        let t = "_format_version: \"3.0\"\nk: ${K}\nn: ${N}\n";
        let out = render(t, &env(&[("K", "true"), ("N", "12345")]))?;
        let v = parse(&out);
        assert_eq!(v["_format_version"], Value::String("3.0".into()));
        assert_eq!(v["k"], Value::String("true".into()));
        assert_eq!(v["n"], Value::String("12345".into()));
        Ok(())
    }

    #[test]
    fn typed_fields_are_coerced() -> Result<(), RenderError> {
        let t = "read_timeout: ${RT:-5000}\nenabled: ${ON}\n";
        let out = render(t, &env(&[("ON", "false")]))?;
        let v = parse(&out);
        assert_eq!(v["read_timeout"], Value::Number(5000.into()));
        assert_eq!(v["enabled"], Value::Bool(false));
        match render(t, &env(&[("ON", "maybe-secret")])) {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("ON") && !msg.contains("maybe-secret"), "{msg}");
            }
            Ok(_) => panic!("expected a type error"),
        }
        Ok(())
    }

    #[test]
    fn no_coercion_inside_filter_configs() -> Result<(), RenderError> {
        let t = "services:\n- filter_chains:\n  - filters:\n    - name: f\n      config: {database: '${DB}', enabled: '${ON}'}\n  plugins:\n  - config: {redis: {database: '${DB}'}}\n";
        let out = render(t, &env(&[("DB", "7"), ("ON", "true")]))?;
        let v = parse(&out);
        let cfg = &v["services"][0]["filter_chains"][0]["filters"][0]["config"];
        assert_eq!(cfg["database"], Value::String("7".into()));
        assert_eq!(cfg["enabled"], Value::String("true".into()));
        assert_eq!(
            v["services"][0]["plugins"][0]["config"]["redis"]["database"],
            Value::Number(7.into())
        );
        Ok(())
    }

    #[test]
    fn malformed_placeholders_are_reported() {
        let t = "a: ${lower}\nb: ${OPEN\n";
        match render(t, &env(&[])) {
            Err(RenderError::Placeholders { invalid, .. }) => assert_eq!(invalid.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn escapes_and_lone_dollars() -> Result<(), RenderError> {
        let out = render("a: \"$${NOT} $5 $\"\n", &env(&[]))?;
        assert_eq!(parse(&out)["a"], Value::String("${NOT} $5 $".into()));
        Ok(())
    }

    #[test]
    fn vars_lists_names_and_defaults() -> Result<(), RenderError> {
        let t = "a: ${B}\nb: ${A:-x}\nc: ${B:-y}\nd: ${C:-z}${C:-z}\n";
        let vars = template_vars(t)?;
        let names: Vec<_> = vars
            .iter()
            .map(|v| (v.name.as_str(), v.default.as_deref()))
            .collect();
        assert_eq!(names, [("A", Some("x")), ("B", None), ("C", Some("z"))]);
        Ok(())
    }

    #[test]
    fn redaction_hides_values() -> Result<(), RenderError> {
        let r = render_detailed("k: ${K}\n", &env(&[("K", "s3cr3t-value")]))?;
        assert_eq!(r.redact("bad key s3cr3t-value here"), "bad key *** here");
        Ok(())
    }
}
