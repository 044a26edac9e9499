//! Logging set-up, once per process, and how an error and its causes are written in one line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber; logs go to stderr (stdout belongs to `pyexec sandbox`'s envelope).
/// Colours only on a terminal: a pod log or a pipe gets plain text.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match settings.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// `err` and its chain of sources, each cause that the message before it does not already
/// quote appended after ": ", for logs and the command line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(source) = cause {
        let message = source.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let quiet = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&quiet), "outer: disk on fire");
        let quoting = Quoting(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&quoting), "outer: disk on fire");
    }
}
