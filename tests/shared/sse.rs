//! Reading a Server-Sent Events stream in tests, shared by the host and cluster suites (each
//! includes this file as a module).

use serde_json::Value;

/// Server-Sent Events as (event, data) pairs, in order.
pub fn parse_events(text: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut name, mut data) = (String::from("message"), String::new());
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            }
        }
        if !data.is_empty() {
            events.push((name, serde_json::from_str(&data).expect("JSON data")));
        }
    }
    events
}

/// The text of the `stream` events, joined.
pub fn printed(events: &[(String, Value)], stream: &str) -> String {
    events.iter().filter(|(name, _)| name == stream).filter_map(|(_, data)| data["text"].as_str()).collect()
}
