//! `Idempotency-Key` on `POST /v1/batch` and `POST /v1/classifiers`, against the real
//! binary on SQLite and Postgres.

use crate::common::{Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

on_both_databases!(
    retries_replay_the_first_answer,
    twenty_racing_posts_make_one_job,
    classifier_creation_is_idempotent_too
);

/// POSTs `body` to `path` with `key`; status, `Idempotent-Replayed` and JSON body.
async fn post_with_key(
    server: &Server,
    api_key: &str,
    path: &str,
    idempotency_key: &str,
    body: &Value,
) -> (u16, bool, Value) {
    let resp = server
        .client
        .post(server.url(path))
        .bearer_auth(api_key)
        .header("Idempotency-Key", idempotency_key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, replayed, resp.json().await.unwrap_or(Value::Null))
}

async fn job_count(server: &Server, api_key: &str) -> usize {
    let (status, listed) = server
        .call_as(api_key, Method::GET, "/v1/batch?limit=100", None)
        .await;
    assert_eq!(status, 200);
    listed["data"].as_array().unwrap().len()
}

async fn retries_replay_the_first_answer(backend: Backend) {
    let server = Server::start(backend).await;
    let key = server.key.clone();
    let body = json!({"labels": ["billing", "shipping"], "metadata": {"run": "1"}});

    let (status, replayed, first) =
        post_with_key(&server, &key, "/v1/batch", "retry-1", &body).await;
    assert_eq!(status, 201, "{first}");
    assert!(!replayed);
    let (status, replayed, again) =
        post_with_key(&server, &key, "/v1/batch", "retry-1", &body).await;
    assert_eq!(status, 201, "{again}");
    assert!(replayed, "a retry is marked as replayed");
    assert_eq!(again, first, "the first answer, byte for byte the same job");
    assert_eq!(job_count(&server, &key).await, 1);

    // The same key with another body is refused, and says why.
    let other = json!({"labels": ["billing", "refund"]});
    let (status, _, refused) = post_with_key(&server, &key, "/v1/batch", "retry-1", &other).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["type"], "validation_error");
    assert_eq!(refused["error"]["param"], "Idempotency-Key");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("different request"));

    // Keys are per account: another account's same key is a new request.
    let created = server.cli(&["keys", "create", "--account", "other"]);
    let other_key = serde_json::from_slice::<Value>(&created.stdout).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, replayed, theirs) =
        post_with_key(&server, &other_key, "/v1/batch", "retry-1", &body).await;
    assert_eq!(status, 201);
    assert!(!replayed);
    assert_ne!(theirs["job_id"], first["job_id"]);

    // A failed request is not remembered: the key can be retried, corrected.
    let bad = json!({"labels": ["billing", "billing"]});
    let (status, _, _) = post_with_key(&server, &key, "/v1/batch", "retry-2", &bad).await;
    assert_eq!(status, 422);
    let good = json!({"labels": ["billing", "shipping"]});
    let (status, replayed, fixed) =
        post_with_key(&server, &key, "/v1/batch", "retry-2", &good).await;
    assert_eq!(status, 201, "{fixed}");
    assert!(!replayed);
    assert_eq!(job_count(&server, &key).await, 2);

    // Malformed keys are a 400 naming the header; without a key nothing changes.
    let long = "k".repeat(256);
    for bad_key in [long.as_str(), "has space"] {
        let (status, _, answer) = post_with_key(&server, &key, "/v1/batch", bad_key, &body).await;
        assert_eq!(status, 400, "{bad_key:?}: {answer}");
        assert_eq!(answer["error"]["param"], "Idempotency-Key");
    }
    for _ in 0..2 {
        let (status, _) = server.post("/v1/batch", &body).await;
        assert_eq!(status, 201);
    }
    assert_eq!(job_count(&server, &key).await, 4);
}

async fn twenty_racing_posts_make_one_job(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(backend).await);
    let body = json!({"labels": ["billing", "shipping", "technical"]});
    let posts = (0..20).map(|_| {
        let (server, body) = (server.clone(), body.clone());
        tokio::spawn(async move {
            post_with_key(&server, &server.key, "/v1/batch", "race", &body).await
        })
    });
    let answers: Vec<(u16, bool, Value)> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    let ids: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|(status, _, body)| {
            assert_eq!(*status, 201, "{body}");
            body["job_id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the same job: {ids:?}");
    assert_eq!(
        answers.iter().filter(|(_, replayed, _)| !replayed).count(),
        1,
        "one request ran, the others were replayed"
    );
    assert_eq!(job_count(&server, &server.key).await, 1);
}

async fn classifier_creation_is_idempotent_too(backend: Backend) {
    let server = Server::start(backend).await;
    let key = server.key.clone();
    let body = json!({"name": "router", "labels": ["billing", "shipping"]});
    let (status, replayed, first) =
        post_with_key(&server, &key, "/v1/classifiers", "save-router", &body).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    // Without the key a second create is a conflict; with it, the first answer.
    let (status, _) = server.post("/v1/classifiers", &body).await;
    assert_eq!(status, 409);
    let (status, replayed, again) =
        post_with_key(&server, &key, "/v1/classifiers", "save-router", &body).await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, first);
    let (_, listed) = server.call(Method::GET, "/v1/classifiers", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["version"], 1);
    // The key belongs to that request: on another endpoint it is another request.
    let (status, _, refused) = post_with_key(
        &server,
        &key,
        "/v1/batch",
        "save-router",
        &json!({"labels": ["a", "b"]}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
}
