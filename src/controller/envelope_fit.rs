//! Fitting a sandbox's envelope into the PythonExecution object, whose size etcd bounds.

use crate::sandbox::{Envelope, Outcome};

/// The envelope cut to fit `budget` bytes of status: the result keeps at most half (past it, the
/// run counts as result_too_large), stdout and stderr share the rest, cut with their flags set.
pub fn fit_envelope(mut envelope: Envelope, budget: u64) -> Envelope {
    let budget = usize::try_from(budget).unwrap_or(usize::MAX);
    let result_len = envelope.result.as_ref().map(|r| serde_json::to_vec(r).map(|v| v.len()).unwrap_or(0));
    if result_len.is_some_and(|len| len > budget / 2) {
        envelope.result = None;
        envelope.outcome = Outcome::ResultTooLarge;
        envelope.error =
            Some(format!("main()'s result is larger than the {} bytes a PythonExecution status holds", budget / 2));
    }
    let room = (budget - result_len.filter(|len| *len <= budget / 2).unwrap_or(0)) / 2;
    if let Some(cut) = cut_to_json_len(&envelope.stdout, room) {
        envelope.stdout = cut;
        envelope.stdout_truncated = true;
    }
    if let Some(cut) = cut_to_json_len(&envelope.stderr, room) {
        envelope.stderr = cut;
        envelope.stderr_truncated = true;
    }
    envelope
}

/// The longest prefix of `text` whose JSON form takes at most `max` bytes; None if it all fits.
fn cut_to_json_len(text: &str, max: usize) -> Option<String> {
    let mut len = 0;
    for (index, c) in text.char_indices() {
        len += json_len(c);
        if len > max {
            return Some(text[..index].to_string());
        }
    }
    None
}

fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::envelope;
    use serde_json::json;

    #[test]
    fn an_oversized_output_is_cut_with_its_flag_set() {
        let mut e = envelope(Outcome::Success);
        e.stdout = "a".repeat(1000);
        e.stderr = "\n".repeat(1000);
        let fitted = fit_envelope(e, 1000);
        assert_eq!(fitted.stdout.len(), 500);
        assert!(fitted.stdout_truncated);
        assert_eq!(fitted.stderr.len(), 250, "escaped newlines take two bytes each");
        assert!(fitted.stderr_truncated);
    }

    #[test]
    fn an_oversized_result_is_dropped_as_result_too_large() {
        let mut e = envelope(Outcome::Success);
        e.result = Some(serde_json::from_value(json!({"big": "x".repeat(800)})).expect("map"));
        let fitted = fit_envelope(e, 1000);
        assert_eq!(fitted.outcome, Outcome::ResultTooLarge);
        assert_eq!(fitted.result, None);
    }

    #[test]
    fn output_within_the_budget_is_untouched() {
        let e = envelope(Outcome::Success);
        assert_eq!(fit_envelope(e.clone(), 1_000_000), e);
    }
}
