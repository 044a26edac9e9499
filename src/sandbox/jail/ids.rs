//! Host ids of sandboxes: every sandbox runs as a host uid and gid of its own, leased from a
//! configured range for its whole life, so that what the kernel counts per user (pipe buffers,
//! file descriptors in flight, processes, queued signals) is counted per sandbox, and its own
//! device nodes (`null`, `zero`, `urandom`), so that no lock or timestamp on them is seen by
//! another sandbox.
//!
//! A lease is an exclusive `flock` on the id's directory (`<dir>/<id>`, which holds the device
//! nodes): two servers on one host never hand out the same id at once, and a lease taken by a
//! server that dies stays taken for as long as its sandbox's nsjail (or keeper), which holds
//! the directory open, lives.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::FlockArg;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// The device nodes of each id: name, major and minor (Linux's memory devices).
pub const DEVICES: [(&str, u64, u64); 3] = [("null", 1, 3), ("zero", 1, 5), ("urandom", 1, 9)];

/// The uid and gid the script has inside its user namespace (mapped to its lease's host id).
pub const ID_IN_SANDBOX: u32 = 65534;

/// A range of host ids, and which of them this process holds.
#[derive(Debug)]
pub struct IdRange {
    first: u32,
    count: u32,
    dir: PathBuf,
    held: Mutex<BTreeSet<u32>>,
}

/// Why a range cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("the sandbox id range {first}+{count} is empty, passes the largest uid, or holds {ID_IN_SANDBOX}")]
    BadRange { first: u32, count: u32 },
    #[error("every id of the sandbox range {first}+{count} is leased (by this server or another on the host)")]
    Exhausted { first: u32, count: u32 },
    #[error("preparing {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One id, held until dropped (and while any process holds `fd()` open).
#[derive(Debug)]
pub struct IdLease {
    id: u32,
    dir: File,
    range: Arc<IdRange>,
}

impl IdRange {
    /// `count` ids from `first`, leased through directories under `dir` (created when missing;
    /// it must be on a file system that allows device nodes, as /dev is).
    pub fn new(first: u32, count: u32, dir: &Path) -> Result<Arc<Self>, IdError> {
        let end = u64::from(first) + u64::from(count);
        let holds_nobody = (u64::from(first)..end).contains(&u64::from(ID_IN_SANDBOX));
        if count == 0 || first == 0 || end > u64::from(u32::MAX) || holds_nobody {
            return Err(IdError::BadRange { first, count });
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| IdError::Dir { path: dir.to_path_buf(), source })?;
        Ok(Arc::new(IdRange { first, count, dir: dir.to_path_buf(), held: Mutex::default() }))
    }

    pub fn first(&self) -> u32 {
        self.first
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lowest id no one holds: the ids in use stay few, and so do their directories.
    pub fn lease(self: &Arc<Self>) -> Result<IdLease, IdError> {
        for offset in 0..self.count {
            let id = self.first + offset;
            if !self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
                continue;
            }
            match self.try_take(id) {
                Ok(Some(dir)) => return Ok(IdLease { id, dir, range: self.clone() }),
                Ok(None) => self.forget(id),
                Err(err) => {
                    self.forget(id);
                    return Err(err);
                }
            }
        }
        Err(IdError::Exhausted { first: self.first, count: self.count })
    }

    /// The id's directory, locked, with its device nodes; None when another process holds it.
    fn try_take(&self, id: u32) -> Result<Option<File>, IdError> {
        let path = self.dir_of(id);
        let fail = |source| IdError::Dir { path: path.clone(), source };
        match fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail(e)),
        }
        let dir = File::open(&path).map_err(fail)?;
        if lock(&dir).is_err() {
            return Ok(None);
        }
        make_devices(&path).map_err(fail)?;
        Ok(Some(dir))
    }

    /// The directory of `id`: its lock and its device nodes.
    fn dir_of(&self, id: u32) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn forget(&self, id: u32) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

/// An exclusive lock on `dir`'s open file, released when the last descriptor of it closes, not
/// before: the process keeping the sandbox shares it (nix's `Flock` would unlock it for both
/// when this process lets go).
#[allow(deprecated)]
fn lock(dir: &File) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    nix::fcntl::flock(dir.as_raw_fd(), FlockArg::LockExclusiveNonblock)
}

/// The id's device nodes, made once (root, mode 0666); the sandbox sees them read-only, so no
/// write to their inode (a timestamp) carries over to the id's next sandbox.
fn make_devices(dir: &Path) -> io::Result<()> {
    for (name, major, minor) in DEVICES {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        mknod(&path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(major, minor))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))?;
    }
    Ok(())
}

impl IdLease {
    /// The host uid and gid of the sandbox.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The directory of its device nodes.
    pub fn path(&self) -> PathBuf {
        self.range.dir_of(self.id)
    }

    /// The locked directory, for the process that keeps the sandbox (nsjail, a keeper) to
    /// hold open: the id stays taken as long as it lives.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

impl Drop for IdLease {
    fn drop(&mut self) {
        self.range.forget(self.id);
    }
}

/// nsjail's arguments that make the jailed process `ID_IN_SANDBOX` inside and `id` on the host.
pub fn id_map_args(id: u32) -> [String; 4] {
    ["--user".into(), format!("{ID_IN_SANDBOX}:{id}:1"), "--group".into(), format!("{ID_IN_SANDBOX}:{id}:1")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_that_would_hold_nobody_or_overflow_is_refused() {
        let dir = std::env::temp_dir();
        assert!(matches!(IdRange::new(65000, 1000, &dir), Err(IdError::BadRange { .. })));
        assert!(matches!(IdRange::new(u32::MAX - 10, 100, &dir), Err(IdError::BadRange { .. })));
        assert!(matches!(IdRange::new(1000, 0, &dir), Err(IdError::BadRange { .. })));
    }

    #[test]
    fn the_jail_maps_nobody_to_the_lease() {
        assert_eq!(id_map_args(2_000_000_007), ["--user", "65534:2000000007:1", "--group", "65534:2000000007:1"]);
    }
}
