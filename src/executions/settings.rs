//! The settings of executions (POST /executions), parsed once with the command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct ExecutionsSettings {
    /// Directory where the local placement keeps its executions: an SQLite database
    /// (executions.sqlite3), created readable by the service's user only. Finished executions
    /// outlive a restart there; those a stop cut off are marked failed when the service starts.
    #[arg(long, env = "PYEXEC_STATE_DIR", default_value = "/var/lib/pyexec")]
    pub state_dir: PathBuf,
    /// Seconds a finished execution is kept for GET /executions/{id}, then removed.
    #[arg(long, env = "PYEXEC_EXECUTIONS_KEEP_SECONDS", default_value_t = 3600)]
    pub executions_keep_seconds: u64,
    /// Longest `?wait=` a GET /executions/{id} may hold, in seconds; longer waits are cut to it.
    #[arg(long, env = "PYEXEC_EXECUTIONS_MAX_WAIT_SECONDS", default_value_t = 60)]
    pub executions_max_wait_seconds: u64,
    /// Executions submitted and not finished (queued or running) at once; past it POST
    /// /executions gets 429. They wait for a sandbox like /execute's requests do, without
    /// holding a connection.
    #[arg(long, env = "PYEXEC_EXECUTIONS_MAX_UNFINISHED", default_value_t = 256)]
    pub executions_max_unfinished: usize,
}

impl ExecutionsSettings {
    pub fn keep(&self) -> Duration {
        Duration::from_secs(self.executions_keep_seconds)
    }

    /// The wait a request asked for, cut to the longest allowed.
    pub fn wait(&self, asked_seconds: f64) -> Duration {
        let longest = self.executions_max_wait_seconds as f64;
        let seconds = if asked_seconds.is_nan() { 0.0 } else { asked_seconds.clamp(0.0, longest) };
        Duration::from_secs_f64(seconds)
    }

    /// How often finished executions past their time are looked for: a tenth of the keep time,
    /// between a second and a minute.
    pub fn sweep_every(&self) -> Duration {
        Duration::from_secs((self.executions_keep_seconds / 10).clamp(1, 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_cut_to_the_longest_and_never_negative() {
        let settings: ExecutionsSettings = crate::config::defaults();
        assert_eq!(settings.wait(5.5), Duration::from_millis(5500));
        assert_eq!(settings.wait(3600.0), Duration::from_secs(60));
        assert_eq!(settings.wait(-1.0), Duration::ZERO);
        assert_eq!(settings.wait(f64::NAN), Duration::ZERO);
        assert_eq!(settings.wait(f64::INFINITY), Duration::from_secs(60));
    }

    #[test]
    fn sweeps_follow_the_keep_time_within_bounds() {
        let mut settings: ExecutionsSettings = crate::config::defaults();
        assert_eq!(settings.sweep_every(), Duration::from_secs(60));
        settings.executions_keep_seconds = 5;
        assert_eq!(settings.sweep_every(), Duration::from_secs(1));
        settings.executions_keep_seconds = 200;
        assert_eq!(settings.sweep_every(), Duration::from_secs(20));
    }
}
