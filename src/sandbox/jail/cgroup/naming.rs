//! The names of run slots under pyexec's parent cgroup, and the removal of slots left by
//! servers that are gone. A slot's name carries the pid of the server that made it
//! (`slot-<pid>-<n>`, `ready-<pid>-<n>`, `template-<pid>-<n>`): two servers given the same `--cgroup-parent` never
//! take each other's slot, where a shared name once let one server's run end (and kill) the
//! other's run in the same group.

use std::fs;
use std::path::Path;

use super::detect::CgroupMode;

/// The kinds of slot a server makes: scripts started on demand, ready sandboxes, and the
/// pool's template.
const KINDS: [&str; 3] = ["slot", "ready", "template"];

/// The name of a server's `n`th slot of `kind`.
pub(super) fn slot_name(kind: &str, owner: u32, n: usize) -> String {
    format!("{kind}-{owner}-{n}")
}

/// The pid of the server that made the slot called `name`; None for any other name.
fn slot_owner(name: &str) -> Option<u32> {
    let mut parts = name.split('-');
    let kind = parts.next()?;
    let owner = parts.next()?.parse().ok()?;
    parts.next()?.parse::<usize>().ok()?;
    (KINDS.contains(&kind) && parts.next().is_none()).then_some(owner)
}

/// Which slots to remove: those whose server is neither `me` nor alive.
fn is_orphan(name: &str, me: u32, alive: impl Fn(u32) -> bool) -> bool {
    slot_owner(name).is_some_and(|owner| owner != me && !alive(owner))
}

/// Removes the empty slots that servers which are gone left under the parent(s) of `mode`
/// (a server killed with SIGKILL cannot remove its own). A slot that still holds processes is
/// left alone and logged. Returns how many directories were removed.
pub fn remove_orphan_slots(mode: &CgroupMode) -> usize {
    let me = std::process::id();
    let alive = |pid: u32| Path::new("/proc").join(pid.to_string()).exists();
    let mut removed = 0;
    for parent in mode.parents() {
        let Ok(entries) = fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() || !is_orphan(&name, me, alive) {
                continue;
            }
            match fs::remove_dir(entry.path()) {
                Ok(()) => removed += 1,
                Err(err) => {
                    tracing::warn!(cgroup = %entry.path().display(), error = %err, "a cgroup left by a server that is gone could not be removed")
                }
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed cgroups left by servers that are gone");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_name_says_which_server_made_it() {
        assert_eq!(slot_name("slot", 4242, 7), "slot-4242-7");
        assert_eq!(slot_owner(&slot_name("slot", 4242, 7)), Some(4242));
        assert_eq!(slot_owner(&slot_name("ready", 1, 0)), Some(1));
    }

    #[test]
    fn other_names_have_no_owner() {
        for name in ["slot-3", "slot-x-1", "slot-1-2-3", "other-1-2", "ready-1-", "", "pyexec"] {
            assert_eq!(slot_owner(name), None, "{name}");
        }
    }

    #[test]
    fn only_slots_of_dead_servers_are_orphans() {
        let alive = |pid: u32| pid == 10;
        assert!(is_orphan("slot-11-0", 1, alive));
        assert!(is_orphan("ready-11-3", 1, alive));
        assert!(!is_orphan("slot-10-0", 1, alive), "its server runs");
        assert!(!is_orphan("slot-1-0", 1, |_| false), "this server's own");
        assert!(!is_orphan("slot-0", 1, |_| false), "not a slot name of this version");
    }
}
