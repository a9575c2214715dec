//! The CLI's config file (`$XDG_CONFIG_HOME/wrale/cli.toml`) and how the URL,
//! token and CA certificate are chosen: flag, then environment (`WRALE_URL`,
//! `WRALE_TOKEN`, `WRALE_CA_CERT`), then the file, then the default URL (and the
//! system's trusted roots).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::args::Global;
use crate::error::{CliError, CliResult};

/// fleetd's default address (DESIGN.md: port 8600).
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:8600";

/// What `wrale login` stores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// fleetd's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
    /// The session or API token for that URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
    /// For an `https://` URL: the CA certificate file (PEM) to trust instead of
    /// the system store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_cert: Option<PathBuf>,
}

/// The config file's path: `--config`, else `$XDG_CONFIG_HOME/wrale/cli.toml`,
/// else `~/.config/wrale/cli.toml`.
pub(crate) fn path(global: &Global) -> CliResult<PathBuf> {
    if let Some(p) = &global.config {
        return Ok(p.clone());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => {
                return Err(CliError::failure(
                    "config",
                    "neither XDG_CONFIG_HOME nor HOME is set; pass --config FILE",
                ));
            }
        },
    };
    Ok(base.join("wrale").join("cli.toml"))
}

/// Reads the file; a missing file is an empty config.
pub(crate) fn load(path: &Path) -> CliResult<FileConfig> {
    match fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| CliError::failure("config", format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(CliError::failure(
            "config",
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Writes the file with mode 0600 (its directory 0700 when created), replacing
/// it atomically.
pub(crate) fn save(path: &Path, config: &FileConfig) -> CliResult<()> {
    let fail = |what: &str, e: std::io::Error| {
        CliError::failure("config", format!("cannot {what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| fail("create the directory of", e))?;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
    }
    let text = toml::to_string(config)
        .map_err(|e| CliError::failure("config", format!("cannot encode the config: {e}")))?;
    let tmp = path.with_extension("toml.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("write", e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("write", e))?;
    fs::rename(&tmp, path).map_err(|e| fail("write", e))?;
    Ok(())
}

/// The URL, token and CA certificate to use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    pub(crate) ca_cert: Option<PathBuf>,
}

/// Chooses the URL, token and CA certificate. The file's token (and CA
/// certificate) are used only with the file's URL, so a token never goes to a
/// server it was not issued by.
pub(crate) fn resolve(global: &Global, file: &FileConfig) -> Target {
    let url = global
        .url
        .clone()
        .or_else(|| file.url.clone())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let same = file.url.as_deref().map(normalise) == Some(normalise(&url));
    let token = global
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| if same { file.token.clone() } else { None });
    let ca_cert = global
        .ca_cert
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| {
            if same || file.url.is_none() {
                file.ca_cert.clone()
            } else {
                None
            }
        });
    Target {
        url,
        token,
        ca_cert,
    }
}

/// The client for a target (trusting `ca_cert` when given).
pub(crate) fn client(target: Target) -> CliResult<wrale_client::Client> {
    let client = match &target.ca_cert {
        Some(ca) => wrale_client::Client::with_ca_file(&target.url, target.token, ca),
        None => wrale_client::Client::new(&target.url, target.token),
    };
    client.map_err(|e| {
        if target.ca_cert.is_some() && e.to_string().starts_with("TLS:") {
            CliError::failure(e.code(), format!("--ca-cert: {e}"))
        } else {
            e.into()
        }
    })
}

fn normalise(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(url: Option<&str>, token: Option<&str>) -> Global {
        Global {
            url: url.map(str::to_owned),
            token: token.map(str::to_owned),
            json: false,
            config: None,
            ca_cert: None,
        }
    }

    #[test]
    fn precedence_and_token_binding() {
        let file = FileConfig {
            url: Some("http://fleet:8600/".into()),
            token: Some("wrs_file".into()),
            ca_cert: None,
        };
        let t = resolve(&global(None, None), &file);
        assert_eq!(t.url, "http://fleet:8600/");
        assert_eq!(t.token.as_deref(), Some("wrs_file"));
        // Same server spelled without the slash: the stored token still applies.
        let t = resolve(&global(Some("http://fleet:8600"), None), &file);
        assert_eq!(t.token.as_deref(), Some("wrs_file"));
        // Another server: the stored token is not sent there.
        let t = resolve(&global(Some("http://other:8600"), None), &file);
        assert_eq!(t.token, None);
        let t = resolve(&global(Some("http://other:8600"), Some("wrt_x")), &file);
        assert_eq!(t.token.as_deref(), Some("wrt_x"));
        let t = resolve(&global(None, None), &FileConfig::default());
        assert_eq!(t.url, DEFAULT_URL);
        assert_eq!(t.token, None);
    }

    #[test]
    fn ca_cert_precedence() {
        let file = FileConfig {
            url: Some("https://fleet:8600".into()),
            token: None,
            ca_cert: Some(PathBuf::from("/file/ca.pem")),
        };
        let t = resolve(&global(None, None), &file);
        assert_eq!(t.ca_cert, Some(PathBuf::from("/file/ca.pem")));
        // The flag (or WRALE_CA_CERT, which clap folds into it) wins.
        let mut g = global(None, None);
        g.ca_cert = Some(PathBuf::from("/flag/ca.pem"));
        assert_eq!(
            resolve(&g, &file).ca_cert,
            Some(PathBuf::from("/flag/ca.pem"))
        );
        // The file's CA belongs to the file's URL.
        let t = resolve(&global(Some("https://other:8600"), None), &file);
        assert_eq!(t.ca_cert, None);
        // A file with only a CA applies to any URL.
        let only_ca = FileConfig {
            ca_cert: Some(PathBuf::from("/file/ca.pem")),
            ..FileConfig::default()
        };
        let t = resolve(&global(Some("https://other:8600"), None), &only_ca);
        assert_eq!(t.ca_cert, Some(PathBuf::from("/file/ca.pem")));
    }

    #[test]
    fn save_creates_a_private_file_and_load_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wrale").join("cli.toml");
        assert_eq!(load(&p).unwrap(), FileConfig::default());
        let c = FileConfig {
            url: Some("http://a:1".into()),
            token: Some("wrs_abc".into()),
            ca_cert: Some(PathBuf::from("/etc/wrale/ca.pem")),
        };
        save(&p, &c).unwrap();
        assert_eq!(load(&p).unwrap(), c);
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        // Saving again replaces it and keeps the mode.
        save(&p, &FileConfig::default()).unwrap();
        assert_eq!(load(&p).unwrap(), FileConfig::default());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cli.toml");
        fs::write(&p, "url = 3\n").unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.message.contains("cli.toml"), "{e}");
        assert_eq!(e.exit_code(), 1);
    }
}
