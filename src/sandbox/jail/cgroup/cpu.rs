//! How the kernel shares the CPUs between sandboxes: every run's cgroup gets the cpu
//! controller with the same weight and a cap (a CFS quota), so that a script that spins takes
//! its share and no more, whatever the number of sandboxes running. A run that has used
//! `--cpu-long-run-seconds` of CPU becomes an idle group (`cpu.idle`, Linux 5.15+): long runs
//! still share the CPUs equally among themselves and take all the CPU nobody else wants, but a
//! script that just arrived (a hello world) runs as soon as it is runnable instead of waiting
//! its turn behind scripts that spin or fork until their timeout. (A tenth of the weight, what
//! long runs got before, still left a hello's p99 at 150-200 ms beside three spinners or three
//! fork bombs on 2 CPUs; as idle groups, 30-45 ms, its idle p99 being 25 ms.) Where the kernel
//! has no `cpu.idle`, a long run keeps the tenth of the weight it is also given. A long run in
//! the idle class that starves beside short runs gets a run's weight back for a while
//! (`starvation`), so that it still reaches its end under sustained load. A ready sandbox
//! of the pool imports its modules at a hundredth of the weight, raised to a run's when its job
//! arrives.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

/// The CFS period the cap is a quota of: the kernel's default, 100 ms.
const PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts, 1 ms.
const MIN_QUOTA_US: u64 = 1_000;

/// cgroup v2 weights (`cpu.weight`, 1..10000, default 100).
const RUN_WEIGHT: u64 = 100;
/// A long run: a tenth of a new run's weight, so that new scripts come first.
const LONG_RUN_WEIGHT: u64 = 10;
/// A refill is background work: a hundredth of a run's weight, so that starting ready
/// sandboxes takes only CPU that running scripts leave idle.
const REFILL_WEIGHT: u64 = 1;
/// `cpu.idle`: 1 schedules a group's tasks only when no other group's want the CPU.
const IDLE_FILE: &str = "cpu.idle";

/// Which weight a group has: a script's, or a ready sandbox's still waiting for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    /// A script runs: every run has this same weight.
    Run,
    /// A script has used `long_run_after` of CPU time.
    LongRun,
    /// A long run in the idle class that waited for the CPU without getting its floor: a run's
    /// weight, outside the idle class, for a step (see `starvation`).
    Starving,
    /// A ready sandbox starts or waits for its job.
    Refill,
    /// The pool's template forks a ready sandbox, which makes its namespaces: a few milliseconds
    /// of CPU that save a cold start hundreds, so at a run's weight (never lowered: waiting
    /// uses none).
    Fork,
}

/// The CPU policy of every run's cgroup: the same weight for every run, lowered once it used
/// `long_run_after` of CPU time (None: never) and then idle when `long_run_idle`, and at most
/// `cap_cpus` CPUs each (0: no cap).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuShare {
    pub cap_cpus: f64,
    pub long_run_after: Option<Duration>,
    pub long_run_idle: bool,
}

impl CpuShare {
    /// The files to write, and what, for `weight` on cgroup v2 (`unified`) or v1.
    /// The group leaves the idle class first (the kernel refuses a weight for an idle group);
    /// a long run's enters it last.
    pub fn files(&self, weight: Weight, unified: bool) -> Vec<(&'static str, String)> {
        let value = match weight {
            Weight::Run | Weight::Fork | Weight::Starving => RUN_WEIGHT,
            Weight::LongRun => LONG_RUN_WEIGHT,
            Weight::Refill => REFILL_WEIGHT,
        };
        let quota = quota_us(self.cap_cpus);
        let mut files = vec![(IDLE_FILE, "0".to_string())];
        if unified {
            let max = quota.map_or("max".to_string(), |q| q.to_string());
            files.extend([("cpu.weight", value.to_string()), ("cpu.max", format!("{max} {PERIOD_US}"))]);
        } else {
            files.extend([
                ("cpu.shares", v1_shares(value).to_string()),
                ("cpu.cfs_period_us", PERIOD_US.to_string()),
                ("cpu.cfs_quota_us", quota.map_or("-1".to_string(), |q| q.to_string())),
            ]);
        }
        if weight == Weight::LongRun && self.long_run_idle {
            files.push((IDLE_FILE, "1".to_string()));
        }
        files
    }

