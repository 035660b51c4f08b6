//! Tags as Obsidian reads them.
//!
//! Obsidian's rules (help.obsidian.md/tags, "Tag format"): a tag holds letters, numbers,
//! underscores (`_`), hyphens (`-`) and forward slashes (`/`, for nested tags); it must hold
//! at least one character that is not a number (`1984` is not a tag, `y1984` is); it holds
//! no spaces. Letters and numbers are Unicode ones (Obsidian tags work in any script).
//! A nested tag has no empty level (`a//b`, `/a`, `a/`). A tag that breaks a rule is
//! refused with the rule in the message, so that the model can fix it; two repairs are safe
//! and made silently: a leading `#` is dropped, and spaces become `-`.

use super::{Error, MAX_TAG_BYTES, MAX_TAGS, preview};

/// The rule as the model is told it.
const RULE: &str = "a tag may hold only letters, numbers, `_`, `-` and `/` (for nesting), \
                    must hold a character that is not a number, and has no empty level";

/// Validates tags (at most [`MAX_TAGS`]) and repairs each as [`normalize_tag`] does.
pub fn normalize_tags(tags: &[String]) -> Result<Vec<String>, Error> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid("tags", format!("more than {MAX_TAGS} tags")));
    }
    tags.iter().map(|t| normalize_tag(t)).collect()
}

/// Validates one tag against Obsidian's rules, after the safe repairs (leading `#`s
/// dropped, surrounding whitespace trimmed, inner runs of spaces turned into one `-`).
pub fn normalize_tag(tag: &str) -> Result<String, Error> {
    let trimmed = tag.trim().trim_start_matches('#').trim();
    if trimmed.is_empty() {
        return Err(Error::invalid("tags", "empty tag"));
    }
    let repaired = trimmed
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if repaired.len() > MAX_TAG_BYTES {
        return Err(Error::invalid(
            "tags",
            format!("tag longer than {MAX_TAG_BYTES} bytes"),
        ));
    }
    let refuse =
        |why: &str| Error::invalid("tags", format!("{:?} {why}: {RULE}", preview(&repaired)));
    if let Some(bad) = repaired.chars().find(|&c| !is_tag_char(c)) {
        let what = if bad.is_whitespace() || bad.is_control() {
            "contains whitespace or a control character".to_string()
        } else {
            format!("contains {bad:?}")
        };
        return Err(refuse(&what));
    }
    if repaired.chars().all(|c| c.is_numeric()) {
        return Err(refuse("is only a number"));
    }
    if repaired.split('/').any(str::is_empty) {
        return Err(refuse("has an empty level"));
    }
    Ok(repaired)
}

/// Letters and numbers of any script (with their combining marks), `_`, `-` and `/`.
/// Unicode's `XID_Continue` set is exactly letters, marks, digits and connectors like `_`
/// (UAX #31); the `unicode-ident` crate holds its tables.
fn is_tag_char(c: char) -> bool {
    unicode_ident::is_xid_continue(c) || matches!(c, '-' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 9: tags Obsidian does not read as tags were written (`2024`, `a:b`, …).
    #[test]
    fn each_tag_that_breaks_a_rule_is_refused_with_the_rule() {
        let cases: &[(&str, &str)] = &[
            ("2024", "is only a number"),
            ("٢٠٢٤", "is only a number"),
            ("a:b", "contains ':'"),
            ("v1.5", "contains '.'"),
            ("a,b", "contains ','"),
            ("me@home", "contains '@'"),
            ("why?", "contains '?'"),
            ("c++", "contains '+'"),
            ("'q'", "contains '\\''"),
            ("\"dq\"", "contains '\"'"),
            ("[x]", "contains '['"),
            ("{y}", "contains '{'"),
            ("(z)", "contains '('"),
            ("r&d", "contains '&'"),
            ("wow!", "contains '!'"),
            ("a#b", "contains '#'"),
            ("🎉", "contains '🎉'"),
            ("line\nbreak", "whitespace"),
            ("tab\there", "whitespace"),
            ("bell\u{7}", "control"),
            ("a//b", "has an empty level"),
            ("/a", "has an empty level"),
            ("a/", "has an empty level"),
            ("#", "empty tag"),
            ("  ", "empty tag"),
        ];
        for (tag, why) in cases {
            let err = normalize_tag(tag).unwrap_err().to_string();
            assert!(err.contains(why), "{tag:?}: {err}");
            if !why.contains("empty tag") {
                assert!(
                    err.contains("letters, numbers, `_`, `-` and `/`"),
                    "{tag:?}: {err}"
                );
            }
        }
        let long = "a".repeat(MAX_TAG_BYTES + 1);
        assert!(normalize_tag(&long).is_err());
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert!(normalize_tags(&many).is_err());
    }

    #[test]
    fn good_tags_pass_and_safe_repairs_are_silent() {
        let cases: &[(&str, &str)] = &[
            ("person/sarah", "person/sarah"),
            ("#urgent", "urgent"),
            ("##twice", "twice"),
            ("two words", "two-words"),
            ("  padded   out ", "padded-out"),
            ("y1984", "y1984"),
            ("3d_printing", "3d_printing"),
            ("2024/05", "2024/05"),
            ("Ünïcödé/日本語", "Ünïcödé/日本語"),
            ("नमस्ते", "नमस्ते"),
            ("שלום", "שלום"),
            ("snake_case-kebab", "snake_case-kebab"),
        ];
        for (tag, want) in cases {
            assert_eq!(normalize_tag(tag).unwrap(), *want, "{tag:?}");
        }
    }
}
