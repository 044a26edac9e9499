//! docs/configuration.md, read from clap's own model of the command line: every flag of every
//! command with its environment variable, default and help text.

use clap::{Arg, Command, CommandFactory};

use super::generated_by;
use super::table::{code, one_line, table};
use crate::config::Cli;

/// The page: the flags every command takes, then one table per command that has flags of its own.
pub fn configuration() -> String {
    let cli = Cli::command();
    let mut page = format!(
        "# Configuration\n\n{} Every flag can also be set through its environment variable; the flag \
         wins when both are given. `pyexec <command> --help` prints the same text.\n",
        generated_by("configuration", "the command line's definition (`src/config.rs` and the settings it flattens)")
    );
    page.push_str(&section(
        "Every command",
        "Flags every command takes, given before or after the command's name.",
        &cli,
    ));
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        let title = format!("`pyexec {}`", command.get_name());
        let about = command.get_about().map(|about| sentence(&about.to_string())).unwrap_or_default();
        page.push_str(&section(&title, &about, command));
    }
    page
}

/// A heading, the command's description and the table of its own flags; nothing for a command
/// that has none.
fn section(title: &str, about: &str, command: &Command) -> String {
    let rows: Vec<Vec<String>> = command.get_arguments().filter(|arg| shown(arg)).map(row).collect();
    if rows.is_empty() {
        return String::new();
    }
    let rows = table(&["Flag", "Environment", "Default", "Description"], &rows);
    format!("\n## {title}\n\n{about}\n\n{rows}")
}

/// Every argument but the hidden ones and clap's own --help and --version.
fn shown(arg: &Arg) -> bool {
    !arg.is_hide_set() && !matches!(arg.get_id().as_str(), "help" | "version")
}

fn row(arg: &Arg) -> Vec<String> {
    let flag = match arg.get_long() {
        Some(long) => format!("--{long}"),
        None => format!("<{}>", arg.get_id()),
    };
    let env = arg.get_env().map(|env| env.to_string_lossy().into_owned()).unwrap_or_default();
    let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    vec![code(&flag), code(&env), code(&defaults.join(",")), description(arg)]
}

/// The help text on one line, and the values a flag accepts when they are a fixed list.
fn description(arg: &Arg) -> String {
    let help = arg.get_long_help().or(arg.get_help()).map(|help| sentence(&help.to_string())).unwrap_or_default();
    let values: Vec<String> = if arg.get_action().takes_values() {
        arg.get_possible_values().iter().filter(|v| !v.is_hide_set()).map(|v| code(v.get_name())).collect()
    } else {
        Vec::new()
    };
    if values.is_empty() {
        help
    } else {
        format!("{help} One of {}.", values.join(", "))
    }
}

/// `text` on one line, ending with a full stop (clap drops the one a doc comment ends with).
fn sentence(text: &str) -> String {
    let line = one_line(text);
    if line.is_empty() || line.ends_with(['.', '!', '?']) {
        line
    } else {
        format!("{line}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_of_every_command_has_its_row() {
        let page = configuration();
        for flag in ["`--listen`", "`--log-format`", "`--script-file`", "`--namespace`", "`--memory-mb`"] {
            assert!(page.lines().any(|l| l.starts_with(&format!("| {flag} |"))), "no row for {flag}");
        }
        assert!(page.contains("| `--max-queue` | `PYEXEC_MAX_QUEUE` | `64` | Executions allowed to wait for a free sandbox; past it requests get 429. |"));
    }

    #[test]
    fn hidden_commands_and_clap_s_own_flags_are_left_out() {
        let page = configuration();
        assert!(!page.contains("pyexec docs`"), "the hidden docs command is listed");
        assert!(!page.contains("`--help`") && !page.contains("`--version`"));
    }

    #[test]
    fn a_flag_with_a_fixed_list_of_values_names_them() {
        let page = configuration();
        let executor = page.lines().find(|l| l.starts_with("| `--executor` |")).expect("a row for --executor");
        assert!(executor.ends_with("| Where scripts run. One of `local`, `kubernetes`. |"), "{executor}");
    }
}
