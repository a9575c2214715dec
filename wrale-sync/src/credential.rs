//! The device credential file: read, written durably with mode 0600, and the
//! enroll-once rule every device runtime follows (metald, the embedded runtime
//! the bindings host): use the stored credential, or enroll and store the new one.

use std::future::Future;
use std::io::Write as _;
use std::path::Path;

use wrale_core::{ErrorCategory, ErrorReport};

/// The credential file's name inside a device's data directory.
pub const CREDENTIAL_FILE: &str = "fleet-credential";

/// Reads the stored credential; `Ok(None)` when there is none yet (no file, or
/// only whitespace).
pub fn read_credential(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let c = text.trim();
            Ok((!c.is_empty()).then(|| c.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Stores the credential durably with mode 0600: written to a temporary file
/// created with that mode (never readable by others, not even for a moment),
/// synced, then renamed over `path`. Parent directories are created.
pub fn write_credential(path: &Path, credential: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| CREDENTIAL_FILE.into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let _stale = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(credential.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _best_effort = d.sync_all();
    }
    Ok(())
}

/// Enrolls once: returns the credential stored at `path`, or runs `enroll`
/// (which exchanges an enrollment token for a credential), stores its answer
/// with [`write_credential`] and returns it. A failed enrollment stores nothing.
///
/// # Errors
/// The enrollment's own error, or a [`ErrorCategory::Sync`] report with code
/// `credential_io` naming the file when it cannot be read or written.
pub async fn load_or_enroll<F, Fut>(path: &Path, enroll: F) -> Result<String, ErrorReport>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<String, ErrorReport>>,
{
    let io = |e: std::io::Error| {
        ErrorReport::new(
            ErrorCategory::Sync,
            "credential_io",
            format!("credential file {}: {e}", path.display()),
        )
    };
    if let Some(c) = read_credential(path).map_err(io)? {
        return Ok(c);
    }
    let credential = enroll().await?;
    let trimmed = credential.trim();
    if trimmed.is_empty() || trimmed.contains('\n') {
        return Err(ErrorReport::new(
            ErrorCategory::Sync,
            "enrollment_invalid",
            "the enrollment answer carries no usable credential",
        ));
    }
    write_credential(path, trimmed).map_err(io)?;
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn credential_is_written_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(CREDENTIAL_FILE);
        assert_eq!(read_credential(&path).unwrap(), None);
        write_credential(&path, "wrd_abc").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_credential(&path).unwrap().as_deref(), Some("wrd_abc"));
        write_credential(&path, "wrd_def").unwrap();
        assert_eq!(read_credential(&path).unwrap().as_deref(), Some("wrd_def"));
    }

    #[tokio::test]
    async fn enrolls_once_and_keeps_the_credential() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIAL_FILE);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let enroll = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok("wrd_first\n".to_owned())
        };
        assert_eq!(load_or_enroll(&path, enroll).await.unwrap(), "wrd_first");
        let again = load_or_enroll(&path, || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok("wrd_second".to_owned())
        })
        .await
        .unwrap();
        assert_eq!(again, "wrd_first", "a stored credential is reused");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_or_empty_enrollment_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIAL_FILE);
        let e = load_or_enroll(&path, || async {
            Err(ErrorReport::new(
                ErrorCategory::Auth,
                "enrollment_invalid",
                "expired",
            ))
        })
        .await
        .unwrap_err();
        assert_eq!(e.category, ErrorCategory::Auth);
        assert!(!path.exists());
        let e = load_or_enroll(&path, || async { Ok("  ".to_owned()) })
            .await
            .unwrap_err();
        assert_eq!(e.code, "enrollment_invalid");
        assert!(!path.exists());
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as a credential.
        let path = dir.path().join(CREDENTIAL_FILE);
        std::fs::create_dir(&path).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt
            .block_on(load_or_enroll(&path, || async { Ok("wrd".to_owned()) }))
            .unwrap_err();
        assert_eq!(e.code, "credential_io");
        assert!(e.message.contains(CREDENTIAL_FILE), "{}", e.message);
    }
}
