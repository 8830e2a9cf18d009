//! `/api/v1/execute` and `/api/v1/executions/*`: submit, read, list and cancel executions.
//! The api inserts `executions` documents and reads them; result-processor owns every later
//! update (see `docs/design/execution-pipeline.md`).

pub mod agent;
pub mod history;
pub mod idempotency;
pub mod list;
pub mod relay;
pub mod routes;
pub mod store;
pub mod submit;
