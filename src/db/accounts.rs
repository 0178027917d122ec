//! Accounts and API keys. Keys are 256-bit random secrets shown once; only their
//! sha256 is stored, which is enough for high-entropy secrets (no salt needed).

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Db, DbError};
use crate::clock::now_ms;

/// Every key starts with this, so leaked keys are easy to grep for.
const KEY_PREFIX: &str = "zs_";

/// An account: the owner of keys, jobs and classifiers.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// Loaded with the account on every request, so a change applies to the next one.
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub limits: Limits,
}

/// An account's limits; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow)]
pub struct Limits {
    /// `/v1/classify` requests per second, per instance.
    pub rps_limit: Option<i64>,
    /// Tokens (classify and batch) per UTC calendar month.
    pub monthly_token_quota: Option<i64>,
}

/// The columns an [`Account`] is read from, for queries that alias `accounts` as `a`.
const ACCOUNT_COLUMNS: &str = "a.id, a.name, a.created_at, a.rps_limit, a.monthly_token_quota";

/// A key as listed: never the secret itself.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub account_name: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A freshly created key: the only time the secret is available.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    pub id: String,
    pub account: Account,
    pub secret: String,
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_id(kind: &str) -> String {
    format!("{kind}_{}", uuid::Uuid::new_v4().simple())
}

impl Db {
    /// Creates an account; a name already taken is a conflict.
    pub async fn create_account(&self, name: &str) -> Result<Account, DbError> {
        let account = Account {
            id: new_id("acct"),
            name: name.to_string(),
            created_at: now_ms(),
            limits: Limits::default(),
        };
        let inserted =
            sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(&account.id)
                .bind(&account.name)
                .bind(account.created_at)
                .execute(self.pool())
                .await;
        match inserted {
            Ok(_) => Ok(account),
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => Err(DbError::Conflict(
                format!("account {name:?} already exists"),
            )),
            Err(err) => Err(err.into()),
        }
    }

    /// The account called `name`, if any.
    pub async fn account_by_name(&self, name: &str) -> Result<Option<Account>, DbError> {
        Ok(sqlx::query_as::<_, Account>(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?)
    }

    /// How many accounts exist; `serve` creates a first one when there are none.
    pub async fn count_accounts(&self) -> Result<i64, DbError> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM accounts")
            .fetch_one(self.pool())
            .await?;
        Ok(count)
    }

    /// Creates a key for an existing account, returning its secret once.
    pub async fn create_key(&self, account: &Account) -> Result<NewKey, DbError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
        let key = NewKey {
            id: new_id("key"),
            account: account.clone(),
            secret,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, key_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.id)
        .bind(&account.id)
        .bind(hash_secret(&key.secret))
        .bind(&key.secret[..KEY_PREFIX.len() + 8])
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(key)
    }

    /// Keys of one account, or of all accounts, oldest first.
    pub async fn list_keys(&self, account: Option<&str>) -> Result<Vec<ApiKey>, DbError> {
        Ok(sqlx::query_as::<_, ApiKey>(
            "SELECT k.id, k.account_id, a.name AS account_name, k.prefix, k.created_at, k.revoked_at \
             FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE ($1 = '' OR a.name = $1) ORDER BY k.created_at, k.id",
        )
        .bind(account.unwrap_or(""))
        .fetch_all(self.pool())
        .await?)
    }

    /// Revokes a key by id; it stops working at once.
    pub async fn revoke_key(&self, id: &str) -> Result<(), DbError> {
        let result =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(self.pool())
                .await?;
        if result.rows_affected() == 0 {
            return Err(DbError::NotFound(format!("no active key {id:?}")));
        }
        Ok(())
    }

    /// The account a presented secret belongs to, unless unknown or revoked.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Account>, DbError> {
        Ok(sqlx::query_as::<_, Account>(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
        ))
        .bind(hash_secret(secret))
        .fetch_optional(self.pool())
        .await?)
    }

    /// Replaces an account's limits (both, as given).
    pub async fn set_limits(&self, account_id: &str, limits: &Limits) -> Result<(), DbError> {
        let done = sqlx::query(
            "UPDATE accounts SET rps_limit = $1, monthly_token_quota = $2 WHERE id = $3",
        )
        .bind(limits.rps_limit)
        .bind(limits.monthly_token_quota)
        .bind(account_id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound(format!("no account {account_id:?}")));
        }
        Ok(())
    }
}
