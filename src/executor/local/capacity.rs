//! How many sandboxes may run at once by default: as many as the resources that really run out
//! allow (memory, processes), not one per CPU core; the cpu controller shares the cores between
//! them (`sandbox::jail::cgroup::cpu`).

use std::fs;
use std::path::Path;

use crate::sandbox::Limits;

/// What the machine (or the service's own cgroup) has left for sandboxes, read at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Memory available, in bytes.
    pub memory_bytes: u64,
    /// Processes and threads the kernel (or the service's cgroup) allows.
    pub processes: u64,
}

impl Capacity {
    /// Reads /proc/meminfo's MemAvailable and the kernel's process limits, each lowered to the
    /// service's own cgroup limits (a container) when those are smaller.
    pub fn of_this_machine() -> Capacity {
        let own = OwnCgroup::read();
        let available = meminfo_available().unwrap_or(u64::MAX);
        let memory_bytes = available.min(own.memory_left.unwrap_or(u64::MAX));
        let kernel = [read_number("/proc/sys/kernel/pid_max"), read_number("/proc/sys/kernel/threads-max")];
        let processes = kernel.into_iter().flatten().chain(own.pids_max).min().unwrap_or(u64::MAX);
        Capacity { memory_bytes, processes }
    }
}

/// The default number of run slots: each running sandbox may use the default memory limit and
/// process limit, so as many as fit in both (at least one).
pub fn slots(capacity: Capacity, limits: &Limits) -> usize {
    let by_memory = capacity.memory_bytes / (limits.memory_mb.max(1) * 1024 * 1024);
    // One more process than the script's allowance: nsjail lives in the group too.
    let by_processes = capacity.processes / (limits.max_pids + 1);
    usize::try_from(by_memory.min(by_processes)).unwrap_or(usize::MAX).max(1)
}

/// The service's own cgroup limits, when it runs in a limited one (a container).
struct OwnCgroup {
    memory_left: Option<u64>,
    pids_max: Option<u64>,
}

impl OwnCgroup {
    fn read() -> OwnCgroup {
        let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let root = Path::new("/sys/fs/cgroup");
        let unified = root.join("cgroup.controllers").exists();
        let path_of = |controller: &str| own_path(&text, controller, unified);
        let memory_left = path_of("memory").and_then(|path| {
            let (limit, usage) = if unified {
                (root.join(&path).join("memory.max"), root.join(&path).join("memory.current"))
            } else {
                let dir = root.join("memory").join(&path);
                (dir.join("memory.limit_in_bytes"), dir.join("memory.usage_in_bytes"))
            };
            Some(read_number(limit)?.saturating_sub(read_number(usage).unwrap_or(0)))
        });
        let pids_max = path_of("pids").and_then(|path| {
            let dir = if unified { root.join(&path) } else { root.join("pids").join(&path) };
            read_number(dir.join("pids.max"))
        });
        OwnCgroup { memory_left, pids_max }
    }
}

/// The service's cgroup path (relative) for `controller` from /proc/self/cgroup.
fn own_path(proc_cgroup: &str, controller: &str, unified: bool) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches =
            if unified { controllers.is_empty() } else { controllers.split(',').any(|name| name == controller) };
        matches.then(|| path.trim_start_matches('/').to_string())
    })
}

/// MemAvailable of /proc/meminfo, in bytes.
fn meminfo_available() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    crate::sandbox::jail::procfs::kib_value(meminfo, "MemAvailable")
}

/// A file holding one number; None for "max", a missing file or anything else.
fn read_number(path: impl AsRef<Path>) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory_mb: u64, max_pids: u64) -> Limits {
        Limits { memory_mb, max_pids, ..crate::sandbox::limits::testing::small_limits() }
    }

    #[test]
    fn slots_are_what_memory_allows_when_memory_runs_out_first() {
        let capacity = Capacity { memory_bytes: 23 << 30, processes: 4_194_304 };
        assert_eq!(slots(capacity, &limits(512, 64)), 46);
    }

    #[test]
    fn slots_are_what_processes_allow_when_they_run_out_first() {
        let capacity = Capacity { memory_bytes: 64 << 30, processes: 1000 };
        assert_eq!(slots(capacity, &limits(512, 99)), 10);
    }

    #[test]
    fn there_is_always_at_least_one_slot() {
        let capacity = Capacity { memory_bytes: 100 << 20, processes: 10 };
        assert_eq!(slots(capacity, &limits(512, 64)), 1);
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let meminfo = "MemTotal:       24684000 kB\nMemFree:        11844000 kB\nMemAvailable:   24031232 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(24_031_232 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn the_own_cgroup_path_is_found_per_controller_or_unified() {
        let v1 = "9:name=systemd:/\n8:pids:/a\n4:memory:/process_api/x\n0::/\n";
        assert_eq!(own_path(v1, "memory", false).as_deref(), Some("process_api/x"));
        assert_eq!(own_path(v1, "pids", false).as_deref(), Some("a"));
        assert_eq!(
            own_path("0::/system.slice/pyexec.service\n", "memory", true).as_deref(),
            Some("system.slice/pyexec.service")
        );
    }
}
