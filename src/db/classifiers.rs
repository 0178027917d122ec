//! Saved classifier versions.

use super::{Db, DbError};
use crate::clock::now_ms;
use crate::wire::JobStatus;

/// One stored version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClassifierRow {
    pub account_id: String,
    pub name: String,
    pub version: i64,
    pub description: Option<String>,
    pub spec: String,
    pub model: String,
    pub dim: i64,
    pub vectors: String,
    pub created_at: i64,
    /// How the version was made (JSON); NULL: saved from a definition.
    pub origin: Option<String>,
    /// Where its adaptation came from (JSON); NULL: not adapted.
    pub adapted_from: Option<String>,
}

/// A row and its adapted label vectors (JSON), which only scoring reads.
pub struct NewVersion<'a> {
    pub row: &'a ClassifierRow,
    pub adapted_labels: Option<&'a str>,
}

/// Input vectors written per statement (two parameters each).
const INPUTS_PER_INSERT: usize = 200;

const COLUMNS: &str =
    "account_id, name, version, description, spec, model, dim, vectors, created_at, origin, adapted_from";

impl Db {
    /// Inserts a new version. Version 1 clashes with an existing name (409); a later
    /// version clashes only with a concurrent save, also a conflict.
    pub async fn insert_classifier(&self, new: &NewVersion<'_>) -> Result<(), DbError> {
        let inserted = insert_query(new).execute(self.pool()).await;
        inserted
            .map(|_| ())
            .map_err(|err| version_conflict(err, new.row))
    }

