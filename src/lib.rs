//! gprof-rs: snapshot every task of a running `target-runtime` process.
pub mod error;
pub mod locate;
pub mod model;
pub mod output;
pub mod process;
pub mod symbolize;
pub mod unwind;
