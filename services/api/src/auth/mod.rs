//! Identity: users, password sessions (JWT cookie + double-submit CSRF) and personal API tokens.

pub mod cookies;
pub mod extractor;
pub mod jwt;
pub mod password;
pub mod routes;
pub mod token_cache;
pub mod tokens;
pub mod users;
pub mod validate;

pub use extractor::CurrentUser;
pub use users::Role;
