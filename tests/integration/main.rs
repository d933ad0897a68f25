//! The single integration test binary (`autotests = false`); one module per area.

mod output;
mod target;
mod attach;
mod process;
