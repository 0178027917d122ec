//! Saved, versioned classifiers over real HTTP with the real model, on SQLite and on
//! Postgres, plus the `zeroshot classifiers` CLI.

use crate::common::{self, Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

on_both_databases!(
    create_version_pin_and_override,
    validation_clashes_and_other_accounts,
    delete_refused_while_a_batch_job_uses_it,
    pinned_batch_job_keeps_its_version,
);

const TEXT: &str = "I was charged twice for my subscription this month";

fn v1() -> Value {
    json!({"name": "ticket-router", "description": "support triage",
           "labels": ["billing", "technical_issue"], "mode": "single"})
}

fn v2() -> Value {
    json!({"labels": ["refund_request", "bug_report", "praise"],
           "descriptions": {"refund_request": "the customer wants money back"}, "mode": "multi", "threshold": 0.2})
}

async fn create_version_pin_and_override(backend: Backend) {
    let server = Server::start(backend).await;
    let (status, created) = server.post("/v1/classifiers", &v1()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], 1);
    assert_eq!(created["reference"], "ticket-router@v1");
    let (status, updated) = server
        .call(Method::PUT, "/v1/classifiers/ticket-router", Some(&v2()))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["version"], 2);
    assert_eq!(
        updated["descriptions"]["refund_request"],
        "the customer wants money back"
    );

    let (_, latest) = server
        .call(Method::GET, "/v1/classifiers/ticket-router", None)
        .await;
    assert_eq!(latest["version"], 2);
    for reference in ["ticket-router@v1", "ticket-router@1"] {
        let (status, old) = server
            .call(Method::GET, &format!("/v1/classifiers/{reference}"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            old["labels"],
            json!(["billing", "technical_issue"]),
            "old versions stay"
        );
    }
    let (_, listed) = server.call(Method::GET, "/v1/classifiers", None).await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "latest version of each"
    );
    assert_eq!(listed["data"][0]["version"], 2);

    // Classify by name (latest), pinned, and with overrides.
    let (status, latest) = server
        .post(
            "/v1/classify",
            &json!({"text": TEXT, "classifier": "ticket-router"}),
        )
        .await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["classifier"], "ticket-router@v2");
    assert_eq!(latest["mode"], "multi");
    assert_eq!(latest["label"], "refund_request", "{latest}");
    assert_eq!(latest["scores"].as_array().unwrap().len(), 3);

    let (_, pinned) = server
        .post(
            "/v1/classify",
            &json!({"text": TEXT, "classifier": "ticket-router@v1"}),
        )
        .await;
    assert_eq!(pinned["classifier"], "ticket-router@v1");
    assert_eq!(pinned["label"], "billing");
    assert_eq!(pinned["mode"], "single");

    // The saved vectors score exactly like the same labels sent inline.
    let (_, inline) = server
        .post(
            "/v1/classify",
            &json!({"text": TEXT, "labels": ["billing", "technical_issue"]}),
        )
        .await;
    assert_eq!(pinned["scores"], inline["scores"]);

    let (_, overridden) = server
        .post("/v1/classify", &json!({"texts": [TEXT], "classifier": "ticket-router@v1", "mode": "multi", "threshold": 0.0}))
        .await;
    assert_eq!(overridden["mode"], "multi");
    assert_eq!(
        overridden["results"][0]["labels"].as_array().unwrap().len(),
        2,
        "threshold 0 returns all"
    );
    assert_eq!(overridden["classifier"], "ticket-router@v1");
}

