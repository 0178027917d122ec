//! `/v1/batch`: create a job (with a signed upload form), start it, watch it, fetch
//! its results, delete it. All scoped to the caller's account: another account's job
//! is a 404.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::spec::{Resolved, SpecFields};
use super::{ApiError, ApiJson, AppState};
use crate::batch::{estimate_tokens, input_key, output_key};
use crate::db::batch::{status, JobRow, NewJob, StartOutcome};
use crate::db::{now_ms, Account};
use crate::engine::{ClassificationSpec, Mode};

/// Most metadata entries, and their sizes.
const MAX_METADATA_ENTRIES: usize = 16;
const MAX_METADATA_KEY_CHARS: usize = 64;
const MAX_METADATA_VALUE_CHARS: usize = 512;
/// Largest page of `GET /v1/batch`.
const MAX_PAGE: i64 = 100;

/// `POST /v1/batch`: the classification config of `/v1/classify` minus the text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub labels: Option<Vec<String>>,
    pub classifier: Option<String>,
    pub descriptions: Option<BTreeMap<String, String>>,
    pub examples: Option<BTreeMap<String, Vec<String>>>,
    pub source_type: Option<String>,
    pub mode: Option<Mode>,
    pub threshold: Option<f32>,
    /// Fit the label vectors to the job's own texts before scoring (default true).
    pub adapt: Option<bool>,
    pub metadata: Option<BTreeMap<String, String>>,
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(ApiError::validation(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} metadata entries"),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(ApiError::validation(
                format!("metadata.{key}"),
                format!("metadata keys are 1-{MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(ApiError::validation(
                format!("metadata.{key}"),
                format!("metadata values are at most {MAX_METADATA_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

/// Creates a pending job and its upload form.
pub async fn create(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    // A saved classifier is resolved and pinned now: later versions do not change the job.
    let Resolved { spec, saved } = SpecFields {
        labels: &request.labels,
        classifier: &request.classifier,
        descriptions: &request.descriptions,
        examples: &request.examples,
        source_type: &request.source_type,
        mode: request.mode,
        threshold: request.threshold,
        adapt: request.adapt,
    }
    .resolve(&state, &account)
    .await?;
    let metadata = request.metadata.unwrap_or_default();
    check_metadata(&metadata)?;

    let id = format!("batch_{}", uuid::Uuid::new_v4().simple());
    let input = input_key(&id);
    let form = state
        .storage
        .presign_upload(&input, state.batch.max_upload_bytes, state.batch.upload_ttl)
        .await?;
    let job = state
        .db
        .create_job(&NewJob {
            id: &id,
            account_id: &account.id,
            config: &serde_json::to_string(&spec).expect("serialisable"),
            metadata: &serde_json::to_string(&metadata).expect("serialisable"),
            input_key: &input,
            output_key: &output_key(&id),
            upload_expires_at: form.expires_at,
            classifier: saved.as_ref().map(|c| (c.name.as_str(), c.version)),
        })
        .await?;
    let mut body = view(&job);
    body["upload_url"] = json!(form.url);
    body["upload_fields"] = json!(form.fields);
    body["input_key"] = json!(input);
    body["expires_at"] = json!(timestamp(form.expires_at));
    body["max_upload_bytes"] = json!(state.batch.max_upload_bytes);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn own_job(state: &AppState, account: &Account, id: &str) -> Result<JobRow, ApiError> {
    state
        .db
        .job(&account.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no batch job {id:?}")))
}

/// Starts a pending (or failed) job whose file was uploaded.
pub async fn start(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job = own_job(&state, &account, &id).await?;
    if job.status != status::PENDING && job.status != status::FAILED {
        return Err(ApiError::conflict(format!(
            "job is {}; only pending or failed jobs start",
            job.status
        )));
    }
    let size = state.storage.size(&job.input_key).await?.ok_or_else(|| {
        ApiError::validation(
            "file",
            "no file was uploaded for this job; POST it to upload_url first",
        )
    })?;
    match state
        .db
        .start_job(&account.id, &id, size as i64, estimate_tokens(size))
        .await?
    {
        StartOutcome::Started => {}
        StartOutcome::WrongStatus(current) => {
            return Err(ApiError::conflict(format!(
                "job is {current}; only pending or failed jobs start"
            )))
        }
        StartOutcome::AnotherActive => {
            return Err(ApiError::conflict(
                "another batch job of this account is processing; one active job per account",
            ))
        }
        StartOutcome::NotFound => return Err(ApiError::not_found(format!("no batch job {id:?}"))),
    }
    state.wake_workers.notify_one();
    let job = own_job(&state, &account, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&job))))
}

/// One job's status and progress.
pub async fn get(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&own_job(&state, &account, &id).await?)))
}

