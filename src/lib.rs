//! gprof-rs: snapshot every task of a running `target-runtime` process.
pub mod model;
pub mod output;
pub mod symbolize;
pub mod unwind;