async fn validation_clashes_and_other_accounts(backend: Backend) {
    let server = Server::start(backend).await;
    assert_eq!(server.post("/v1/classifiers", &v1()).await.0, 201);
    let (status, clash) = server.post("/v1/classifiers", &v1()).await;
    assert_eq!(status, 409, "{clash}");
    assert_eq!(clash["error"]["type"], "conflict");

    let cases = [
        (
            json!({"name": "Bad Name", "labels": ["a"]}),
            422,
            Some("name"),
        ),
        (
            json!({"name": "x".repeat(65), "labels": ["a"]}),
            422,
            Some("name"),
        ),
        (json!({"labels": ["a"]}), 422, Some("name")),
        (json!({"name": "ok"}), 422, Some("labels")),
        (json!({"name": "ok", "labels": null}), 422, Some("labels")),
        (
            json!({"name": "ok", "labels": ["a"], "description": "a\u{0}b"}),
            422,
            Some("description"),
        ),
        (
            json!({"name": "ok", "labels": ["a"], "classifier": "other"}),
            400,
            Some("classifier"),
        ),
        (json!({"name": "ok", "labels": []}), 422, Some("labels")),
        (
            json!({"name": "ok", "labels": ["a", "a"]}),
            422,
            Some("labels[1]"),
        ),
        (
            json!({"name": "ok", "labels": ["a"], "threshold": 7}),
            422,
            Some("threshold"),
        ),
        (
            json!({"name": "ok", "labels": ["a"], "descriptions": {"b": "?"}}),
            422,
            Some("descriptions.b"),
        ),
        (
            json!({"name": "ok", "labels": ["a"], "colour": "red"}),
            400,
            Some("colour"),
        ),
    ];
    for (body, status, param) in cases {
        let (got, answer) = server.post("/v1/classifiers", &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(
            answer["error"]["param"].as_str(),
            param,
            "{body} -> {answer}"
        );
    }
    let (status, _) = server
        .call(Method::PUT, "/v1/classifiers/never-saved", Some(&v2()))
        .await;
    assert_eq!(status, 404);
    let (status, answer) = server
        .call(
            Method::PUT,
            "/v1/classifiers/ticket-router",
            Some(&json!({"name": "other", "labels": ["a"]})),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["param"].as_str()),
        (422, Some("name"))
    );

    // Request-level errors around classifier references.
    for (body, status, param) in [
        (
            json!({"text": TEXT, "classifier": "ticket-router", "labels": ["a"]}),
            400,
            "classifier",
        ),
        (
            json!({"text": TEXT, "classifier": "ticket-router", "descriptions": {"billing": "x"}}),
            400,
            "descriptions",
        ),
        (
            json!({"text": TEXT, "classifier": "nope"}),
            404,
            "classifier",
        ),
        (
            json!({"text": TEXT, "classifier": "ticket-router@v9"}),
            404,
            "classifier",
        ),
        (
            json!({"text": TEXT, "classifier": "ticket-router@vx"}),
            422,
            "classifier",
        ),
        (
            json!({"text": TEXT, "classifier": "ticket-router", "threshold": 3}),
            422,
            "threshold",
        ),
    ] {
        let (got, answer) = server.post("/v1/classify", &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(answer["error"]["param"], param, "{body} -> {answer}");
    }

    // Another account sees none of it.
    let other = server.cli(&["keys", "create", "--account", "other"]);
    let other: Value = serde_json::from_slice(&other.stdout).unwrap();
    let key = other["secret"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, "/v1/classifiers/ticket-router"),
        (Method::GET, "/v1/classifiers/ticket-router@v1"),
        (Method::DELETE, "/v1/classifiers/ticket-router"),
    ] {
        assert_eq!(
            server.call_as(key, method, path, None).await.0,
            404,
            "{path}"
        );
    }
    assert_eq!(
        server
            .call_as(
                key,
                Method::PUT,
                "/v1/classifiers/ticket-router",
                Some(&v2())
            )
            .await
            .0,
        404
    );
    let (status, _) = server
        .post_as(
            key,
            "/v1/classify",
            &json!({"text": TEXT, "classifier": "ticket-router"}),
        )
        .await;
    assert_eq!(status, 404);
    let (_, listed) = server
        .call_as(key, Method::GET, "/v1/classifiers", None)
        .await;
    assert_eq!(listed["data"], json!([]));
    // The same name is free for the other account.
    assert_eq!(server.post_as(key, "/v1/classifiers", &v1()).await.0, 201);
}

