//! Metric names of the result-processor.

/// Counter `{status, lang}`: terminal results written to `executions` (exactly once each).
pub const RESULTS_STORED: &str = "kiln_results_stored_total";
/// Counter `{event_type}`: terminal events that found the result already stored (a duplicate,
/// or a later terminal event that lost the race) and were acknowledged without effect.
pub const DUPLICATES_IGNORED: &str = "kiln_results_duplicates_ignored_total";
/// Counter: terminal results that could not be stored (`result_failed`).
pub const RESULTS_FAILED: &str = "kiln_results_failed_total";
/// Histogram (seconds): `created_at` → `finished_at` of each stored result.
pub const END_TO_END_LATENCY: &str = "kiln_execution_end_to_end_seconds";
/// Counter `{type}`: entries appended to execution streams in Redis.
pub const STREAM_ENTRIES: &str = "kiln_result_stream_entries_total";