/// A time-limited download URL for a completed job's results.
pub async fn results(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = own_job(&state, &account, &id).await?;
    if job.status != status::COMPLETED {
        return Err(ApiError::conflict(format!(
            "job is {}; results exist once it is completed",
            job.status
        )));
    }
    let ttl = state.batch.download_ttl;
    let url = state.storage.presign_download(&job.output_key, ttl).await?;
    Ok(Json(json!({
        "job_id": job.id,
        "url": url,
        "expires_at": timestamp(now_ms() + ttl.as_millis() as i64),
        "requests_completed": job.requests_completed,
        "requests_failed": job.requests_failed,
    })))
}

/// Deletes a job that is not processing, with its input and results.
pub async fn delete(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let job = own_job(&state, &account, &id).await?;
    if job.status == status::PROCESSING {
        return Err(ApiError::conflict(
            "job is processing; it can be deleted once it ends",
        ));
    }
    if !state.db.delete_job(&account.id, &id).await? {
        return Err(ApiError::conflict(
            "job is processing; it can be deleted once it ends",
        ));
    }
    state.storage.delete(&job.input_key).await?;
    state.storage.delete(&job.output_key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/batch?limit=&after=` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
}

/// The account's jobs, newest first.
pub async fn list(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::invalid_request(err.body_text()))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(
            "limit",
            format!("limit must be 1-{MAX_PAGE}"),
        ));
    }
    let cursor = match &query.after {
        None => None,
        Some(after) => Some(
            after
                .split_once(':')
                .and_then(|(created, id)| Some((created.parse::<i64>().ok()?, id)))
                .ok_or_else(|| ApiError::validation("after", "not a cursor from next_cursor"))?,
        ),
    };
    let jobs = state.db.list_jobs(&account.id, cursor, limit + 1).await?;
    let more = jobs.len() as i64 > limit;
    let page: Vec<&JobRow> = jobs.iter().take(limit as usize).collect();
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => json!(format!("{}:{}", last.created_at, last.id)),
        _ => Value::Null,
    };
    Ok(Json(json!({
        "data": page.iter().map(|job| view(job)).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

/// Progress a person can read: share of the input read, and an estimate of the rest.
#[derive(Debug, Serialize)]
struct Progress {
    percent: f64,
    lines_per_second: Option<f64>,
    eta_seconds: Option<f64>,
}

fn progress(job: &JobRow) -> Progress {
    let done = job.requests_completed + job.requests_failed;
    let percent = match (job.status.as_str(), job.requests_total) {
        (status::COMPLETED, _) => 100.0,
        (_, Some(total)) if total > 0 => (100.0 * done as f64 / total as f64).min(100.0),
        _ => 0.0,
    };
    let elapsed = job
        .started_at
        .map(|started| (job.completed_at.unwrap_or_else(now_ms) - started) as f64 / 1000.0);
    let rate = elapsed
        .filter(|&s| s > 0.0 && done > 0)
        .map(|s| done as f64 / s);
    let eta = match (job.status.as_str(), rate, job.requests_total) {
        (status::PROCESSING, Some(rate), Some(total)) => {
            Some(((total - done).max(0) as f64) / rate)
        }
        _ => None,
    };
    Progress {
        percent: (percent * 10.0).round() / 10.0,
        lines_per_second: rate.map(|r| r.round()),
        eta_seconds: eta.map(|e| e.ceil()),
    }
}

/// The job as the API shows it.
fn view(job: &JobRow) -> Value {
    let spec: Option<ClassificationSpec> = serde_json::from_str(&job.config).ok();
    let metadata: Value = serde_json::from_str(&job.metadata).unwrap_or(Value::Null);
    json!({
        "job_id": job.id,
        "status": job.status,
        "classifier": job.classifier_name.as_ref().zip(job.classifier_version).map(|(n, v)| format!("{n}@v{v}")),
        "mode": spec.as_ref().map(|s| s.mode),
        "threshold": spec.as_ref().map(|s| s.threshold),
        "adapt": spec.as_ref().map(|s| s.adapt),
        "adaptation": job.adaptation.as_deref().and_then(|a| serde_json::from_str::<Value>(a).ok()),
        "labels": spec.as_ref().map(|s| s.labels.names().collect::<Vec<_>>()),
        "metadata": metadata,
        "requests_total": job.requests_total,
        "requests_completed": job.requests_completed,
        "requests_failed": job.requests_failed,
        "estimated_tokens": job.estimated_tokens,
        "actual_tokens": job.actual_tokens,
        "input_bytes": job.input_bytes,
        "error": job.error,
        "progress": progress(job),
        "created_at": timestamp(job.created_at),
        "started_at": job.started_at.map(timestamp),
        "completed_at": job.completed_at.map(timestamp),
    })
}

/// RFC 3339 UTC time from unix milliseconds.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(super::timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::timestamp(1_795_434_123_456),
            "2026-11-23T11:42:03.456Z"
        );
        assert_eq!(
            super::timestamp(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
