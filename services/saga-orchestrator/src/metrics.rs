//! Metric names of the saga-orchestrator, in one place so dashboards and code agree.

/// Gauge: sagas waiting for a slot (`state: queued`), refreshed by every scheduler pass.
pub const QUEUE_DEPTH: &str = "kiln_saga_queue_depth";
/// Counter: sagas moved from `queued` to `scheduled`.
pub const SCHEDULED_TOTAL: &str = "kiln_saga_scheduled_total";
/// Gauge: sagas holding a slot (`scheduled|running`), refreshed by every scheduler pass.
pub const RUNNING: &str = "kiln_saga_running";
/// Histogram (seconds): time between `enqueued_at` and `scheduled_at`.
pub const QUEUE_WAIT: &str = "kiln_saga_queue_wait_seconds";
/// Counter `{status}`: sagas that reached an end (completed, failed, timeout, cancelled).
pub const TERMINAL_TOTAL: &str = "kiln_saga_terminal_total";
/// Gauge: 1 while this replica holds the scheduler lease.
pub const LEADER: &str = "kiln_saga_scheduler_leader";
/// Counter `{why}`: reads of every active saga to count the slots in use (`lease`: none known
/// yet, `stale`: the bound is old, `full`: the bound says a cap is reached).
pub const SLOT_COUNTS_TOTAL: &str = "kiln_saga_slot_counts_total";
/// Counter: scheduler passes that looked at the queue.
pub const PASSES_TOTAL: &str = "kiln_saga_scheduler_passes_total";
