//! Saved classifiers that learn. Each lesson saves the next immutable version:
//! - **adapt**: the label vectors fitted to unlabeled texts (sent inline, or a finished
//!   batch job's, whose fitted vectors are reused without embedding anything again),
//!   with the batch jobs' guard rails; a refused adaptation saves nothing;
//! - **teach**: examples added (or removed) and the examples' head refitted; an
//!   adapted version stays adapted, its pulls combined with the new head.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;

use super::{
    invalid, load, recall_inputs, store, store_for_job, store_new_spec, vectors_of, Adaptation,
    AdaptedFrom, Classifier, ClassifierError, Draft, Origin,
};
use crate::db::batch::JobRow;
use crate::db::{Db, DbError};
use crate::engine::adapt::{spread, MAX_SAMPLE};
use crate::engine::text::{self, TextError};
use crate::engine::{
    AdaptationReport, Adapted, AdaptedLabels, Engine, EngineError, LabelSet, LabelVectors, Spec,
};
use crate::wire::JobStatus;

/// Most texts one `/adapt` call may send.
pub const MAX_ADAPT_TEXTS: usize = 50_000;

/// `POST /v1/classifiers/{name}/adapt`: unlabeled texts, or a finished batch job.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdaptRequest {
    /// 1-50,000 unlabeled texts like the ones the classifier will see. Up to 20,000 of
    /// them (evenly spread) are embedded and fitted on.
    #[schema(min_items = 1, max_items = 50000)]
    pub texts: Option<Vec<String>>,
    /// A completed batch job of this account that used this classifier (or the same
    /// labels) and adapted: its fitted vectors are reused, nothing is embedded again.
    pub job_id: Option<String>,
}

/// `POST /v1/classifiers/{name}/examples`: corrections, as examples per label.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeachRequest {
    /// Texts to add as examples of each label (ones it already has are ignored).
    #[serde(default)]
    pub examples: BTreeMap<String, Vec<String>>,
    /// Example texts to take away, from whichever label has them.
    #[serde(default)]
    pub remove: Vec<String>,
}

fn malformed(param: impl Into<String>, message: impl Into<String>) -> ClassifierError {
    ClassifierError::Malformed {
        param: param.into(),
        message: message.into(),
    }
}

/// Adapts the latest version of `name` to what `request` names and saves the next
/// version; a refusal (the guard rails) is an error and saves nothing.
pub async fn adapt(
    db: &Db,
    engine: &Arc<Engine>,
    account_id: &str,
    name: &str,
    request: AdaptRequest,
) -> Result<Classifier, ClassifierError> {
    let latest = load(db, engine, account_id, name, None).await?;
    let adaptation = match (request.texts, request.job_id) {
        (Some(texts), None) => adapt_to_texts(engine, &latest, texts).await?,
        (None, Some(job_id)) => adapt_to_job(db, account_id, &latest, &job_id).await?,
        _ => {
            return Err(malformed(
                "texts",
                "send either texts or job_id (exactly one)",
            ))
        }
    };
    store(
        db,
        engine,
        adapted_draft(account_id, name, latest, adaptation),
    )
    .await
}

/// The version after `latest`, the same spec scored with `adaptation`.
fn adapted_draft<'a>(
    account_id: &'a str,
    name: &'a str,
    latest: Classifier,
    adaptation: Adaptation,
) -> Draft<'a> {
    Draft {
        account_id,
        name,
        version: latest.version + 1,
        description: latest.description,
        origin: Origin::Adapted {
            from_version: latest.version,
        },
        spec: latest.spec,
        vectors: latest.vectors,
        adaptation: Some(adaptation),
    }
}

/// Fits `latest`'s label vectors to `texts` (up to [`MAX_SAMPLE`] of them, evenly
/// spread), as a batch job fits its sample.
async fn adapt_to_texts(
    engine: &Arc<Engine>,
    latest: &Classifier,
    texts: Vec<String>,
) -> Result<Adaptation, ClassifierError> {
    check_texts(&texts)?;
    let count = texts.len();
    let (engine, labels) = (engine.clone(), latest.vectors.clone());
    let anchored = latest.spec.labels.has_examples();
    let adapted = tokio::task::spawn_blocking(move || fit_texts(&engine, texts, &labels, anchored))
        .await
        .map_err(|err| EngineError::Inference(err.to_string()))??;
    let Some(labels) = adapted.labels else {
        return Err(refused("texts", &adapted.report));
    };
    let labels = Arc::new(labels);
    Ok(Adaptation {
        from: AdaptedFrom {
            texts: Some(count),
            job_id: None,
            adaptation: adapted.report,
        },
        labels,
    })
}

