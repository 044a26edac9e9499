//! Kernel interfaces with no place in a single-use script sandbox are refused by the seccomp
//! policy, so no sandbox can spend or watch what they share.