async fn delete_refused_while_a_batch_job_uses_it(backend: Backend) {
    let server = Server::start(backend).await;
    assert_eq!(server.post("/v1/classifiers", &v1()).await.0, 201);
    let (status, job) = server
        .post("/v1/batch", &json!({"classifier": "ticket-router"}))
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["classifier"], "ticket-router@v1");
    let (status, refused) = server
        .call(Method::DELETE, "/v1/classifiers/ticket-router", None)
        .await;
    assert_eq!(status, 409, "pending job uses it: {refused}");

    let id = job["job_id"].as_str().unwrap();
    assert_eq!(
        server
            .call(Method::DELETE, &format!("/v1/batch/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .call(Method::DELETE, "/v1/classifiers/ticket-router", None)
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .call(Method::GET, "/v1/classifiers/ticket-router@v1", None)
            .await
            .0,
        404,
        "every version"
    );
    assert_eq!(
        server
            .call(Method::DELETE, "/v1/classifiers/ticket-router", None)
            .await
            .0,
        404
    );
}

async fn pinned_batch_job_keeps_its_version(backend: Backend) {
    let server = Server::start(backend).await;
    assert_eq!(server.post("/v1/classifiers", &v1()).await.0, 201);
    let (_, job) = server
        .post("/v1/batch", &json!({"classifier": "ticket-router"}))
        .await;
    let id = job["job_id"].as_str().unwrap().to_string();
    // v2 is saved after the job was created: the job stays on v1.
    assert_eq!(
        server
            .call(Method::PUT, "/v1/classifiers/ticket-router", Some(&v2()))
            .await
            .0,
        200
    );

    let lines = format!(
        "{}\n{}\n",
        json!({"text": TEXT}),
        json!({"text": "The app crashes on start"})
    );
    assert_eq!(server.upload(&job, lines.into_bytes()).await / 100, 2);
    assert_eq!(
        server
            .call(Method::POST, &format!("/v1/batch/{id}/start"), None)
            .await
            .0,
        202
    );
    let done = server
        .wait_for_job(&id, "completed", std::time::Duration::from_secs(60))
        .await;
    assert_eq!(done["classifier"], "ticket-router@v1");
    assert_eq!(done["labels"], json!(["billing", "technical_issue"]));
    let rows = server.download_results(&id).await;
    assert_eq!(rows[0]["label"], "billing");
    assert_eq!(rows[1]["label"], "technical_issue");
    assert_eq!(
        rows[0]["scores"].as_object().unwrap().len(),
        2,
        "v1's two labels, not v2's three"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_manages_classifiers_from_json_and_yaml() {
    let server = Server::start(Backend::Sqlite).await;
    let dir = common::temp_dir();
    let json_file = dir.join("router.json");
    std::fs::write(&json_file, v1().to_string()).unwrap();
    let yaml_file = dir.join("router-v2.yaml");
    std::fs::write(
        &yaml_file,
        "labels: [refund_request, bug_report]\ndescriptions:\n  refund_request: the customer wants money back\nmode: multi\n",
    )
    .unwrap();
    let run = |args: &[&str]| -> Value {
        let output = server.cli(args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let created = run(&["classifiers", "create", json_file.to_str().unwrap()]);
    assert_eq!(created["version"], 1);
    let updated = run(&[
        "classifiers",
        "update",
        "ticket-router",
        yaml_file.to_str().unwrap(),
    ]);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["mode"], "multi");
    assert_eq!(run(&["classifiers", "list"])[0]["version"], 2);
    assert_eq!(
        run(&["classifiers", "show", "ticket-router@v1"])["labels"],
        json!(["billing", "technical_issue"])
    );

    // What the CLI saved, the API serves.
    let (_, answer) = server
        .post(
            "/v1/classify",
            &json!({"text": TEXT, "classifier": "ticket-router"}),
        )
        .await;
    assert_eq!(answer["classifier"], "ticket-router@v2");

    let clash = server.cli(&["classifiers", "create", json_file.to_str().unwrap()]);
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("already exists"));
    run(&["classifiers", "delete", "ticket-router"]);
    assert!(!server
        .cli(&["classifiers", "show", "ticket-router"])
        .status
        .success());
}
