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
}

const COLUMNS: &str =
    "account_id, name, version, description, spec, model, dim, vectors, created_at";

impl Db {
    /// Inserts `row` as a new version. `version` 1 clashes with an existing name (409);
    /// a later version clashes only with a concurrent update, also a conflict.
    pub async fn insert_classifier(&self, row: &ClassifierRow) -> Result<(), DbError> {
        let inserted = sqlx::query(&format!(
            "INSERT INTO classifiers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&row.account_id)
        .bind(&row.name)
        .bind(row.version)
        .bind(&row.description)
        .bind(&row.spec)
        .bind(&row.model)
        .bind(row.dim)
        .bind(&row.vectors)
        .bind(now_ms())
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                Err(DbError::Conflict(format!(
                    "classifier {:?} version {} already exists",
                    row.name, row.version
                )))
            }
            Err(err) => Err(err.into()),
        }
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

    /// Replaces a version's label vectors (after a model change).
    pub async fn update_classifier_vectors(&self, row: &ClassifierRow) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE classifiers SET model = $1, dim = $2, vectors = $3 WHERE account_id = $4 AND name = $5 AND version = $6",
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
