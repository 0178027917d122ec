//! Saved classifiers that learn, over real HTTP with the real model, on SQLite and on
//! Postgres: adapted to unlabeled texts and to a finished batch job's, taught
//! corrections, every lesson a new immutable version that `/v1/classify` and batch
//! jobs score with; the guard rails' refusals, and other accounts kept out.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

use zeroshot::cli::eval::{self, Example};

on_both_databases!(
    adapt_to_texts_then_classify_and_teach,
    refusals_and_other_accounts,
    adapt_to_a_finished_job_and_save_adapted,
    a_correction_after_a_restart_embeds_only_its_new_text,
);

/// The banking dev set's texts and labels (the sets `scripts/setup.py --datasets`
/// fetches; `scripts/test.sh` does).
fn banking() -> Vec<Example> {
    let dir = std::env::var("ZEROSHOT_DATASETS_DIR")
        .expect("ZEROSHOT_DATASETS_DIR (run scripts/test.sh)");
    eval::read_tsv(&PathBuf::from(dir).join("banking").join("dev.tsv")).expect("banking dev")
}

fn label_names(data: &[Example]) -> Vec<String> {
    let mut names: Vec<String> = data.iter().map(|e| e.label.clone()).collect();
    names.sort();
    names.dedup();
    names
}

fn texts(data: &[Example], range: std::ops::Range<usize>) -> Vec<&str> {
    data[range].iter().map(|e| e.text.as_str()).collect()
}

