//! The media type of an output file, from its name's extension (a pure function).

/// Extensions (lower case) and their media types; anything else is `application/octet-stream`.
const MEDIA_TYPES: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("svg", "image/svg+xml"),
    ("pdf", "application/pdf"),
    ("csv", "text/csv"),
    ("tsv", "text/tab-separated-values"),
    ("txt", "text/plain"),
    ("log", "text/plain"),
    ("md", "text/markdown"),
    ("html", "text/html"),
    ("htm", "text/html"),
    ("json", "application/json"),
    ("jsonl", "application/jsonl"),
    ("xml", "application/xml"),
    ("parquet", "application/vnd.apache.parquet"),
    ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
];

const UNKNOWN: &str = "application/octet-stream";

/// The media type of a file called `name`.
pub fn media_type(name: &str) -> &'static str {
    let Some((stem, extension)) = name.rsplit_once('.') else { return UNKNOWN };
    if stem.is_empty() {
        // ".csv" is a hidden file without an extension.
        return UNKNOWN;
    }
    let extension = extension.to_ascii_lowercase();
    MEDIA_TYPES.iter().find(|(known, _)| *known == extension).map_or(UNKNOWN, |(_, media)| media)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_extensions_have_their_media_type_in_any_case() {
        assert_eq!(media_type("figure-1.png"), "image/png");
        assert_eq!(media_type("Report.PDF"), "application/pdf");
        assert_eq!(media_type("table.v2.csv"), "text/csv");
        assert_eq!(media_type("photo.JPEG"), "image/jpeg");
    }

    #[test]
    fn other_names_are_octet_streams() {
        for name in ["data.bin", "README", ".csv", "archive.tar.", "model.npy"] {
            assert_eq!(media_type(name), UNKNOWN, "{name}");
        }
    }
}
