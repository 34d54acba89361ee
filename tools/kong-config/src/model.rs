//! The typed view of a Kong 3.9 declarative config (DB-less `kong.yaml`).
//!
//! Only the parts the gateway uses are modelled. Unknown keys are accepted and ignored
//! (Kong knows many more fields than we do, and rejecting them here would make this tool
//! stricter than Kong itself); rules Kong enforces live in [`crate::validate`], not in serde.
//! Defaults mirror Kong's own schema defaults, so code reading the model sees what Kong sees.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Kong's default for the three upstream timeouts (milliseconds).
fn d60000() -> u64 {
    60_000
}

/// Kong defaults `enabled` and `strip_path` to true.
fn yes() -> bool {
    true
}

/// A whole declarative config file.
///
/// `format_version` stays a raw YAML value on purpose: Kong insists on the *string* `"3.0"`,
/// and a typed `String` would silently accept the YAML number `3.0` as well, hiding exactly
/// the mistake [`crate::validate`] must report.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct KongConfig {
    #[serde(rename = "_format_version")]
    pub format_version: serde_yaml::Value,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    #[serde(default)]
    pub plugins: Vec<Plugin>,
    #[serde(default)]
    pub filter_chains: Vec<FilterChain>,
}

/// An upstream service with its routes; plugins and filter chains here apply to all its routes
/// (service filters run before route filters).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Service {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub plugins: Vec<Plugin>,
    #[serde(default)]
    pub filter_chains: Vec<FilterChain>,
    #[serde(default = "d60000")]
    pub connect_timeout: u64,
    #[serde(default = "d60000")]
    pub read_timeout: u64,
    #[serde(default = "d60000")]
    pub write_timeout: u64,
}

/// A route of a service. `methods: None` means "any method" (Kong's default), which is
/// different from an empty list, hence the `Option`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Route {
    pub name: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub strip_path: bool,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub plugins: Vec<Plugin>,
    #[serde(default)]
    pub filter_chains: Vec<FilterChain>,
}

/// An ordered list of proxy-wasm filters attached to a route or service.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FilterChain {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub filters: Vec<Filter>,
}

/// One proxy-wasm filter in a chain; `name` is the `.wasm` file name without extension.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Filter {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

impl Filter {
    /// The config string Kong hands the filter: a JSON string as-is, anything else JSON-encoded.
    ///
    /// This is what `get_plugin_configuration` returns inside `on_configure`, so test hosts
    /// that feed filters from `kong.yaml` must use it to behave like ngx_wasm_module.
    pub fn config_string(&self) -> Option<String> {
        match self.config.as_ref()? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// A bundled Kong (Lua) plugin such as `key-auth` or `rate-limiting`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Plugin {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `Null` when absent; not written back out then, since Kong fills its own defaults.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub config: serde_json::Value,
}

/// A consumer (API client) with its key-auth keys and ACL groups.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Consumer {
    pub username: String,
    #[serde(default)]
    pub keyauth_credentials: Vec<KeyAuthCredential>,
    /// Groups for the `acl` plugin (`allow`/`deny` lists of a route).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<AclGroup>,
}

/// One ACL group membership of a consumer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AclGroup {
    pub group: String,
}

/// A key-auth key. Kong 3.9 does not resolve vault references here, so the real key must be
/// rendered in; the derived `Debug` is therefore never used in error messages of this crate.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct KeyAuthCredential {
    pub key: String,
}

impl KongConfig {
    /// Parses a (rendered) declarative config. Structural errors only; Kong's rules are
    /// checked by [`crate::validate::validate`].
    /// YAML merge keys (`<<: *anchor`) are applied first, as Kong's YAML loader does; only
    /// then, since going through a `Value` loses line numbers in error messages.
    pub fn parse(yaml: &str) -> Result<KongConfig, ConfigError> {
        if !yaml.contains("<<") {
            return serde_yaml::from_str(yaml).map_err(ConfigError::Parse);
        }
        let mut tree: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(ConfigError::Parse)?;
        tree.apply_merge().map_err(ConfigError::Parse)?;
        serde_yaml::from_value(tree).map_err(ConfigError::Parse)
    }

