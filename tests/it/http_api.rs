//! `/v1/classify`, auth, health and errors against the real binary, the real model
//! and both databases. Each case runs once on SQLite and once on Postgres.

use crate::common::{self, Backend, Server};
use serde_json::{json, Value};

on_both_databases!(
    classifies_single_text,
    classifies_many_texts_in_order,
    multi_mode_thresholds,
    descriptions_examples_and_source_type_change_label_vectors,
    long_text_is_truncated_and_reported,
    rejects_bad_input_with_one_error_shape,
    api_keys_authenticate_and_revoke,
    health_readiness_request_ids_and_graceful_shutdown,
);

const TICKET_LABELS: [&str; 4] = [
    "billing",
    "technical_issue",
    "feature_request",
    "account_access",
];

fn scores_of(result: &Value) -> Vec<(String, f64)> {
    result["scores"]
        .as_array()
        .expect("scores array")
        .iter()
        .map(|s| {
            (
                s["label"].as_str().unwrap().to_string(),
                s["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

async fn classifies_single_text(backend: Backend) {
    let server = Server::start(backend).await;
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"text": "I was charged twice for my subscription this month, please refund", "labels": TICKET_LABELS}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["label"], "billing", "{body}");
    assert_eq!(body["mode"], "single");
    assert_eq!(body["model"], "all-minilm-l6-v2-int8-cpu");
    assert_eq!(body["labels"], json!(["billing"]));
    assert_eq!(body["truncated"], false);
    assert!(body["tokens"].as_u64().unwrap() > 10);
    assert!(body["latency_ms"].as_f64().unwrap() > 0.0);

    let scores = scores_of(&body);
    assert_eq!(scores.len(), 4, "every label is scored");
    let total: f64 = scores.iter().map(|(_, s)| s).sum();
    assert!(
        (total - 1.0).abs() < 1e-4,
        "single-mode scores sum to 1, got {total}"
    );
    assert!(
        scores.windows(2).all(|w| w[0].1 >= w[1].1),
        "scores sorted: {scores:?}"
    );
    assert_eq!(body["confidence"].as_f64().unwrap(), scores[0].1);

    let (status, body) = server
        .post("/v1/classify", &json!({"text": "I cannot log in, password reset email never arrives", "labels": TICKET_LABELS}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["label"], "account_access", "{body}");
}

async fn classifies_many_texts_in_order(backend: Backend) {
    let server = Server::start(backend).await;
    let texts = [
        "The app crashes every time I open the settings page",
        "Could you add an export to CSV option?",
        "Why was my card charged a late fee on the invoice?",
        "My account is locked after too many login attempts",
    ];
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"texts": texts, "labels": TICKET_LABELS}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    let labels: Vec<&str> = results
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "technical_issue",
            "feature_request",
            "billing",
            "account_access"
        ]
    );
    let total: u64 = results.iter().map(|r| r["tokens"].as_u64().unwrap()).sum();
    assert_eq!(body["tokens"].as_u64().unwrap(), total);
    assert_eq!(body["mode"], "single");

    // The same text alone or among others gets the same scores (batching is invisible).
    let (_, alone) = server
        .post(
            "/v1/classify",
            &json!({"text": texts[2], "labels": TICKET_LABELS}),
        )
        .await;
    for ((a, x), (b, y)) in scores_of(&alone).iter().zip(scores_of(&results[2])) {
        assert_eq!(a, &b);
        assert!((x - y).abs() < 1e-4, "{a}: {x} vs {y}");
    }

    let sixty_four: Vec<String> = (0..64)
        .map(|i| format!("ticket number {i} about a refund"))
        .collect();
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"texts": sixty_four, "labels": ["billing", "other"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().unwrap().len(), 64);
}

async fn multi_mode_thresholds(backend: Backend) {
    let server = Server::start(backend).await;
    let text = "The invoice page crashes when I try to pay my bill";
    let labels = [
        "billing",
        "technical_issue",
        "feature_request",
        "account_access",
        "sports",
        "cooking",
    ];
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"text": text, "labels": labels, "mode": "multi"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "multi");
    let scores = scores_of(&body);
    let chosen: Vec<&str> = body["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = scores
        .iter()
        .filter(|(_, s)| *s >= 0.3)
        .map(|(l, _)| l.as_str())
        .collect();
    assert_eq!(chosen, expected, "default threshold 0.3: {scores:?}");
    assert!(chosen.contains(&"billing"), "{scores:?}");
    assert!(!chosen.contains(&"cooking"), "{scores:?}");

    // Other labels count only through the best one: the top label keeps its
    // probability when asked alongside one unrelated label instead of five.
    let top = body["label"].as_str().unwrap();
    let (_, few) = server
        .post(
            "/v1/classify",
            &json!({"text": text, "labels": [top, "cooking"], "mode": "multi"}),
        )
        .await;
    let score = |s: &[(String, f64)], label: &str| s.iter().find(|(l, _)| l == label).unwrap().1;
    assert!((score(&scores_of(&few), top) - score(&scores, top)).abs() < 1e-5);

    let (_, all) = server
        .post(
            "/v1/classify",
            &json!({"text": text, "labels": labels, "mode": "multi", "threshold": 0.0}),
        )
        .await;
    assert_eq!(all["labels"].as_array().unwrap().len(), labels.len());
    let (_, none) = server
        .post(
            "/v1/classify",
            &json!({"text": "hello", "labels": labels, "mode": "multi", "threshold": 1.0}),
        )
        .await;
    assert_eq!(
        none["labels"],
        json!([]),
        "none may pass the threshold: {none}"
    );
    assert!(none["label"].is_string(), "the top label is still named");
}

async fn descriptions_examples_and_source_type_change_label_vectors(backend: Backend) {
    let server = Server::start(backend).await;
    let text = "Our quarterly revenue grew 12 percent";
    // Opaque label names carry no meaning; only descriptions can tell them apart.
    let bare_request = json!({"text": text, "labels": ["lbl_a", "lbl_b"]});
    let described_request = json!({"text": text, "labels": ["lbl_a", "lbl_b"],
        "descriptions": {"lbl_a": "sports results and matches", "lbl_b": "company finance and earnings"}});
    let (_, bare) = server.post("/v1/classify", &bare_request).await;
    let (status, described) = server.post("/v1/classify", &described_request).await;
    assert_eq!(status, 200, "{described}");
    assert_eq!(described["label"], "lbl_b", "{described}");
    assert_ne!(scores_of(&bare), scores_of(&described));

    let with_examples = json!({"text": text, "labels": ["lbl_a", "lbl_b"],
        "examples": {"lbl_a": ["The match ended 2-1", "A new record in the marathon"],
                     "lbl_b": ["Profits fell last year", "The company reported strong earnings"]}});
    let (status, body) = server.post("/v1/classify", &with_examples).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["label"], "lbl_b", "{body}");

    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"text": text, "labels": ["finance", "sports"], "source_type": "news headline"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["label"], "finance");

    // Sent again, each set comes whole from the set cache: the same answer as when its
    // vectors were first prepared, and not another set's.
    for (request, first) in [(&bare_request, &bare), (&described_request, &described)] {
        let (status, again) = server.post("/v1/classify", request).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(scores_of(&again), scores_of(first), "{request}");
    }
}

