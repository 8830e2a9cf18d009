//! `/api/v1/admin/*`: administration routes; each requires the admin role.

pub mod dlq;
pub mod rate_limits;
pub mod replay;
