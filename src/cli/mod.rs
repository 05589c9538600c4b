//! Command-line tools beyond `serve` and `doctor`, kept out of `main.rs` so that
//! each group of commands has a file of its own.

pub mod domain_ceremony;
