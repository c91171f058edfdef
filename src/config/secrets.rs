//! Reading credentials: inline values and `*_file` keys, both with `${VAR}` expansion. The
//! one place a secret is read. The service reads them on its own machine ([`SecretSource::Online`]);
//! `check --offline` validates a config written for another machine (a cluster's mounted
//! Secret), where a missing file or an unset variable is skipped: validation goes on with a
//! placeholder valid for that field, so the rest of the file is still checked. Placeholders
//! only ever reach a [`super::Checked`] that says what was skipped; the service's loading
//! ([`super::Config::from_file`], [`super::Config::from_yaml`]) is always online.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use super::Problem;
use crate::secret::Secret;

/// Where secrets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// This machine: a missing file or unset variable is an error. What the service uses.
    Online,
    /// A config for another machine: missing files and unset variables are skipped.
    Offline,
}

/// What a configuration's relative paths resolve against, how its secrets are read, and
/// where its templates are if not where `templates.dir` says.
#[derive(Debug, Clone)]
pub struct Files {
    /// The config file's directory.
    pub base_dir: PathBuf,
    pub secrets: SecretSource,
    /// Replaces `templates.dir` (`check --templates-dir`): in a cluster the templates sit
    /// beside config.yml, in a repository often elsewhere. Relative to the working directory.
    pub templates_dir: Option<PathBuf>,
}

impl Files {
    /// The service's way: secrets read here, templates where the config says.
    pub fn online(base_dir: &Path) -> Files {
        Files {
            base_dir: base_dir.to_path_buf(),
            secrets: SecretSource::Online,
            templates_dir: None,
        }
    }
}

/// What a secret is for: the placeholder standing in for a skipped one must pass that
/// field's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    /// Any non-empty value (app secrets, robot keys, tokens, passwords).
    Opaque,
    /// A callback Token: at most 32 letters and digits.
    CallbackToken,
    /// An EncodingAESKey: 43 characters of base64 that decode to 32 bytes.
    EncodingAesKey,
    /// A `redis://` URL.
    RedisUrl,
}

impl SecretKind {
    /// Never sent anywhere: only a config checked offline holds it.
    pub(crate) fn placeholder(self) -> &'static str {
        match self {
            SecretKind::Opaque => "offline-placeholder",
            SecretKind::CallbackToken => "offlineplaceholder",
            // 43 × 'A' decodes (with its '=') to 32 zero bytes.
            SecretKind::EncodingAesKey => "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            SecretKind::RedisUrl => "redis://offline.invalid:6379/0",
        }
    }
}

/// A secret (or `${VAR}`) that `check --offline` could not read and did not check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The key, e.g. `apps[0].secret_file`.
    pub key: String,
    /// Why, e.g. `/run/secrets/x is not on this machine`.
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Reads the secrets of one validation, remembering what it skipped.
pub(crate) struct Secrets<'a> {
    pub files: &'a Files,
    skipped: RefCell<Vec<Skipped>>,
}

impl<'a> Secrets<'a> {
    pub fn new(files: &'a Files) -> Secrets<'a> {
        Secrets {
            files,
            skipped: RefCell::new(Vec::new()),
        }
    }

    pub fn into_skipped(self) -> Vec<Skipped> {
        self.skipped.into_inner()
    }

    fn offline(&self) -> bool {
        self.files.secrets == SecretSource::Offline
    }

    fn skip(&self, key: String, reason: String) {
        self.skipped.borrow_mut().push(Skipped { key, reason });
    }

    /// `${VAR}` expansion of a plain (non-secret) value at `key`; offline, an unset
    /// variable is skipped and `placeholder` stands in.
    pub fn expand(&self, value: &str, key: &str, placeholder: &str) -> Result<String, (String, String)> {
        match expand_env(value) {
            Ok(value) => Ok(value),
            Err(var) if self.offline() => {
                self.skip(
                    key.to_string(),
                    format!("environment variable {var} is not set here"),
                );
                Ok(placeholder.to_string())
            }
            Err(var) => Err((key.to_string(), unset_message(&var))),
        }
    }

    /// A credential at `{prefix}.{name}` (inline) or `{prefix}.{name}_file`. The file is
    /// read now, and again on every reload. Empty means "none". Errors name the key and
    /// never the content.
    pub fn read(
        &self,
        prefix: &str,
        name: &str,
        inline: Option<String>,
        file: Option<String>,
        kind: SecretKind,
    ) -> Result<Option<Secret>, Problem> {
        let inline_key = format!("{prefix}.{name}");
        let file_key = format!("{prefix}.{name}_file");
        let value = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err((
                    inline_key,
                    "set either the value or the file, not both".to_string(),
                )
                    .into())
            }
            (Some(value), None) => self.expand(&value, &inline_key, kind.placeholder())?,
            (None, Some(path)) => match expand_env(&path) {
                Err(var) if self.offline() => {
                    self.skip(file_key, format!("environment variable {var} is not set here"));
                    kind.placeholder().to_string()
                }
                Err(var) => return Err((file_key, unset_message(&var)).into()),
                Ok(path) if path.is_empty() => String::new(),
                Ok(path) => self.read_file(&file_key, &self.files.base_dir.join(path), kind)?,
            },
            (None, None) => String::new(),
        };
        Ok(Some(value).filter(|v| !v.is_empty()).map(Secret::new))
    }

    fn read_file(&self, key: &str, path: &Path, kind: SecretKind) -> Result<String, Problem> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(text.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.offline() => {
                self.skip(
                    key.to_string(),
                    format!("{} is not on this machine", path.display()),
                );
                Ok(kind.placeholder().to_string())
            }
            Err(e) => Err(Problem {
                key: key.to_string(),
                message: format!("cannot read {}: {e}", path.display()),
                missing_file: e.kind() == std::io::ErrorKind::NotFound,
            }),
        }
    }
}

