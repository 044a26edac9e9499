//! Per-run cgroups: memory and process limits for a run's whole process tree, the out-of-memory
//! verdict after it, and a kill of everything left in it. Supports the v1 hierarchy (memory and
//! pids controllers mounted apart) and the unified v2 hierarchy.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long to wait for a killed run's processes to leave its cgroup before giving up on rmdir.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Which cgroup hierarchy limits runs, found once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1: per-run groups under `<memory>/` and `<pids>/`.
    V1 { memory: PathBuf, pids: PathBuf },
    /// cgroup v2: per-run groups under `<parent>/`.
    V2 { parent: PathBuf },
    /// No writable cgroups: limits fall back to per-process rlimits.
    Off { reason: String },
}

impl CgroupMode {
    pub fn describe(&self) -> String {
        match self {
            CgroupMode::V1 { memory, pids } => {
                format!("cgroup v1 (memory: {}, pids: {})", memory.display(), pids.display())
            }
            CgroupMode::V2 { parent } => format!("cgroup v2 ({})", parent.display()),
            CgroupMode::Off { reason } => format!("off, rlimits only ({reason})"),
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, CgroupMode::Off { .. })
    }
}

/// Finds the hierarchy and creates pyexec's parent group in it. `wanted` is "auto", "v1", "v2"
/// or "off".
pub fn detect(wanted: &str, parent_name: &str) -> CgroupMode {
    detect_parent(wanted, parent_name).0
}

/// Like `detect`, and also says whether this call created the parent group (so that the one who
/// created it removes it at shutdown).
pub fn detect_parent(wanted: &str, parent_name: &str) -> (CgroupMode, bool) {
    let existed = [Path::new(CGROUP_ROOT).join(parent_name), Path::new(CGROUP_ROOT).join("memory").join(parent_name)]
        .iter()
        .any(|p| p.exists());
    let mode = detect_inner(wanted, parent_name);
    let created = mode.enabled() && !existed;
    (mode, created)
}

/// Removes the parent group(s); fails harmlessly while another run still uses them.
pub fn remove_parent(mode: &CgroupMode) {
    let dirs = match mode {
        CgroupMode::V1 { memory, pids } => vec![memory.clone(), pids.clone()],
        CgroupMode::V2 { parent } => vec![parent.clone()],
        CgroupMode::Off { .. } => vec![],
    };
    for dir in dirs {
        if let Err(err) = fs::remove_dir(&dir) {
            tracing::warn!(cgroup = %dir.display(), error = %err, "could not remove pyexec's parent cgroup");
        }
    }
}

