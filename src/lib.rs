//! gprof-rs: snapshot every task of a running `target-runtime` process.
pub mod model;
