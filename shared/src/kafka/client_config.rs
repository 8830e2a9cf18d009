use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Settings every Kiln client shares; `kafka.client_overrides` is applied last.
pub fn base_client_config(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", client_id)
        // librdkafka may resolve "localhost" to ::1 while brokers listen on IPv4 only.
        .set("broker.address.family", "v4");
    for (key, value) in &cfg.client_overrides {
        client.set(key, value);
    }
    client
}
