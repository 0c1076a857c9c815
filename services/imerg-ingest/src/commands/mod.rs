//! One module per subcommand.

pub mod append;
pub mod backfill;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod synth;
pub mod virtualize;
