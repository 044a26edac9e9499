//! Fitting a sandbox's envelope into the PythonExecution object, whose size etcd bounds.

use crate::sandbox::files::output::MAX_OMITTED_NAMES;
use crate::sandbox::{Envelope, Outcome};

/// The envelope cut to fit `budget` bytes of status: the result keeps at most half (past it, the
/// run counts as result_too_large), stdout and stderr share the rest, cut with their flags set;
/// output files keep what the three leave, in order, and the ones that do not fit are dropped,
/// named in `files_omitted` with `files_truncated` set.
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
    let used = result_len.filter(|len| *len <= budget / 2).unwrap_or(0)
        + json_text_len(&envelope.stdout)
        + json_text_len(&envelope.stderr);
    fit_files(envelope, budget.saturating_sub(used))
}

/// The output files that fit in `room` bytes of status, in order; the others dropped and named.
fn fit_files(mut envelope: Envelope, room: usize) -> Envelope {
    let mut left = room;
    let mut kept = Vec::with_capacity(envelope.files.len());
    for file in std::mem::take(&mut envelope.files) {
        let len = serde_json::to_vec(&file).map(|v| v.len()).unwrap_or(usize::MAX);
        if len <= left {
            left -= len;
            kept.push(file);
        } else {
            if envelope.files_omitted.len() < MAX_OMITTED_NAMES {
                envelope.files_omitted.push(file.name.into());
            }
            envelope.files_truncated = true;
        }
    }
    envelope.files = kept;
    envelope
}

/// Bytes `text` takes as a JSON string's contents.
fn json_text_len(text: &str) -> usize {
    text.chars().map(json_len).sum()
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
    use crate::sandbox::files::OutputFile;
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

    fn file(name: &str, bytes: usize) -> OutputFile {
        let content_base64 = "A".repeat(bytes.div_ceil(3) * 4);
        OutputFile {
            name: name.to_string().try_into().expect("a name"),
            size: bytes as u64,
            media_type: "x".into(),
            content_base64,
        }
    }

    #[test]
    fn output_files_keep_what_the_rest_leaves_and_the_others_are_named() {
        let mut e = envelope(Outcome::Success);
        e.files = vec![file("a", 300), file("b", 600), file("c", 30)];
        let fitted = fit_envelope(e, 1000);
        let kept: Vec<&str> = fitted.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(kept, ["a", "c"], "b's 800 bytes of base64 do not fit beside a's");
        assert!(fitted.files_truncated);
        assert_eq!(fitted.files_omitted, ["b"]);
    }

    #[test]
    fn output_within_the_budget_is_untouched() {
        let mut e = envelope(Outcome::Success);
        e.files = vec![file("a", 300)];
        assert_eq!(fit_envelope(e.clone(), 1_000_000), e);
    }
}
