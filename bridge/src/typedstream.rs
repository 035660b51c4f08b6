//! Decodes the words of a `message.attributedBody`: an NSArchiver "typedstream" whose root
//! object is an `NS(Mutable)AttributedString`.
//!
//! Only the string is read, not the attribute runs: after the first `NSString` class name
//! comes a `+` (0x2B, "UTF-8 bytes follow") type byte, then a length, then that many UTF-8
//! bytes. The length is one byte below 0x80, or 0x81 and a `u16`, or 0x82 and a `u32`
//! (little-endian, unsigned: crabstep `src/deserializer/string.rs` reads string lengths with
//! `read_unsigned_int`, `src/deserializer/number.rs`). Some real blobs declare a length longer
//! than the string they hold (the reference blob `ExtraData`: 157 declared, 17 present); then,
//! as imessage-database does with its fallback parser (`util/streamtyped.rs`), the string is
//! the bytes up to the end-of-object marker `0x86 0x84` that closes it. Invariants: the decoder
//! never panics and never reads past the end; any input it cannot follow (no marker, a length
//! that fits neither way, invalid UTF-8) gives `None`, never a partial or lossy string.

/// The class name of the attributed string's backing string, as it appears in the stream.
const NSSTRING: &[u8] = b"NSString";
/// Type byte announcing a length-prefixed run of UTF-8 bytes.
const UTF8_BYTES: u8 = 0x2B;
/// Length tag: a `u16` little-endian follows.
const TAG_U16: u8 = 0x81;
/// Length tag: a `u32` little-endian follows.
const TAG_U32: u8 = 0x82;
/// End of an object (0x86) followed by the start of the next (0x84): what closes the string
/// when its declared length overruns it.
const END_OF_STRING: &[u8] = &[0x86, 0x84];

/// Returns the text of an `attributedBody` blob, or `None` when it cannot be decoded exactly.
///
/// A blob whose string is empty decodes to `Some("")`.
pub fn decode_text(blob: &[u8]) -> Option<String> {
    let marker = find(blob, NSSTRING)?;
    let after_marker = blob.get(marker + NSSTRING.len()..)?;
    let plus = after_marker.iter().position(|&b| b == UTF8_BYTES)?;
    let rest = after_marker.get(plus + 1..)?;
    let (len, rest) = read_length(rest)?;
    let declared = rest
        .get(..len)
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok());
    declared.or_else(|| {
        // The declared length does not fit: the string ends where its object does.
        let end = find(rest, END_OF_STRING).filter(|&end| end < len)?;
        String::from_utf8(rest[..end].to_vec()).ok()
    })
}

/// The string value of the attribute `key` in the blob's attribute dictionaries, e.g.
/// `IMAudioTranscription` (a voice message's words) or `__kIMFileTransferGUIDAttributeName`.
///
/// The key is an `NSString` object (its length, its bytes, then the end-of-object byte
/// 0x86); its value follows as the next object: an optional back-reference byte (≥ 0x92),
/// 0x84 (new object), its class and type references (each ≥ 0x92), then a length and that
/// many UTF-8 bytes closed by 0x86 — the layout of the reference blob `Transcription`.
/// `None` when the key is absent or its value is anything else.
pub fn decode_string_attribute(blob: &[u8], key: &str) -> Option<String> {
    let key = key.as_bytes();
    let mut pattern = vec![u8::try_from(key.len()).ok().filter(|&n| n < 0x80)?];
    pattern.extend_from_slice(key);
    pattern.push(0x86);
    let at = find(blob, &pattern)?;
    let mut rest = blob.get(at + pattern.len()..)?;
    if rest.first().is_some_and(|&b| b >= REFERENCE_BASE) {
        rest = rest.get(1..)?;
    }
    let (&new_object, rest) = rest.split_first()?;
    let refs = rest.get(..2)?;
    if new_object != NEW_OBJECT || refs.iter().any(|&b| b < REFERENCE_BASE) {
        return None;
    }
    let (len, rest) = read_length(rest.get(2..)?)?;
    let bytes = rest.get(..len)?;
    if rest.get(len) != Some(&END_OF_STRING[0]) {
        return None;
    }
    String::from_utf8(bytes.to_vec()).ok()
}

/// Type byte starting a new object.
const NEW_OBJECT: u8 = 0x84;
/// The smallest back-reference to an earlier class, type or object.
const REFERENCE_BASE: u8 = 0x92;

