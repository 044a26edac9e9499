//! Which cgroup hierarchy limits runs (v2, v1 or none), found once at start-up, and pyexec's
//! parent group in it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sandbox::settings::CgroupChoice;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup hierarchy limits runs, found once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1: per-run groups under `<memory>/` and `<pids>/`, and `<cpu>/` when the cpu
    /// controller is mounted and ours.
    V1 { memory: PathBuf, pids: PathBuf, cpu: Option<PathBuf> },
    /// cgroup v2: per-run groups under `<parent>/`, with the cpu controller when `cpu`.
    V2 { parent: PathBuf, cpu: bool },
    /// No writable cgroups: limits fall back to per-process rlimits.
    Off { reason: String },
}

impl CgroupMode {
    pub fn describe(&self) -> String {
        match self {
            CgroupMode::V1 { memory, pids, cpu } => {
                let cpu = cpu.as_ref().map_or("none".to_string(), |dir| dir.display().to_string());
                format!("cgroup v1 (memory: {}, pids: {}, cpu: {cpu})", memory.display(), pids.display())
            }
            CgroupMode::V2 { parent, cpu } => {
                format!("cgroup v2 ({}, {})", parent.display(), if *cpu { "memory pids cpu" } else { "memory pids" })
            }
            CgroupMode::Off { reason } => format!("off, rlimits only ({reason})"),
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, CgroupMode::Off { .. })
    }

    /// Every directory of pyexec's parent group, in each hierarchy it uses.
    pub(super) fn parents(&self) -> Vec<PathBuf> {
        match self {
            CgroupMode::V1 { memory, pids, cpu } => {
                [Some(memory), Some(pids), cpu.as_ref()].into_iter().flatten().cloned().collect()
            }
            CgroupMode::V2 { parent, .. } => vec![parent.clone()],
            CgroupMode::Off { .. } => vec![],
        }
    }
}

/// Finds the hierarchy `wanted` and creates pyexec's parent
/// group in it; also says whether this call created the parent group (so that the one who
/// created it removes it at shutdown).
pub fn detect_parent(wanted: CgroupChoice, parent_name: &str) -> (CgroupMode, bool) {
    let existed =
        ["", "memory", "cpu"].iter().any(|hierarchy| Path::new(CGROUP_ROOT).join(hierarchy).join(parent_name).exists());
    let mode = detect_inner(wanted, parent_name);
    let created = mode.enabled() && !existed;
    (mode, created)
}

/// Removes the parent group(s); fails harmlessly while another run still uses them.
pub fn remove_parent(mode: &CgroupMode) {
    for dir in mode.parents() {
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
        let cpu = controllers.split_whitespace().any(|c| c == "cpu")
            && fs::write(parent.join("cgroup.subtree_control"), "+cpu").is_ok();
        Ok(CgroupMode::V2 { parent, cpu })
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
        // The cpu controller is optional: without it runs share the CPUs as plain processes.
        let cpu_root = root.join("cpu");
        let cpu = cpu_root.join("cpu.shares").exists().then(|| cpu_root.join(parent_name));
        let cpu = cpu.filter(|dir| fs::create_dir_all(dir).is_ok());
        Ok(CgroupMode::V1 { memory, pids, cpu })
    };
    let outcome = match wanted {
        CgroupChoice::Off => Err("turned off by --cgroups off".to_string()),
        CgroupChoice::V1 => try_v1(),
        CgroupChoice::V2 => try_v2(),
        CgroupChoice::Auto => try_v2().or_else(|v2| try_v1().map_err(|v1| format!("{v2}; {v1}"))),
    }
    .and_then(probe);
    let mode = outcome.unwrap_or_else(|reason| CgroupMode::Off { reason });
    if let Some(reason) = no_cpu_controller(&mode) {
        tracing::warn!(reason, "no cpu controller: sandboxes share the CPUs without equal weights or a cap");
    }
    mode
}

/// Why runs get no cpu controller, when cgroups are on without it (logged once, at start-up).
fn no_cpu_controller(mode: &CgroupMode) -> Option<&'static str> {
    match mode {
        CgroupMode::V1 { cpu: None, .. } => Some("no writable v1 cpu hierarchy at /sys/fs/cgroup/cpu"),
        CgroupMode::V2 { cpu: false, .. } => Some("the unified hierarchy does not delegate the cpu controller"),
        _ => None,
    }
}

/// A parent group can exist and still refuse us children (it belongs to root and we are not):
/// create and remove one to know.
fn probe(mode: CgroupMode) -> Result<CgroupMode, String> {
    let name = format!("probe-{}", std::process::id());
    let can_create = |parent: &Path| -> Result<(), String> {
        let dir = parent.join(&name);
        fs::create_dir(&dir).map_err(|e| format!("cannot create cgroups under {}: {e}", parent.display()))?;
        let _ = fs::remove_dir(&dir);
        Ok(())
    };
    match mode {
        CgroupMode::V1 { memory, pids, cpu } => {
            can_create(&memory)?;
            can_create(&pids)?;
            // A cpu hierarchy that refuses children only costs the cpu controller.
            let cpu = cpu.filter(|dir| {
                let usable = can_create(dir).is_ok();
                if !usable {
                    let _ = fs::remove_dir(dir);
                }
                usable
            });
            Ok(CgroupMode::V1 { memory, pids, cpu })
        }
        CgroupMode::V2 { ref parent, .. } => {
            can_create(parent)?;
            Ok(mode)
        }
        CgroupMode::Off { .. } => Ok(mode),
    }
}
