//! One module per subcommand.

pub mod append;
pub mod status;
pub mod synth;
pub mod virtualize;
