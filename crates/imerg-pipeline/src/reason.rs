//! The closed vocabulary of why a granule did not land and what became of one that did: one
//! [`Reason`] enum and one [`Outcome`] enum shared by every driver, metric label and wire format
//! (carried across gRPC as `google.rpc.ErrorInfo.reason`, never parsed out of message text).

use std::fmt;

macro_rules! labels {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $var:ident => $label:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        $vis enum $name { $($(#[$vm])* $var,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$var,)+];

            /// The stable label (metrics, logs, JSON, the wire).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$var => $label,)+ }
            }

            /// The value of a label; `None` for a label this version does not know.
            pub fn parse(label: &str) -> Option<Self> {
                match label { $($label => Some(Self::$var),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

labels! {
    /// Why a granule was not made durable.
    pub enum Reason {
        /// The key or URL names no granule of the product.
        NotAGranule => "not_a_granule",
        /// The object is absent at the source: a gap, not a failure.
        NotFound => "not_found",
        /// The source URL cannot be read (unsupported scheme, bad path).
        Source => "source",
        /// Fetching failed in a way that may pass (network, throttling, 5xx, timeouts).
        Transient => "transient",
        /// The object is bigger than any granule (`--max-object-bytes`): refused before its
        /// body is read.
        TooLarge => "too_large",
        NotHdf5 => "not_hdf5",
        Truncated => "truncated",
        Unreadable => "unreadable",
        MissingVariable => "missing_variable",
        Layout => "layout",
        UnsupportedFilter => "unsupported_filter",
        FilterMask => "filter_mask",
        Coordinates => "coordinates",
        Hdf5 => "hdf5",
        /// The granule belongs to another product than the dataset's.
        Product => "product",
        /// Its references would point outside the dataset's virtual chunk container.
        SourceContainer => "source_container",
        /// Its time index does not match its start time.
        TimeRange => "time_range",
        /// A chunk's position is outside the grid, off the chunk shape or given twice.
        ChunkIndex => "chunk_index",
        /// A chunk's byte range lies outside its object.
        ChunkRange => "chunk_range",
        /// The file names data outside itself: external storage, an external or soft link, a
        /// virtual dataset.
        ExternalData => "external_data",
        /// Another writer moved the branch during the commit: never retried blindly.
        SecondWriter => "second_writer",
        /// The committer could not commit now (repository errors, retries exhausted).
        CommitterUnavailable => "committer_unavailable",
        /// The repository could not be read or written.
        Icechunk => "icechunk",
        /// The store holds something this version does not understand.
        Inconsistent => "inconsistent",
        Config => "config",
        /// The process is shutting down; the granule was not committed.
        Shutdown => "shutdown",
        /// A bug or a broken internal message.
        Internal => "internal",
        /// A peer answered with a reason this version does not know.
        Remote => "remote",
    }
}

impl Reason {
    /// The label, or [`Reason::Remote`] for one this version does not know.
    pub fn from_label(label: &str) -> Self {
        Self::parse(label).unwrap_or(Self::Remote)
    }

    /// Worth trying again later: the same input may succeed (network, repository, shutdown).
    /// Bad input and gaps are not: retrying them gives the same answer.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Transient
                | Self::CommitterUnavailable
                | Self::Icechunk
                | Self::Shutdown
                | Self::Remote
        )
    }

    /// The granule itself is at fault (it will be rejected again): counted as rejected.
    pub fn is_bad_input(self) -> bool {
        !self.is_retryable()
            && !matches!(
                self,
                Self::NotFound | Self::SecondWriter | Self::Inconsistent | Self::Config
            )
    }
}

labels! {
    /// What became of a granule that is durable.
    pub enum Outcome {
        /// Its references were written.
        Added => "added",
        /// Its source object changed: its references were re-pointed.
        Replaced => "replaced",
        /// The store already held exactly this granule: nothing written.
        Duplicate => "duplicate",
        /// An older version of the source object than the one stored: nothing written.
        Stale => "stale",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(*o));
        }
        assert_eq!(Reason::from_label("something new"), Reason::Remote);
    }

    #[test]
    fn classification() {
        assert!(Reason::Transient.is_retryable());
        assert!(!Reason::NotHdf5.is_retryable());
        assert!(Reason::NotHdf5.is_bad_input());
        assert!(!Reason::NotFound.is_bad_input());
        assert!(!Reason::NotFound.is_retryable());
        assert!(!Reason::SecondWriter.is_retryable());
    }
}
