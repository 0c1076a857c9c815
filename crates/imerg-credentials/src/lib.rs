//! Earthdata temporary S3 credentials for the GES DISC bucket.
//!
//! NASA hands out S3 credentials valid for about an hour (usable only from `us-west-2`) at
//! `https://data.gesdisc.earthdata.nasa.gov/s3credentials`, against an Earthdata Login bearer
//! token. [`EarthdataCredentialProvider`] fetches them, caches them, refreshes them
//! `refresh_margin` before they expire (one request however many callers wait), and plugs into
//! object_store as an `AwsCredentialProvider`:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use imerg_credentials::{EarthdataConfig, EarthdataCredentialProvider};
//!
//! let config = EarthdataConfig::from_token_file("/run/secrets/earthdata-token")?;
//! let provider = Arc::new(EarthdataCredentialProvider::new(&config)?);
//! let s3 = object_store::aws::AmazonS3Builder::new()
//!     .with_region("us-west-2")
//!     .with_bucket_name("gesdisc-cumulus-prod-protected")
//!     .with_credentials(provider.clone())
//!     .build()?;
//! // provider.expires_at() feeds a "credentials expire in N seconds" gauge.
//! # let _ = s3; Ok(()) }
//! ```
//!
//! Neither the token nor the secret key or session token ever appear in `Debug` output, logs or
//! error messages.

mod client;
mod config;
mod credentials;
mod error;
mod provider;
mod token;

pub use client::EarthdataClient;
pub use config::{
    ConfigError, DEFAULT_MAX_ATTEMPTS, DEFAULT_REFRESH_MARGIN, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRY_BASE_DELAY, DEFAULT_RETRY_MAX_DELAY, DEFAULT_URL, EarthdataConfig,
};
pub use credentials::{TemporaryCredentials, parse_credentials, parse_expiration};
pub use error::CredentialsError;
pub use provider::EarthdataCredentialProvider;
pub use token::{DEFAULT_LOGIN_URL, NETRC_MACHINE, TokenSource, netrc_login};

/// What `Debug` prints in place of a secret.
pub(crate) use imerg_retry::REDACTED;
