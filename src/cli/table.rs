//! Plain-text output helpers: aligned columns and timestamps.

use aws_sdk_batch::primitives::{DateTime, DateTimeFormat};

/// Left-aligned columns separated by two spaces, in the style of `kubectl get` and `docker ps`.
#[derive(Debug, Default)]
pub struct Table {
    header: Option<Vec<String>>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(header: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            header: Some(header.into_iter().map(Into::into).collect()),
            rows: Vec::new(),
        }
    }

    /// A table without a header line, used for `key  value` blocks.
    pub fn headerless() -> Self {
        Table::default()
    }

    pub fn push<I, S>(&mut self, row: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows
            .push(row.into_iter().map(|c| sanitize(&c.into())).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders every line with a trailing newline; the last column is not padded so that lines
    /// carry no trailing blanks.
    pub fn render(&self) -> String {
        let lines: Vec<&Vec<String>> = self.header.iter().chain(self.rows.iter()).collect();
        let columns = lines.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in &lines {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if i + 1 < columns {
                    let pad = width - cell.chars().count();
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A status reason or command may contain newlines or tabs, which would break the alignment.
fn sanitize(cell: &str) -> String {
    cell.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `-` stands in for absent values so that columns never collapse.
pub fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".to_string(),
    }
}

/// AWS Batch timestamps are epoch milliseconds; tables show them as ISO-8601 UTC, to the second.
pub fn iso8601_millis(millis: Option<i64>) -> String {
    millis
        .and_then(|ms| {
            DateTime::from_secs(ms.div_euclid(1000))
                .fmt(DateTimeFormat::DateTime)
                .ok()
        })
        .unwrap_or_else(|| "-".to_string())
}

/// The last path segment of an ARN (`arn:…:compute-environment/NAME` → `NAME`); anything else
/// is returned unchanged.
pub fn arn_name(arn: &str) -> &str {
    if arn.starts_with("arn:") {
        arn.rsplit('/').next().unwrap_or(arn)
    } else {
        arn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_lines_not_padded() {
        let mut t = Table::new(["JOB ID", "NAME", "STATUS"]);
        t.push(["a1", "short", "RUNNING"]);
        t.push(["b2-longer-id", "n", "SUCCEEDED"]);
        assert_eq!(
            t.render(),
            "JOB ID        NAME   STATUS\n\
             a1            short  RUNNING\n\
             b2-longer-id  n      SUCCEEDED\n"
        );
    }

    #[test]
    fn empty_last_column_leaves_no_trailing_blanks() {
        let mut t = Table::new(["A", "REASON"]);
        t.push(["x", ""]);
        assert_eq!(t.render(), "A  REASON\nx\n");
    }

    #[test]
    fn control_characters_do_not_break_rows() {
        let mut t = Table::headerless();
        t.push(["reason", "line one\nline\ttwo"]);
        assert_eq!(t.render(), "reason  line one line two\n");
    }

    #[test]
    fn short_rows_are_padded_and_width_counts_chars_not_bytes() {
        let mut t = Table::new(["NAME", "STATE", "X"]);
        t.push(["é", "ENABLED"]);
        t.push(["ab", "", "1"]);
        assert_eq!(
            t.render(),
            "NAME  STATE    X\né     ENABLED\nab             1\n"
        );
    }

    #[test]
    fn header_only_table_renders_header() {
        let t = Table::new(["A", "B"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "A  B\n");
    }

    #[test]
    fn timestamps_are_iso8601_utc_seconds() {
        assert_eq!(iso8601_millis(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            iso8601_millis(Some(1_700_000_000_999)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(iso8601_millis(None), "-");
    }

    #[test]
    fn arn_names() {
        assert_eq!(
            arn_name("arn:aws:batch:us-east-1:000000000000:compute-environment/local"),
            "local"
        );
        assert_eq!(arn_name("plain"), "plain");
        assert_eq!(or_dash(Some("")), "-");
        assert_eq!(or_dash(Some("x")), "x");
    }
}
