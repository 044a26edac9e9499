//! Tenants on one kernel: a sandbox can neither use up nor watch what its neighbours and the
//! host depend on (kernel budgets, shared inodes, host facts). Each case holds or probes in one
//! sandbox while a second one, warm and cold, must be unaffected, and reads the host's own
//! budgets from the host. Runs against a real server with real nsjail.

mod common;

#[path = "http_tenants/policy.rs"]
mod policy;

#[path = "http_tenants/host_path.rs"]
mod host_path;

#[path = "http_tenants/ids.rs"]
mod ids;
