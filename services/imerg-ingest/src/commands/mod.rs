//! One module per subcommand.

pub mod append;
pub mod backfill;
pub mod inspect;
pub mod rechunk;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod synth;
pub mod verify;
pub mod virtualize;

/// Runs a subcommand's async part on a multi-threaded Tokio runtime built for it.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> std::io::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f))
}
