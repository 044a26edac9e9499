//! crds/pythonexecution.yaml must be exactly what `pyexec crd` generates from src/crd.rs.

use std::path::Path;

const CHECKED_IN: &str = "crds/pythonexecution.yaml";

#[test]
fn the_checked_in_crd_matches_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(CHECKED_IN);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let generated = pyexec::crd::crd_yaml().expect("the CRD serialises");
    assert!(checked_in == generated, "{CHECKED_IN} is stale: regenerate it with `cargo run -q -- crd > {CHECKED_IN}`");
}
