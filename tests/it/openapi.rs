//! The API description (`/openapi.json`), the docs page (`/docs`) and the contract
//! test: Schemathesis against the real server on SQLite and local storage.

use std::collections::BTreeSet;
use std::process::Command;

use crate::common::{self, fresh_database, Backend, Server};
use serde_json::Value;
use sha2::{Digest, Sha256};

async fn description(server: &Server) -> Value {
    let resp = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn description_covers_every_route_with_auth_limits_and_errors() {
    let server = Server::start(Backend::Sqlite).await;
    let api = description(&server).await;
    assert_eq!(api["openapi"], "3.1.0");
    assert_eq!(api["info"]["version"], env!("CARGO_PKG_VERSION"));

    let operations: BTreeSet<(String, String)> = api["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/v1/classify"),
        ("POST", "/v1/batch"),
        ("GET", "/v1/batch"),
        ("GET", "/v1/batch/{id}"),
        ("DELETE", "/v1/batch/{id}"),
        ("POST", "/v1/batch/{id}/start"),
        ("POST", "/v1/batch/{id}/cancel"),
        ("GET", "/v1/batch/{id}/results"),
        ("GET", "/v1/batch/{id}/webhooks"),
        ("GET", "/v1/webhooks/secret"),
        ("POST", "/v1/webhooks/secret"),
        ("GET", "/v1/models"),
        ("GET", "/v1/usage"),
        ("POST", "/v1/classifiers"),
        ("GET", "/v1/classifiers"),
        ("GET", "/v1/classifiers/{name}"),
        ("PUT", "/v1/classifiers/{name}"),
        ("DELETE", "/v1/classifiers/{name}"),
        ("GET", "/v1/classifiers/{name}/versions"),
        ("POST", "/v1/classifiers/{name}/adapt"),
        ("POST", "/v1/classifiers/{name}/examples"),
        ("POST", "/uploads"),
        ("GET", "/files/{key}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(operations, expected);

    // Each documented operation is really routed: an unrouted path would be the
    // fallback's 404 `no such endpoint`, an unrouted method a 405.
    for (method, path) in &operations {
        let concrete = path
            .replace("{id}", "batch_nonexistent")
            .replace("{name}", "nonexistent")
            .replace("{key}", "nonexistent");
        let resp = server
            .client
            .request(method.parse().unwrap(), server.url(&concrete))
            .bearer_auth(&server.key)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405 && body["error"]["message"] != "no such endpoint",
            "{method} {concrete}: {status} {body}"
        );
    }

    let mut ids = BTreeSet::new();
    for (path, item) in api["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status} has no description"
                );
            }
            let responses = &operation["responses"];
            if path.starts_with("/v1/") {
                assert_eq!(
                    operation["security"],
                    serde_json::json!([{"api_key": []}]),
                    "{method} {path}"
                );
                for status in ["401", "500", "503"] {
                    assert_eq!(
                        responses[status]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            } else {
                assert!(operation.get("security").is_none(), "{method} {path}");
            }
            if operation.get("requestBody").is_some() && path.starts_with("/v1/") {
                for status in ["400", "413", "415", "422"] {
                    assert!(responses.get(status).is_some(), "{method} {path} {status}");
                }
            }
        }
    }

    // Idempotency-Key on the two POSTs that honour it, with its limits.
    for path in ["/v1/batch", "/v1/classifiers"] {
        let header = api["paths"][path]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("POST {path} lists Idempotency-Key"));
        assert_eq!(header["in"], "header");
        assert_eq!(header["schema"]["maxLength"], 255);
    }

    // Limits are those the server enforces.
    let schemas = &api["components"]["schemas"];
    let classify = &schemas["ClassifyRequest"]["properties"];
    assert_eq!(classify["texts"]["maxItems"], 64);
    assert_eq!(classify["labels"]["maxItems"], 200);
    assert_eq!(classify["threshold"]["maximum"], 1.0);
    assert_eq!(schemas["ClassifyRequest"]["additionalProperties"], false);
    assert_eq!(schemas["CreateRequest"]["additionalProperties"], false);
    assert_eq!(schemas["Definition"]["additionalProperties"], false);
    // The spec fields are declared once: every body that carries them describes them
    // alike; a definition must have labels (not null), where the others may name a
    // classifier instead.
    for field in [
        "descriptions",
        "examples",
        "source_type",
        "mode",
        "threshold",
    ] {
        for name in ["CreateRequest", "Definition"] {
            assert_eq!(
                schemas[name]["properties"][field], classify[field],
                "{name}.{field}"
            );
        }
    }
    assert_eq!(
        schemas["CreateRequest"]["properties"]["labels"],
        classify["labels"]
    );
    let definition_labels = &schemas["Definition"]["properties"]["labels"];
    assert_eq!(definition_labels["type"], "array", "{definition_labels}");
    assert_eq!(definition_labels["items"], classify["labels"]["items"]);
    assert!(schemas["Definition"]["required"]
        .as_array()
        .is_some_and(|required| required.contains(&"labels".into())));
    assert!(schemas["Definition"]["properties"]
        .get("classifier")
        .is_none());
    assert_eq!(
        api["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    // Rules between fields, and what makes a text or label non-empty, are stated too
    // (the contract test's positive_data_acceptance holds the server to them).
    assert_eq!(
        classify["labels"]["items"]["$ref"],
        "#/components/schemas/LabelName"
    );
    assert_eq!(classify["labels"]["uniqueItems"], true);
    assert_eq!(schemas["LabelName"]["minLength"], 1);
    assert_eq!(schemas["Text"]["minLength"], 1);
    for name in ["ClassifyRequest", "CreateRequest"] {
        let rules = schemas[name]["allOf"].to_string();
        assert!(
            rules.contains("\"required\":[\"classifier\"]"),
            "{name}: {rules}"
        );
    }
    let after = &api["paths"]["/v1/batch"]["get"]["parameters"][1];
    assert_eq!(after["name"], "after");
    assert!(after["schema"]["pattern"].is_string());
    // The error `type`s a client can branch on.
    let types: BTreeSet<&str> = schemas["ErrorType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for kind in [
        "invalid_request",
        "validation_error",
        "authentication_error",
        "not_found",
        "conflict",
        "payload_too_large",
        "unsupported_media_type",
        "overloaded",
        "not_ready",
        "internal_error",
        "rate_limited",
        "quota_exceeded",
    ] {
        assert!(types.contains(kind), "{kind} in {types:?}");
    }
    // 429 where account limits apply, with Retry-After (as on every 503).
    for path in ["/v1/classify", "/v1/batch/{id}/start"] {
        let responses = &api["paths"][path]["post"]["responses"];
        assert!(
            responses["429"]["headers"]["Retry-After"].is_object(),
            "{path}"
        );
        assert!(responses["503"]["headers"]["Retry-After"].is_object());
    }
    assert!(api["paths"]["/v1/batch"]["post"]["responses"]
        .get("429")
        .is_none());
    // Every `$ref` resolves.
    let text = api.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(schemas.get(name).is_some(), "dangling $ref {name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn docs_page_serves_the_pinned_swagger_ui() {
    let dir = std::env::var("ZEROSHOT_DOCS_UI_DIR")
        .expect("ZEROSHOT_DOCS_UI_DIR (scripts/setup.py --print-env sets it)");
    let server = Server::start(Backend::Sqlite).await;
    let page = server.client.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/init.js",
    ] {
        assert!(html.contains(asset), "{asset} in {html}");
        let resp = server.client.get(server.url(asset)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{asset}");
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        let bytes = resp.bytes().await.unwrap();
        if asset == "/docs/init.js" {
            assert!(content_type.starts_with("text/javascript"));
            assert!(String::from_utf8_lossy(&bytes).contains("/openapi.json"));
            continue;
        }
        // Byte for byte the files setup verified against their pinned sha256.
        let file = std::path::Path::new(&dir).join(asset.trim_start_matches("/docs/"));
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            hex::encode(Sha256::digest(std::fs::read(&file).unwrap())),
            "{asset}"
        );
    }
    let missing = server
        .client
        .get(server.url("/docs/../../etc/passwd"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let other = server
        .client
        .get(server.url("/docs/package.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "only the page's own files are served");
}

#[tokio::test(flavor = "multi_thread")]
async fn docs_page_without_the_files_says_how_to_install_them() {
    let database_url = fresh_database(Backend::Sqlite).await;
    let empty = common::temp_dir();
    let server =
        Server::start_with(&database_url, &["--docs-ui-dir", empty.to_str().unwrap()]).await;
    let resp = server.client.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("scripts/setup.py"), "{message}");
    assert!(message.contains("/openapi.json"), "{message}");
    // The description does not depend on the UI files.
    assert_eq!(description(&server).await["openapi"], "3.1.0");
}

/// Schemathesis (scripts/contract_test.py) over every operation: no 5xx, and every
/// status, content type and body as the description says.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_contract_violation() {
    let server = Server::start(Backend::Sqlite).await;
    let report_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    let _ = std::fs::remove_dir_all(&report_dir);
    let reports = report_dir.clone();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/contract_test.py");
    let base = server.base.clone();
    let key = server.key.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, "--url", &base, "--api-key", &key, "--report-dir"])
            .arg(&report_dir)
            .output()
            .expect("run scripts/contract_test.py")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // It really exercised the operations (a run that tested nothing would also pass):
    // the JUnit report has a test case per operation.
    let report: String = std::fs::read_dir(&reports)
        .expect("the JUnit report")
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert!(
        report.contains("testcase name=\"POST /v1/classify\""),
        "{report}\n{stdout}"
    );
}