fn detect_inner(wanted: &str, parent_name: &str) -> CgroupMode {
    let root = Path::new(CGROUP_ROOT);
    let v2_root = if root.join("cgroup.controllers").exists() { Some(root.to_path_buf()) } else { None };
    let try_v2 = || -> Result<CgroupMode, String> {
        let base = v2_root.clone().ok_or("no unified hierarchy at /sys/fs/cgroup")?;
        let controllers = fs::read_to_string(base.join("cgroup.controllers")).map_err(|e| e.to_string())?;
        if !(controllers.contains("memory") && controllers.contains("pids")) {
            return Err("the unified hierarchy lacks the memory or pids controller".into());
        }
        let parent = base.join(parent_name);
        fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        fs::write(parent.join("cgroup.subtree_control"), "+memory +pids")
            .map_err(|e| format!("enabling controllers in {}: {e}", parent.display()))?;
        Ok(CgroupMode::V2 { parent })
    };
    let try_v1 = || -> Result<CgroupMode, String> {
        let memory = root.join("memory");
        let pids = root.join("pids");
        if !memory.join("memory.limit_in_bytes").exists()
            || !pids.join("pids.max").exists() && !pids.join("cgroup.procs").exists()
        {
            return Err("no v1 memory and pids hierarchies under /sys/fs/cgroup".into());
        }
        let memory = memory.join(parent_name);
        let pids = pids.join(parent_name);
        for dir in [&memory, &pids] {
            fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        Ok(CgroupMode::V1 { memory, pids })
    };
    let outcome = match wanted {
        "off" => Err("turned off by --cgroups off".to_string()),
        "v1" => try_v1(),
        "v2" => try_v2(),
        _ => try_v2().or_else(|v2| try_v1().map_err(|v1| format!("{v2}; {v1}"))),
    }
    .and_then(probe);
    outcome.unwrap_or_else(|reason| CgroupMode::Off { reason })
}

/// A parent group can exist and still refuse us children (it belongs to root and we are not):
/// create and remove one to know.
fn probe(mode: CgroupMode) -> Result<CgroupMode, String> {
    let name = format!("probe-{}", std::process::id());
    let parents = match &mode {
        CgroupMode::V1 { memory, pids } => vec![memory.clone(), pids.clone()],
        CgroupMode::V2 { parent } => vec![parent.clone()],
        CgroupMode::Off { .. } => vec![],
    };
    for parent in parents {
        let dir = parent.join(&name);
        fs::create_dir(&dir).map_err(|e| format!("cannot create cgroups under {}: {e}", parent.display()))?;
        let _ = fs::remove_dir(&dir);
    }
    Ok(mode)
}

/// The cgroup(s) of one run. Dropping it kills whatever is left inside and removes the groups.
#[derive(Debug)]
pub struct RunCgroup {
    memory: PathBuf,
    pids: PathBuf,
    unified: bool,
}

impl RunCgroup {
    /// Creates the run's groups with its memory and process limits.
    pub fn create(mode: &CgroupMode, run_id: &str, memory_bytes: u64, max_pids: u64) -> io::Result<Option<Self>> {
        let group = match mode {
            CgroupMode::Off { .. } => return Ok(None),
            CgroupMode::V1 { memory, pids } => {
                RunCgroup { memory: memory.join(run_id), pids: pids.join(run_id), unified: false }
            }
            CgroupMode::V2 { parent } => {
                let dir = parent.join(run_id);
                RunCgroup { memory: dir.clone(), pids: dir, unified: true }
            }
        };
        fs::create_dir(&group.memory)?;
        if !group.unified {
            fs::create_dir(&group.pids)?;
        }
        // From here on, Drop removes what was created, even if a limit cannot be written.
        if group.unified {
            fs::write(group.memory.join("memory.max"), memory_bytes.to_string())?;
            // No swap: a run past its memory limit is killed, not slowed down.
            let _ = fs::write(group.memory.join("memory.swap.max"), "0");
        } else {
            fs::write(group.memory.join("memory.limit_in_bytes"), memory_bytes.to_string())?;
            let _ = fs::write(group.memory.join("memory.memsw.limit_in_bytes"), memory_bytes.to_string());
            let _ = fs::write(group.memory.join("memory.swappiness"), "0");
        }
        fs::write(group.pids.join("pids.max"), max_pids.to_string())?;
        Ok(Some(group))
    }

    /// The `cgroup.procs` files a process writes its pid into to join the run's groups.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        if self.unified {
            vec![self.memory.join("cgroup.procs")]
        } else {
            vec![self.memory.join("cgroup.procs"), self.pids.join("cgroup.procs")]
        }
    }

    /// Whether the kernel's OOM killer killed a process of this run.
    pub fn oom_killed(&self) -> bool {
        let file = if self.unified { "memory.events" } else { "memory.oom_control" };
        fs::read_to_string(self.memory.join(file)).map(|text| parse_oom_kills(&text) > 0).unwrap_or(false)
    }

    /// Peak memory use of the run in bytes, where the kernel records it.
    pub fn peak_memory(&self) -> Option<u64> {
        let file = if self.unified { "memory.peak" } else { "memory.max_usage_in_bytes" };
        fs::read_to_string(self.memory.join(file)).ok()?.trim().parse().ok()
    }

    /// Kills every process still in the run's groups, SIGKILL, repeatedly until they are gone.
    pub fn kill_all(&self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let pids = self.pids_inside();
            if pids.is_empty() || Instant::now() >= deadline {
                return;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn pids_inside(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for file in self.procs_files() {
            if let Ok(text) = fs::read_to_string(file) {
                pids.extend(text.lines().filter_map(|line| line.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.kill_all();
        let dirs = if self.unified { vec![&self.memory] } else { vec![&self.memory, &self.pids] };
        for dir in dirs {
            // rmdir fails while a process is still exiting; retry briefly.
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if dir.exists() {
                tracing::warn!(cgroup = %dir.display(), "could not remove a run's cgroup");
            }
        }
    }
}

/// The `oom_kill N` counter of `memory.oom_control` (v1) or `memory.events` (v2).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counter_is_read_from_v1_and_v2_files() {
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 2);
        assert_eq!(parse_oom_kills("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"), 1);
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }
}
