//! gprof-rs: snapshot every task of a running `target-runtime` process from outside it.
//!
//! [`snapshot::Session`] attaches to a process (finds the runtime's exported descriptor,
//! maps its shared task table, takes the profiler lease, seizes its threads with
//! ptrace), and [`snapshot::Session::snapshot`] takes a consistent snapshot of every
//! task alive at its first stop-the-world phase. [`output`] writes it as pprof or as
//! Go-style text.

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
pub mod locate;
pub mod model;
pub mod output;
pub mod process;
pub mod record;
pub mod snapshot;
pub mod symbolize;
pub mod top;
pub mod unwind;
