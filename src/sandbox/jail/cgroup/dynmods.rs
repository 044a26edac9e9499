//! The kernel's `favordynmods` cgroup option (Linux 6.0 and later): moving a process into a
//! cgroup (a write to `cgroup.procs`, which every cold run does before it becomes nsjail) takes
//! a lock that every `fork()` holds for reading, and without the option the writer first waits
//! for an RCU grace period. Beside scripts that fork without pause (fork bombs at their process
//! limit) that wait is a large share of a cold run's start (docs/performance.md, "Starting a
//! sandbox does not wait behind forks"). The price is that forks and exits take the slower path
//! of that lock everywhere on the host. The option belongs to
//! the cgroup2 hierarchy but acts on the one lock all hierarchies share, so remounting the
//! cgroup2 mount (also in a hybrid v1 layout, at /sys/fs/cgroup/unified) is enough; it stays
//! until the next boot.

use std::path::PathBuf;
use std::process::Command;

const OPTION: &str = "favordynmods";

/// What start-up did about the option.
#[derive(Debug, PartialEq, Eq)]
pub enum DynMods {
    /// The cgroup2 mount at this path already had it.
    AlreadyOn(PathBuf),
    /// The cgroup2 mount at this path was remounted with it.
    TurnedOn(PathBuf),
    /// No cgroup2 hierarchy is mounted (the option cannot be set on v1 alone).
    NoCgroup2,
}

/// The cgroup2 mount in `/proc/mounts` text and whether it has the option already.
pub fn cgroup2_mount(mounts: &str) -> Option<(PathBuf, bool)> {
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, target, "cgroup2", options, ..] => {
                let on = options.split(',').any(|option| option == OPTION);
                Some((PathBuf::from(unescape_mount_path(target)), on))
            }
            _ => None,
        }
    })
}

/// `/proc/mounts` writes a space, tab, newline and backslash in a path as octal escapes.
fn unescape_mount_path(path: &str) -> String {
    path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Turns the option on for the host's cgroup2 mount unless it is on already. `mount -o
/// remount,favordynmods` keeps the mount's other options (a bare mount(2) remount would clear
/// cgroup2's nsdelegate and memory_recursiveprot).
pub fn favor_dynamic_modifications() -> Result<DynMods, String> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|err| format!("reading /proc/mounts: {err}"))?;
    let Some((target, on)) = cgroup2_mount(&mounts) else { return Ok(DynMods::NoCgroup2) };
    if on {
        return Ok(DynMods::AlreadyOn(target));
    }
    let output = Command::new("mount")
        .arg("-o")
        .arg(format!("remount,{OPTION}"))
        .arg(&target)
        .output()
        .map_err(|err| format!("running mount: {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("mount -o remount,{OPTION} {}: {}", target.display(), stderr.trim()));
    }
    Ok(DynMods::TurnedOn(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_and_its_option_are_read_from_proc_mounts() {
        let hybrid = "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(cgroup2_mount(hybrid), Some((PathBuf::from("/sys/fs/cgroup/unified"), false)));
        let on = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nsdelegate,favordynmods,memory_recursiveprot 0 0\n";
        assert_eq!(cgroup2_mount(on), Some((PathBuf::from("/sys/fs/cgroup"), true)));
        assert_eq!(cgroup2_mount("cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n"), None);
    }

    #[test]
    fn an_option_with_a_similar_name_does_not_count() {
        let other = "cgroup2 /sys/fs/cgroup cgroup2 rw,nofavordynmods 0 0\n";
        assert_eq!(cgroup2_mount(other), Some((PathBuf::from("/sys/fs/cgroup"), false)));
        let spaced = "cgroup2 /mnt/my\\040cgroup cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_mount(spaced), Some((PathBuf::from("/mnt/my cgroup"), false)));
    }
}
