//! Output renderers for commands whose output is data: an aligned text table for people, JSON for
//! scripts (field names are documented in `docs/cli.md` and kept stable), markdown for tickets and wikis.
//! Pure: values in, `String` out; [`write_stdout`] prints, and [`write_json_stdout`] prints JSON as it is
//! encoded (a plan of 10,000 tokens is megabytes: no second copy of it in memory).

use super::CliError;
use serde::Serialize;
use std::io::Write;

/// `--format` of data commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document (stable field names, RFC 3339 times).
    Json,
    /// A markdown table.
    Markdown,
}

/// The `--format` flag, flattened into each data command.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Rows of text under headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Aligned columns separated by two spaces; the last column is not padded.
    pub fn to_text(&self) -> String {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == cols {
                    l.push_str(c);
                } else {
                    l.push_str(c);
                    l.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for r in &self.rows {
            line(r);
        }
        out
    }

    /// A GitHub-flavoured markdown table (pipes and newlines in cells escaped).
    pub fn to_markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
        let mut out = String::new();
        out.push_str(&format!("| {} |\n", self.headers.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(self.headers.len())));
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")));
        }
        out
    }
}

/// Renders `data` as JSON, or `table()` as text or markdown.
pub fn render<T: Serialize>(
    format: Format,
    data: &T,
    table: impl FnOnce() -> String,
    markdown: impl FnOnce() -> String,
) -> Result<String, CliError> {
    match format {
        Format::Json => serde_json::to_string_pretty(data)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| CliError::failed(format!("cannot encode the output as JSON: {e}"))),
        Format::Table => Ok(table()),
        Format::Markdown => Ok(markdown()),
    }
}

/// Prints to stdout; a closed pipe (`patrol inventory | head`) is not an error.
pub fn write_stdout(s: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::failed(format!("cannot write to stdout: {e}"))),
    }
}

/// Prints `data` as pretty JSON (what [`render`] makes of it for [`Format::Json`]), encoding straight into
/// a buffered stdout; a closed pipe is not an error.
pub fn write_json_stdout<T: Serialize>(data: &T) -> Result<(), CliError> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, data)
        .map_err(|e| match e.io_error_kind() {
            Some(kind) => std::io::Error::from(kind),
            None => std::io::Error::other(format!("cannot encode the output as JSON: {e}")),
        })
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::Other => Err(CliError::failed(e.to_string())),
        Err(e) => Err(CliError::failed(format!("cannot write to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["NAME", "DAYS", "STATE"]);
        t.push(vec!["ci-build".into(), "3".into(), "active".into()]);
        t.push(vec!["a|b".into(), "-2".into(), "expired".into()]);
        t
    }

    #[test]
    fn text_columns_align() {
        let text = sample().to_text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "NAME      DAYS  STATE");
        assert_eq!(lines[1], "ci-build  3     active");
        assert_eq!(lines[2], "a|b       -2    expired");
    }

    #[test]
    fn markdown_escapes_pipes() {
        let md = sample().to_markdown();
        assert!(md.starts_with("| NAME | DAYS | STATE |\n|---|---|---|\n"));
        assert!(md.contains("| a\\|b | -2 | expired |"));
    }

    #[test]
    fn json_is_pretty_and_terminated() {
        let s = render(Format::Json, &serde_json::json!({"a": 1}), String::new, String::new).unwrap();
        assert_eq!(s, "{\n  \"a\": 1\n}\n");
    }
}
