//! One module per subcommand.

pub mod synth;
pub mod virtualize;
