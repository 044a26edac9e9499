//! The README is for users: every setting `--help` prints must be documented in it.

use std::collections::BTreeSet;
use std::process::Command;

fn flags_of(subcommand: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_pyexec")).args([subcommand, "--help"]).output().expect("run --help");
    assert!(output.status.success(), "{subcommand} --help failed");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    help.split_whitespace()
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string())
        .filter(|flag| flag != "--help" && flag != "--version")
        .collect()
}

#[test]
fn every_setting_in_help_is_documented_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let mut missing = Vec::new();
    for subcommand in ["serve", "sandbox", "controller", "crd"] {
        let flags = flags_of(subcommand);
        assert!(subcommand == "crd" || !flags.is_empty(), "no flags parsed from {subcommand} --help");
        for flag in flags {
            // A limit's maximum is documented with its default (`--X` / `--max-X`).
            // Whole flags only: `--namespace` is not documented by `--kube-namespace`.
            let documented = readme.contains(&format!("`{flag}`"))
                || flag.strip_prefix("--max-").is_some_and(|base| readme.contains(&format!("`--{base}`")));
            if !documented {
                missing.push(format!("{subcommand} {flag}"));
            }
        }
    }
    assert!(missing.is_empty(), "settings missing from README.md: {missing:?}");
}
