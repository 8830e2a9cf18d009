//! The `users` and `api_tokens` collections.

use bson::doc;
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use super::password;
use crate::error::{ApiError, is_duplicate_key};

pub const USERS: &str = "users";
pub const API_TOKENS: &str = "api_tokens";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: bson::DateTime,
}

/// A user as the API shows it (never the hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: String,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<&UserDoc> for UserView {
    fn from(user: &UserDoc) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            role: user.role,
            created_at: user.created_at.to_chrono(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokenDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub token_hash: String,
    pub created_at: bson::DateTime,
    pub last_used_at: Option<bson::DateTime>,
    pub revoked_at: Option<bson::DateTime>,
}

pub fn users(db: &Database) -> Collection<UserDoc> {
    db.collection(USERS)
}

pub fn api_tokens(db: &Database) -> Collection<ApiTokenDoc> {
    db.collection(API_TOKENS)
}

pub fn user_indexes() -> Vec<IndexModel> {
    let unique = |field: &str| {
        IndexModel::builder()
            .keys(doc! { field: 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name(format!("{field}_unique"))
                    .build(),
            )
            .build()
    };
    vec![unique("username"), unique("email")]
}

pub fn token_indexes() -> Vec<IndexModel> {
    vec![
        IndexModel::builder()
            .keys(doc! { "token_hash": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("token_hash_unique".to_owned())
                    .build(),
            )
            .build(),
        IndexModel::builder()
            .keys(doc! { "user_id": 1, "created_at": -1 })
            .build(),
    ]
}

pub async fn find_by_username(db: &Database, username: &str) -> Result<Option<UserDoc>, ApiError> {
    Ok(users(db).find_one(doc! { "username": username }).await?)
}

pub async fn find_by_id(db: &Database, id: &str) -> Result<Option<UserDoc>, ApiError> {
    Ok(users(db).find_one(doc! { "_id": id }).await?)
}

/// Creates the default account `username` unless it exists. Idempotent and safe when several
/// api replicas start at once: `$setOnInsert` with upsert, and a lost race is not an error.
pub async fn seed(
    db: &Database,
    username: &str,
    password: String,
    role: Role,
) -> Result<(), ApiError> {
    if find_by_username(db, username).await?.is_some() {
        return Ok(());
    }
    let user = UserDoc {
        id: uuid::Uuid::now_v7().to_string(),
        username: username.to_owned(),
        email: format!("{username}@kiln.local"),
        password_hash: password::hash(password).await?,
        role,
        created_at: bson::DateTime::now(),
    };
    let fields = bson::to_document(&user)?;
    let result = users(db)
        .update_one(
            doc! { "username": username },
            doc! { "$setOnInsert": fields },
        )
        .upsert(true)
        .await;
    match result {
        Ok(outcome) => {
            if outcome.upserted_id.is_some() {
                tracing::info!(username, role = ?role, "seeded default user");
            }
            Ok(())
        }
        Err(error) if is_duplicate_key(&error) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
