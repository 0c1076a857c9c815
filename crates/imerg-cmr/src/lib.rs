//! CMR granule search for the reconciliation sweep (issue 15): which granules of a collection
//! NASA's Common Metadata Repository holds for a time window, with their S3 and HTTPS data URLs.
//!
//! [`CmrClient::granules`] sends `GET {url}/search/granules.umm_json?short_name=…&version=…
//! &temporal=START,END&sort_key=start_date&page_size=N` and follows the `CMR-Search-After`
//! response header page after page (stateless deep paging; `page_num` is never used). Every
//! page is bounded (request timeout, body size cap) and retried on transient failures; the
//! whole search is bounded by a granule cap and a page cap, so a broken or hostile server can
//! neither keep it looping nor grow its memory without bound: past a cap the search fails with
//! [`CmrError::TooManyGranules`] or [`CmrError::TooManyPages`] (no truncated result).
//!
//! UMM-JSON is used rather than the Atom `.json` format because it names the fields directly:
//! `GranuleUR`, `DataGranule.Identifiers[ProducerGranuleId]`, `TemporalExtent` and typed
//! `RelatedUrls` (`GET DATA` / `GET DATA VIA DIRECT ACCESS`) that carry both the `s3://` and the
//! `https://` location of the file. The service maps those URLs to store keys with its catalog.
//!
//! The optional Earthdata bearer token travels only in the `Authorization` header; it never
//! appears in `Debug` output, logs or error messages.

mod client;
mod config;
mod error;
mod granule;

pub use client::{CmrClient, HITS_HEADER, SEARCH_AFTER_HEADER};
pub use config::{
    CmrConfig, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_GRANULES,
    DEFAULT_PAGE_SIZE, DEFAULT_RETRY_BASE_DELAY, DEFAULT_RETRY_MAX_DELAY, DEFAULT_TIMEOUT,
    DEFAULT_URL, MAX_PAGE_SIZE,
};
pub use error::CmrError;
pub use granule::CmrGranule;

/// What `Debug` prints in place of a secret.
pub(crate) use imerg_retry::REDACTED;
