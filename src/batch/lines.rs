//! NDJSON input: a line reader with bounded memory (a 5 GB line costs 1 MiB), and the
//! parsing of one line into a text or a stable error code.

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest accepted input line, in bytes (without the newline).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Longest accepted `id`, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// One physical line of the input.
#[derive(Debug)]
pub struct RawLine {
    /// 1-based line number in the file, blank lines included.
    pub number: i64,
    /// The bytes, or `None` when the line was longer than [`MAX_LINE_BYTES`].
    pub bytes: Option<Vec<u8>>,
}

/// Reads lines from a byte offset, tracking the offset after each line.
pub struct LineReader<R> {
    inner: R,
    /// Byte offset just after the last line returned.
    pub offset: u64,
    /// Number of the last line returned (blank lines included).
    pub line: i64,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// `inner` must start at byte `offset`, just after line `line`.
    pub fn new(inner: R, offset: u64, line: i64) -> Self {
        Self {
            inner,
            offset,
            line,
        }
    }

    /// The next non-blank line, or `None` at the end of the input.
    pub async fn next_line(&mut self) -> std::io::Result<Option<RawLine>> {
        loop {
            let mut bytes = Vec::new();
            let mut too_long = false;
            let mut saw_any = false;
            loop {
                let buf = self.inner.fill_buf().await?;
                if buf.is_empty() {
                    break;
                }
                saw_any = true;
                let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => (i, true),
                    None => (buf.len(), false),
                };
                if !too_long && bytes.len() + take <= MAX_LINE_BYTES {
                    bytes.extend_from_slice(&buf[..take]);
                } else {
                    too_long = true;
                    bytes = Vec::new();
                }
                let consumed = take + usize::from(done);
                self.inner.consume(consumed);
                self.offset += consumed as u64;
                if done {
                    break;
                }
            }
            if !saw_any {
                return Ok(None);
            }
            self.line += 1;
            if too_long {
                return Ok(Some(RawLine {
                    number: self.line,
                    bytes: None,
                }));
            }
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(RawLine {
                    number: self.line,
                    bytes: Some(bytes),
                }));
            }
        }
    }
}

/// Why a line produced an error row. The codes are part of the API (README).
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub code: &'static str,
    pub message: String,
}

fn line_error(code: &'static str, message: impl Into<String>) -> LineError {
    LineError {
        code,
        message: message.into(),
    }
}

/// A parsed input line.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLine {
    pub text: String,
    /// The caller's `id` (or `custom_id`), echoed in the result row.
    pub id: Value,
}

#[derive(Deserialize)]
struct Fields {
    text: Option<Value>,
    id: Option<Value>,
    custom_id: Option<Value>,
}

/// Parses one line. The id is returned even when the line is otherwise bad, so the
/// error row can carry it.
pub fn parse_line(raw: &RawLine) -> (Value, Result<InputLine, LineError>) {
    let Some(bytes) = &raw.bytes else {
        return (
            Value::Null,
            Err(line_error(
                "line_too_long",
                format!("line is longer than {MAX_LINE_BYTES} bytes"),
            )),
        );
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return (
            Value::Null,
            Err(line_error("invalid_utf8", "line is not valid UTF-8")),
        );
    };
    let fields: Fields = match serde_json::from_str(text) {
        Ok(fields) => fields,
        Err(err) if err.is_data() => {
            return (
                Value::Null,
                Err(line_error("invalid_json", "line must be a JSON object")),
            )
        }
        Err(err) => {
            return (
                Value::Null,
                Err(line_error("invalid_json", format!("invalid JSON: {err}"))),
            )
        }
    };
    let id = fields.id.or(fields.custom_id).unwrap_or(Value::Null);
    let id_ok = match &id {
        Value::Null | Value::Number(_) => true,
        Value::String(s) => s.chars().count() <= MAX_ID_CHARS,
        _ => false,
    };
    if !id_ok {
        return (
            Value::Null,
            Err(line_error(
                "invalid_id",
                format!("id must be a string of at most {MAX_ID_CHARS} characters or a number"),
            )),
        );
    }
    let result = match fields.text {
        None | Some(Value::Null) => Err(line_error("missing_text", "line has no \"text\"")),
        Some(Value::String(text)) if text.trim().is_empty() => {
            Err(line_error("empty_text", "text is empty"))
        }
        Some(Value::String(text)) => Ok(InputLine {
            text,
            id: id.clone(),
        }),
        Some(_) => Err(line_error("text_not_string", "\"text\" must be a string")),
    };
    (id, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all_lines(input: &[u8]) -> (Vec<RawLine>, u64) {
        let mut reader = LineReader::new(tokio::io::BufReader::with_capacity(7, input), 0, 0);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            lines.push(line);
        }
        (lines, reader.offset)
    }

    #[tokio::test]
    async fn skips_blank_lines_and_counts_them() {
        let (lines, offset) =
            all_lines(b"{\"text\":\"a\"}\n\n  \r\n{\"text\":\"b\"}\r\nlast").await;
        let numbers: Vec<i64> = lines.iter().map(|l| l.number).collect();
        assert_eq!(numbers, [1, 4, 5]);
        assert_eq!(lines[1].bytes.as_deref(), Some(&b"{\"text\":\"b\"}"[..]));
        assert_eq!(lines[2].bytes.as_deref(), Some(&b"last"[..]));
        assert_eq!(offset, 36);
    }

    #[tokio::test]
    async fn an_overlong_line_is_reported_without_being_kept() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\n{\"text\":\"after\"}\n");
        let (lines, _) = all_lines(&input).await;
        assert!(lines[0].bytes.is_none());
        assert_eq!(lines[1].number, 2);
        assert_eq!(parse_line(&lines[0]).1.unwrap_err().code, "line_too_long");
    }

    #[test]
    fn error_codes() {
        let code = |bytes: &[u8]| {
            parse_line(&RawLine {
                number: 1,
                bytes: Some(bytes.to_vec()),
            })
            .1
            .err()
            .map(|e| e.code)
        };
        assert_eq!(code(b"{\"text\": \"ok\"}"), None);
        assert_eq!(code(b"{\"text\": \"ok\""), Some("invalid_json"));
        assert_eq!(code(b"[1, 2]"), Some("invalid_json"));
        assert_eq!(code(b"{\"id\": \"a\"}"), Some("missing_text"));
        assert_eq!(code(b"{\"text\": 5}"), Some("text_not_string"));
        assert_eq!(code(b"{\"text\": \"  \"}"), Some("empty_text"));
        assert_eq!(code(b"{\"text\": \"\xff\"}"), Some("invalid_utf8"));
        let long_id = format!("{{\"text\": \"x\", \"id\": \"{}\"}}", "i".repeat(65));
        assert_eq!(code(long_id.as_bytes()), Some("invalid_id"));
        let (id, parsed) = parse_line(&RawLine {
            number: 1,
            bytes: Some(b"{\"text\":\"t\",\"custom_id\":\"c-1\"}".to_vec()),
        });
        assert_eq!(id, Value::String("c-1".into()));
        assert_eq!(parsed.unwrap().text, "t");
    }
}
