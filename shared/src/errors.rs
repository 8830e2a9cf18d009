//! Helpers for reporting errors with their whole cause chain.

use std::error::Error;

/// `error` and each of its sources, joined by `": "`. A source whose text the previous level
/// already printed (a common `"{context}: {source}"` pattern) is not repeated.
pub fn display_chain(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = source.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Wrapped(#[source] std::io::Error);

    #[test]
    fn sources_are_appended() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(display_chain(&e), "outer: disk full");
    }

    #[test]
    fn a_source_already_in_the_message_is_not_repeated() {
        let e = Wrapped(std::io::Error::other("disk full"));
        assert_eq!(display_chain(&e), "wrapped: disk full");
    }
}
