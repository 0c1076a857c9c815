//! Typed errors of the catalog: every way a key, URL or time can fail to be a granule of a profile.

use chrono::{DateTime, Utc};

/// Why something is not a granule of the product profile (or not a valid time / range).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CatalogError {
    #[error(
        "not a granule of {product}: key {key:?} is not under the collection path {collection:?}"
    )]
    WrongCollection {
        product: String,
        key: String,
        collection: String,
    },
    #[error("not a granule of {product}: file name {name:?} {reason}")]
    BadFileName {
        product: String,
        name: String,
        reason: String,
    },
    #[error(
        "not a granule of {product}: directory {dir:?} of key {key:?} does not match the granule date (expected {expected:?})"
    )]
    DirectoryMismatch {
        product: String,
        key: String,
        dir: String,
        expected: String,
    },
    #[error(
        "not a granule of {product}: start {start} is not on the {cadence_minutes}-minute cadence"
    )]
    OffCadence {
        product: String,
        start: DateTime<Utc>,
        cadence_minutes: u32,
    },
    #[error(
        "not a granule of {product}: start {start} is outside the product's record ({first} .. {end})"
    )]
    OutOfRecord {
        product: String,
        start: DateTime<Utc>,
        first: DateTime<Utc>,
        end: String,
    },
    #[error("invalid time {input:?}: {reason}")]
    BadTime { input: String, reason: String },
    #[error("invalid range: end {end} is before start {start}")]
    EmptyRange {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("unknown product {0:?} (known: final, late, early, or a profile file)")]
    UnknownProduct(String),
    #[error("invalid product profile {product:?}: {reason}")]
    InvalidProfile { product: String, reason: String },
}
