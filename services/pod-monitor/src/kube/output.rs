//! The program's output from an executor pod's log: frames (see `kiln_runner_protocol::pod`)
//! become `execution_output` chunks whose `seq` is the frame's index in the log, so re-reading a
//! log after a restart reproduces the same `seq`s and consumers drop the repeats.

use k8s_openapi::api::core::v1::Pod;
use kiln_runner_protocol::pod::{CONTAINER_NAME, FrameStream, decode_frames};
use kube::api::{Api, LogParams};
use shared::events::OutputStream;

use crate::utf8::complete_prefix_len;

/// Turns frames into text without splitting a UTF-8 character across two chunks.
#[derive(Debug, Default)]
pub(crate) struct Chunker {
    carry: [Vec<u8>; 2],
}

impl Chunker {
    /// The text of `bytes`, after what an earlier frame of the stream left incomplete.
    pub(crate) fn push(&mut self, stream: FrameStream, bytes: &[u8]) -> (OutputStream, String) {
        let (slot, out) = match stream {
            FrameStream::Stdout => (0, OutputStream::Stdout),
            FrameStream::Stderr => (1, OutputStream::Stderr),
        };
        let carry = &mut self.carry[slot];
        carry.extend_from_slice(bytes);
        let take = complete_prefix_len(carry);
        let text = String::from_utf8_lossy(&carry[..take]).into_owned();
        carry.drain(..take);
        (out, text)
    }
}

/// Everything the program wrote, per stream, from a complete log.
pub(crate) struct Captured {
    pub(crate) frames: Vec<(FrameStream, Vec<u8>)>,
}

impl Captured {
    pub(crate) fn parse(log: &str) -> Captured {
        Captured {
            frames: decode_frames(log).collect(),
        }
    }

    pub(crate) fn text(&self, stream: FrameStream) -> String {
        let bytes: Vec<u8> = self
            .frames
            .iter()
            .filter(|(s, _)| *s == stream)
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

pub(crate) fn log_params(follow: bool) -> LogParams {
    LogParams {
        container: Some(CONTAINER_NAME.to_owned()),
        follow,
        ..LogParams::default()
    }
}

/// The whole log of a finished pod; empty when the pod or its log is gone.
pub(crate) async fn read_log(pods: &Api<Pod>, name: &str) -> String {
    match pods.logs(name, &log_params(false)).await {
        Ok(log) => log,
        Err(error) => {
            tracing::warn!(pod = %name, %error, "executor log unreadable; reporting no output");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kiln_runner_protocol::pod::encode_frame;

    #[test]
    fn a_character_split_across_frames_is_kept_whole() {
        let mut chunker = Chunker::default();
        let e = "é".as_bytes();
        assert_eq!(chunker.push(FrameStream::Stdout, &[b'a', e[0]]).1, "a");
        assert_eq!(chunker.push(FrameStream::Stderr, b"x").1, "x");
        assert_eq!(chunker.push(FrameStream::Stdout, &[e[1], b'b']).1, "éb");
    }

    #[test]
    fn captured_output_joins_each_stream() {
        let log = [
            encode_frame(FrameStream::Stdout, b"hel"),
            "kiln-runner: noise\n".into(),
            encode_frame(FrameStream::Stderr, b"oops"),
            encode_frame(FrameStream::Stdout, b"lo\n"),
        ]
        .concat();
        let captured = Captured::parse(&log);
        assert_eq!(captured.frames.len(), 3);
        assert_eq!(captured.text(FrameStream::Stdout), "hello\n");
        assert_eq!(captured.text(FrameStream::Stderr), "oops");
    }
}
