//! NDJSON input: a line reader with bounded memory (a 5 GB line costs 1 MiB), and the
//! parsing of one line into a text or a stable error code.

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::engine::text::{self, TextError};
use crate::wire::MAX_ID_CHARS;

/// Longest accepted input line, in bytes (without the newline).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

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

    /// The next non-blank line, or `None` at the end of the input. A line's limit is
    /// on its content: the `\r` of a CRLF ending and a UTF-8 BOM opening the file do
    /// not count (the BOM is dropped, so an editor's BOM does not spoil line 1).
    pub async fn next_line(&mut self) -> std::io::Result<Option<RawLine>> {
        loop {
            let at_file_start = self.offset == 0;
            // Content plus what may be stripped below: a CR, and a BOM on line 1.
            let keep = MAX_LINE_BYTES + 1 + if at_file_start { BOM.len() } else { 0 };
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
                if !too_long && bytes.len() + take <= keep {
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
            if at_file_start && bytes.starts_with(BOM) {
                bytes.drain(..BOM.len());
            }
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            if too_long || bytes.len() > MAX_LINE_BYTES {
                return Ok(Some(RawLine {
                    number: self.line,
                    bytes: None,
                }));
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

/// The UTF-8 byte order mark some editors write at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why a line produced an error row. The codes are part of the API
/// (docs/api.md#input-lines-results-and-error-codes).
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
    let fields = match parse_fields(raw) {
        Ok(fields) => fields,
        Err(err) => return (Value::Null, Err(err)),
    };
    let id = match line_id(fields.id.or(fields.custom_id)) {
        Ok(id) => id,
        Err(err) => return (Value::Null, Err(err)),
    };
    let result = line_text(fields.text).map(|text| InputLine {
        text,
        id: id.clone(),
    });
    (id, result)
}

/// The fields of a line that is at most [`MAX_LINE_BYTES`] bytes of UTF-8 holding a
/// JSON object.
fn parse_fields(raw: &RawLine) -> Result<Fields, LineError> {
    let Some(bytes) = &raw.bytes else {
        return Err(line_error(
            "line_too_long",
            format!("line is longer than {MAX_LINE_BYTES} bytes"),
        ));
    };
    let Ok(line) = std::str::from_utf8(bytes) else {
        return Err(line_error("invalid_utf8", "line is not valid UTF-8"));
    };
    match serde_json::from_str(line) {
        Ok(fields) => Ok(fields),
        Err(err) if text::is_lone_surrogate(&err) => {
            let problem = TextError::LoneSurrogate;
            Err(line_error(problem.code(), problem.to_string()))
        }
        Err(err) if err.is_data() => Err(line_error("invalid_json", "line must be a JSON object")),
        Err(err) => Err(line_error("invalid_json", format!("invalid JSON: {err}"))),
    }
}

/// The caller's id: none, a number, or a string of at most [`MAX_ID_CHARS`]
/// characters.
fn line_id(id: Option<Value>) -> Result<Value, LineError> {
    let id = id.unwrap_or(Value::Null);
    let id_ok = match &id {
        Value::Null | Value::Number(_) => true,
        Value::String(s) => s.chars().count() <= MAX_ID_CHARS,
        _ => false,
    };
    if !id_ok {
        return Err(line_error(
            "invalid_id",
            format!("id must be a string of at most {MAX_ID_CHARS} characters or a number"),
        ));
    }
    Ok(id)
}

/// The line's text: present, a string, and one the model can take.
fn line_text(text: Option<Value>) -> Result<String, LineError> {
    match text {
        None | Some(Value::Null) => Err(line_error("missing_text", "line has no \"text\"")),
        Some(Value::String(text)) => match text::check(&text) {
            Ok(()) => Ok(text),
            Err(problem) => Err(line_error(problem.code(), problem.to_string())),
        },
        Some(_) => Err(line_error("text_not_string", "\"text\" must be a string")),
    }
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
        assert_eq!(
            code("{\"text\": \"\u{200B}\u{FEFF}\u{00AD} \u{2060}\"}".as_bytes()),
            Some("empty_text")
        );
        assert_eq!(code(b"{\"text\": \"a\\u0000b\"}"), Some("invalid_text"));
        assert_eq!(code(b"{\"text\": \"a\\ud800b\"}"), Some("invalid_text"));
        assert_eq!(code(b"{\"text\": \"\\udc00\"}"), Some("invalid_text"));
        assert_eq!(code(b"{\"text\": \"\\ud83d\\ude00\"}"), None);
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

    #[tokio::test]
    async fn a_bom_opening_the_file_is_dropped() {
        let (lines, offset) = all_lines(b"\xEF\xBB\xBF{\"text\":\"a\"}\n\xEF\xBB\xBFx\n").await;
        assert_eq!(lines[0].bytes.as_deref(), Some(&b"{\"text\":\"a\"}"[..]));
        assert!(parse_line(&lines[0]).1.is_ok());
        // Only at offset 0: elsewhere it is part of the line.
        assert_eq!(lines[1].bytes.as_deref(), Some(&b"\xEF\xBB\xBFx"[..]));
        assert_eq!(offset, 21);
    }

    use proptest::prelude::*;

    /// What the reader must return for `input` read from its start: (number, bytes or
    /// None when too long) per non-blank line, by the rules of
    /// docs/api.md#input-lines-results-and-error-codes, written plainly.
    fn expected_lines(input: &[u8]) -> Vec<(i64, Option<Vec<u8>>)> {
        let mut segments: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if segments.last().is_some_and(|last| last.is_empty()) {
            segments.pop();
        }
        let mut lines = Vec::new();
        for (i, segment) in segments.into_iter().enumerate() {
            let mut content = segment;
            if i == 0 {
                content = content.strip_prefix(BOM).unwrap_or(content);
            }
            content = content.strip_suffix(b"\r").unwrap_or(content);
            if content.iter().all(u8::is_ascii_whitespace) && content.len() <= MAX_LINE_BYTES {
                continue;
            }
            let kept = (content.len() <= MAX_LINE_BYTES).then(|| content.to_vec());
            lines.push((i as i64 + 1, kept));
        }
        lines
    }

    /// Reads every line of `input[start..]` with a buffer of `capacity` bytes, as a
    /// reader resumed at byte `start` after line `line`.
    fn read_all(input: &[u8], capacity: usize, start: usize, line: i64) -> Vec<RawLine> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let buffer = tokio::io::BufReader::with_capacity(capacity, &input[start..]);
            let mut reader = LineReader::new(buffer, start as u64, line);
            let mut lines = Vec::new();
            while let Some(raw) = reader.next_line().await.expect("in-memory read") {
                lines.push(raw);
            }
            assert_eq!(reader.offset, input.len() as u64);
            lines
        })
    }

    fn as_pairs(lines: &[RawLine]) -> Vec<(i64, Option<Vec<u8>>)> {
        lines
            .iter()
            .map(|line| (line.number, line.bytes.clone()))
            .collect()
    }

    /// Input files built of pieces that matter to a line reader.
    fn input_file() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..12),
            2 => Just(b"\n".to_vec()),
            2 => Just(b"\r\n".to_vec()),
            1 => Just(b"\r".to_vec()),
            1 => Just(BOM.to_vec()),
            1 => Just(b"  \t".to_vec()),
            2 => "\\PC{0,8}".prop_map(|text| {
                serde_json::json!({"text": text, "id": 1}).to_string().into_bytes()
            }),
        ];
        (any::<bool>(), proptest::collection::vec(piece, 0..24)).prop_map(|(bom, pieces)| {
            let mut file = if bom { BOM.to_vec() } else { Vec::new() };
            file.extend(pieces.concat());
            file
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_non_blank_line_comes_out_once_whatever_the_chunks(
            input in input_file(),
            capacity in 1usize..40,
        ) {
            let lines = read_all(&input, capacity, 0, 0);
            prop_assert_eq!(as_pairs(&lines), expected_lines(&input));
            for line in &lines {
                // One result or error row per line, and never a panic.
                let _ = parse_line(line);
            }
        }

        #[test]
        fn resuming_mid_file_gives_the_same_lines(
            input in input_file(),
            capacity in 1usize..40,
            after in 0usize..30,
        ) {
            let whole = as_pairs(&read_all(&input, 64, 0, 0));
            // A checkpoint: the offset and line number just after the first `after`
            // lines (a resumed worker never starts inside a line).
            let breaks: Vec<usize> = input
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1)
                .collect();
            let (start, line) = match after.checked_sub(1) {
                Some(i) if i < breaks.len() => (breaks[i], after as i64),
                _ => (0, 0),
            };
            let resumed = as_pairs(&read_all(&input, capacity, start, line));
            let rest: Vec<_> = whole.into_iter().filter(|(n, _)| *n > line).collect();
            prop_assert_eq!(resumed, rest);
        }

        #[test]
        fn any_bytes_parse_to_a_text_or_a_stable_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (_, parsed) = parse_line(&RawLine { number: 1, bytes: Some(bytes) });
            if let Err(err) = parsed {
                prop_assert!(LINE_ERROR_CODES.contains(&err.code), "{}", err.code);
            }
        }

        #[test]
        fn a_text_is_accepted_exactly_when_it_is_real_text(
            text in "(\\PC|[\u{0}\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}\u{AD} \t])*",
        ) {
            let line = serde_json::json!({"text": text}).to_string().into_bytes();
            let (_, parsed) = parse_line(&RawLine { number: 1, bytes: Some(line) });
            match text::check(&text) {
                Ok(()) => prop_assert_eq!(parsed.unwrap().text, text),
                Err(problem) => prop_assert_eq!(parsed.unwrap_err().code, problem.code()),
            }
        }
    }

    /// Every code [`parse_line`] may give (the table of
    /// docs/api.md#input-lines-results-and-error-codes).
    const LINE_ERROR_CODES: &[&str] = &[
        "invalid_json",
        "invalid_utf8",
        "line_too_long",
        "missing_text",
        "text_not_string",
        "empty_text",
        "invalid_text",
        "invalid_id",
    ];

    proptest! {
        // Each case reads 1 MiB lines: few cases.
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn the_limit_is_on_content_exactly(
            over in 0usize..=1,
            crlf in any::<bool>(),
            bom in any::<bool>(),
            capacity in prop_oneof![Just(1usize << 16), 1000usize..9000],
        ) {
            let length = MAX_LINE_BYTES + over;
            let mut input = if bom { BOM.to_vec() } else { Vec::new() };
            input.extend(std::iter::repeat_n(b'x', length));
            input.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            input.extend_from_slice(b"{\"text\":\"after\"}\n");
            let lines = read_all(&input, capacity, 0, 0);
            prop_assert_eq!(lines.len(), 2);
            prop_assert_eq!(lines[0].bytes.as_ref().map(Vec::len), (over == 0).then_some(length));
            prop_assert_eq!(lines[1].number, 2);
            prop_assert_eq!(lines[1].bytes.as_deref(), Some(&b"{\"text\":\"after\"}"[..]));
            prop_assert_eq!(as_pairs(&lines), expected_lines(&input));
        }
    }
}