async fn create(server: &Server, data: &[Example]) {
    let (status, created) = server
        .post(
            "/v1/classifiers",
            &json!({"name": "bank", "labels": label_names(data)}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["origin"], json!({"kind": "saved"}));
    assert!(created.get("adapted_from").is_none(), "{created}");
}

async fn classify(server: &Server, classifier: &str, text: &str) -> Value {
    let (status, answer) = server
        .post(
            "/v1/classify",
            &json!({"text": text, "classifier": classifier}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn adapt_to_texts_then_classify_and_teach(backend: Backend) {
    let server = Server::start(backend).await;
    let data = banking();
    create(&server, &data).await;
    let (status, adapted) = server
        .post(
            "/v1/classifiers/bank/adapt",
            &json!({"texts": texts(&data, 0..600)}),
        )
        .await;
    assert_eq!(status, 201, "{adapted}");
    assert_eq!(adapted["version"], 2);
    assert_eq!(
        adapted["origin"],
        json!({"kind": "adapted", "from_version": 1})
    );
    let from = &adapted["adapted_from"];
    assert_eq!(from["texts"], 600);
    assert_eq!(from["adaptation"]["applied"], true, "{from}");
    assert_eq!(from["adaptation"]["sample_lines"], 600);
    assert_eq!(from["adaptation"]["rounds"], 10);

    // /v1/classify scores with the adapted version; the pinned v1 as before.
    let text = &data[700].text;
    let latest = classify(&server, "bank", text).await;
    assert_eq!(latest["classifier"], "bank@v2");
    let plain = classify(&server, "bank@v1", text).await;
    let (_, inline) = server
        .post(
            "/v1/classify",
            &json!({"text": text, "labels": label_names(&data)}),
        )
        .await;
    assert_eq!(plain["scores"], inline["scores"], "v1 unchanged");
    assert_ne!(latest["scores"], plain["scores"], "v2 scores adapted");

    // A correction: the next version, still adapted, with the example.
    let wrong = data[700].label.clone();
    let (status, taught) = server
        .post(
            "/v1/classifiers/bank/examples",
            &json!({"examples": {wrong.clone(): [text]}}),
        )
        .await;
    assert_eq!(status, 200, "{taught}");
    assert_eq!(taught["version"], 3);
    assert_eq!(
        taught["origin"],
        json!({"kind": "taught", "from_version": 2, "added": 1, "removed": 0})
    );
    assert_eq!(
        taught["adapted_from"]["texts"], 600,
        "the adaptation is kept"
    );
    assert_eq!(taught["examples"][&wrong], json!([text]));
    let corrected = classify(&server, "bank", text).await;
    assert_eq!(corrected["classifier"], "bank@v3");
    assert_eq!(corrected["label"], wrong.as_str(), "{corrected}");

    // The same example again changes nothing: no new version.
    let (status, again) = server
        .post(
            "/v1/classifiers/bank/examples",
            &json!({"examples": {wrong.clone(): [text, text]}}),
        )
        .await;
    assert_eq!(
        (status, again["version"].clone()),
        (200, json!(3)),
        "{again}"
    );
    // Removing it saves v4 without it.
    let (_, removed) = server
        .post("/v1/classifiers/bank/examples", &json!({"remove": [text]}))
        .await;
    assert_eq!(removed["version"], 4);
    assert_eq!(removed["origin"]["removed"], 1);
    assert_eq!(removed["examples"], json!({}));

    let (status, versions) = server
        .call(Method::GET, "/v1/classifiers/bank/versions", None)
        .await;
    assert_eq!(status, 200, "{versions}");
    let kinds: Vec<&str> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["origin"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["taught", "taught", "adapted", "saved"]);
}

async fn refusals_and_other_accounts(backend: Backend) {
    let server = Server::start(backend).await;
    let data = banking();
    create(&server, &data).await;
    let cases = [
        // Too few texts: the guard rail refuses, nothing saved.
        (
            json!({"texts": texts(&data, 0..50)}),
            422,
            "texts",
            "too few lines",
        ),
        // Texts that all go to one label.
        (
            json!({"texts": vec!["I lost my card, please block it"; 300]}),
            422,
            "texts",
            "concentrate",
        ),
        (json!({"texts": ["ok", " "]}), 422, "texts[1]", "empty"),
        (json!({"texts": ["a\u{0}b"]}), 400, "texts[0]", "NUL"),
        (
            json!({"texts": [], "job_id": "x"}),
            400,
            "texts",
            "exactly one",
        ),
        (json!({"job_id": "batch_nope"}), 404, "", "no batch job"),
    ];
    for (body, status, param, message) in cases {
        let (got, answer) = server.post("/v1/classifiers/bank/adapt", &body).await;
        assert_eq!(got, status, "{answer}");
        let error = &answer["error"];
        assert_eq!(error["param"].as_str().unwrap_or(""), param, "{answer}");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{answer}"
        );
    }
    let (got, answer) = server
        .post(
            "/v1/classifiers/bank/examples",
            &json!({"examples": {"no_such_label": ["hello"]}}),
        )
        .await;
    assert_eq!(got, 400, "{answer}");
    assert_eq!(answer["error"]["param"], "examples.no_such_label");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no_such_label"));
    let (_, versions) = server
        .call(Method::GET, "/v1/classifiers/bank/versions", None)
        .await;
    assert_eq!(
        versions["data"].as_array().unwrap().len(),
        1,
        "nothing saved"
    );

    let other = server.cli(&["keys", "create", "--account", "other"]);
    let other: Value = serde_json::from_slice(&other.stdout).unwrap();
    let key = other["secret"].as_str().unwrap();
    let teach = json!({"examples": {"card_arrival": ["where is my card"]}});
    for (path, body) in [
        (
            "/v1/classifiers/bank/adapt",
            json!({"texts": texts(&data, 0..300)}),
        ),
        ("/v1/classifiers/bank/examples", teach),
    ] {
        assert_eq!(server.post_as(key, path, &body).await.0, 404, "{path}");
    }
    let (status, _) = server
        .call_as(key, Method::GET, "/v1/classifiers/bank/versions", None)
        .await;
    assert_eq!(status, 404);
}

/// A batch job's items: one banking text each.
fn items(data: &[Example], range: std::ops::Range<usize>) -> Value {
    json!(data[range]
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"id": i, "text": e.text}))
        .collect::<Vec<_>>())
}

