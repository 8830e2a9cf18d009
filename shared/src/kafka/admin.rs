//! Explicit topic creation at start-up: partitions and retention come from config, never from
//! broker auto-creation defaults.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaError, base_client_config};
use crate::config::KafkaConfig;
use crate::events::all_topics;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates every catalogue topic and the dead-letter topic under `kafka.topic_prefix`.
/// Topics that already exist are left as they are, so every service can call this at start.
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<Vec<String>, KafkaError> {
    let topics = all_topics(&cfg.topic_prefix);
    ensure_topics_named(cfg, &topics).await?;
    Ok(topics)
}

pub async fn ensure_topics_named(cfg: &KafkaConfig, topics: &[String]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base_client_config(cfg, "kiln-admin")
        .create()
        .map_err(KafkaError::Client)?;
    let retention_ms = (cfg.retention_hours * 3_600_000).to_string();
    let max_message_bytes = cfg.max_message_bytes.to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                cfg.partitions,
                TopicReplication::Fixed(cfg.replication_factor),
            )
            .set("retention.ms", &retention_ms)
            .set("max.message.bytes", &max_message_bytes)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(KafkaError::Client)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    source: rdkafka::error::KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}
