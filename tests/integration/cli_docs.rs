//! The checked-in man pages and completions are exactly what the clap definition
//! renders today. After changing the CLI, regenerate them with
//! `cargo run -- generate` (or run this test with `GPROF_UPDATE_GOLDEN=1`).

use std::path::Path;

#[test]
fn man_pages_and_completions_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("GPROF_UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for (rel, bytes) in gprof_rs::generate::render() {
        let path = root.join(&rel);
        if update {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run `cargo run -- generate`"
    );
}

#[test]
fn help_explains_every_attach_option_with_examples() {
    let out = crate::target::gprof_rs()
        .args(["attach", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--output",
        "--format",
        "--mode",
        "--stats",
        "Examples:",
        "go tool pprof",
    ] {
        assert!(
            help.contains(needle),
            "attach --help lacks {needle:?}:\n{help}"
        );
    }
}