async fn long_text_is_truncated_and_reported(backend: Backend) {
    let server = Server::start(backend).await;
    let long = "My payment failed again and I need help with the invoice. ".repeat(60);
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"text": long, "labels": TICKET_LABELS}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["truncated"], true);
    assert_eq!(body["tokens"], 256, "cut at the manifest's max_tokens");
}

async fn expect_error(server: &Server, body: Value, status: u16, kind: &str, param: Option<&str>) {
    let (got, answer) = server.post("/v1/classify", &body).await;
    assert_eq!(got, status, "{body} -> {answer}");
    assert_eq!(answer["error"]["type"], kind, "{body} -> {answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(
        answer["error"]["param"].as_str(),
        param,
        "{body} -> {answer}"
    );
}

async fn rejects_bad_input_with_one_error_shape(backend: Backend) {
    let server = Server::start(backend).await;
    let labels = json!(["a", "b"]);
    let cases = [
        (
            json!({"labels": labels}),
            422,
            "validation_error",
            Some("text"),
        ),
        (
            json!({"text": "  \n ", "labels": labels}),
            422,
            "validation_error",
            Some("text"),
        ),
        (
            json!({"texts": [], "labels": labels}),
            422,
            "validation_error",
            Some("texts"),
        ),
        (
            json!({"texts": ["ok", " "], "labels": labels}),
            422,
            "validation_error",
            Some("texts[1]"),
        ),
        (
            json!({"text": "x", "texts": ["y"], "labels": labels}),
            400,
            "invalid_request",
            Some("texts"),
        ),
        (
            json!({"text": "x"}),
            422,
            "validation_error",
            Some("labels"),
        ),
        (
            json!({"text": "x", "labels": []}),
            422,
            "validation_error",
            Some("labels"),
        ),
        (
            json!({"text": "x", "labels": ["a", " a"]}),
            422,
            "validation_error",
            Some("labels[1]"),
        ),
        (
            json!({"text": "x", "labels": ["a", ""]}),
            422,
            "validation_error",
            Some("labels[1]"),
        ),
        (
            json!({"text": "x", "labels": ["a", "y".repeat(101)]}),
            422,
            "validation_error",
            Some("labels[1]"),
        ),
        (
            json!({"text": "x", "labels": labels, "descriptions": {"c": "?"}}),
            422,
            "validation_error",
            Some("descriptions.c"),
        ),
        (
            json!({"text": "x", "labels": labels, "examples": {"c": ["?"]}}),
            422,
            "validation_error",
            Some("examples.c"),
        ),
        (
            json!({"text": "x", "labels": labels, "threshold": 1.5}),
            422,
            "validation_error",
            Some("threshold"),
        ),
        (
            json!({"text": "x", "labels": labels, "threshold": -0.1}),
            422,
            "validation_error",
            Some("threshold"),
        ),
        (
            json!({"text": "x", "labels": labels, "mode": "several"}),
            400,
            "invalid_request",
            Some("mode"),
        ),
        (
            json!({"text": "x", "labels": labels, "colour": "red"}),
            400,
            "invalid_request",
            Some("colour"),
        ),
        (
            json!({"text": "x", "labels": "a,b"}),
            400,
            "invalid_request",
            Some("labels"),
        ),
        (
            json!({"text": 42, "labels": labels}),
            400,
            "invalid_request",
            Some("text"),
        ),
        (
            json!({"text": "x", "labels": labels, "threshold": "high"}),
            400,
            "invalid_request",
            Some("threshold"),
        ),
        (
            json!({"text": "x", "labels": labels, "classifier": "router"}),
            400,
            "invalid_request",
            Some("classifier"),
        ),
        (
            json!({"text": "x", "classifier": "router"}),
            404,
            "not_found",
            Some("classifier"),
        ),
        (json!(["not", "an", "object"]), 400, "invalid_request", None),
    ];
    for (body, status, kind, param) in cases {
        expect_error(&server, body, status, kind, param).await;
    }
    let many: Vec<String> = (0..201).map(|i| format!("label {i}")).collect();
    expect_error(
        &server,
        json!({"text": "x", "labels": many}),
        422,
        "validation_error",
        Some("labels"),
    )
    .await;
    let texts: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    expect_error(
        &server,
        json!({"texts": texts, "labels": labels}),
        422,
        "validation_error",
        Some("texts"),
    )
    .await;

    // Bodies that are not JSON at all.
    let raw = |body: &'static str, content_type: &'static str| {
        server
            .client
            .post(server.url("/v1/classify"))
            .bearer_auth(&server.key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let resp = raw("text=hello", "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "unsupported_media_type"
    );
    let resp = raw("{\"text\": \"x\", ", "application/json").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request"
    );

    // Over the body limit: 413 in the same shape. A small limit keeps the body inside
    // socket buffers, so the client finishes sending before the server answers.
    let small = Server::start_with(
        &common::fresh_database(backend).await,
        &["--max-body-bytes", "2048"],
    )
    .await;
    let (status, body) = small
        .post(
            "/v1/classify",
            &json!({"text": "word ".repeat(1000), "labels": labels}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["type"], "payload_too_large");
    let (status, _) = small
        .post(
            "/v1/classify",
            &json!({"text": "word ".repeat(300), "labels": labels}),
        )
        .await;
    assert_eq!(status, 200, "under the limit is fine");

    // The server is still healthy after all of that.
    let (status, _) = server
        .post(
            "/v1/classify",
            &json!({"text": "still fine", "labels": labels}),
        )
        .await;
    assert_eq!(status, 200);
}

async fn api_keys_authenticate_and_revoke(backend: Backend) {
    let server = Server::start(backend).await;
    let body = json!({"text": "hello", "labels": ["a", "b"]});
    assert!(server.key.starts_with("zs_"), "first serve prints a key");

    let resp = server
        .client
        .post(server.url("/v1/classify"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    let (status, _) = server
        .post_as("zs_not_a_real_key", "/v1/classify", &body)
        .await;
    assert_eq!(status, 401);

    let created = server.cli(&["keys", "create", "--account", "acme"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert_eq!(created["account"]["name"], "acme");
    let (status, _) = server.post_as(secret, "/v1/classify", &body).await;
    assert_eq!(status, 200);

    let listed = server.cli(&["keys", "list", "--account", "acme"]);
    let listed_text = String::from_utf8(listed.stdout).unwrap();
    assert!(!listed_text.contains(secret), "secrets are never listed");
    let listed: Value = serde_json::from_str(&listed_text).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);

    let revoked = server.cli(&["keys", "revoke", created["id"].as_str().unwrap()]);
    assert!(revoked.status.success());
    let (status, _) = server.post_as(secret, "/v1/classify", &body).await;
    assert_eq!(status, 401, "a revoked key stops working at once");
    let (status, _) = server.post("/v1/classify", &body).await;
    assert_eq!(status, 200, "other keys keep working");
    let again = server.cli(&["keys", "revoke", created["id"].as_str().unwrap()]);
    assert!(!again.status.success(), "revoking twice is an error");
}

async fn health_readiness_request_ids_and_graceful_shutdown(backend: Backend) {
    let server = Server::start(backend).await;
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    let ready: Value = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["model"], "all-minilm-l6-v2-int8-cpu");

    let traced = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.headers()["x-request-id"], "trace-me-123");

    let missing = server
        .client
        .get(server.url("/v1/nope"))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["type"],
        "not_found"
    );
    let wrong_method = server
        .client
        .get(server.url("/v1/classify"))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);

    // A restart on the same database creates no second default account.
    let database_url = server.database_url.clone();
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM ends the server cleanly: {status:?}"
    );
    let again = Server::start_with(&database_url, &[]).await;
    assert!(
        again.key.is_empty(),
        "no new key is printed when accounts exist"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_share_engine_batches_invisibly() {
    let server = Server::start(Backend::Sqlite).await;
    let texts: Vec<String> = (0..32)
        .map(|i| {
            format!(
                "{} (case {i})",
                ["refund my payment", "the app crashes"][i % 2]
            )
        })
        .collect();
    let mut alone = Vec::new();
    for text in &texts {
        let (status, body) = server
            .post(
                "/v1/classify",
                &json!({"text": text, "labels": TICKET_LABELS}),
            )
            .await;
        assert_eq!(status, 200);
        alone.push(body);
    }
    let bodies: Vec<Value> = texts
        .iter()
        .map(|text| json!({"text": text, "labels": TICKET_LABELS}))
        .collect();
    let together =
        futures_util::future::join_all(bodies.iter().map(|body| server.post("/v1/classify", body)))
            .await;
    for ((status, body), single) in together.iter().zip(&alone) {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["label"], single["label"]);
        assert_eq!(body["tokens"], single["tokens"]);
        for ((a, x), (b, y)) in scores_of(body).iter().zip(scores_of(single)) {
            assert_eq!(a, &b);
            assert!((x - y).abs() < 1e-4, "{a}: {x} batched vs {y} alone");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_inference_queue_answers_503_not_500() {
    let database_url = common::fresh_database(Backend::Sqlite).await;
    let server = Server::start_with(
        &database_url,
        &["--max-queued-requests", "1", "--max-run-texts", "64"],
    )
    .await;
    let texts: Vec<String> = (0..64)
        .map(|i| format!("a fairly long support ticket number {i} about billing"))
        .collect();
    let body = json!({"texts": texts, "labels": TICKET_LABELS});
    let answers =
        futures_util::future::join_all((0..24).map(|_| server.post("/v1/classify", &body))).await;
    let overloaded = answers.iter().filter(|(status, _)| *status == 503).count();
    assert!(
        overloaded > 0,
        "24 concurrent 64-text calls must overflow a queue of 1"
    );
    for (status, answer) in &answers {
        match status {
            200 => assert_eq!(answer["results"].as_array().unwrap().len(), 64),
            503 => assert_eq!(answer["error"]["type"], "overloaded", "{answer}"),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    let (status, _) = server
        .post(
            "/v1/classify",
            &json!({"text": "still fine", "labels": TICKET_LABELS}),
        )
        .await;
    assert_eq!(status, 200, "the server recovers");
}

/// `GET /v1/models` lists the loaded model with its limits, behind the API key.
#[tokio::test(flavor = "multi_thread")]
async fn models_lists_the_loaded_model() {
    let server = Server::start(Backend::Sqlite).await;
    let (status, models) = server.call(reqwest::Method::GET, "/v1/models", None).await;
    assert_eq!(status, 200, "{models}");
    let model = &models["data"][0];
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    assert_eq!(model["name"], "all-minilm-l6-v2-int8-cpu");
    assert_eq!(model["max_tokens"], 256);
    assert_eq!(model["dimensions"], 384);
    assert_eq!(model["text_prefix"], "");
    assert_eq!(model["pooling"], "mean");
    let (_, classified) = server
        .post(
            "/v1/classify",
            &json!({"text": "hello", "labels": ["a", "b"]}),
        )
        .await;
    assert_eq!(
        classified["model"], model["name"],
        "the name responses report"
    );
    let (status, _) = server
        .call_as("zs_wrong", reqwest::Method::GET, "/v1/models", None)
        .await;
    assert_eq!(status, 401);
}
