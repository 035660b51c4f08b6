//! The rich-link preview Messages stores for a link in `message.payload_data`: a binary
//! plist written by NSKeyedArchiver (objects in `$objects`, references as UIDs, the root
//! under `$top.root`) whose `richLinkMetadata` (or `metadata`) is an `LPLinkMetadata` with
//! `title`, `summary`, `siteName`, `URL` and `originalURL` (each URL an `NSURL` whose
//! `NS.relative` is the string). Read with the `plist` crate.
//!
//! Invariants: total — any blob gives a preview or `None`, never a panic; UIDs are
//! resolved a bounded number of times (no cycles followed); only strings are kept.

use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

/// Longest field kept, in characters.
const MAX_FIELD_CHARS: usize = 2000;

/// What Messages knows of a link.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPreview {
    /// The page's title.
    pub title: Option<String>,
    /// Its description.
    pub summary: Option<String>,
    /// The site's name.
    pub site_name: Option<String>,
    /// The link (`URL`, else `originalURL`).
    pub url: Option<String>,
}

impl LinkPreview {
    /// The preview in a `payload_data` blob, if it holds one with at least a URL or a title.
    pub fn parse(blob: &[u8]) -> Option<LinkPreview> {
        let archive = Value::from_reader(std::io::Cursor::new(blob)).ok()?;
        let archive = archive.as_dictionary()?;
        let objects = archive.get("$objects")?.as_array()?;
        let top = archive.get("$top")?.as_dictionary()?;
        let root = resolve(objects, top.get("root")?)?.as_dictionary()?;
        let meta = root
            .get("richLinkMetadata")
            .or_else(|| root.get("metadata"))
            .and_then(|m| resolve(objects, m))?
            .as_dictionary()?;
        let text = |key: &str| string(objects, meta, key);
        let url = |key: &str| {
            let object = resolve(objects, meta.get(key)?)?.as_dictionary()?;
            let relative = resolve(objects, object.get("NS.relative")?)?.as_string()?;
            Some(clip(relative))
        };
        let preview = LinkPreview {
            title: text("title"),
            summary: text("summary"),
            site_name: text("siteName"),
            url: url("URL").or_else(|| url("originalURL")),
        };
        (preview.url.is_some() || preview.title.is_some()).then_some(preview)
    }

    /// What the model is told of it.
    pub fn describe(&self) -> String {
        let mut lines =
            vec!["[Link preview Messages stored for the link in this text]".to_string()];
        let fields = [
            ("Title", &self.title),
            ("Summary", &self.summary),
            ("Site", &self.site_name),
            ("URL", &self.url),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                lines.push(format!("{name}: {value}"));
            }
        }
        lines.join("\n")
    }
}

/// The object a UID points at (a value that is not a UID is itself), skipping `$null`.
fn resolve<'a>(objects: &'a [Value], value: &'a Value) -> Option<&'a Value> {
    let mut at = value;
    // A UID pointing at a UID is not written by NSKeyedArchiver; follow at most a few.
    for _ in 0..4 {
        match at {
            Value::Uid(uid) => at = objects.get(usize::try_from(uid.get()).ok()?)?,
            Value::String(s) if s == "$null" => return None,
            other => return Some(other),
        }
    }
    None
}

fn string(objects: &[Value], dict: &Dictionary, key: &str) -> Option<String> {
    let s = resolve(objects, dict.get(key)?)?.as_string()?;
    let s = s.trim();
    (!s.is_empty()).then(|| clip(s))
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_FIELD_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/data/link-preview/{name}.plist",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn each_real_preview_is_read() {
        let s = |v: &str| Some(v.to_string());
        let cases = [
            (
                "URL",
                LinkPreview {
                    title: s("Christopher Sardegna"),
                    summary: None,
                    site_name: None,
                    url: s("https://chrissardegna.com/"),
                },
            ),
            (
                "MetadataURL",
                LinkPreview {
                    title: s("Christopher Sardegna"),
                    summary: s("Sample page description"),
                    site_name: s("Christopher Sardegna"),
                    url: s("https://chrissardegna.com"),
                },
            ),
            (
                "Twitter",
                LinkPreview {
                    title: s("Christopher Sardegna on Twitter"),
                    summary: s("“Hello Twitter, meet Bella”"),
                    site_name: s("Twitter"),
                    url: s("https://twitter.com/rxcs/status/1175874352946077696"),
                },
            ),
            (
                "Reminder",
                LinkPreview {
                    url: s("https://www.icloud.com/reminders/ZmFrZXVybF9mb3JfcmVtaW5kZXI#TestList"),
                    ..LinkPreview::default()
                },
            ),
        ];
        for (name, want) in cases {
            assert_eq!(LinkPreview::parse(&fixture(name)), Some(want), "{name}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = LinkPreview::parse(&blob);
        }

        #[test]
        fn a_damaged_preview_never_panics(cut in 0usize..2060, flip in 0usize..2060, byte in any::<u8>()) {
            let mut blob = fixture("Twitter");
            if flip < blob.len() { blob[flip] = byte; }
            blob.truncate(cut);
            let _ = LinkPreview::parse(&blob);
        }
    }
}
