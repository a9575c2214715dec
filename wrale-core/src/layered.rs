//! Layered configuration for the daemons: built-in defaults < a TOML file <
//! environment variables (`<PREFIX><SECTION>__<KEY>`) < command-line flags, merged
//! into one TOML table, deserialized and validated as a whole.
//!
//! Every error names the dotted key, the problem and the layer the bad value came
//! from ([`Origin`]). No I/O happens here: the daemon reads the file and hands its
//! text in, so the merge is testable on strings.
//!
//! ```
//! use serde::Deserialize;
//! use wrale_core::layered::{EnvScheme, Origin, Sources, load};
//!
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! struct Api { port: u16 }
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! struct Config { api: Api }
//!
//! const SCHEME: EnvScheme = EnvScheme {
//!     prefixes: &["APP_"], ignore: &[], usage: "expected APP_<SECTION>__<KEY>", selectors: &[],
//! };
//! let env = vec![("APP_API__PORT".to_owned(), "8080".to_owned())];
//! let sources = Sources { env: &env, ..Sources::default() };
//! let cfg: Config = load(&sources, &SCHEME, |_: &Config| Ok(())).unwrap();
//! assert_eq!(cfg.api.port, 8080);
//!
//! let env = vec![("APP_API__PORT".to_owned(), "big".to_owned())];
//! let sources = Sources { env: &env, ..Sources::default() };
//! let err = load::<Config>(&sources, &SCHEME, |_| Ok(())).unwrap_err();
//! assert_eq!(err.key(), Some("api.port"));
//! assert!(matches!(err, wrale_core::layered::ConfigError::Invalid {
//!     origin: Origin::Env(ref v), .. } if v == "APP_API__PORT"));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type (the message gives
    /// line, column and key).
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A key has an unusable value.
    #[error("invalid config key `{key}` (from {origin}): {message}")]
    Invalid {
        /// Dotted key path (`api.bind`, `workloads[0].name`).
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// An environment variable does not map to a key.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, where there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// How one daemon's environment maps to keys, and which keys select a variant.
#[derive(Debug, Clone, Copy)]
pub struct EnvScheme {
    /// Prefixes of override variables (`WRALE_`); the first that matches is cut off.
    pub prefixes: &'static [&'static str],
    /// Variables with a prefix that are not keys (`WRALE_CONFIG`, read as a flag).
    pub ignore: &'static [&'static str],
    /// What a malformed variable is told (`expected WRALE_<SECTION>__<KEY> ...`).
    pub usage: &'static str,
    /// Keys whose value selects a variant of their table (`hal.backend`): setting
    /// one to a different value drops the lower layers' keys of that table.
    pub selectors: &'static [&'static [&'static str]],
}

impl EnvScheme {
    /// Whether `var` is one of this scheme's override variables.
    pub fn matches(&self, var: &str) -> bool {
        self.prefixes.iter().any(|p| var.starts_with(p))
    }
}

/// A flag's value for one key: the flag's name, the key path and the value.
pub type FlagValue = (&'static str, Vec<&'static str>, toml::Value);

/// The layers above the built-in defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    /// The config file's path and text, if one was read.
    pub file: Option<(&'a Path, &'a str)>,
    /// Environment variables in the order they apply (later ones win); variables
    /// the scheme does not match are skipped.
    pub env: &'a [(String, String)],
    /// Flag values, applied last.
    pub flags: &'a [FlagValue],
}

/// Merges `sources` over the defaults of `T`, deserializes and runs `validate`
/// (which returns the dotted key and the problem).
pub fn load<T: DeserializeOwned>(
    sources: &Sources<'_>,
    scheme: &EnvScheme,
    validate: impl FnOnce(&T) -> Result<(), (String, String)>,
) -> Result<T, ConfigError> {
    let mut origins: Vec<(Vec<String>, Origin)> = Vec::new();
    let mut table = toml::Table::new();
    if let Some((path, text)) = sources.file {
        table = parse_file::<T>(path, text)?;
        origins.push((Vec::new(), Origin::File(path.to_owned())));
    }
    for (var, raw) in sources.env {
        let Some(prefix) = scheme.prefixes.iter().find(|p| var.starts_with(*p)) else {
            continue;
        };
        if scheme.ignore.contains(&var.as_str()) {
            continue;
        }
        let rest = &var[prefix.len()..];
        let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if !rest.contains("__") || keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: scheme.usage.to_owned(),
            });
        }
        let keys_ref: Vec<&str> = keys.iter().map(String::as_str).collect();
        set_path(&mut table, &keys_ref, env_value(raw), scheme.selectors);
        origins.push((keys, Origin::Env(var.clone())));
    }
    for (flag, keys, value) in sources.flags {
        set_path(&mut table, keys, value.clone(), scheme.selectors);
        origins.push((
            keys.iter().map(|k| (*k).to_owned()).collect(),
            Origin::Flag(flag),
        ));
    }
    finish(table, validate, |key| origin_for(&origins, key))
}

