//! Words as the index sees them, on both sides: what is indexed, what is asked, and the
//! snippet shown for a hit.
//!
//! Invariants: words are Unicode alphanumeric runs, folded the way the index's tokenizer
//! folds them (`unicode61 remove_diacritics 2`: case and accents ignored, so `Café` = `cafe`);
//! Chinese and Japanese characters, written without spaces, are one word each (as Lucene's
//! standard tokenizer does), so a word asked inside a longer run is still found, as a phrase;
//! a snippet is at most [`SNIPPET_CHARS`] characters.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Longest snippet, in characters, ellipses included.
pub const SNIPPET_CHARS: usize = 200;
/// How much of a snippet comes before its first matching word.
const LEAD_CHARS: usize = 60;

/// Whether `c` belongs to a script written without spaces between words: each such
/// character is a word of its own.
fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x3134F) // CJK Extensions B–G
}

/// `text` with a space around every character of an unspaced script, for the index's
/// tokenizer to see those characters as words.
pub fn spaced(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        if is_unspaced(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// A word folded: compatibility-decomposed, accents removed, lower-cased.
pub fn fold(word: &str) -> String {
    word.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of `text` with their byte ranges, folded.
pub fn words(text: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let is_word = c.is_alphanumeric() || is_combining_mark(c);
        if is_word && is_unspaced(c) {
            if let Some(s) = start.take() {
                out.push((fold(&text[s..i]), s..i));
            }
            out.push((fold(&text[i..i + c.len_utf8()]), i..i + c.len_utf8()));
        } else if is_word {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            out.push((fold(&text[s..i]), s..i));
        }
    }
    if let Some(s) = start {
        out.push((fold(&text[s..]), s..text.len()));
    }
    out.retain(|(w, _)| !w.is_empty());
    out
}

/// One part of a query: a sequence of folded words that must appear together, in order.
/// A bare word is a phrase of one word (or of several, for `e-mail` or `東京`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phrase(pub Vec<String>);

/// A query as asked: its phrases (quoted ones kept whole, bare words one each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms(pub Vec<Phrase>);

impl Terms {
    /// Parses `query`: `"…"` is a phrase, anything else splits on white space; words are
    /// folded; parts without a word are dropped. An unclosed quote runs to the end.
    pub fn parse(query: &str) -> Terms {
        let mut phrases = Vec::new();
        for (i, part) in query.split('"').enumerate() {
            let quoted = i % 2 == 1;
            let pieces: Vec<&str> = if quoted {
                vec![part]
            } else {
                part.split_whitespace().collect()
            };
            for piece in pieces {
                let words: Vec<String> = words(piece).into_iter().map(|(w, _)| w).collect();
                if !words.is_empty() && !phrases.contains(&Phrase(words.clone())) {
                    phrases.push(Phrase(words));
                }
            }
        }
        Terms(phrases)
    }

    /// Whether nothing searchable was asked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The FTS5 query: every phrase as a quoted string (so no word is read as an operator),
    /// all required (`all`) or any one (`!all`). FTS5 query syntax:
    /// <https://sqlite.org/fts5.html#full_text_query_syntax> (a string in double quotes is a
    /// phrase; phrases side by side are an implicit AND; `OR` between them is either).
    pub fn to_fts(&self, all: bool) -> String {
        let quoted: Vec<String> = self
            .0
            .iter()
            .map(|Phrase(words)| format!("\"{}\"", words.join(" ").replace('"', "\"\"")))
            .collect();
        quoted.join(if all { " " } else { " OR " })
    }

    /// How many of the phrases `text` contains.
    pub fn count_in(&self, text: &str) -> usize {
        let folded: Vec<String> = words(text).into_iter().map(|(w, _)| w).collect();
        self.0.iter().filter(|p| find(&folded, p).is_some()).count()
    }
}

/// Where the phrase starts in `words`.
fn find(words: &[String], Phrase(phrase): &Phrase) -> Option<usize> {
    if phrase.is_empty() || words.len() < phrase.len() {
        return None;
    }
    (0..=words.len() - phrase.len()).find(|&i| words[i..i + phrase.len()] == phrase[..])
}

/// A line of at most [`SNIPPET_CHARS`] characters from `body` around the first place a
/// phrase of `terms` matches (the longest phrase first), white space collapsed; the start
/// of the body when nothing matches.
pub fn snippet(body: &str, terms: &Terms) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let found = words(&flat);
    let folded: Vec<String> = found.iter().map(|(w, _)| w.clone()).collect();
    let mut phrases: Vec<&Phrase> = terms.0.iter().collect();
    phrases.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    let at = phrases
        .iter()
        .find_map(|p| find(&folded, p))
        .map_or(0, |i| found[i].1.start);
    let chars: Vec<(usize, char)> = flat.char_indices().collect();
    let at_char = chars.partition_point(|(b, _)| *b < at);
    let mut start = at_char.saturating_sub(LEAD_CHARS);
    // Start at a word boundary when one is near.
    if start > 0
        && let Some(space) = chars[start..at_char].iter().position(|(_, c)| *c == ' ')
    {
        start += space + 1;
    }
    let lead = if start > 0 { "…" } else { "" };
    let room = SNIPPET_CHARS - lead.chars().count();
    let rest = &chars[start..];
    if rest.len() <= room {
        return format!("{lead}{}", rest.iter().map(|(_, c)| c).collect::<String>());
    }
    let mut end = room - 1;
    if let Some(space) = rest[..end].iter().rposition(|(_, c)| *c == ' ')
        && space > room / 2
    {
        end = space;
    }
    let text: String = rest[..end].iter().map(|(_, c)| c).collect();
    format!("{lead}{}…", text.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(q: &str) -> Vec<Vec<&'static str>> {
        Terms::parse(q)
            .0
            .into_iter()
            .map(|p| {
                p.0.into_iter()
                    .map(|w| &*Box::leak(w.into_boxed_str()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn queries_fold_case_and_accents_and_keep_phrases() {
        assert_eq!(terms("Café OFFSITE"), [vec!["cafe"], vec!["offsite"]]);
        assert_eq!(
            terms("\"board game\" night"),
            [vec!["board", "game"], vec!["night"]]
        );
        assert_eq!(
            terms("naïve Zoë ﬁle"),
            [vec!["naive"], vec!["zoe"], vec!["file"]]
        );
        assert_eq!(terms("東京"), [vec!["東", "京"]]);
        assert_eq!(terms("Москва привет"), [vec!["москва"], vec!["привет"]]);
        assert_eq!(terms("مرحبا"), [vec!["مرحبا"]]);
        assert_eq!(terms("e-mail"), [vec!["e", "mail"]]);
        assert_eq!(terms("🎉 ?? \"\" - "), Vec::<Vec<&str>>::new());
        assert_eq!(terms("\"unclosed phrase"), [vec!["unclosed", "phrase"]]);
        assert_eq!(terms("a a A"), [vec!["a"]]);
    }

    #[test]
    fn the_fts_query_quotes_every_phrase() {
        let t = Terms::parse("NEAR OR \"x AND\" y*");
        assert_eq!(t.to_fts(true), "\"near\" \"or\" \"x and\" \"y\"");
        assert_eq!(t.to_fts(false), "\"near\" OR \"or\" OR \"x and\" OR \"y\"");
    }

    #[test]
    fn unspaced_scripts_are_spaced_for_the_tokenizer() {
        assert_eq!(spaced("読書メモ abc"), " 読  書  メ  モ  abc");
        assert_eq!(spaced("plain"), "plain");
    }

    #[test]
    fn snippets_centre_on_the_match_and_stay_short() {
        let t = Terms::parse("offsite");
        assert_eq!(snippet("Plan the\n\noffsite.", &t), "Plan the offsite.");
        let long = format!(
            "{} the Offsite is in Lisbon {}",
            "word ".repeat(100),
            "tail ".repeat(100)
        );
        let s = snippet(&long, &t);
        assert!(s.chars().count() <= SNIPPET_CHARS, "{s}");
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("the Offsite is in Lisbon"), "{s}");
        let none = snippet(&"é".repeat(500), &Terms::parse("zzz"));
        assert_eq!(none.chars().count(), SNIPPET_CHARS);
        assert!(none.starts_with("éé") && none.ends_with('…'));
        let phrase = snippet("a b c. then b c", &Terms::parse("\"b c\" then"));
        assert_eq!(phrase, "a b c. then b c");
        for hostile in ["", "\u{2028}", "\r\n\r\n", "👩‍👩‍👧 emoji", "שלום עולם"]
        {
            assert!(snippet(hostile, &t).chars().count() <= SNIPPET_CHARS);
        }
    }
}