async fn adapt_to_a_finished_job_and_save_adapted(backend: Backend) {
    let server = Server::start(backend).await;
    let data = banking();
    create(&server, &data).await;
    let (status, job) = server
        .post(
            "/v1/batch",
            &json!({"classifier": "bank", "items": items(&data, 0..400)}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let pending = job["job_id"].as_str().unwrap().to_string();
    let (status, answer) = server
        .post("/v1/classifiers/bank/adapt", &json!({"job_id": pending}))
        .await;
    assert_eq!(status, 409, "not completed: {answer}");
    server
        .call(Method::POST, &format!("/v1/batch/{pending}/start"), None)
        .await;
    let done = server
        .wait_for_job(&pending, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(done["adaptation"]["applied"], true, "{done}");
    let (status, adapted) = server
        .post("/v1/classifiers/bank/adapt", &json!({"job_id": pending}))
        .await;
    assert_eq!(status, 201, "{adapted}");
    assert_eq!(adapted["adapted_from"]["job_id"], pending.as_str());
    assert_eq!(adapted["adapted_from"]["adaptation"]["sample_lines"], 400);

    // A job with other labels cannot adapt this classifier.
    let labels: Vec<String> = label_names(&data).into_iter().take(10).collect();
    let other = server
        .start_job(&json!({"labels": labels}), crate::common::ticket_lines(300))
        .await;
    server
        .wait_for_job(&other, "completed", Duration::from_secs(120))
        .await;
    let (status, answer) = server
        .post("/v1/classifiers/bank/adapt", &json!({"job_id": other}))
        .await;
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (422, Some("job_id")),
        "{answer}"
    );

    // save_adapted: the job saves its fitted vectors as the next version, once.
    let (status, refused) = server
        .post(
            "/v1/batch",
            &json!({"labels": ["a", "b"], "save_adapted": true}),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["param"].as_str()),
        (422, Some("save_adapted"))
    );
    let (status, job) = server
        .post(
            "/v1/batch",
            &json!({"classifier": "bank", "save_adapted": true, "start": true, "items": items(&data, 400..800)}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["save_adapted"], true);
    let id = job["job_id"].as_str().unwrap();
    let done = server
        .wait_for_job(id, "completed", Duration::from_secs(120))
        .await;
    assert_eq!(done["saved_version"], "bank@v3", "{done}");
    let (_, latest) = server.call(Method::GET, "/v1/classifiers/bank", None).await;
    assert_eq!(latest["version"], 3);
    assert_eq!(latest["adapted_from"]["job_id"], id);
    // A job pinned to the adapted version that cannot adapt itself (too few lines)
    // scores with the version's saved adaptation, and says so.
    let small = server
        .start_job(
            &json!({"classifier": "bank@v3"}),
            crate::common::ticket_lines(20),
        )
        .await;
    let done = server
        .wait_for_job(&small, "completed", Duration::from_secs(60))
        .await;
    let reason = done["adaptation"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("too few lines") && reason.contains("bank@v3"),
        "{reason}"
    );
}

/// The classifier keeps its label sentences' and examples' vectors: after a restart, a
/// correction embeds only its new text (the tokens the model read, from `/metrics`),
/// and the taught version scores exactly as the same spec sent inline.
async fn a_correction_after_a_restart_embeds_only_its_new_text(backend: Backend) {
    let server = Server::start(backend).await;
    let data = banking();
    let labels: Vec<String> = label_names(&data).into_iter().take(40).collect();
    let mut examples: serde_json::Map<String, Value> = serde_json::Map::new();
    for label in &labels {
        let texts: Vec<&str> = data
            .iter()
            .filter(|e| &e.label == label)
            .map(|e| e.text.as_str())
            .take(5)
            .collect();
        examples.insert(label.clone(), json!(texts));
    }
    let body = json!({"name": "bank", "labels": labels, "examples": examples});
    assert_eq!(server.post("/v1/classifiers", &body).await.0, 201);
    let (database_url, key) = (server.database_url.clone(), server.key.clone());
    server.terminate();

    let mut restarted = Server::start_with(&database_url, &[]).await;
    restarted.key = key;
    let before = restarted.metric("zeroshot_tokens_embedded_total").await;
    let correction = "my new card still has not arrived after two weeks";
    examples[&labels[0]]
        .as_array_mut()
        .unwrap()
        .push(json!(correction));
    let (status, taught) = restarted
        .post(
            "/v1/classifiers/bank/examples",
            &json!({"examples": {labels[0].clone(): [correction]}}),
        )
        .await;
    assert_eq!(
        (status, taught["version"].clone()),
        (200, json!(2)),
        "{taught}"
    );
    let embedded = restarted.metric("zeroshot_tokens_embedded_total").await - before;
    assert!(
        (1.0..40.0).contains(&embedded),
        "{embedded} tokens embedded: only the correction's, not the 200 saved examples'"
    );
    let text = &data[900].text;
    let saved = classify(&restarted, "bank", text).await;
    let (_, inline) = restarted
        .post(
            "/v1/classify",
            &json!({"text": text, "labels": labels, "examples": examples}),
        )
        .await;
    assert_eq!(
        saved["scores"], inline["scores"],
        "the kept vectors are the model's own"
    );
}
