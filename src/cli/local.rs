//! The commands that work on the database and the model in this process: `keys`,
//! `classifiers`, `classify` (without `--url`) and `eval`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::args::{ClassifiersCommand, ClassifyArgs, EvalArgs, KeysCommand, ModelArgs};
use super::eval;
use crate::classifiers::{self, learn};
use crate::classify;
use crate::db::Db;
use crate::engine::Engine;

/// `zeroshot keys ...`: accounts' API keys, on the database directly.
pub(super) async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let db = Db::connect(&command.db().database_url).await?;
    match command {
        KeysCommand::Create { account, .. } => {
            let account = match db.account_by_name(&account).await? {
                Some(existing) => existing,
                None => db.create_account(&account).await?,
            };
            let key = db.create_key(&account).await?;
            println!("{}", serde_json::to_string_pretty(&key)?);
        }
        KeysCommand::List { account, .. } => {
            let keys = db.list_keys(account.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&keys)?);
        }
        KeysCommand::Revoke { id, .. } => {
            db.revoke_key(&id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// `zeroshot classifiers ...`: saved classifiers, on the database directly.
pub(super) async fn classifiers(command: ClassifiersCommand) -> anyhow::Result<()> {
    let scope = command.scope();
    let db = Db::connect(&scope.db.database_url).await?;
    let account = db
        .account_by_name(&scope.account)
        .await?
        .with_context(|| format!("no account {:?}", scope.account))?;
    let output = match &command {
        ClassifiersCommand::Create { file, model, .. }
        | ClassifiersCommand::Update { file, model, .. } => {
            let definition = classifiers::Definition::from_file(file)?;
            let (name, update) = match &command {
                ClassifiersCommand::Update { name, .. } => (name.clone(), true),
                _ => (
                    definition
                        .name
                        .clone()
                        .context("the definition has no \"name\"")?,
                    false,
                ),
            };
            let engine = load_engine(model).await?;
            let saved = classifiers::save(&db, &engine, &account.id, &name, &definition, update)
                .await
                .map_err(describe_classifier_error)?;
            serde_json::to_value(saved.view())?
        }
        ClassifiersCommand::Adapt {
            name,
            texts,
            job,
            model,
            ..
        } => {
            let request = learn::AdaptRequest {
                texts: texts.as_deref().map(read_texts).transpose()?,
                job_id: job.clone(),
            };
            let engine = load_engine(model).await?;
            let saved = learn::adapt(&db, &engine, &account.id, name, request)
                .await
                .map_err(describe_classifier_error)?;
            serde_json::to_value(saved.view())?
        }
        ClassifiersCommand::Teach {
            name, file, model, ..
        } => {
            let mut examples: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for example in eval::read_tsv(file)? {
                examples
                    .entry(example.label)
                    .or_default()
                    .push(example.text);
            }
            let request = learn::TeachRequest {
                examples,
                remove: Vec::new(),
            };
            let engine = load_engine(model).await?;
            let saved = learn::teach(&db, &engine, &account.id, name, request)
                .await
                .map_err(describe_classifier_error)?;
            serde_json::to_value(saved.view())?
        }
        ClassifiersCommand::List { .. } => serde_json::to_value(
            db.list_classifiers(&account.id)
                .await?
                .iter()
                .map(classifiers::describe_row)
                .collect::<Result<Vec<_>, _>>()?,
        )?,
        ClassifiersCommand::Show { reference, .. } => {
            let (name, version) =
                classifiers::parse_reference(reference).map_err(describe_classifier_error)?;
            let row = db
                .classifier(&account.id, &name, version)
                .await?
                .with_context(|| format!("no classifier {reference:?}"))?;
            serde_json::to_value(classifiers::describe_row(&row)?)?
        }
        ClassifiersCommand::Delete { name, .. } => {
            db.delete_classifier(&account.id, name).await?;
            serde_json::json!({ "deleted": name })
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// The engine of `model`, loaded off the async threads.
async fn load_engine(model: &ModelArgs) -> anyhow::Result<Arc<Engine>> {
    let model = model.clone();
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || model.config().load()).await??,
    ))
}

/// The texts of a file, one per line (blank lines skipped); a line that is a JSON
/// object with a string `text` stands for that text.
fn read_texts(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(content
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|value| value.get("text")?.as_str().map(str::to_string))
                .unwrap_or_else(|| line.to_string())
        })
        .collect())
}

/// CLI form of a classifier error: the field at fault first.
fn describe_classifier_error(err: classifiers::ClassifierError) -> anyhow::Error {
    match err {
        classifiers::ClassifierError::Invalid(err) => {
            anyhow::anyhow!("{}: {}", err.param, err.message)
        }
        classifiers::ClassifierError::Malformed { param, message }
        | classifiers::ClassifierError::Refused { param, message } => {
            anyhow::anyhow!("{param}: {message}")
        }
        other => other.into(),
    }
}

/// `zeroshot classify` without `--url`: the model in this process.
pub(super) async fn classify(args: ClassifyArgs) -> anyhow::Result<()> {
    let engine = tokio::task::spawn_blocking({
        let model = args.model.clone();
        move || model.config().load()
    })
    .await??;
    let (text, texts) = args.text_or_texts();
    let response = classify::run(&engine, text.as_ref(), texts.as_ref(), &args.spec_fields())?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}

/// `zeroshot eval`: accuracy on labelled files (blocking: run it off the runtime).
pub(super) fn eval(args: EvalArgs) -> anyhow::Result<()> {
    if !args.train.is_empty() && args.train.len() != args.data.len() {
        anyhow::bail!(
            "give one --train per --data ({} vs {})",
            args.train.len(),
            args.data.len()
        );
    }
    let engine = args.model.config().load()?;
    let descriptions = match &args.descriptions {
        Some(path) => read_descriptions(path)?,
        None => Default::default(),
    };
    let mut reports = serde_json::Map::new();
    let mut similarities = Vec::new();
    for (i, data) in args.data.iter().enumerate() {
        let options = eval::EvalOptions {
            train: match args.train.get(i) {
                Some(path) => eval::read_tsv(path)?,
                None => Vec::new(),
            },
            examples_per_label: args.examples_per_label,
            descriptions: descriptions.clone(),
            source_type: args.source_type.clone(),
            mode: args.mode.into(),
            threshold: args.threshold,
            fit_calibration: args.fit_calibration || args.rotate,
            baseline: args.baseline,
            adapt: args.adapt,
            adapt_on: args.adapt_on,
        };
        let mut report = eval::evaluate(&engine, &eval::read_tsv(data)?, &options)?;
        similarities.push(std::mem::take(&mut report.similarities));
        reports.insert(data.display().to_string(), serde_json::to_value(&report)?);
    }
    let mut output = serde_json::json!({ "model": engine.model_name(), "datasets": reports });
    if args.fit_calibration {
        let all: Vec<_> = similarities.concat();
        output["fitted_calibration"] = serde_json::to_value(eval::fit_calibration(&all))?;
    }
    if args.rotate {
        let rotation: serde_json::Map<String, serde_json::Value> = args
            .data
            .iter()
            .zip(eval::rotate(&similarities, args.threshold))
            .map(|(data, held_out)| {
                Ok((data.display().to_string(), serde_json::to_value(held_out)?))
            })
            .collect::<anyhow::Result<_>>()?;
        output["rotation"] = rotation.into();
    }
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// `--descriptions`: a JSON object `{label: description}`.
fn read_descriptions(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON object {{label: description}}",
            path.display()
        )
    })
}
