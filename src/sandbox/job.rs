//! The one document a sandbox is handed: the script and the limits it runs under, resolved.
//! The same type crosses every boundary (the local supervisor, a ready sandbox waiting for its
//! job, a sandbox pod), serialised as JSON.

use serde::{Deserialize, Serialize};

use super::limits::Limits;

/// One execution's work: run `script` under `limits`, once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub script: String,
    pub limits: Limits,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::limits::testing::small_limits as limits;

    #[test]
    fn a_job_survives_json_byte_for_byte() {
        let job = Job { script: "def main():\n    return {'$$': '$(HOME)'}\n".into(), limits: limits() };
        let text = serde_json::to_string(&job).expect("serialise");
        let back: Job = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, job);
    }

    #[test]
    fn a_job_with_an_unknown_field_is_refused() {
        let mut value = serde_json::to_value(Job { script: String::new(), limits: limits() }).expect("value");
        value["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Job>(value).is_err());
    }
}
