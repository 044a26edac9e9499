//! What /proc says about a jail's interpreter where no cgroup does (inside gVisor): which
//! process it is and how much address space it holds, the quantity RLIMIT_AS bounds; and the
//! reading of /proc's `stat` and `Key: N kB` texts, for every module that needs them.

use std::path::Path;

/// The processes whose parent is `parent`, from /proc/<pid>/stat (nsjail's one child is the
/// jailed interpreter).
pub fn children(parent: u32) -> Vec<u32> {
    children_in(Path::new("/proc"), parent)
}

fn children_in(proc: &Path, parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc) else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))
                .is_ok_and(|stat| parent_in_stat(&stat) == Some(parent))
        })
        .collect()
}

/// The address space (VmSize) of `pid`, in bytes.
pub fn address_space_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    vm_size_in_status(&status)
}

/// The fields of /proc/<pid>/stat's text after the command name: `pid (comm) state ppid ...`,
/// where comm may hold spaces and parentheses, so they are counted after its last `)`; field 0
/// is the state.
pub fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace().collect())
}

/// The value of a `Key:  123456 kB` line (/proc/<pid>/status, /proc/meminfo), in bytes.
pub fn kib_value(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// The parent pid in /proc/<pid>/stat's text.
fn parent_in_stat(stat: &str) -> Option<u32> {
    stat_fields(stat)?.get(1)?.parse().ok()
}

/// VmSize from /proc/<pid>/status, in bytes.
fn vm_size_in_status(status: &str) -> Option<u64> {
    kib_value(status, "VmSize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_after_the_command_name_whatever_it_holds() {
        assert_eq!(parent_in_stat("42 (python3) S 7 42 42 0 -1 4194560"), Some(7));
        assert_eq!(parent_in_stat("42 (a) b (c) R 9 42"), Some(9));
        assert_eq!(parent_in_stat("garbage"), None);
    }

    #[test]
    fn the_address_space_is_vm_size_in_bytes() {
        let status = "Name:\tpython3\nVmPeak:\t  900 kB\nVmSize:\t  812 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(vm_size_in_status(status), Some(812 * 1024));
        assert_eq!(vm_size_in_status("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_is_a_child_of_its_parent_and_has_an_address_space() {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        assert!(children(parent).contains(&me));
        assert!(address_space_bytes(me).is_some_and(|bytes| bytes > 0));
    }
}
