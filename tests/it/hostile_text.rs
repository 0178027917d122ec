//! Hostile text against the real binary and model: invisible-only texts are empty,
//! NULs and lone surrogates get a clear error, and a huge run of combining marks or a
//! 1 MB "word" is classified in bounded time and memory, by `/v1/classify` and in
//! batch lines alike.

use std::time::{Duration, Instant};

use crate::common::{Backend, Server};
use serde_json::{json, Value};

const LABELS: [&str; 2] = ["billing", "shipping"];
/// Texts of nothing but invisible characters (and whitespace).
const INVISIBLE: [&str; 7] = [
    "\u{200B}",
    "\u{200C}",
    "\u{200D}",
    "\u{2060}",
    "\u{FEFF}",
    "\u{00AD}",
    " \u{200B}\u{FEFF}\u{00AD}\t\u{2060} ",
];
/// Generous bound on one hostile text's request: an unbounded tokenizer took over a
/// second on this machine for 1 MB, a bounded one takes milliseconds.
const HOSTILE_BOUND: Duration = Duration::from_secs(10);
/// Generous bound on the server's peak memory with the hostile texts (about 200 MiB
/// with the model loaded).
const PEAK_RSS_BOUND_MIB: f64 = 1024.0;

/// "a" and 100,000 combining acute accents (200 KB, one grapheme).
fn combining_marks() -> String {
    format!("a{}", "\u{0301}".repeat(100_000))
}

/// One "word" of `bytes` bytes, no whitespace anywhere.
fn giant_word(bytes: usize) -> String {
    "x".repeat(bytes)
}