/// Parses one TOML document on its own (no environment, no flags), validated;
/// errors name `<string>` as the file.
pub fn from_toml_str<T: DeserializeOwned>(
    text: &str,
    validate: impl FnOnce(&T) -> Result<(), (String, String)>,
) -> Result<T, ConfigError> {
    let path = PathBuf::from("<string>");
    let table = parse_file::<T>(&path, text)?;
    finish(table, validate, |_| Origin::File(path.clone()))
}

fn finish<T: DeserializeOwned>(
    table: toml::Table,
    validate: impl FnOnce(&T) -> Result<(), (String, String)>,
    origin_of: impl Fn(&str) -> Origin,
) -> Result<T, ConfigError> {
    let config: T = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Invalid {
            origin: origin_of(&key),
            message: e.into_inner().to_string(),
            key,
        }
    })?;
    validate(&config).map_err(|(key, message)| ConfigError::Invalid {
        origin: origin_of(&key),
        key,
        message,
    })?;
    Ok(config)
}

/// Parses the file as a table; on a type error, re-parses it as a `T` so the error
/// carries the file's line and column.
fn parse_file<T: DeserializeOwned>(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let file_err = |message: String| ConfigError::File {
        path: path.to_owned(),
        message: message.trim_end().to_owned(),
    };
    let table: toml::Table = toml::from_str(text).map_err(|e| file_err(e.to_string()))?;
    toml::from_str::<T>(text).map_err(|e| file_err(e.to_string()))?;
    Ok(table)
}

/// An environment value is a TOML value if it parses as one (`8`, `true`,
/// `["a", "b"]`, `"quoted"`), else a plain string (`2s`, `0.0.0.0:8700`, `sim`).
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// Sets `keys` in `table`, creating intermediate tables. Setting a selector key to
/// a different value first clears the table that holds it.
fn set_path(table: &mut toml::Table, keys: &[&str], value: toml::Value, selectors: &[&[&str]]) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut cur = table;
    for k in parents {
        let entry = cur
            .entry((*k).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = entry else {
            return;
        };
        cur = t;
    }
    if selectors.contains(&keys) && cur.get(*last) != Some(&value) {
        cur.clear();
    }
    cur.insert((*last).to_owned(), value);
}

/// The origin of the most specific layer that set `key` (or one of its parents).
fn origin_for(origins: &[(Vec<String>, Origin)], key: &str) -> Origin {
    let parts: Vec<&str> = key
        .split(['.', '['])
        .map(|p| p.trim_end_matches(']'))
        .filter(|p| !p.is_empty())
        .collect();
    let mut best: Option<(usize, &Origin)> = None;
    for (path, origin) in origins {
        let is_prefix = path.len() <= parts.len() && path.iter().zip(&parts).all(|(a, b)| a == b);
        if is_prefix && best.is_none_or(|(len, _)| path.len() >= len) {
            best = Some((path.len(), origin));
        }
    }
    best.map(|(_, o)| o.clone()).unwrap_or(Origin::Default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Hal {
        backend: String,
        root: Option<String>,
        seed: Option<u64>,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        hal: Hal,
    }

    const SCHEME: EnvScheme = EnvScheme {
        prefixes: &["A_", "B_"],
        ignore: &["A_CONFIG"],
        usage: "expected A_<SECTION>__<KEY>",
        selectors: &[&["hal", "backend"]],
    };

    #[test]
    fn a_selector_drops_lower_keys_of_its_table_and_origins_follow_the_layer() {
        let file = "[hal]\nbackend = \"linux\"\nroot = \"/\"\n";
        let env = vec![
            ("A_CONFIG".to_owned(), "/etc/x.toml".to_owned()),
            ("A_HAL__BACKEND".to_owned(), "sim".to_owned()),
            ("B_HAL__SEED".to_owned(), "7".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ];
        let path = Path::new("/etc/x.toml");
        let s = Sources {
            file: Some((path, file)),
            env: &env,
            flags: &[],
        };
        let cfg: Cfg = load(&s, &SCHEME, |_| Ok(())).unwrap();
        assert_eq!(cfg.hal.backend, "sim");
        assert_eq!(
            cfg.hal.root, None,
            "the linux key went with the linux backend"
        );
        assert_eq!(cfg.hal.seed, Some(7));

        let flags = vec![(
            "--seed",
            vec!["hal", "seed"],
            toml::Value::String("x".into()),
        )];
        let s = Sources {
            file: Some((path, file)),
            env: &env,
            flags: &flags,
        };
        let err = load::<Cfg>(&s, &SCHEME, |_| Ok(())).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, origin: Origin::Flag("--seed"), .. } if key == "hal.seed"),
            "{err}"
        );
        let err = load::<Cfg>(&Sources::default(), &SCHEME, |_| {
            Err(("hal.backend".into(), "must be set".into()))
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config key `hal.backend` (from the built-in default): must be set"
        );
    }

    #[test]
    fn malformed_variables_and_file_type_errors_are_named() {
        let env = vec![("B_HAL".to_owned(), "x".to_owned())];
        let s = Sources {
            env: &env,
            ..Sources::default()
        };
        let err = load::<Cfg>(&s, &SCHEME, |_| Ok(())).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { var, .. } if var == "B_HAL"),
            "{err}"
        );

        let err = from_toml_str::<Cfg>("[hal]\nseed = \"x\"\n", |_| Ok(())).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("config file <string>:"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }
}
