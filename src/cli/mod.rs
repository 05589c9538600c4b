//! The command line: `run` parses the arguments and runs the command (`command_line.rs`),
//! and each group of commands beyond `serve` and `doctor` has a file of its own.

mod command_line;
pub mod domain_ceremony;

pub use command_line::run;