    /// The upstream URL of the service called `name`, if there is one.
    pub fn service_url(&self, name: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.url.as_str())
    }

    /// The service and route called `route_name`, if any (route names are unique in a valid config).
    pub fn route(&self, route_name: &str) -> Option<(&Service, &Route)> {
        self.services.iter().find_map(|s| {
            s.routes
                .iter()
                .find(|r| r.name == route_name)
                .map(|r| (s, r))
        })
    }

    /// All filter chains in the order Kong runs them for each route: service chains first,
    /// then the route's own, with the owning service and route names. Top-level chains
    /// (not attached to anything) are not included.
    pub fn route_filter_chains(&self) -> Vec<(&Service, &Route, Vec<&FilterChain>)> {
        let mut out = Vec::new();
        for s in &self.services {
            for r in &s.routes {
                let chains = s
                    .filter_chains
                    .iter()
                    .chain(r.filter_chains.iter())
                    .collect();
                out.push((s, r, chains));
            }
        }
        out
    }

    /// Every filter chain anywhere in the file (top level, services, routes).
    pub fn all_filter_chains(&self) -> impl Iterator<Item = &FilterChain> {
        self.filter_chains
            .iter()
            .chain(self.services.iter().flat_map(|s| {
                s.filter_chains
                    .iter()
                    .chain(s.routes.iter().flat_map(|r| r.filter_chains.iter()))
            }))
    }

    /// Every plugin anywhere in the file (top level, services, routes).
    pub fn all_plugins(&self) -> impl Iterator<Item = &Plugin> {
        self.plugins
            .iter()
            .chain(self.services.iter().flat_map(|s| {
                s.plugins
                    .iter()
                    .chain(s.routes.iter().flat_map(|r| r.plugins.iter()))
            }))
    }

    /// Number of routes over all services.
    pub fn route_count(&self) -> usize {
        self.services.iter().map(|s| s.routes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
_format_version: "3.0"
services:
  - name: worker
    url: http://worker:8080
    filter_chains:
      - filters:
          - name: webhook_guard
            config: {a: 1}
    routes:
      - name: hook
        paths: ["/hook"]
        filter_chains:
          - name: auth
            filters:
              - name: advoware_auth
                config: '{"raw":true}'
              - name: noop
consumers:
  - username: advoware
    keyauth_credentials:
      - key: k1
"#;

    #[test]
    fn parses_with_kong_defaults() -> Result<(), ConfigError> {
        let c = KongConfig::parse(SAMPLE)?;
        let s = &c.services[0];
        assert_eq!(s.connect_timeout, 60_000);
        let r = &s.routes[0];
        assert!(r.strip_path && !r.preserve_host && r.methods.is_none());
        assert!(r.filter_chains[0].enabled);
        assert_eq!(c.service_url("worker"), Some("http://worker:8080"));
        assert_eq!(c.route_count(), 1);
        assert_eq!(c.all_filter_chains().count(), 2);
        Ok(())
    }

    #[test]
    fn config_string_passes_strings_and_encodes_the_rest() -> Result<(), ConfigError> {
        let c = KongConfig::parse(SAMPLE)?;
        let (_, _, chains) = &c.route_filter_chains()[0];
        assert_eq!(
            chains[0].filters[0].config_string().as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(
            chains[1].filters[0].config_string().as_deref(),
            Some(r#"{"raw":true}"#)
        );
        assert_eq!(chains[1].filters[1].config_string(), None);
        Ok(())
    }

    #[test]
    fn merge_keys_are_applied() -> Result<(), ConfigError> {
        let yaml = "_format_version: \"3.0\"\nx-timeouts: &t {read_timeout: 5}\nservices:\n  - <<: *t\n    name: s\n    url: http://h\n";
        let c = KongConfig::parse(yaml)?;
        assert_eq!(c.services[0].read_timeout, 5);
        Ok(())
    }

    #[test]
    fn format_version_kept_raw() -> Result<(), ConfigError> {
        let c = KongConfig::parse("_format_version: 3.0\n")?;
        assert!(c.format_version.is_f64());
        Ok(())
    }
}