    /// A version's adapted label vectors (JSON), when it has any.
    pub async fn classifier_adapted_labels(
        &self,
        account_id: &str,
        name: &str,
        version: i64,
    ) -> Result<Option<String>, DbError> {
        let found: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT adapted_labels FROM classifiers WHERE account_id = $1 AND name = $2 AND version = $3",
        )
        .bind(account_id)
        .bind(name)
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        Ok(found.and_then(|(labels,)| labels))
    }

    /// Every version of a classifier, newest first.
    pub async fn classifier_versions(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Vec<ClassifierRow>, DbError> {
        Ok(sqlx::query_as::<_, ClassifierRow>(&format!(
            "SELECT {COLUMNS} FROM classifiers WHERE account_id = $1 AND name = $2 ORDER BY version DESC"
        ))
        .bind(account_id)
        .bind(name)
        .fetch_all(self.pool())
        .await?)
    }

    /// A version, or the latest when `version` is `None`.
    pub async fn classifier(
        &self,
        account_id: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<ClassifierRow>, DbError> {
        Ok(sqlx::query_as::<_, ClassifierRow>(&format!(
            "SELECT {COLUMNS} FROM classifiers WHERE account_id = $1 AND name = $2 AND ($3 = 0 OR version = $3) \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(account_id)
        .bind(name)
        .bind(version.unwrap_or(0))
        .fetch_optional(self.pool())
        .await?)
    }

    /// The latest version of each of the account's classifiers, by name.
    pub async fn list_classifiers(&self, account_id: &str) -> Result<Vec<ClassifierRow>, DbError> {
        Ok(sqlx::query_as::<_, ClassifierRow>(&format!(
            "SELECT {COLUMNS} FROM classifiers c WHERE account_id = $1 AND version = \
             (SELECT MAX(version) FROM classifiers m WHERE m.account_id = c.account_id AND m.name = c.name) \
             ORDER BY name"
        ))
        .bind(account_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Inserts `row` as the version a completed job saved (`save_adapted`), recording
    /// it on the job in the same transaction; false (and nothing inserted) when the job
    /// has already saved one.
    pub async fn insert_job_version(
        &self,
        job_id: &str,
        new: &NewVersion<'_>,
    ) -> Result<bool, DbError> {
        let mut tx = self.pool().begin().await?;
        let marked = sqlx::query(
            "UPDATE batch_jobs SET saved_version = $1 WHERE id = $2 AND saved_version IS NULL",
        )
        .bind(new.row.version)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 0 {
            return Ok(false);
        }
        if let Err(err) = insert_query(new).execute(&mut *tx).await {
            return Err(version_conflict(err, new.row));
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Keeps the vectors of a classifier's inputs, `(input_hash, vector)`; ones it has
    /// already are left as they are.
    pub async fn insert_classifier_inputs(
        &self,
        account_id: &str,
        name: &str,
        inputs: &[(String, String)],
    ) -> Result<(), DbError> {
        for chunk in inputs.chunks(INPUTS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, $2, ${}, ${})", 3 + 2 * i, 4 + 2 * i))
                .collect();
            let sql = format!(
                "INSERT INTO classifier_inputs (account_id, name, input_hash, vector) VALUES {} \
                 ON CONFLICT (account_id, name, input_hash) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(account_id).bind(name);
            for (hash, vector) in chunk {
                query = query.bind(hash).bind(vector);
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// Every kept input vector of a classifier, `(input_hash, vector)`.
    pub async fn classifier_inputs(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Vec<(String, String)>, DbError> {
        Ok(sqlx::query_as(
            "SELECT input_hash, vector FROM classifier_inputs WHERE account_id = $1 AND name = $2",
        )
        .bind(account_id)
        .bind(name)
        .fetch_all(self.pool())
        .await?)
    }

    /// Replaces a version's label vectors (after a model change; an adaptation fitted
    /// with the other model no longer applies).
    pub async fn update_classifier_vectors(&self, row: &ClassifierRow) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE classifiers SET model = $1, dim = $2, vectors = $3, adapted_from = NULL, adapted_labels = NULL WHERE account_id = $4 AND name = $5 AND version = $6",
        )
        .bind(&row.model)
        .bind(row.dim)
        .bind(&row.vectors)
        .bind(&row.account_id)
        .bind(&row.name)
        .bind(row.version)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes every version, unless a pending or processing batch job uses the name
    /// (checked in the same statement).
    pub async fn delete_classifier(&self, account_id: &str, name: &str) -> Result<(), DbError> {
        let deleted = sqlx::query(
            "DELETE FROM classifiers WHERE account_id = $1 AND name = $2 AND NOT EXISTS \
             (SELECT 1 FROM batch_jobs WHERE account_id = $1 AND classifier_name = $2 AND status IN ($3, $4))",
        )
        .bind(account_id)
        .bind(name)
        .bind(JobStatus::Pending)
        .bind(JobStatus::Processing)
        .execute(self.pool())
        .await?;
        if deleted.rows_affected() > 0 {
            sqlx::query("DELETE FROM classifier_inputs WHERE account_id = $1 AND name = $2")
                .bind(account_id)
                .bind(name)
                .execute(self.pool())
                .await?;
            return Ok(());
        }
        match self.classifier(account_id, name, None).await? {
            Some(_) => Err(DbError::Conflict(format!(
                "classifier {name:?} is used by a pending or processing batch job"
            ))),
            None => Err(DbError::NotFound(format!("no classifier {name:?}"))),
        }
    }
}

fn insert_query<'a>(
    new: &'a NewVersion<'a>,
) -> sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments<'a>> {
    let row = new.row;
    sqlx::query(
        "INSERT INTO classifiers (account_id, name, version, description, spec, model, dim, vectors, created_at, \
         origin, adapted_from, adapted_labels) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&row.account_id)
    .bind(&row.name)
    .bind(row.version)
    .bind(&row.description)
    .bind(&row.spec)
    .bind(&row.model)
    .bind(row.dim)
    .bind(&row.vectors)
    .bind(now_ms())
    .bind(&row.origin)
    .bind(&row.adapted_from)
    .bind(new.adapted_labels)
}

/// A unique violation on insert is a concurrent save of the same version: a conflict.
fn version_conflict(err: sqlx::Error, row: &ClassifierRow) -> DbError {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => DbError::Conflict(format!(
            "classifier {:?} version {} already exists",
            row.name, row.version
        )),
        other => other.into(),
    }
}
