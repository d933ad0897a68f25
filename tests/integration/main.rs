//! The single integration test binary (`autotests = false`); one module per area.

mod output;
mod process;