/// Reads a typedstream length; returns it and the bytes after it.
fn read_length(input: &[u8]) -> Option<(usize, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    match tag {
        TAG_U16 => {
            let raw: [u8; 2] = rest.get(..2)?.try_into().ok()?;
            Some((usize::from(u16::from_le_bytes(raw)), rest.get(2..)?))
        }
        TAG_U32 => {
            let raw: [u8; 4] = rest.get(..4)?.try_into().ok()?;
            let len = usize::try_from(u32::from_le_bytes(raw)).ok()?;
            Some((len, rest.get(4..)?))
        }
        small if small < 0x80 => Some((usize::from(small), rest)),
        _ => None,
    }
}

/// Index of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_voice_message_blob_holds_its_transcript_and_file_guid() {
        let blob = include_bytes!("../../tests/data/attributed-body/Transcription.typedstream");
        let words = include_str!("../../tests/data/attributed-body/Transcription.transcript.txt");
        assert_eq!(
            decode_string_attribute(blob, "IMAudioTranscription").as_deref(),
            Some(words.trim_end())
        );
        assert_eq!(
            decode_string_attribute(blob, "__kIMFileTransferGUIDAttributeName").as_deref(),
            Some("4C339597-EBBB-4978-9B87-521C0471A848")
        );
        assert_eq!(decode_string_attribute(blob, "IMNoSuchAttribute"), None);
        let plain =
            include_bytes!("../../tests/data/attributed-body/AttributedBodyTextOnly.typedstream");
        assert_eq!(decode_string_attribute(plain, "IMAudioTranscription"), None);
    }

    proptest! {
        #[test]
        fn string_attributes_never_panic_on_garbage(blob in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_string_attribute(&blob, "IMAudioTranscription");
        }

        #[test]
        fn string_attributes_never_panic_on_a_damaged_voice_blob(cut in 0usize..360, flip in 0usize..360, byte in any::<u8>()) {
            let mut blob = include_bytes!("../../tests/data/attributed-body/Transcription.typedstream").to_vec();
            if flip < blob.len() { blob[flip] = byte; }
            blob.truncate(cut);
            let _ = decode_string_attribute(&blob, "IMAudioTranscription");
        }
    }

    /// Every reference blob with its expected text, read at compile time.
    const BLOBS: &[(&str, &[u8], &str)] = &[
        (
            "Arabic",
            include_bytes!("../../tests/data/attributed-body/Arabic.typedstream"),
            include_str!("../../tests/data/attributed-body/Arabic.expected.txt"),
        ),
        (
            "AttributedBodyTextOnly",
            include_bytes!("../../tests/data/attributed-body/AttributedBodyTextOnly.typedstream"),
            include_str!("../../tests/data/attributed-body/AttributedBodyTextOnly.expected.txt"),
        ),
        (
            "AttributedBodyTextOnly2",
            include_bytes!("../../tests/data/attributed-body/AttributedBodyTextOnly2.typedstream"),
            include_str!("../../tests/data/attributed-body/AttributedBodyTextOnly2.expected.txt"),
        ),
        (
            "Blank",
            include_bytes!("../../tests/data/attributed-body/Blank.typedstream"),
            include_str!("../../tests/data/attributed-body/Blank.expected.txt"),
        ),
        (
            "EmojiBoldUnderline",
            include_bytes!("../../tests/data/attributed-body/EmojiBoldUnderline.typedstream"),
            include_str!("../../tests/data/attributed-body/EmojiBoldUnderline.expected.txt"),
        ),
        (
            "LongMessage",
            include_bytes!("../../tests/data/attributed-body/LongMessage.typedstream"),
            include_str!("../../tests/data/attributed-body/LongMessage.expected.txt"),
        ),
        (
            "Mention",
            include_bytes!("../../tests/data/attributed-body/Mention.typedstream"),
            include_str!("../../tests/data/attributed-body/Mention.expected.txt"),
        ),
        (
            "MultiPart",
            include_bytes!("../../tests/data/attributed-body/MultiPart.typedstream"),
            include_str!("../../tests/data/attributed-body/MultiPart.expected.txt"),
        ),
        (
            "URL",
            include_bytes!("../../tests/data/attributed-body/URL.typedstream"),
            include_str!("../../tests/data/attributed-body/URL.expected.txt"),
        ),
        (
            "WeirdText",
            include_bytes!("../../tests/data/attributed-body/WeirdText.typedstream"),
            include_str!("../../tests/data/attributed-body/WeirdText.expected.txt"),
        ),
        (
            "Attachment",
            include_bytes!("../../tests/data/attributed-body/Attachment.typedstream"),
            include_str!("../../tests/data/attributed-body/Attachment.expected.txt"),
        ),
        (
            "ExtraData",
            include_bytes!("../../tests/data/attributed-body/ExtraData.typedstream"),
            include_str!("../../tests/data/attributed-body/ExtraData.expected.txt"),
        ),
        (
            "MultiAttachment",
            include_bytes!("../../tests/data/attributed-body/MultiAttachment.typedstream"),
            include_str!("../../tests/data/attributed-body/MultiAttachment.expected.txt"),
        ),
        (
            "Transcription",
            include_bytes!("../../tests/data/attributed-body/Transcription.typedstream"),
            include_str!("../../tests/data/attributed-body/Transcription.expected.txt"),
        ),
        (
            "URLMessage",
            include_bytes!("../../tests/data/attributed-body/URLMessage.typedstream"),
            include_str!("../../tests/data/attributed-body/URLMessage.expected.txt"),
        ),
    ];

    #[test]
    fn every_reference_blob_decodes_to_its_expected_text_exactly() {
        assert_eq!(BLOBS.len(), 15);
        for (name, blob, expected) in BLOBS {
            assert_eq!(decode_text(blob).as_deref(), Some(*expected), "{name}");
        }
    }

    #[test]
    fn reference_blobs_keep_their_tricky_parts() {
        let get = |name: &str| {
            let (_, blob, _) = BLOBS.iter().find(|(n, _, _)| *n == name).unwrap();
            decode_text(blob).unwrap()
        };
        // 0x81 + i16 length: 2359 bytes, not cut at 127 or 255.
        assert_eq!(get("LongMessage").len(), 2359);
        // Length counts UTF-8 bytes (41), not UTF-16 units (22) or chars (11).
        assert_eq!(get("WeirdText").len(), 41);
        assert_eq!(get("WeirdText").chars().count(), 11);
        assert!(get("Mention").ends_with(' '), "trailing space kept");
        assert_eq!(get("MultiPart").matches('\u{FFFC}').count(), 3);
        assert!(get("Arabic").contains('\u{064B}'));
        assert!(get("EmojiBoldUnderline").starts_with("\u{1F171}\u{FE0F}"));
        assert_eq!(get("Blank"), "");
        // Issue 15: a declared length (157) longer than the string (17 bytes, two trailing
        // spaces) ends at the string's end-of-object marker.
        assert_eq!(get("ExtraData"), "This is parsing  ");
        assert_eq!(get("MultiAttachment").matches('\u{FFFC}').count(), 19);
        assert_eq!(get("Transcription"), "\u{FFFC}");
    }

    /// Issue 15: `0x81` lengths are unsigned: 32,768–65,535-byte bodies decode.
    #[test]
    fn u16_lengths_above_i16_max_decode() {
        for len in [0x8000_usize, 40_000, 0xFFFF] {
            let text = "z".repeat(len);
            let mut payload = vec![TAG_U16];
            payload.extend_from_slice(&u16::try_from(len).unwrap().to_le_bytes());
            payload.extend_from_slice(text.as_bytes());
            assert_eq!(decode_text(&stream(&payload)).map(|t| t.len()), Some(len));
        }
    }

    /// A minimal stream around `payload`: marker, filler, `+`, then the payload (length and
    /// bytes).
    fn stream(payload: &[u8]) -> Vec<u8> {
        let mut out =
            b"\x04\x0bstreamtyped\x81\xe8\x03\x84\x01@\x84\x84\x84\x08NSString\x01\x94\x84\x01+"
                .to_vec();
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\x86\x86");
        out
    }

    fn with_len(text: &str) -> Vec<u8> {
        let bytes = text.as_bytes();
        let mut payload = match bytes.len() {
            n if n < 0x80 => vec![n as u8],
            n if n <= u16::MAX as usize => {
                let mut v = vec![TAG_U16];
                v.extend_from_slice(&(n as u16).to_le_bytes());
                v
            }
            n => {
                let mut v = vec![TAG_U32];
                v.extend_from_slice(&(n as u32).to_le_bytes());
                v
            }
        };
        payload.extend_from_slice(bytes);
        stream(&payload)
    }

    #[test]
    fn edge_case_texts_round_trip_through_each_length_form() {
        let long_astral = "𝕏".repeat(40_000); // 160,000 bytes: needs the u32 form
        let cases: &[(&str, &str)] = &[
            ("empty", ""),
            ("ascii", "hello"),
            ("emoji", "🧠 remember 👍🏽"),
            ("rtl", "שלום עולם"),
            ("astral", "𝖍𝖊𝖑𝖑𝖔"),
            ("crlf", "line one\r\nline two\r\n"),
            ("u2028", "a\u{2028}b\u{2029}c"),
            ("nul", "a\0b"),
            ("exactly 127 bytes", &"x".repeat(127)),
            ("exactly 128 bytes", &"x".repeat(128)),
            ("i16 max", &"y".repeat(i16::MAX as usize)),
            ("u16 max", &"y".repeat(u16::MAX as usize)),
            ("u32", &long_astral),
        ];
        for (name, text) in cases {
            assert_eq!(
                decode_text(&with_len(text)).as_deref(),
                Some(*text),
                "{name}"
            );
        }
    }

    #[test]
    fn undecodable_input_gives_none() {
        let cases: &[(&str, Vec<u8>)] = &[
            ("empty input", vec![]),
            ("no marker", b"streamtyped hello".to_vec()),
            ("marker at the very end", b"\x08NSString".to_vec()),
            (
                "no plus after marker",
                b"\x08NSString\x01\x94\x84\x01".to_vec(),
            ),
            (
                "plus but no length",
                stream(&[])[..stream(&[]).len() - 2].to_vec(),
            ),
            ("length past the end", {
                let mut s = stream(b"\x05ab");
                s.truncate(s.len() - 2);
                s
            }),
            ("i16 tag cut short", {
                let mut s = stream(b"\x81\x05");
                s.truncate(s.len() - 2);
                s
            }),
            ("i32 tag cut short", {
                let mut s = stream(b"\x82\x05\x00");
                s.truncate(s.len() - 2);
                s
            }),
            ("u16 longer than input", stream(b"\x81\xff\xffabc")),
            ("u32 longer than input", stream(b"\x82\x00\x00\x00\x80abc")),
            (
                "i32 max longer than input",
                stream(b"\x82\xff\xff\xff\x7fabc"),
            ),
            (
                "overlong, invalid utf-8 before the end marker",
                stream(b"\x40\xff\x86\x84"),
            ),
            ("unknown tag", stream(b"\x90abc")),
            ("invalid utf-8", stream(b"\x02\xff\xfe")),
            ("lone surrogate as cesu", stream(b"\x03\xed\xa0\x80")),
            ("utf-8 cut mid-character", stream(b"\x02\xf0\x9f")),
        ];
        for (name, blob) in cases {
            assert_eq!(decode_text(blob), None, "{name}");
        }
    }

    #[test]
    fn truncating_a_real_blob_inside_its_text_gives_none() {
        for (name, blob, expected) in BLOBS {
            if expected.is_empty() {
                continue;
            }
            let start = find(blob, expected.as_bytes()).expect("the text is in the blob");
            for cut in start..start + expected.len() {
                assert_eq!(decode_text(&blob[..cut]), None, "{name} cut at {cut}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_text(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_the_marker_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut blob = b"\x08NSString\x01\x95\x84\x01+".to_vec();
            blob.extend_from_slice(&tail);
            if let Some(text) = decode_text(&blob) {
                // Whatever decodes is taken from the tail's own bytes.
                prop_assert!(
                    text.is_empty() || tail.windows(text.len()).any(|w| w == text.as_bytes())
                );
            }
        }

        #[test]
        fn damaged_real_blobs_never_panic(
            index in 0..BLOBS.len(),
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
        ) {
            let (_, blob, _) = BLOBS[index];
            let mut damaged = blob[..cut.index(blob.len() + 1)].to_vec();
            if !damaged.is_empty() {
                for (at, bit) in flips {
                    let i = at.index(damaged.len());
                    damaged[i] ^= 1 << bit;
                }
            }
            let _ = decode_text(&damaged);
        }
    }
}
