//! What a consumer's business logic implements, and how it reports failure.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::future::Future;

use super::InboundMessage;

/// How the consumer loop treats a failed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// May succeed later (a store is down): back off and retry on the same partition, then
    /// dead-letter when retries are exhausted.
    Retryable,
    /// Can never succeed (undecodable, invalid): dead-letter at once.
    Poison,
    /// The process cannot go on (misconfiguration): stop without storing the offset.
    Fatal,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Poison => "poison",
            Self::Fatal => "fatal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{class}: {source}")]
pub struct HandlerError {
    pub kind: FailureKind,
    /// A stable, low-cardinality name for the failure, e.g. `undecodable_event`; it becomes the
    /// `x-error-class` header and a metric label.
    pub class: Cow<'static, str>,
    #[source]
    pub source: Box<dyn StdError + Send + Sync>,
}

impl HandlerError {
    pub fn new(
        kind: FailureKind,
        class: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            class: class.into(),
            source: source.into(),
        }
    }

    pub fn retryable(
        class: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::new(FailureKind::Retryable, class, source)
    }

    pub fn poison(
        class: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::new(FailureKind::Poison, class, source)
    }

    pub fn fatal(
        class: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::new(FailureKind::Fatal, class, source)
    }
}

/// Business logic for one consumer group. It must be idempotent: at-least-once delivery means a
/// message can arrive again after a crash or rebalance. Returning `Ok` means the side effect is
/// durable; only then is the offset stored.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        message: &InboundMessage,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}
