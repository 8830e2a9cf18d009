//! Metric names of the Kafka plumbing; labels stay low-cardinality (topic, group, outcome).

pub const MESSAGES_PUBLISHED: &str = "kiln_kafka_messages_published_total";
pub const MESSAGES_CONSUMED: &str = "kiln_kafka_messages_consumed_total";
pub const HANDLER_DURATION: &str = "kiln_kafka_handler_duration_seconds";
pub const HANDLER_RETRIES: &str = "kiln_kafka_handler_retries_total";
pub const DEAD_LETTERED: &str = "kiln_kafka_dead_lettered_total";
pub const PARTITIONS_PAUSED: &str = "kiln_kafka_partition_pauses_total";
pub const REBALANCES: &str = "kiln_kafka_rebalances_total";
/// Gauge `{topic, group}`: messages behind the high watermark on this member's partitions
/// (librdkafka statistics, refreshed every 5 s).
pub const CONSUMER_LAG: &str = "kiln_kafka_consumer_lag";
