//! Markdown tables, one row a line.

/// A table with the given header and rows; cells are written as given, `|` escaped.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = line(header.iter().map(|cell| cell.to_string()));
    out.push_str(&line(header.iter().map(|_| "---".to_string())));
    for row in rows {
        out.push_str(&line(row.iter().cloned()));
    }
    out
}

fn line(cells: impl Iterator<Item = String>) -> String {
    let cells: Vec<String> = cells.map(|cell| cell.replace('|', "\\|")).collect();
    format!("| {} |\n", cells.join(" | "))
}

/// `text` in backticks, or nothing when it is empty.
pub fn code(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("`{text}`")
    }
}

/// `text` on one line: every run of whitespace a single space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_escapes_pipes_and_has_one_row_a_line() {
        let rows = vec![vec!["`a|b`".to_string(), one_line("two\n   lines")]];
        assert_eq!(table(&["x", "y"], &rows), "| x | y |\n| --- | --- |\n| `a\\|b` | two lines |\n");
    }
}