/// Fits `labels` (`anchored` when they carry examples) to `texts`, up to
/// [`MAX_SAMPLE`] of them evenly spread: what `/adapt` does with texts, and what
/// `zeroshot eval --adapt-on` measures.
pub fn fit_texts(
    engine: &Engine,
    texts: Vec<String>,
    labels: &LabelVectors,
    anchored: bool,
) -> Result<Adapted, EngineError> {
    engine.adapt(&spread(texts, MAX_SAMPLE), labels, anchored)
}

/// 1 to [`MAX_ADAPT_TEXTS`] texts, none blank (422) and none with a NUL (400).
fn check_texts(texts: &[String]) -> Result<(), ClassifierError> {
    if texts.is_empty() || texts.len() > MAX_ADAPT_TEXTS {
        return Err(invalid(
            "texts",
            format!("send 1 to {MAX_ADAPT_TEXTS} texts, got {}", texts.len()),
        ));
    }
    for (i, text) in texts.iter().enumerate() {
        check_text(&format!("texts[{i}]"), text)?;
    }
    Ok(())
}

/// A blank text is a 422; a NUL a 400 (the client sent no real text), as everywhere.
fn check_text(param: &str, text: &str) -> Result<(), ClassifierError> {
    text::check(text).map_err(|err| match err {
        TextError::Blank => invalid(param, err.to_string()),
        TextError::Nul | TextError::LoneSurrogate => malformed(param, err.to_string()),
    })
}

/// The guard rails' refusal, with their reason.
fn refused(param: &str, report: &AdaptationReport) -> ClassifierError {
    ClassifierError::Refused {
        param: param.to_string(),
        message: format!(
            "adaptation refused: {}; no version was saved",
            report.reason.as_deref().unwrap_or("it did not apply")
        ),
    }
}

/// The fitted vectors of the account's completed job `job_id`, which must have had
/// `latest`'s labels and adapted; carried to `latest`'s own label vectors.
async fn adapt_to_job(
    db: &Db,
    account_id: &str,
    latest: &Classifier,
    job_id: &str,
) -> Result<Adaptation, ClassifierError> {
    let job = db
        .job(account_id, job_id)
        .await?
        .ok_or_else(|| DbError::NotFound(format!("no batch job {job_id:?}")))?;
    let (report, labels) = job_adaptation(db, &job, latest).await?;
    let labels = labels
        .restarted(&latest.vectors, latest.spec.labels.has_examples())
        .unwrap_or(labels);
    Ok(Adaptation {
        from: AdaptedFrom {
            texts: None,
            job_id: Some(job.id),
            adaptation: report,
        },
        labels: Arc::new(labels),
    })
}

/// What `job` adapted: its report and fitted vectors; an error unless it completed,
/// with `latest`'s labels, and its adaptation applied.
async fn job_adaptation(
    db: &Db,
    job: &JobRow,
    latest: &Classifier,
) -> Result<(AdaptationReport, AdaptedLabels), ClassifierError> {
    if job.status != JobStatus::Completed {
        return Err(DbError::Conflict(format!(
            "batch job {} is {}; adapt from a completed job",
            job.id, job.status
        ))
        .into());
    }
    if !same_labels(job, latest)? {
        return Err(invalid(
            "job_id",
            format!(
                "batch job {} scored other labels than {}",
                job.id,
                latest.reference()
            ),
        ));
    }
    let report: AdaptationReport = match &job.adaptation {
        Some(report) => serde_json::from_str(report).map_err(super::unreadable)?,
        None => AdaptationReport::off(),
    };
    match db.adapted_labels(&job.id).await? {
        Some(labels) => Ok((
            report,
            serde_json::from_str(&labels).map_err(super::unreadable)?,
        )),
        None => Err(refused("job_id", &report)),
    }
}

/// Whether `job` scored `latest`'s labels, in the same order.
fn same_labels(job: &JobRow, latest: &Classifier) -> Result<bool, ClassifierError> {
    let spec: Spec = serde_json::from_str(&job.spec).map_err(super::unreadable)?;
    Ok(spec.labels.names().eq(latest.spec.labels.names()))
}

