//! Which cgroup hierarchy limits runs (v2, v1 or none), found once at start-up, and pyexec's
//! parent group in it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sandbox::settings::CgroupChoice;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

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

/// Finds the hierarchy `wanted` and creates pyexec's parent
/// group in it; also says whether this call created the parent group (so that the one who
/// created it removes it at shutdown).
pub fn detect_parent(wanted: CgroupChoice, parent_name: &str) -> (CgroupMode, bool) {
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

fn detect_inner(wanted: CgroupChoice, parent_name: &str) -> CgroupMode {
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
        CgroupChoice::Off => Err("turned off by --cgroups off".to_string()),
        CgroupChoice::V1 => try_v1(),
        CgroupChoice::V2 => try_v2(),
        CgroupChoice::Auto => try_v2().or_else(|v2| try_v1().map_err(|v1| format!("{v2}; {v1}"))),
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
