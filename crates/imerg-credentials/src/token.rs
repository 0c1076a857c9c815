//! Where the Earthdata bearer token comes from, and getting the current one before each fetch:
//! a fixed value; a file re-read every time (a rotated secret is used without a restart); or an
//! Earthdata Login username and password (from flags, `EARTHDATA_USERNAME`/`EARTHDATA_PASSWORD`
//! or a `.netrc`), from which a token is minted with Earthdata Login's `find_or_create_token`
//! and minted again when the s3credentials endpoint refuses it. Neither token nor password ever
//! appears in `Debug` output, logs or errors.

use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::header;
use tracing::{info, warn};

use crate::config::{ConfigError, check_token};
use crate::{CredentialsError, REDACTED};

/// Earthdata Login, which mints tokens from a username and password.
pub const DEFAULT_LOGIN_URL: &str = "https://urs.earthdata.nasa.gov";
/// The `.netrc` machine of Earthdata Login.
pub const NETRC_MACHINE: &str = "urs.earthdata.nasa.gov";

/// Where the bearer token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The token given (a flag or an environment variable).
    Value,
    /// A file holding the token, read again before every fetch of credentials.
    File(PathBuf),
    /// An Earthdata Login account: a token is minted at `login_url` from these.
    Login {
        /// Earthdata Login username.
        username: String,
        /// Its password.
        password: String,
        /// Earthdata Login's base URL.
        login_url: String,
    },
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value => f.write_str("Value"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Login {
                username,
                login_url,
                ..
            } => f
                .debug_struct("Login")
                .field("username", username)
                .field("password", &REDACTED)
                .field("login_url", login_url)
                .finish(),
        }
    }
}

/// The username and password of `machine` in a `.netrc` file (`machine M login L password P`,
/// in any order, tokens separated by white space; a `default` entry matches any machine).
pub fn netrc_login(path: &Path, machine: &str) -> Result<Option<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
        path: path.to_path_buf(),
        source,
    })?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut found: Option<(String, String)> = None;
    let mut i = 0;
    while i < words.len() {
        let matches = match words[i] {
            "machine" => {
                i += 1;
                words.get(i) == Some(&machine)
            }
            "default" => found.is_none(),
            _ => {
                i += 1;
                continue;
            }
        };
        i += 1;
        let (mut login, mut password) = (None, None);
        while i < words.len() && !matches!(words[i], "machine" | "default") {
            match (words[i], words.get(i + 1)) {
                ("login", Some(v)) => login = Some((*v).to_string()),
                ("password", Some(v)) => password = Some((*v).to_string()),
                _ => {}
            }
            i += 2;
        }
        if matches && let (Some(l), Some(p)) = (login, password) {
            found = Some((l, p));
        }
    }
    Ok(found)
}

/// The token in use, and how to get a new one.
pub(crate) struct Tokens {
    source: TokenSource,
    current: std::sync::Mutex<Option<String>>,
}

impl Tokens {
    pub(crate) fn new(source: TokenSource, initial: &str) -> Self {
        let initial = (!initial.is_empty()).then(|| initial.to_string());
        Self {
            source,
            current: std::sync::Mutex::new(initial),
        }
    }

    /// The last token used (to scrub it from error bodies).
    pub(crate) fn last(&self) -> Option<String> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    fn set(&self, token: &str) {
        if let Ok(mut c) = self.current.lock() {
            *c = Some(token.to_string());
        }
    }

    /// Can a refused token be replaced by another one (re-read, minted)?
    pub(crate) fn renewable(&self) -> bool {
        !matches!(self.source, TokenSource::Value)
    }

    /// The token to send now: the file read again, or a token minted from the login when there
    /// is none yet or `renew` (the last one was refused).
    pub(crate) async fn bearer(
        &self,
        http: &reqwest::Client,
        renew: bool,
    ) -> Result<String, CredentialsError> {
        match &self.source {
            TokenSource::Value => self.last().ok_or(CredentialsError::InvalidToken),
            TokenSource::File(path) => {
                let read = tokio::fs::read_to_string(path).await;
                let origin = path.display().to_string();
                match read
                    .map_err(|e| e.to_string())
                    .and_then(|t| check_token(&t, &origin).map_err(|e| e.to_string()))
                {
                    Ok(token) => {
                        let last = self.last();
                        if last.is_some() && last.as_deref() != Some(token.as_str()) {
                            info!(file = %origin, "the Earthdata token file changed: using the new token");
                        }
                        self.set(&token);
                        Ok(token)
                    }
                    Err(e) => match self.last() {
                        Some(t) => {
                            warn!(file = %origin, error = %e, "cannot read the Earthdata token file: using the last token read");
                            Ok(t)
                        }
                        None => Err(CredentialsError::Token(format!(
                            "cannot read the Earthdata token file {origin}: {e}"
                        ))),
                    },
                }
            }
            TokenSource::Login {
                username,
                password,
                login_url,
            } => {
                if !renew && let Some(t) = self.last() {
                    return Ok(t);
                }
                let token = mint(http, login_url, username, password).await?;
                info!(%username, "minted an Earthdata Login token");
                self.set(&token);
                Ok(token)
            }
        }
    }
}

/// `POST {login_url}/api/users/find_or_create_token` with HTTP basic authentication: Earthdata
/// Login's current token for the account, or a new one.
async fn mint(
    http: &reqwest::Client,
    login_url: &str,
    username: &str,
    password: &str,
) -> Result<String, CredentialsError> {
    let url = format!(
        "{}/api/users/find_or_create_token",
        login_url.trim_end_matches('/')
    );
    let fail = |why: String| CredentialsError::Token(format!("minting a token at {url}: {why}"));
    let response = http
        .post(&url)
        .basic_auth(username, Some(password))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    if !status.is_success() {
        // The body may echo the username; say only the status.
        return Err(fail(format!(
            "HTTP {} (check the username and password)",
            status.as_u16()
        )));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))?;
    let token = v["access_token"]
        .as_str()
        .ok_or_else(|| fail("no access_token in the response".into()))?;
    check_token(token, "Earthdata Login").map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn netrc_entries_are_found_by_machine_or_default() {
        let dir = std::env::temp_dir().join(format!("imerg-netrc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("netrc");
        std::fs::write(
            &p,
            "machine other.example login a password b\n\
             machine urs.earthdata.nasa.gov\n  login alice\n  password s3cr3t\n\
             default login anon password x\n",
        )
        .unwrap();
        assert_eq!(
            netrc_login(&p, NETRC_MACHINE).unwrap(),
            Some(("alice".into(), "s3cr3t".into()))
        );
        assert_eq!(
            netrc_login(&p, "elsewhere.example").unwrap(),
            Some(("anon".into(), "x".into()))
        );
        std::fs::write(&p, "machine other.example login a password b\n").unwrap();
        assert_eq!(netrc_login(&p, NETRC_MACHINE).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_hides_the_password() {
        let s = TokenSource::Login {
            username: "alice".into(),
            password: "hunter2-secret".into(),
            login_url: DEFAULT_LOGIN_URL.into(),
        };
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("alice"), "{d}");
    }
}
