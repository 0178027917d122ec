//! The S3 backend against a real S3 server: SeaweedFS, started by `scripts/test.sh`
//! (`scripts/seaweedfs.sh`), which exports `ZEROSHOT_TEST_S3_*`. Everything goes
//! through `dyn Storage`, as the service uses it. Each run uses its own bucket and
//! every case its own keys, so runs against a reused server do not meet.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::storage_cases::{self, compose, pattern, put, read_all, unique_key};
use base64::Engine as _;
use serde_json::Value;
use zeroshot::storage::s3::MIN_PART_BYTES;
use zeroshot::storage::{
    Composed, OutputState, S3Config, S3Store, Storage, StorageError, UploadForm,
};

const TTL: Duration = Duration::from_secs(300);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the S3 tests with `bash scripts/test.sh --test it storage_s3::`, \
             or `eval \"$(scripts/seaweedfs.sh)\"` first"
        )
    })
}

/// One bucket per test run, created by whichever case connects first.
fn bucket() -> &'static str {
    static BUCKET: OnceLock<String> = OnceLock::new();
    BUCKET.get_or_init(|| {
        format!(
            "zs-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    })
}

async fn storage() -> Box<dyn Storage> {
    let config = S3Config {
        endpoint: env("ZEROSHOT_TEST_S3_ENDPOINT"),
        region: std::env::var("ZEROSHOT_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        bucket: bucket().to_string(),
        access_key_id: env("ZEROSHOT_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: env("ZEROSHOT_TEST_S3_SECRET_ACCESS_KEY"),
    };
    Box::new(
        S3Store::connect(config)
            .await
            .expect("connect to the test S3 server"),
    )
}

/// POSTs the form's fields (with `overrides` replacing or adding some), then `file`
/// last, as a browser would. Returns the status and the body for failure messages.
async fn post(form: &UploadForm, overrides: &[(&str, &str)], file: Vec<u8>) -> (u16, String) {
    let mut fields: BTreeMap<String, String> = form.fields.clone();
    for (name, value) in overrides {
        fields.insert(name.to_string(), value.to_string());
    }
    let mut multipart = reqwest::multipart::Form::new();
    for (name, value) in fields {
        multipart = multipart.text(name, value);
    }
    let file = reqwest::multipart::Part::bytes(file).file_name("input.jsonl");
    multipart = multipart.part("file", file);
    let response = reqwest::Client::new()
        .post(&form.url)
        .multipart(multipart)
        .send()
        .await
        .expect("POST the upload form");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A 4xx refusal with the S3 error `code` (and message `reason`, when given) that
/// AWS S3 answers too, so each refusal is known to be for the reason under test.
fn assert_rejected(case: &str, code: &str, reason: &str, (status, body): (u16, String)) {
    assert!(
        (400..500).contains(&status),
        "{case}: expected a 4xx refusal, got {status}: {body}"
    );
    assert!(
        body.contains(&format!("<Code>{code}</Code>")) && body.contains(reason),
        "{case}: expected error {code} ({reason:?}), got {status}: {body}"
    );
}

/// The form's policy decoded, changed by `edit` and encoded again; the signature is
/// left as it was.
fn tampered_policy(form: &UploadForm, edit: impl FnOnce(&mut Value)) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut policy: Value =
        serde_json::from_slice(&engine.decode(&form.fields["policy"]).unwrap()).unwrap();
    edit(&mut policy);
    engine.encode(policy.to_string())
}

fn condition_mut<'a>(policy: &'a mut Value, name: &str) -> &'a mut Value {
    policy["conditions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|condition| {
            condition.get(name).is_some() || condition.get(0).and_then(Value::as_str) == Some(name)
        })
        .unwrap_or_else(|| panic!("no {name} condition in the policy"))
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_post_uploads_and_ranged_reads() {
    let storage = storage().await;
    let key = unique_key("upload");
    let data = pattern(1000, 1);
    let form = storage.presign_upload(&key, 4096, TTL).await.unwrap();
    assert!(
        form.url.ends_with(&format!("/{}", bucket())),
        "{}",
        form.url
    );
    for field in [
        "key",
        "policy",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-signature",
    ] {
        assert!(
            form.fields.contains_key(field),
            "missing form field {field}"
        );
    }
    let in_five_minutes = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + TTL.as_millis() as i64;
    assert!(
        (form.expires_at - in_five_minutes).abs() < 2000,
        "expires_at {}",
        form.expires_at
    );

    let (status, body) = post(&form, &[], data.clone()).await;
    assert!(
        [200, 201, 204].contains(&status),
        "upload refused with {status}: {body}"
    );
    assert_eq!(storage.size(&key).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read_all(&*storage, &key, 0).await, data);
    assert_eq!(read_all(&*storage, &key, 5).await, data[5..]);
    assert_eq!(
        read_all(&*storage, &key, data.len() as u64 - 1).await,
        data[data.len() - 1..]
    );
    assert!(read_all(&*storage, &key, data.len() as u64)
        .await
        .is_empty());
    assert!(read_all(&*storage, &key, data.len() as u64 + 10)
        .await
        .is_empty());

    let missing = unique_key("missing");
    assert_eq!(storage.size(&missing).await.unwrap(), None);
    assert!(matches!(
        storage.read_from(&missing, 0).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        storage.read_from(&missing, 5).await,
        Err(StorageError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_post_refuses_what_the_policy_does_not_allow() {
    let storage = storage().await;
    let key = unique_key("refused");
    let other = unique_key("refused-other");
    let max = 64u64;
    let form = storage.presign_upload(&key, max, TTL).await.unwrap();
    let too_big = pattern(max as usize + 1, 2);

    // A raised size limit under the old signature.
    let raised = tampered_policy(&form, |policy| {
        condition_mut(policy, "content-length-range")[2] = Value::from(max * 10);
    });
    assert_rejected(
        "tampered max",
        "SignatureDoesNotMatch",
        "",
        post(&form, &[("policy", &raised)], too_big.clone()).await,
    );

    // Another key in both the policy and the form, under the old signature.
    let moved = tampered_policy(&form, |policy| {
        condition_mut(policy, "key")["key"] = Value::from(other.as_str());
    });
    assert_rejected(
        "tampered key",
        "SignatureDoesNotMatch",
        "",
        post(
            &form,
            &[("policy", &moved), ("key", &other)],
            pattern(10, 3),
        )
        .await,
    );

    // A key the (intact) policy does not name.
    assert_rejected(
        "other key",
        "AccessDenied",
        "Policy Condition failed",
        post(&form, &[("key", &other)], pattern(10, 4)).await,
    );

    // Over and under the content-length-range.
    assert_rejected(
        "too large",
        "EntityTooLarge",
        "",
        post(&form, &[], too_big).await,
    );
    assert_rejected(
        "empty",
        "EntityTooSmall",
        "",
        post(&form, &[], Vec::new()).await,
    );

    // Expired: a 1 s policy used after 2 s.
    let short = storage
        .presign_upload(&key, max, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_rejected(
        "expired",
        "AccessDenied",
        "Policy expired",
        post(&short, &[], pattern(10, 5)).await,
    );

    assert_eq!(
        storage.size(&key).await.unwrap(),
        None,
        "nothing stored under the key"
    );
    assert_eq!(
        storage.size(&other).await.unwrap(),
        None,
        "nothing stored under the other key"
    );

    // The same form, untouched, still works: the refusals were about the changes.
    let (status, body) = post(&form, &[], pattern(10, 6)).await;
    assert!(
        [200, 201, 204].contains(&status),
        "upload refused with {status}: {body}"
    );
    assert_eq!(storage.size(&key).await.unwrap(), Some(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_written_in_parts_and_resumes() {
    let storage = storage().await;
    assert_eq!(storage.min_part_bytes(), MIN_PART_BYTES);
    let first = pattern(storage.min_part_bytes(), 7);
    let last = pattern(1234, 8);

    // Straight through.
    let key = unique_key("output");
    let mut state = storage.start_output(&key).await.unwrap();
    assert!(matches!(&state, OutputState::S3 { parts, .. } if parts.is_empty()));
    storage
        .append_output(&key, &mut state, first.clone())
        .await
        .unwrap();
    storage
        .append_output(&key, &mut state, last.clone())
        .await
        .unwrap();
    assert!(matches!(&state, OutputState::S3 { parts, .. } if parts.len() == 2));
    storage.finish_output(&key, &state).await.unwrap();
    let expected = [first.clone(), last.clone()].concat();
    assert_eq!(
        storage.size(&key).await.unwrap(),
        Some(expected.len() as u64)
    );
    assert!(
        read_all(&*storage, &key, 0).await == expected,
        "output differs"
    );
    assert!(
        read_all(&*storage, &key, 10).await == expected[10..],
        "ranged output differs"
    );

    // Resume: a crashed attempt wrote garbage parts 2 and 3 after the checkpoint taken
    // after part 1 (kept as JSON, like a job checkpoint); the resumed one rewrites part 2.
    let key = unique_key("resumed");
    let mut state = storage.start_output(&key).await.unwrap();
    storage
        .append_output(&key, &mut state, first.clone())
        .await
        .unwrap();
    let checkpoint = serde_json::to_string(&state).unwrap();
    storage
        .append_output(&key, &mut state, pattern(storage.min_part_bytes(), 9))
        .await
        .unwrap();
    storage
        .append_output(&key, &mut state, pattern(77, 10))
        .await
        .unwrap();
    let mut resumed: OutputState = serde_json::from_str(&checkpoint).unwrap();
    storage
        .append_output(&key, &mut resumed, last.clone())
        .await
        .unwrap();
    storage.finish_output(&key, &resumed).await.unwrap();
    assert!(
        read_all(&*storage, &key, 0).await == expected,
        "resumed output differs"
    );
    // Finishing again (a crash right after finishing, before the checkpoint) is fine.
    storage.finish_output(&key, &resumed).await.unwrap();
    assert!(
        read_all(&*storage, &key, 0).await == expected,
        "output differs after finishing twice"
    );

    // No parts at all: an empty object.
    let key = unique_key("empty");
    let state = storage.start_output(&key).await.unwrap();
    storage.finish_output(&key, &state).await.unwrap();
    assert_eq!(storage.size(&key).await.unwrap(), Some(0));
    assert!(read_all(&*storage, &key, 0).await.is_empty());

    // A local state is refused.
    let mut local = OutputState::Local { len: 0 };
    assert!(matches!(
        storage.append_output(&key, &mut local, vec![1]).await,
        Err(StorageError::Backend(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_download_url_serves_the_object() {
    let storage = storage().await;
    let key = unique_key("download");
    let data = pattern(3000, 11);
    put(&*storage, &key, &data).await;

    let url = storage.presign_download(&key, TTL).await.unwrap();
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    assert!(
        response.bytes().await.unwrap() == data,
        "downloaded bytes differ"
    );

    // The signature covers the key: the same URL for another key is refused.
    let other = url.replace(&key, &unique_key("download-other"));
    let status = reqwest::get(&other).await.unwrap().status().as_u16();
    assert!(
        (400..500).contains(&status),
        "tampered URL answered {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_objects_and_unfinished_output() {
    let storage = storage().await;
    let key = unique_key("delete");
    put(&*storage, &key, b"some results").await;
    assert_eq!(storage.size(&key).await.unwrap(), Some(12));
    storage.delete(&key).await.unwrap();
    assert_eq!(storage.size(&key).await.unwrap(), None);
    assert!(matches!(
        storage.read_from(&key, 0).await,
        Err(StorageError::NotFound(_))
    ));
    storage.delete(&key).await.expect("deleting twice is fine");
    storage
        .delete(&unique_key("never-existed"))
        .await
        .expect("deleting a missing key is fine");

    // An unfinished output is aborted; one under a longer key sharing the prefix is not.
    let key = unique_key("delete-unfinished");
    let longer = format!("{key}.more");
    let mut state = storage.start_output(&key).await.unwrap();
    storage
        .append_output(&key, &mut state, b"partial".to_vec())
        .await
        .unwrap();
    let mut longer_state = storage.start_output(&longer).await.unwrap();
    storage
        .append_output(&longer, &mut longer_state, b"kept".to_vec())
        .await
        .unwrap();
    storage.delete(&key).await.unwrap();
    let finished = storage.finish_output(&key, &state).await;
    assert!(
        matches!(finished, Err(StorageError::Backend(_))),
        "finishing an aborted upload must fail, got {finished:?}"
    );
    assert_eq!(storage.size(&key).await.unwrap(), None);
    storage
        .finish_output(&longer, &longer_state)
        .await
        .expect("the other upload survives");
    assert_eq!(read_all(&*storage, &longer, 0).await, b"kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_range_reads_slices() {
    storage_cases::read_ranges(&*storage().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_copies_what_can_be_parts_in_the_store() {
    let storage = storage().await;
    let min = MIN_PART_BYTES;
    let storage = &*storage;
    // Pieces that can be parts: every byte copied by S3 (UploadPartCopy).
    let big = compose(storage, &[min + 1000, min, min + 7]).await;
    assert_eq!(big.buffered, 0, "{big:?}");
    // A lone piece is the last part, whatever its size: copied too.
    assert_eq!(compose(storage, &[min / 2 + 3]).await.buffered, 0);
    // Small pieces: read and uploaded as one part.
    assert_eq!(compose(storage, &[100_000; 3]).await.buffered, 300_000);
    // Small, big, small, empty, big: each big piece tops the buffer up to a part and
    // the rest of it is copied, so exactly two parts' worth is read.
    let mixed = compose(storage, &[100_000, 2 * min + 1, 100_000, 0, min + 100_000]).await;
    assert_eq!(mixed.buffered, 2 * min as u64, "{mixed:?}");
    // Nothing, or only empty sources: an empty object.
    assert_eq!(compose(storage, &[]).await, Composed::default());
    assert_eq!(compose(storage, &[0, 0]).await, Composed::default());
    storage_cases::compose_missing_source(storage).await;
}
