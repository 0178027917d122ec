//! Persistence through sqlx's `Any` driver: one set of queries and migrations for the
//! embedded SQLite default and for Postgres in multi-instance deployments.

mod accounts;
pub mod batch;
pub mod classifiers;
pub mod idempotency;
pub mod retention;
pub mod shards;
pub mod usage;
pub mod webhooks;

use std::str::FromStr;

use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::AnyPool;

pub use accounts::{Account, ApiKey, Limits, NewKey};

/// Database failures; the API maps them to a 500 without leaking details.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("unsupported database url {0:?} (expected sqlite:// or postgres://)")]
    UnsupportedUrl(String),
}

impl From<DbError> for crate::outage::Fault {
    fn from(err: DbError) -> Self {
        crate::outage::Fault {
            dependency: crate::outage::Dependency::Database,
            message: err.to_string(),
        }
    }
}

/// Longest wait for a pooled connection.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection pool with the schema migrated.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// PostgreSQL rather than SQLite, for the few statements that differ.
    is_postgres: bool,
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://...`), creating a missing SQLite
    /// file and its directory, and applies `migrations/`.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        if !is_sqlite && !url.starts_with("postgres:") && !url.starts_with("postgresql:") {
            return Err(DbError::UnsupportedUrl(url.to_string()));
        }
        if is_sqlite {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
            if let Some(dir) = options.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
                }
            }
        }
        let url = if is_sqlite && !url.contains("mode=") {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}mode=rwc")
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 16 })
            // While the database is away, a call fails after this long (the API answers
            // 500, the batch worker backs off and retries) instead of hanging 30 s.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(&url)
            .await?;
        if is_sqlite {
            // Readers do not block the writer; persistent for the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            is_postgres: !is_sqlite,
        })
    }

    /// Whether this is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.is_postgres
    }

    /// The underlying pool, for modules that own their own queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Status enums are stored as the words they serialize to: bound as text, and read
/// back strictly, so a word this version does not know fails the query's decoding
/// instead of passing for some status.
macro_rules! stored_as_text {
    ($($status:ty),*) => {$(
        impl sqlx::Type<sqlx::Any> for $status {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <&str as sqlx::Type<sqlx::Any>>::type_info()
            }

            fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $status {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Any>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $status {
            fn decode(
                value: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<'r, sqlx::Any>>::decode(value)?.parse()?)
            }
        }
    )*};
}

stored_as_text!(
    crate::wire::JobStatus,
    crate::wire::DeliveryStatus,
    usage::Source
);
