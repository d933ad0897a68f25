//! The single integration test binary (`autotests = false`); one module per area.

mod assist;
mod attach;
mod cli_docs;
mod helper;
mod invariants;
mod leak;
mod lease;
mod output;
mod process;
mod record;
mod reliability;
mod switch_cfi;
mod target;
mod top;