/// Expands `${VAR}` and `${VAR:-default}`; an unset variable without default is an error
/// naming the variable.
fn expand_env(value: &str) -> Result<String, String> {
    shellexpand::env(value)
        .map(|expanded| expanded.into_owned())
        .map_err(|e| e.var_name)
}

fn unset_message(var: &str) -> String {
    format!("environment variable {var} is not set (use ${{{var}:-}} for an empty default)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::CallbackSection;
    use crate::config::interactive::validate_callback;

    fn offline() -> Files {
        Files {
            secrets: SecretSource::Offline,
            ..Files::online(Path::new("/nonexistent-base"))
        }
    }

    #[test]
    fn each_placeholder_passes_its_fields_checks() {
        let files = offline();
        let secrets = Secrets::new(&files);
        let callback = CallbackSection {
            token: None,
            token_file: Some("/nonexistent/token".into()),
            encoding_aes_key: None,
            encoding_aes_key_file: Some("/nonexistent/aes".into()),
            max_age: None,
        };
        let callback = validate_callback(callback, "apps[0].callback", &secrets)
            .unwrap_or_else(|e| panic!("{}: {}", e.key, e.message));
        assert!(crate::interact::crypto::CallbackCrypto::new(
            callback.token.clone(),
            &callback.encoding_aes_key,
            "ww1"
        )
        .is_ok());
        assert!(super::super::check_redis_url(SecretKind::RedisUrl.placeholder()).is_ok());
        assert!(!SecretKind::Opaque.placeholder().is_empty());
        let skipped: Vec<String> = secrets.into_skipped().iter().map(Skipped::to_string).collect();
        assert_eq!(
            skipped,
            [
                "apps[0].callback.token_file: /nonexistent/token is not on this machine",
                "apps[0].callback.encoding_aes_key_file: /nonexistent/aes is not on this machine"
            ]
        );
    }

    #[test]
    fn offline_skips_unset_variables_in_values_and_paths() {
        let files = offline();
        let secrets = Secrets::new(&files);
        let inline = secrets
            .read(
                "apps[0]",
                "secret",
                Some("${SURELY_UNSET_VAR_Y}".into()),
                None,
                SecretKind::Opaque,
            )
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(inline.expose(), SecretKind::Opaque.placeholder());
        let url = secrets
            .read(
                "state",
                "url",
                None,
                Some("${SURELY_UNSET_VAR_Y}/url".into()),
                SecretKind::RedisUrl,
            )
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(url.expose(), SecretKind::RedisUrl.placeholder());
        let path_only = secrets
            .read(
                "state",
                "url",
                None,
                Some("${SURELY_UNSET_VAR_Y}".into()),
                SecretKind::RedisUrl,
            )
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(path_only.expose(), SecretKind::RedisUrl.placeholder());
        assert_eq!(secrets.into_skipped().len(), 3);
    }

    #[test]
    fn online_a_missing_file_is_an_error_marked_as_such_and_an_existing_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "  s3cr3t\n").unwrap();
        for source in [SecretSource::Online, SecretSource::Offline] {
            let files = Files {
                secrets: source,
                ..Files::online(dir.path())
            };
            let secrets = Secrets::new(&files);
            let read = secrets.read("x", "token", None, Some("token".into()), SecretKind::Opaque);
            assert_eq!(read.ok().flatten().unwrap().expose(), "s3cr3t", "{source:?}");
            assert!(secrets.into_skipped().is_empty());
        }
        let files = Files::online(dir.path());
        let secrets = Secrets::new(&files);
        let Err(error) = secrets.read("x", "token", None, Some("missing".into()), SecretKind::Opaque) else {
            panic!("a missing file is an error online");
        };
        assert_eq!(error.key, "x.token_file");
        assert!(
            error.missing_file && error.message.starts_with("cannot read "),
            "{}",
            error.message
        );
    }
}