    /// Writes `weight` and the cap into the group `dir`; `cpu.idle` only where the kernel has it.
    pub fn apply(&self, dir: &Path, weight: Weight, unified: bool) -> io::Result<()> {
        for (file, value) in self.files(weight, unified) {
            match fs::write(dir.join(file), value) {
                Err(err) if file == IDLE_FILE && err.kind() == io::ErrorKind::NotFound => {}
                written => written?,
            }
        }
        Ok(())
    }
}

/// CPU time used by the group `dir` so far: v2's `cpu.stat`; on v1 (whose cpu controller does
/// not count it) the CPU time of the processes in the group now, from /proc.
pub fn cpu_used(dir: &Path, unified: bool) -> Option<Duration> {
    if unified {
        return parse_usage_usec(&fs::read_to_string(dir.join("cpu.stat")).ok()?).map(Duration::from_micros);
    }
    let procs = fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    let ticks: u64 = procs
        .lines()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok())
        .filter_map(|stat| parse_stat_ticks(&stat))
        .sum();
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// /proc's clock ticks per second (USER_HZ, 100 on every Linux architecture pyexec runs on).
const USER_HZ: u64 = 100;

/// `usage_usec` of a v2 `cpu.stat`.
fn parse_usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|line| line.strip_prefix("usage_usec ")?.trim().parse().ok())
}

/// utime + stime + cutime + cstime (clock ticks) of a /proc/PID/stat line.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let fields = crate::sandbox::jail::procfs::stat_fields(stat)?;
    // After the comm: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
    let tick = |i: usize| fields.get(i)?.parse::<i64>().ok();
    Some((tick(11)? + tick(12)? + tick(13)?.max(0) + tick(14)?.max(0)).max(0) as u64)
}

/// The CFS quota per period for a cap of `cpus` CPUs; None for no cap.
fn quota_us(cpus: f64) -> Option<u64> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return None;
    }
    Some(((cpus * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US))
}

/// A v2 weight as v1 `cpu.shares` (default 1024 for the default weight 100; at least 2).
fn v1_shares(weight: u64) -> u64 {
    (weight * 1024 / 100).max(2)
}

/// Parses `--cpu-long-run-seconds`: seconds, 0 for never.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(seconds),
        _ => Err(format!("{text:?} is not a number of seconds (0 or more)")),
    }
}

