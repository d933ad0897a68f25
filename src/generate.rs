//! The man page and shell completions, rendered from the clap definition so they never
//! drift from `--help` (a test compares the checked-in files with a fresh render).

use crate::cli::Cli;
use crate::error::Result;
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;

/// Every generated file: (relative path, contents).
pub fn render() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // No version in the rendered files: they would change on every release otherwise.
    let cmd = Cli::command()
        .version(None::<&str>)
        .long_version(None::<&str>);
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut man)
        .expect("rendering into memory");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("gprof-rs-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub)
            .render(&mut page)
            .expect("rendering into memory");
        out.push((format!("man/{name}.1"), page));
    }
    out.push(("man/gprof-rs.1".into(), man));
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let mut buf = Vec::new();
        let mut c = cmd.clone();
        clap_complete::generate(shell, &mut c, "gprof-rs", &mut buf);
        let file = match shell {
            Shell::Bash => "gprof-rs.bash",
            Shell::Zsh => "_gprof-rs",
            Shell::Fish => "gprof-rs.fish",
            Shell::Elvish => "gprof-rs.elv",
            _ => "_gprof-rs.ps1",
        };
        out.push((format!("completions/{file}"), buf));
    }
    out
}

/// Write every generated file under the two directories.
pub fn write_all(man_dir: &Path, completions_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(man_dir)?;
    std::fs::create_dir_all(completions_dir)?;
    for (path, bytes) in render() {
        let (dir, file) = path.split_once('/').expect("dir/file");
        let base = if dir == "man" {
            man_dir
        } else {
            completions_dir
        };
        std::fs::write(base.join(file), bytes)?;
    }
    Ok(())
}
