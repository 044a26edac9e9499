//! The settings of the pool of ready sandboxes (`pyexec serve`) and of what a ready sandbox
//! imports (the pool's and a sandbox pod's), parsed once with the command line.

use std::time::Duration;

use clap::Args;

use super::Kind;
use crate::sandbox::warm::template::Life;

#[derive(Args, Clone, Debug)]
pub struct PoolSettings {
    /// Least number of ready sandboxes of each kind (local placement) kept waiting for a
    /// script, each a jailed interpreter that runs exactly one script: preloaded ones (which
    /// already imported --preload-modules) for scripts that name one of those modules, plain
    /// ones for the others.
    #[arg(long, env = "PYEXEC_POOL_MIN", default_value_t = 1)]
    pub pool_min: usize,
    /// Most ready sandboxes of each kind; a kind keeps as many as its scripts arrive while one
    /// of its sandboxes starts (twice that, for bursts), or room above --pool-min for the last
    /// burst of its scripts that found none ready (fading by half every 30 s), within
    /// --pool-min and this, and shrinks again as arrivals stop. 0 turns the pool off: every
    /// script starts its own sandbox (the cold path).
    #[arg(long, env = "PYEXEC_POOL_MAX", default_value_t = 4)]
    pub pool_max: usize,
    /// Seconds a ready sandbox waits for a script before it is replaced (up to its kind's
    /// target from demand; above the target it is removed after 30 s).
    #[arg(long, env = "PYEXEC_POOL_IDLE_SECONDS", default_value_t = 300)]
    pub pool_idle_seconds: u64,
    /// Most ready sandboxes started at the same time when the pool refills (default: the
    /// number of CPUs). They start at a hundredth of a running script's CPU weight, forks at a
    /// script's.
    #[arg(long, env = "PYEXEC_POOL_STARTS_AT_ONCE", value_parser = clap::value_parser!(u16).range(1..))]
    pub pool_starts_at_once: Option<u16>,
    /// Fork the ready sandboxes from a template interpreter per kind (the preloaded kind's
    /// imported --preload-modules once, the plain kind's nothing), instead of starting an
    /// interpreter (and importing them) in each: a fork and the sandbox's own namespaces,
    /// cgroup, /tmp, filter and random state cost milliseconds where a start costs tens and an
    /// import hundreds (see README.md, "Security model", for what forked sandboxes share). Needs
    /// `--isolation host` and cgroups; elsewhere, or when a template cannot start, ready
    /// sandboxes start their own interpreter.
    #[arg(long, env = "PYEXEC_POOL_FORK", default_value_t = true, action = clap::ArgAction::Set)]
    pub pool_fork: bool,
    /// Most sandboxes one template forks before a new template takes over. Forks share the
    /// secrets their template's interpreter drew when it started (the hash seed, the stack
    /// canary, the pointer guard): this bounds how many sandboxes share them. The new template
    /// starts beside the old one in the last fifth of its forks or of its seconds, so that no
    /// fork waits for its imports.
    #[arg(long, env = "PYEXEC_POOL_TEMPLATE_FORKS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pool_template_forks: u64,
    /// Most seconds one template forks sandboxes before a new template takes over (the old one
    /// ends once its last fork has): bounds how long forks share those secrets.
    #[arg(long, env = "PYEXEC_POOL_TEMPLATE_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub pool_template_seconds: u64,
    #[command(flatten)]
    pub preload: PreloadSettings,
}

/// What a ready sandbox imports before its job arrives: the pool's sandboxes and a sandbox pod's
/// (`pyexec sandbox --job-on-stdin`) alike.
#[derive(Args, Clone, Debug)]
pub struct PreloadSettings {
    /// Modules a ready sandbox (the pool's preloaded ones, or that of `pyexec sandbox` with
    /// --job-on-stdin) imports before its script arrives (comma-separated; empty for none). In
    /// the pool, a script that names one of them as a word (`import pandas`) gets a preloaded
    /// sandbox, any other a plain one. The import's memory counts toward the script's memory
    /// limit.
    #[arg(long, env = "PYEXEC_PRELOAD_MODULES", value_delimiter = ',', default_value = "numpy,pandas")]
    pub preload_modules: Vec<String>,
}

impl PreloadSettings {
    /// The module names, trimmed, empty ones left out.
    pub fn modules(&self) -> Vec<String> {
        self.preload_modules.iter().map(|name| name.trim().to_string()).filter(|name| !name.is_empty()).collect()
    }
}

/// The CPUs this process may use (one when that is unknown).
pub(super) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl PoolSettings {
    pub fn enabled(&self) -> bool {
        self.pool_max > 0
    }

    /// How long each template serves.
    pub(super) fn template_life(&self) -> Life {
        Life { max_forks: self.pool_template_forks, max_age: Duration::from_secs(self.pool_template_seconds) }
    }

    pub(super) fn idle_lifetime(&self) -> Duration {
        Duration::from_secs(self.pool_idle_seconds.max(1))
    }

    /// How many ready sandboxes may be started at the same time.
    pub fn starts_at_once(&self) -> usize {
        self.pool_starts_at_once.map_or_else(cpus, usize::from)
    }

    /// The least and most ready sandboxes of `kind`, given the preloaded modules: none
    /// preloaded when there is nothing to preload.
    pub(super) fn bounds(&self, kind: Kind, preload: &[String]) -> (usize, usize) {
        if kind == Kind::Preloaded && preload.is_empty() {
            return (0, 0);
        }
        (self.pool_min.min(self.pool_max), self.pool_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_names_in_the_preload_list_are_ignored() {
        let settings = PoolSettings {
            pool_min: 1,
            pool_max: 2,
            pool_idle_seconds: 0,
            pool_starts_at_once: None,
            pool_fork: true,
            pool_template_forks: 1000,
            pool_template_seconds: 300,
            preload: PreloadSettings { preload_modules: vec![" numpy".into(), String::new()] },
        };
        assert_eq!(settings.preload.modules(), ["numpy"]);
        assert_eq!(settings.idle_lifetime(), Duration::from_secs(1));
    }

    #[test]
    fn each_kind_has_the_pools_bounds_and_nothing_to_preload_means_no_preloaded_kind() {
        let settings = PoolSettings {
            pool_min: 3,
            pool_max: 2,
            pool_idle_seconds: 60,
            pool_starts_at_once: None,
            pool_fork: true,
            pool_template_forks: 1000,
            pool_template_seconds: 300,
            preload: PreloadSettings { preload_modules: vec![] },
        };
        let preload = vec!["pandas".to_string()];
        assert_eq!(settings.bounds(Kind::Plain, &preload), (2, 2));
        assert_eq!(settings.bounds(Kind::Preloaded, &preload), (2, 2));
        assert_eq!(settings.bounds(Kind::Plain, &[]), (2, 2));
        assert_eq!(settings.bounds(Kind::Preloaded, &[]), (0, 0));
    }
}
