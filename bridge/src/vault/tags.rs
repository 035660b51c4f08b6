//! Tags as Obsidian reads them.

use super::{Error, MAX_TAG_BYTES, MAX_TAGS, preview};

/// Validates tags and drops one leading `#` from each.
pub fn normalize_tags(tags: &[String]) -> Result<Vec<String>, Error> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid("tags", format!("more than {MAX_TAGS} tags")));
    }
    tags.iter().map(|t| normalize_tag(t)).collect()
}

/// Validates one tag and drops its leading `#`: non-empty, at most 200 bytes, no whitespace
/// or control characters.
pub fn normalize_tag(tag: &str) -> Result<String, Error> {
    let tag = tag.trim_start_matches('#');
    if tag.is_empty() {
        return Err(Error::invalid("tags", "empty tag"));
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(Error::invalid(
            "tags",
            format!("tag longer than {MAX_TAG_BYTES} bytes"),
        ));
    }
    if tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            "tags",
            format!(
                "tag {:?} contains whitespace or control characters",
                preview(tag)
            ),
        ));
    }
    Ok(tag.to_string())
}
