//! The single integration test binary (`autotests = false`); one module per area.

mod attach;
mod invariants;
mod output;
mod process;
mod target;
mod lease;
mod cli_docs;
