//! Cutting a byte stream into UTF-8 text chunks without splitting a character.

/// The length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence.
/// Invalid bytes are not held back (they can never become valid); only an incomplete sequence at
/// the very end is, because its remaining bytes may still be on their way.
pub(crate) fn complete_prefix_len(bytes: &[u8]) -> usize {
    // A UTF-8 sequence is at most 4 bytes, so only the last 3 bytes can start an incomplete one.
    let tail_start = bytes.len().saturating_sub(3);
    for start in (tail_start..bytes.len()).rev() {
        let byte = bytes[start];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let needed = match byte {
            b if b & 0b1000_0000 == 0 => 1,
            b if b & 0b1110_0000 == 0b1100_0000 => 2,
            b if b & 0b1111_0000 == 0b1110_0000 => 3,
            b if b & 0b1111_1000 == 0b1111_0000 => 4,
            _ => 1, // invalid lead byte: emit it (lossily) rather than wait forever
        };
        return if bytes.len() - start < needed {
            start
        } else {
            bytes.len()
        };
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_text_is_kept_whole() {
        assert_eq!(complete_prefix_len("héllo 🌍".as_bytes()), "héllo 🌍".len());
        assert_eq!(complete_prefix_len(b""), 0);
    }

    #[test]
    fn a_character_cut_at_the_end_is_held_back() {
        let text = "ab🌍".as_bytes();
        for cut in 3..text.len() {
            assert_eq!(complete_prefix_len(&text[..cut]), 2, "cut at {cut}");
        }
        let cjk = "漢字".as_bytes();
        assert_eq!(complete_prefix_len(&cjk[..4]), 3);
    }

    #[test]
    fn invalid_bytes_are_not_held_back_forever() {
        assert_eq!(complete_prefix_len(&[b'a', 0xff]), 2);
        assert_eq!(complete_prefix_len(&[0x80, 0x80, 0x80, 0x80]), 4);
    }

    #[test]
    fn every_split_of_mixed_text_reassembles_exactly() {
        let text = "a€𝄞é漢b\n".repeat(3);
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let first = complete_prefix_len(&bytes[..split]);
            let rebuilt = [&bytes[..first], &bytes[first..]].concat();
            assert_eq!(rebuilt, bytes);
            assert!(
                std::str::from_utf8(&bytes[..first]).is_ok(),
                "split {split}"
            );
        }
    }
}
