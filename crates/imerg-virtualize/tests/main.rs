//! The virtualizer's integration tests, one test binary (one link) for the crate: real HDF5
//! files written by the synthetic generator, read back through the references.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod ranged;
mod references;