/// Adds the examples of `request` to the latest version of `name` (ignoring ones it
/// has), takes away the ones it names, refits the head and saves the next version;
/// when nothing changes, the latest version is returned as it is.
pub async fn teach(
    db: &Db,
    engine: &Arc<Engine>,
    account_id: &str,
    name: &str,
    request: TeachRequest,
) -> Result<Classifier, ClassifierError> {
    let latest = load(db, engine, account_id, name, None).await?;
    let (labels, added, removed) = taught(&latest.spec.labels, &request)?;
    if added == 0 && removed == 0 {
        return Ok(latest);
    }
    let spec = Spec {
        labels,
        ..latest.spec.clone()
    };
    recall_inputs(db, engine, account_id, name, &spec).await?;
    let vectors = vectors_of(engine, &spec).await?;
    let adaptation = latest.carried_adaptation(&vectors, &spec);
    let draft = Draft {
        account_id,
        name,
        version: latest.version + 1,
        description: latest.description.clone(),
        origin: Origin::Taught {
            from_version: latest.version,
            added,
            removed,
        },
        spec,
        vectors,
        adaptation,
    };
    store_new_spec(db, engine, draft).await
}

/// `set` with the examples of `request` added (unknown labels are a 400; texts a
/// label has, or repeats, are ignored) and the ones it removes taken away, validated
/// again; and how many were added and removed.
fn taught(
    set: &LabelSet,
    request: &TeachRequest,
) -> Result<(LabelSet, usize, usize), ClassifierError> {
    let mut examples: BTreeMap<String, Vec<String>> = set
        .labels
        .iter()
        .map(|label| (label.name.clone(), label.examples.clone()))
        .collect();
    let remove: BTreeSet<&str> = request.remove.iter().map(String::as_str).collect();
    let before: usize = examples.values().map(Vec::len).sum();
    examples
        .values_mut()
        .for_each(|list| list.retain(|text| !remove.contains(text.as_str())));
    let removed = before - examples.values().map(Vec::len).sum::<usize>();
    let mut added = 0;
    for (label, texts) in &request.examples {
        let list = examples.get_mut(label).ok_or_else(|| {
            malformed(
                format!("examples.{label}"),
                format!(
                    "examples for unknown label {label:?} (the classifier has {} labels)",
                    set.labels.len()
                ),
            )
        })?;
        for (i, text) in texts.iter().enumerate() {
            check_text(&format!("examples.{label}[{i}]"), text)?;
            if !list.contains(text) {
                list.push(text.clone());
                added += 1;
            }
        }
    }
    let names: Vec<String> = set.names().map(str::to_string).collect();
    let descriptions: BTreeMap<String, String> = set
        .labels
        .iter()
        .filter_map(|l| Some((l.name.clone(), l.description.clone()?)))
        .collect();
    examples.retain(|_, list| !list.is_empty());
    let labels = LabelSet::new(&names, &descriptions, &examples, set.source_type.as_deref())?;
    Ok((labels, added, removed))
}

/// Saves a completed job's fitted vectors as the next version of the classifier it
/// referenced (`save_adapted`), once. `None` when it saved one before, or the
/// classifier's labels changed since the job was created.
pub async fn save_job_version(
    db: &Db,
    engine: &Arc<Engine>,
    job: &JobRow,
    name: &str,
    adapted: (AdaptationReport, AdaptedLabels),
) -> Result<Option<i64>, ClassifierError> {
    let latest = load(db, engine, &job.account_id, name, None).await?;
    if !same_labels(job, &latest)? {
        return Ok(None);
    }
    let (report, labels) = adapted;
    let labels = labels
        .restarted(&latest.vectors, latest.spec.labels.has_examples())
        .unwrap_or(labels);
    let version = latest.version + 1;
    let adaptation = Adaptation {
        from: AdaptedFrom {
            texts: None,
            job_id: Some(job.id.clone()),
            adaptation: report,
        },
        labels: Arc::new(labels),
    };
    let draft = adapted_draft(&job.account_id, name, latest, adaptation);
    let saved = store_for_job(db, engine, &job.id, draft).await?;
    Ok(saved.then_some(version))
}
