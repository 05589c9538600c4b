//! Command-line tools beyond `serve`, `doctor` and `bench`, kept out of `main.rs` so that
//! each group of commands has a file of its own.

pub mod domain_ceremony;
