//! The documentation holds together: the generated references are what the code generates, every
//! relative link leads somewhere, and the README stays short.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The README's length past which its depth belongs in docs/.
const README_MAX_LINES: usize = 400;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// What `pyexec docs <page>` prints.
fn generated(page: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_pyexec")).args(["docs", page]).output().expect("run pyexec docs");
    assert!(output.status.success(), "pyexec docs {page} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("the page is UTF-8")
}

/// Checks docs/`file` against `pyexec docs <page>`.
fn assert_generated(page: &str, file: &str) {
    let committed = read(&Path::new(ROOT).join("docs").join(file));
    assert!(committed == generated(page), "docs/{file} is stale: run `make docs` and commit it");
}

#[test]
fn docs_configuration_md_is_what_pyexec_docs_configuration_prints() {
    assert_generated("configuration", "configuration.md");
}

#[test]
fn docs_metrics_md_is_what_pyexec_docs_metrics_prints() {
    assert_generated("metrics", "metrics.md");
}

#[test]
fn docs_openapi_json_is_what_pyexec_docs_openapi_prints() {
    assert_generated("openapi", "openapi.json");
}

#[test]
fn the_readme_has_at_most_400_lines() {
    let lines = read(&Path::new(ROOT).join("README.md")).lines().count();
    assert!(lines <= README_MAX_LINES, "README.md has {lines} lines; move the depth into docs/");
}

#[test]
fn every_relative_link_in_the_readme_and_docs_leads_to_a_file_and_its_heading() {
    let mut broken = Vec::new();
    for page in pages() {
        let dir = page.parent().expect("a page has a directory");
        for target in relative_links(&read(&page)) {
            let (path, anchor) = target.split_once('#').map_or((target.as_str(), None), |(p, a)| (p, Some(a)));
            let file = if path.is_empty() { page.clone() } else { dir.join(path) };
            let name = page.strip_prefix(ROOT).unwrap_or(&page).display().to_string();
            if !file.exists() {
                broken.push(format!("{name}: {target}: no such file"));
            } else if let Some(anchor) = anchor.filter(|_| file.extension().is_some_and(|ext| ext == "md")) {
                if !anchors(&read(&file)).contains(anchor) {
                    broken.push(format!("{name}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

#[test]
fn anchors_follow_github_s_rules() {
    let text =
        "# Run on Kubernetes\n## The sandbox pod (`pyexec sandbox`)\n## Run on Kubernetes\n```\n# not a heading\n```\n";
    let expected: BTreeSet<String> =
        ["run-on-kubernetes", "the-sandbox-pod-pyexec-sandbox", "run-on-kubernetes-1"].map(String::from).into();
    assert_eq!(anchors(text), expected);
}

#[test]
fn links_in_code_and_to_other_sites_are_not_followed() {
    let text = "[a](docs/a.md#x) and `[b](b.md)` and [c](https://example.com)\n```\n[d](d.md)\n```\n[e]: e.md\n";
    assert_eq!(relative_links(text), ["docs/a.md#x", "e.md"]);
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let docs = Path::new(ROOT).join("docs");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&docs)
        .expect("docs/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    pages.insert(0, Path::new(ROOT).join("README.md"));
    pages
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        let fence = line.trim_start().starts_with("```") || line.trim_start().starts_with("~~~");
        if fence {
            fenced = !fenced;
        }
        !fence && !fenced
    })
}

/// The targets of inline links (`[text](target)`) and reference definitions (`[label]: target`)
/// that point into the repository: no scheme, not in code.
fn relative_links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        // Inline code spans are the odd pieces between backticks.
        let outside_code: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = outside_code.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            targets.push(rest[..end].split_whitespace().next().unwrap_or_default().to_string());
        }
        let definition = outside_code.trim_start().strip_prefix('[').and_then(|l| l.split_once("]:"));
        if let Some((_, target)) = definition {
            targets.push(target.split_whitespace().next().unwrap_or_default().to_string());
        }
    }
    targets
        .into_iter()
        .map(|target| target.trim_start_matches('<').trim_end_matches('>').to_string())
        .filter(|target| !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:"))
        .collect()
}

/// The anchors GitHub gives the headings of `text`: lowercase, spaces to `-`, punctuation but `-`
/// and `_` dropped; a repeated one gets `-1`, `-2`, ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in prose(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        let Some(title) =
            line.get(hashes..).and_then(|rest| rest.strip_prefix(' ')).filter(|_| (1..=6).contains(&hashes))
        else {
            continue;
        };
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut count = 0;
        while found.contains(&unique) {
            count += 1;
            unique = format!("{slug}-{count}");
        }
        found.insert(unique);
    }
    found
}
