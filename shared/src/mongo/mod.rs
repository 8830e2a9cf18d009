//! MongoDB connection, index set-up, health check and batched writes.

pub mod batch;

use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database, IndexModel};
use secrecy::ExposeSecret;

use crate::config::MongoConfig;

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("mongodb URI is invalid")]
    Uri(#[source] mongodb::error::Error),
    #[error("mongodb client could not be created")]
    Client(#[source] mongodb::error::Error),
    #[error("creating indexes on {collection} failed")]
    Indexes {
        collection: String,
        #[source]
        source: mongodb::error::Error,
    },
    #[error("mongodb ping failed")]
    Ping(#[source] mongodb::error::Error),
}

/// MongoDB's duplicate-key error code: an idempotent writer's "already done".
pub const DUPLICATE_KEY: i32 = 11_000;

/// Whether `error` is (or, for a bulk insert, contains) a duplicate-key error.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|e| e.code == DUPLICATE_KEY)),
        _ => false,
    }
}

/// A database handle. The driver connects lazily; call [`ping`] to know the server answers.
pub async fn connect(cfg: &MongoConfig, app_name: &str) -> Result<Database, MongoError> {
    let mut options = ClientOptions::parse(cfg.uri.expose_secret())
        .await
        .map_err(MongoError::Uri)?;
    options.app_name = Some(app_name.to_owned());
    options.connect_timeout = Some(Duration::from_millis(cfg.connect_timeout_ms));
    options.server_selection_timeout = Some(Duration::from_millis(cfg.server_selection_timeout_ms));
    let client = Client::with_options(options).map_err(MongoError::Client)?;
    Ok(client.database(&cfg.database))
}

pub async fn ping(db: &Database) -> Result<(), MongoError> {
    db.run_command(doc! { "ping": 1 })
        .await
        .map(|_| ())
        .map_err(MongoError::Ping)
}

/// Drops the indexes named in `retired` that `collection` still has: an index a release stopped
/// using costs every write, and one whose key a new index reuses with other options would make
/// [`ensure_indexes`] fail. A missing collection or index is not an error.
pub async fn drop_retired_indexes(
    db: &Database,
    collection: &str,
    retired: &[&str],
) -> Result<(), MongoError> {
    let coll = db.collection::<Document>(collection);
    let fail = |source| MongoError::Indexes {
        collection: collection.to_owned(),
        source,
    };
    let present = match coll.list_index_names().await {
        Ok(names) => names,
        // NamespaceNotFound: nothing was ever created, so nothing is retired.
        Err(error) if matches!(error.kind.as_ref(), mongodb::error::ErrorKind::Command(e) if e.code == 26) =>
        {
            return Ok(());
        }
        Err(error) => return Err(fail(error)),
    };
    for name in retired
        .iter()
        .filter(|name| present.iter().any(|p| p == *name))
    {
        coll.drop_index(*name).await.map_err(fail)?;
        tracing::info!(collection, index = *name, "dropped a retired index");
    }
    Ok(())
}

/// Creates `indexes` on `collection`; creating an index that exists with the same options is a
/// no-op, so every start can call this.
pub async fn ensure_indexes(
    db: &Database,
    collection: &str,
    indexes: Vec<IndexModel>,
) -> Result<(), MongoError> {
    if indexes.is_empty() {
        return Ok(());
    }
    db.collection::<Document>(collection)
        .create_indexes(indexes)
        .await
        .map(|_| ())
        .map_err(|source| MongoError::Indexes {
            collection: collection.to_owned(),
            source,
        })
}
