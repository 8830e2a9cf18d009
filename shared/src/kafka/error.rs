use rdkafka::error::KafkaError as RdKafkaError;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client setup failed")]
    Client(#[source] RdKafkaError),
    #[error("creating topic {topic} failed")]
    CreateTopic {
        topic: String,
        #[source]
        source: RdKafkaError,
    },
    #[error("delivery to {topic} failed")]
    Delivery {
        topic: String,
        #[source]
        source: RdKafkaError,
    },
    #[error("event {event_id} could not be encoded")]
    Encode {
        event_id: uuid::Uuid,
        #[source]
        source: serde_json::Error,
    },
    #[error("subscribing group {group} failed")]
    Subscribe {
        group: String,
        #[source]
        source: RdKafkaError,
    },
    #[error("kafka metadata request failed")]
    Metadata(#[source] RdKafkaError),
    #[error("consumer {group} hit a fatal error")]
    Fatal {
        group: String,
        #[source]
        source: RdKafkaError,
    },
    #[error("handler for group {group} failed fatally: {message}")]
    HandlerFatal { group: String, message: String },
    #[error("consumer poll thread failed")]
    PollThread(#[source] tokio::task::JoinError),
}