/// POSTs a raw JSON body (for escapes serde_json would never write).
async fn post_raw(server: &Server, body: &str) -> (u16, Value) {
    let resp = server
        .client
        .post(server.url("/v1/classify"))
        .bearer_auth(&server.key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

fn assert_error(body: &Value, kind: &str, param: &str, says: &str) {
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["param"], param, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn classify_refuses_invisible_nul_and_lone_surrogate_texts() {
    let server = Server::start(Backend::Sqlite).await;
    for text in INVISIBLE {
        let (status, body) = server
            .post("/v1/classify", &json!({"text": text, "labels": LABELS}))
            .await;
        assert_eq!(status, 422, "{text:?}: {body}");
        assert_error(&body, "validation_error", "text", "empty");
        let (status, body) = server
            .post(
                "/v1/classify",
                &json!({"texts": ["where is my parcel", text], "labels": LABELS}),
            )
            .await;
        assert_eq!(status, 422, "{text:?}: {body}");
        assert_error(&body, "validation_error", "texts[1]", "empty");
    }
    // Visible text around invisible characters is text.
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"text": "\u{200B}where is my parcel\u{FEFF}", "labels": LABELS}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["label"], "shipping");

    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"text": "a\u{0}b", "labels": LABELS}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "invalid_request", "text", "NUL");
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"texts": ["fine", "\u{0}"], "labels": LABELS}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "invalid_request", "texts[1]", "NUL");
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"text": "ok", "labels": ["a\u{0}", "b"]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_error(&body, "validation_error", "labels[0]", "NUL");
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"text": "ok", "labels": LABELS, "examples": {"billing": ["\u{2060}"]}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_error(&body, "validation_error", "examples.billing[0]", "empty");

    for (body, param) in [
        (r#"{"text": "\ud800", "labels": ["a", "b"]}"#, "text"),
        (r#"{"text": "x\udc00y", "labels": ["a", "b"]}"#, "text"),
        (
            r#"{"texts": ["ok", "\ud800\u0041"], "labels": ["a", "b"]}"#,
            "texts[1]",
        ),
    ] {
        let (status, answer) = post_raw(&server, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_error(&answer, "invalid_request", param, "surrogate");
    }
    // A surrogate pair is one character, not an error.
    let (status, answer) = post_raw(
        &server,
        r#"{"text": "my parcel \ud83d\udce6 is late", "labels": ["billing", "shipping"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_runs_without_whitespace_classify_in_bounded_time_and_memory() {
    let server = Server::start(Backend::Sqlite).await;
    let (status, warm) = server
        .post(
            "/v1/classify",
            &json!({"text": "warm up", "labels": LABELS}),
        )
        .await;
    assert_eq!(status, 200, "{warm}");
    let before = server.peak_rss_mib();
    for (name, text) in [
        ("100,000 combining marks", combining_marks()),
        ("1 MB word", giant_word(1 << 20)),
        ("1 MB of a.a.a.", "a.".repeat(1 << 19)),
        ("1 MB of CJK", "漢".repeat(350_000)),
    ] {
        let started = Instant::now();
        let (status, body) = server
            .post("/v1/classify", &json!({"text": text, "labels": LABELS}))
            .await;
        let took = started.elapsed();
        eprintln!(
            "{name}: {} bytes, {took:?}, tokens {}, truncated {}, server peak RSS {:.0} MiB",
            text.len(),
            body["tokens"],
            body["truncated"],
            server.peak_rss_mib()
        );
        assert_eq!(status, 200, "{name}: {body}");
        assert!(took < HOSTILE_BOUND, "{name} took {took:?}");
        assert!(body["tokens"].as_u64().unwrap() <= 256, "{name}: {body}");
        assert_eq!(body["truncated"], true, "{name}: only its head was read");
    }
    let peak = server.peak_rss_mib();
    eprintln!("peak RSS {before:.0} MiB before the hostile texts, {peak:.0} MiB after");
    assert!(peak < PEAK_RSS_BOUND_MIB, "peak RSS {peak:.0} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_lines_follow_the_same_rules_and_a_bom_is_not_line_1s_error() {
    let server = Server::start(Backend::Sqlite).await;
    let line = |text: &str, id: &str| json!({"text": text, "id": id}).to_string();
    // The word fills a line to just under the 1 MiB line limit.
    let word_line = line(&giant_word((1 << 20) - 64), "word");
    let mut input = b"\xEF\xBB\xBF".to_vec();
    let mut lines = vec![line("I was charged twice", "first")];
    lines.extend(INVISIBLE.iter().map(|text| line(text, "invisible")));
    lines.push(line("a\u{0}b", "nul"));
    lines.push(r#"{"text": "\ud800", "id": "surrogate"}"#.to_string());
    lines.push(line(&combining_marks(), "marks"));
    lines.push(word_line);
    lines.push(line("where is my parcel", "last"));
    input.extend(lines.join("\r\n").into_bytes());
    let started = Instant::now();
    let id = server.start_job(&json!({"labels": LABELS}), input).await;
    server
        .wait_for_job(&id, "completed", Duration::from_secs(120))
        .await;
    eprintln!(
        "batch of {} hostile lines: {:?}, server peak RSS {:.0} MiB",
        lines.len(),
        started.elapsed(),
        server.peak_rss_mib()
    );
    let rows = server.download_results(&id).await;
    assert_eq!(rows.len(), lines.len(), "one row per line");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["line"], i as i64 + 1, "{row}");
    }
    let code = |row: &Value| row["error"]["code"].as_str().map(str::to_string);
    assert_eq!(rows[0]["label"], "billing", "the BOM is not part of line 1");
    assert_eq!(rows[0]["id"], "first");
    let n = INVISIBLE.len();
    for row in &rows[1..=n] {
        assert_eq!(code(row).as_deref(), Some("empty_text"), "{row}");
    }
    assert_eq!(code(&rows[n + 1]).as_deref(), Some("invalid_text"));
    assert!(rows[n + 1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NUL"));
    assert_eq!(code(&rows[n + 2]).as_deref(), Some("invalid_text"));
    assert!(rows[n + 2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("surrogate"));
    for row in &rows[n + 3..] {
        assert_eq!(code(row), None, "{row}");
        assert!(row["tokens"].as_u64().unwrap() <= 256);
    }
    assert_eq!(rows[n + 3]["truncated"], true, "the marks' head only");
    assert_eq!(rows[n + 4]["truncated"], true, "the word's head only");
    assert_eq!(rows.last().unwrap()["label"], "shipping");
    assert!(server.peak_rss_mib() < PEAK_RSS_BOUND_MIB);
}
