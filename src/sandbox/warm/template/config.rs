//! The template jail's nsjail configuration, derived from the one every jail uses: the same
//! file system, environment, uid and limits, but the template may make namespaces and mounts
//! (for the sandboxes it forks, which deny them to themselves before any script runs).

/// The lines of nsjail.cfg's seccomp policy that deny namespace and mount calls start after a
/// comment line that starts with this, and end with `BLOCK_END`.
const BLOCK_START: &str = "# [namespace and mount calls]";
const BLOCK_END: &str = "# [end of namespace and mount calls]";

/// What is missing from a configuration the template's cannot be derived from.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("it has no `{BLOCK_START}` ... `{BLOCK_END}` block around its namespace and mount denials")]
    NoBlock,
}

/// `base` with the namespace and mount denials left out.
pub fn template_config(base: &str) -> Result<String, ConfigError> {
    let (before, _, after) = split(base)?;
    Ok(format!("{before}{after}"))
}

/// The system call names the block denies (kafel's names), in order.
pub fn denied_calls(base: &str) -> Result<Vec<String>, ConfigError> {
    let (_, block, _) = split(base)?;
    let mut names = Vec::new();
    for line in block.lines().filter_map(|line| line.trim().strip_prefix("seccomp_string:")) {
        let rule = line.trim().trim_matches('"');
        // `name,` or `name { condition },`: the name is what comes before a comma or a brace.
        let mut rest = rule;
        while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic()) {
            rest = &rest[start..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            names.push(rest[..end].to_string());
            // Skip a condition in braces whole.
            rest = &rest[end..];
            let next = rest.trim_start();
            if next.starts_with('{') {
                rest = next.find('}').map_or("", |close| &next[close + 1..]);
            }
        }
    }
    Ok(names)
}

/// The text before the block, the block's lines, and the text after it.
fn split(base: &str) -> Result<(&str, &str, &str), ConfigError> {
    let start = line_start(base, BLOCK_START).ok_or(ConfigError::NoBlock)?;
    let end_line = line_start(&base[start..], BLOCK_END).ok_or(ConfigError::NoBlock)? + start;
    let end = base[end_line..].find('\n').map_or(base.len(), |newline| end_line + newline + 1);
    Ok((&base[..start], &base[start..end_line], &base[end..]))
}

/// Where the first line that starts with `prefix` begins.
fn line_start(text: &str, prefix: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with(prefix) {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../../nsjail.cfg");

    #[test]
    fn the_template_config_keeps_everything_but_the_namespace_denials() {
        let derived = template_config(SHIPPED).expect("derived");
        assert!(!derived.contains("unshare") && !derived.contains("pivot_root"), "{derived}");
        assert!(!derived.contains("clone_flags"), "{derived}");
        assert!(derived.contains("mount_proc: false"));
        // The rest of the policy and of the jail are the same.
        for kept in ["ERRNO(1) {", "  bpf, userfaultfd", "ptrace", "clone3", "DEFAULT ALLOW", "clone_newuser: true"] {
            assert!(derived.contains(kept), "{kept} is missing");
        }
        assert_eq!(SHIPPED.lines().count() - derived.lines().count(), 11);
    }

    #[test]
    fn a_config_without_the_block_is_refused() {
        assert_eq!(template_config("mount_proc: false\n"), Err(ConfigError::NoBlock));
        let block = format!("{BLOCK_START}\nseccomp_string: \"  unshare,\"\n{BLOCK_END}\n");
        assert_eq!(template_config(&format!("a\n{block}b\n")), Ok("a\nb\n".into()));
    }

    #[test]
    fn the_denied_calls_are_read_from_the_block() {
        let names = denied_calls(SHIPPED).expect("block");
        assert_eq!(names.first().map(String::as_str), Some("unshare"));
        assert!(names.contains(&"clone".to_string()) && names.contains(&"mount_setattr".to_string()));
        assert!(!names.iter().any(|name| name == "clone_flags"), "{names:?}");
    }
}
