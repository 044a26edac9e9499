//! Dependencies point down: the commands on top; the MCP server over the HTTP server over the
//! executions over the executor over the sandbox; the controller over the sandbox. Read from the
//! sources, so a new `use` that points up fails here.

use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Every `.rs` file under `dir`, as paths relative to src/ (`server/mod.rs`).
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("reading {}: {err}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path.strip_prefix(SRC).expect("under src/").to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// The top-level modules a source names through `crate::`, with their line numbers:
/// `crate::server::health` names `server`, `crate::{controller::X, sandbox}` both.
fn crate_modules(source: &str) -> Vec<(usize, String)> {
    let mut named = Vec::new();
    for (index, line) in source.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    named.push((index + 1, leading_ident(item.trim())));
                }
            } else {
                named.push((index + 1, leading_ident(rest)));
            }
        }
    }
    named
}

fn leading_ident(text: &str) -> String {
    text.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// The places under src/`layer` that name any of the modules `above`, as `file:line: module`.
fn upward_uses(layer: &str, above: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in sources(&Path::new(SRC).join(layer)) {
        let source = std::fs::read_to_string(Path::new(SRC).join(&file)).expect("a readable source");
        for (line, module) in crate_modules(&source) {
            if above.contains(&module.as_str()) {
                found.push(format!("src/{}:{line}: crate::{module}", file.display()));
            }
        }
    }
    found
}

#[test]
fn the_server_and_the_executor_do_not_depend_on_the_controller() {
    let mut found = upward_uses("server", &["controller", "mcp"]);
    found.extend(upward_uses("executor", &["server", "controller", "mcp"]));
    assert!(found.is_empty(), "the server or the executor names a layer above or beside it: {found:#?}");
}

#[test]
fn executions_sit_between_the_server_and_the_executor() {
    let found = upward_uses("executions", &["server", "controller", "commands", "mcp"]);
    assert!(found.is_empty(), "executions name a layer above or beside them: {found:#?}");
    let found = upward_uses("executor", &["executions"]);
    assert!(found.is_empty(), "the executor names the executions above it: {found:#?}");
}

#[test]
fn the_controller_does_not_depend_on_the_server_or_the_executor() {
    let found = upward_uses("controller", &["server", "executor", "mcp"]);
    assert!(found.is_empty(), "the controller names the server or the executor: {found:#?}");
}

#[test]
fn the_mcp_server_depends_on_no_command_and_not_on_the_controller() {
    let found = upward_uses("mcp", &["commands", "controller"]);
    assert!(found.is_empty(), "the MCP server names a command or the controller: {found:#?}");
}

#[test]
fn the_sandbox_depends_on_no_layer_above_it() {
    let found = upward_uses("sandbox", &["server", "executor", "controller", "commands", "mcp"]);
    assert!(found.is_empty(), "the sandbox names a layer above it: {found:#?}");
}

#[test]
fn only_the_commands_use_the_commands_error() {
    let mut found = Vec::new();
    for file in sources(Path::new(SRC)) {
        if file.starts_with("commands") || file == Path::new("main.rs") {
            continue;
        }
        let source = std::fs::read_to_string(Path::new(SRC).join(&file)).expect("a readable source");
        for (index, line) in source.lines().enumerate() {
            // The error lives in a private module of `commands`: reaching it means naming `commands`.
            if line.contains("crate::commands") {
                found.push(format!("src/{}:{}: {}", file.display(), index + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "only src/commands/ and src/main.rs may use the commands' error: {found:#?}");
}

#[test]
fn the_check_reads_grouped_and_plain_paths() {
    let source = "use crate::{controller::Error, sandbox};\nlet x = crate::server::health::router;";
    let named: Vec<_> = crate_modules(source).into_iter().map(|(line, module)| format!("{line}:{module}")).collect();
    assert_eq!(named, ["1:controller", "1:sandbox", "2:server"]);
}
