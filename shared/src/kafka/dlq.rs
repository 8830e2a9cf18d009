//! The dead-letter contract: the original payload and key, unchanged, plus headers that say where
//! the message came from and why it failed. dlq-processor reads these headers back.

use chrono::{DateTime, Utc};

use super::InboundMessage;
use super::headers::HeaderList;

pub const ORIGINAL_TOPIC: &str = "x-original-topic";
pub const ORIGINAL_PARTITION: &str = "x-original-partition";
pub const ORIGINAL_OFFSET: &str = "x-original-offset";
pub const ORIGINAL_KEY: &str = "x-original-key";
pub const ERROR_CLASS: &str = "x-error-class";
pub const ERROR_KIND: &str = "x-error-kind";
pub const ERROR_MESSAGE: &str = "x-error-message";
pub const ATTEMPT: &str = "x-attempt";
pub const FAILED_AT: &str = "x-failed-at";
pub const CONSUMER_GROUP: &str = "x-consumer-group";

/// Error messages are cut to this many bytes so a huge error cannot blow the header budget.
const MAX_ERROR_MESSAGE_BYTES: usize = 2_048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqHeaders {
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    pub original_key: Option<Vec<u8>>,
    pub error_class: String,
    /// `poison` or `retries_exhausted`.
    pub error_kind: String,
    pub error_message: String,
    pub attempt: u32,
    pub failed_at: DateTime<Utc>,
    pub consumer_group: String,
}

#[derive(Debug, thiserror::Error)]
#[error("dead-letter header {header} is missing or malformed")]
pub struct DlqHeaderError {
    pub header: &'static str,
}

impl DlqHeaders {
    /// The headers of the dead-lettered copy: the original headers (trace context included), with
    /// the DLQ headers set over any earlier ones, so a message dead-lettered twice shows its last
    /// failure.
    pub fn apply(&self, original: &[(String, Vec<u8>)]) -> HeaderList {
        let mut headers = HeaderList(original.to_vec());
        headers.set(ORIGINAL_TOPIC, self.original_topic.as_bytes());
        headers.set(ORIGINAL_PARTITION, self.original_partition.to_string());
        headers.set(ORIGINAL_OFFSET, self.original_offset.to_string());
        match &self.original_key {
            Some(key) => headers.set(ORIGINAL_KEY, key.clone()),
            None => headers.0.retain(|(k, _)| k != ORIGINAL_KEY),
        }
        headers.set(ERROR_CLASS, self.error_class.as_bytes());
        headers.set(ERROR_KIND, self.error_kind.as_bytes());
        headers.set(
            ERROR_MESSAGE,
            truncate_utf8(&self.error_message, MAX_ERROR_MESSAGE_BYTES),
        );
        headers.set(ATTEMPT, self.attempt.to_string());
        headers.set(FAILED_AT, self.failed_at.to_rfc3339());
        headers.set(CONSUMER_GROUP, self.consumer_group.as_bytes());
        headers
    }

    /// Reads the DLQ headers back from a message consumed from the dead-letter topic.
    pub fn parse(message: &InboundMessage) -> Result<Self, DlqHeaderError> {
        fn text<'a>(
            m: &'a InboundMessage,
            header: &'static str,
        ) -> Result<&'a str, DlqHeaderError> {
            m.header_str(header).ok_or(DlqHeaderError { header })
        }
        fn number<T: std::str::FromStr>(
            m: &InboundMessage,
            header: &'static str,
        ) -> Result<T, DlqHeaderError> {
            text(m, header)?
                .parse()
                .map_err(|_| DlqHeaderError { header })
        }
        Ok(Self {
            original_topic: text(message, ORIGINAL_TOPIC)?.to_owned(),
            original_partition: number(message, ORIGINAL_PARTITION)?,
            original_offset: number(message, ORIGINAL_OFFSET)?,
            original_key: message.header(ORIGINAL_KEY).map(<[u8]>::to_vec),
            error_class: text(message, ERROR_CLASS)?.to_owned(),
            error_kind: text(message, ERROR_KIND)?.to_owned(),
            error_message: text(message, ERROR_MESSAGE)?.to_owned(),
            attempt: number(message, ATTEMPT)?,
            failed_at: DateTime::parse_from_rfc3339(text(message, FAILED_AT)?)
                .map_err(|_| DlqHeaderError { header: FAILED_AT })?
                .with_timezone(&Utc),
            consumer_group: text(message, CONSUMER_GROUP)?.to_owned(),
        })
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DlqHeaders {
        DlqHeaders {
            original_topic: "dev_execution_requested".into(),
            original_partition: 3,
            original_offset: 42,
            original_key: Some(b"exec-1".to_vec()),
            error_class: "undecodable_event".into(),
            error_kind: "poison".into(),
            error_message: "expected value at line 1".into(),
            attempt: 1,
            failed_at: DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            consumer_group: "result-processor".into(),
        }
    }

    fn as_message(headers: HeaderList) -> InboundMessage {
        InboundMessage {
            topic: "dev_dead_letter_queue".into(),
            partition: 0,
            offset: 0,
            key: Some(b"exec-1".to_vec()),
            payload: None,
            headers: headers.0,
            timestamp_ms: None,
        }
    }

    #[test]
    fn headers_round_trip() {
        let original = vec![("traceparent".to_owned(), b"00-abc-def-01".to_vec())];
        let headers = sample().apply(&original);
        let message = as_message(headers);
        assert_eq!(DlqHeaders::parse(&message).unwrap(), sample());
        assert_eq!(message.header("traceparent"), Some(&b"00-abc-def-01"[..]));
    }

    #[test]
    fn a_second_dead_lettering_replaces_the_first_headers() {
        let first = sample().apply(&[]);
        let mut second = sample();
        second.attempt = 7;
        let message = as_message(second.apply(&first.0));
        assert_eq!(
            message.headers.iter().filter(|(k, _)| k == ATTEMPT).count(),
            1
        );
        assert_eq!(DlqHeaders::parse(&message).unwrap().attempt, 7);
    }

    #[test]
    fn a_missing_header_is_named() {
        let mut message = as_message(sample().apply(&[]));
        message.headers.retain(|(k, _)| k != ORIGINAL_OFFSET);
        assert_eq!(
            DlqHeaders::parse(&message).unwrap_err().header,
            ORIGINAL_OFFSET
        );
    }

    #[test]
    fn long_error_messages_are_cut_on_a_char_boundary() {
        let mut headers = sample();
        headers.error_message = "é".repeat(5_000);
        let message = as_message(headers.apply(&[]));
        let cut = message.header_str(ERROR_MESSAGE).unwrap();
        assert!(cut.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
