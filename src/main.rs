use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = gprof_rs::cli::Cli::parse();
    match cli
        .into_command(std::io::stdout().is_terminal())
        .and_then(gprof_rs::app::run)
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gprof-rs: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
