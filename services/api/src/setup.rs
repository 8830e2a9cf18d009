//! Start-up work: indexes on the api's collections and the default accounts.

use shared::executions::EXECUTIONS_COLLECTION;
use shared::mongo::{MongoError, drop_retired_indexes, ensure_indexes};

use crate::auth::Role;
use crate::auth::users::{self, API_TOKENS, USERS};
use crate::error::ApiError;
use crate::executions::store;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Indexes(#[from] MongoError),
    #[error("seeding the default users failed")]
    Seed(#[source] ApiError),
}

pub async fn prepare(state: &AppState) -> Result<(), SetupError> {
    ensure_indexes(&state.db, USERS, users::user_indexes()).await?;
    ensure_indexes(&state.db, API_TOKENS, users::token_indexes()).await?;
    drop_retired_indexes(&state.db, EXECUTIONS_COLLECTION, store::RETIRED_INDEXES).await?;
    ensure_indexes(&state.db, EXECUTIONS_COLLECTION, store::indexes()).await?;
    ensure_indexes(
        &state.db,
        crate::scripts::SCRIPTS,
        crate::scripts::indexes(),
    )
    .await?;
    ensure_indexes(
        &state.db,
        shared::notifications::NOTIFICATIONS_COLLECTION,
        shared::notifications::indexes(),
    )
    .await?;
    let defaults = [
        ("user", "DEFAULT_USER_PASSWORD", "user123", Role::User),
        ("admin", "ADMIN_USER_PASSWORD", "admin123", Role::Admin),
    ];
    for (username, env, fallback, role) in defaults {
        let password = std::env::var(env)
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| fallback.to_owned());
        users::seed(&state.db, username, password, role)
            .await
            .map_err(SetupError::Seed)?;
    }
    // Compute the dummy hash now so the first unknown-user login is not slower than the rest.
    crate::auth::routes::dummy_hash(state)
        .await
        .map_err(SetupError::Seed)?;
    Ok(())
}