/// Parses `--cpu-per-sandbox`: a number of CPUs, 0 for no cap.
pub fn parse_cpus(text: &str) -> Result<f64, String> {
    let cpus: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of CPUs"))?;
    if !cpus.is_finite() || cpus < 0.0 {
        return Err(format!("{text:?}: the CPUs per sandbox must be 0 (no cap) or more"));
    }
    if cpus > 0.0 && cpus * (PERIOD_US as f64) < MIN_QUOTA_US as f64 {
        return Err(format!("{text:?}: the least cap is 0.01 CPU"));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_gets_the_same_weight_and_a_quota_of_its_cap() {
        let share = CpuShare { cap_cpus: 1.0, long_run_after: None, long_run_idle: true };
        assert_eq!(
            share.files(Weight::Run, false),
            [
                ("cpu.idle", "0".to_string()),
                ("cpu.shares", "1024".to_string()),
                ("cpu.cfs_period_us", "100000".to_string()),
                ("cpu.cfs_quota_us", "100000".to_string())
            ]
        );
        assert_eq!(
            share.files(Weight::Run, true),
            [
                ("cpu.idle", "0".to_string()),
                ("cpu.weight", "100".to_string()),
                ("cpu.max", "100000 100000".to_string())
            ]
        );
        let half = CpuShare { cap_cpus: 0.5, long_run_after: None, long_run_idle: true };
        assert_eq!(half.files(Weight::Run, true)[2].1, "50000 100000");
    }

    #[test]
    fn a_refill_weighs_far_less_than_a_run() {
        let share = CpuShare { cap_cpus: 1.0, long_run_after: None, long_run_idle: true };
        assert_eq!(share.files(Weight::Refill, false)[1], ("cpu.shares", "10".to_string()));
        assert_eq!(share.files(Weight::Refill, true)[1], ("cpu.weight", "1".to_string()));
        assert!(!share.files(Weight::Refill, true).contains(&("cpu.idle", "1".to_string())));
    }

    #[test]
    fn a_long_run_becomes_idle_after_its_tenth_of_the_weight_and_keeps_its_cap() {
        let share = CpuShare { cap_cpus: 1.0, long_run_after: None, long_run_idle: true };
        for unified in [false, true] {
            let files = share.files(Weight::LongRun, unified);
            // Out of the idle class while the weight is written, into it last.
            assert_eq!(files.first(), Some(&("cpu.idle", "0".to_string())));
            assert_eq!(files.last(), Some(&("cpu.idle", "1".to_string())));
        }
        assert_eq!(share.files(Weight::LongRun, false)[1], ("cpu.shares", "102".to_string()));
        assert_eq!(share.files(Weight::LongRun, false)[3], ("cpu.cfs_quota_us", "100000".to_string()));
        assert_eq!(share.files(Weight::LongRun, true)[1], ("cpu.weight", "10".to_string()));
        assert_eq!(parse_seconds("1.5"), Ok(1.5));
        assert!(parse_seconds("-1").is_err());
    }

    #[test]
    fn a_long_run_stays_out_of_the_idle_class_when_asked() {
        let share = CpuShare { cap_cpus: 1.0, long_run_after: None, long_run_idle: false };
        let files = share.files(Weight::LongRun, false);
        assert!(!files.contains(&("cpu.idle", "1".to_string())), "{files:?}");
        assert_eq!(files[1], ("cpu.shares", "102".to_string()));
    }

    #[test]
    fn a_kernel_without_cpu_idle_still_gets_the_weight() {
        let dir = std::env::temp_dir().join(format!("pyexec-cpu-idle-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let share = CpuShare { cap_cpus: 1.0, long_run_after: None, long_run_idle: true };
        // cpu.idle leads nowhere (opening it fails with NotFound), as on kernels before 5.15.
        std::os::unix::fs::symlink(dir.join("missing/cpu.idle"), dir.join("cpu.idle")).expect("symlink");
        let result = share.apply(&dir, Weight::LongRun, true);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(fs::read_to_string(dir.join("cpu.weight")).ok().as_deref(), Some("10"));
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn cpu_time_is_read_from_v2_cpu_stat_and_proc_stat() {
        assert_eq!(parse_usage_usec("usage_usec 1500000\nuser_usec 1000000\n"), Some(1_500_000));
        let stat = "42 (python3 x) R 1 42 42 0 -1 4194560 100 0 0 0 120 30 5 1 39 19 1 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(156));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn zero_means_no_cap() {
        let share = CpuShare { cap_cpus: 0.0, long_run_after: None, long_run_idle: true };
        assert_eq!(share.files(Weight::Run, false)[3], ("cpu.cfs_quota_us", "-1".to_string()));
        assert_eq!(share.files(Weight::Run, true)[2], ("cpu.max", "max 100000".to_string()));
    }

    #[test]
    fn the_cap_must_be_a_usable_number_of_cpus() {
        assert_eq!(parse_cpus("1.5"), Ok(1.5));
        assert_eq!(parse_cpus("0"), Ok(0.0));
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("NaN").is_err());
        assert!(parse_cpus("0.001").is_err());
        assert!(parse_cpus("two").is_err());
    }
}
