//! One run: the supervisor starts a jail (cold, or a ready one from `warm`), feeds it, reads its
//! capped output, enforces the deadline, decides the verdict and hands the jail to its removal.

pub mod capture;
mod finish;
pub mod frames;
pub mod removal;
pub mod supervisor;
pub mod verdict;
