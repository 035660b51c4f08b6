//! Searching without the index: every covered note is read and its words compared. Slow
//! on a big vault, but always right; used only while the index is being (re)built.
//!
//! Invariants: the same notes as the index (the [`walk`](super::walk)), the same words
//! ([`text`](super::text)), the same order of importance (title, then tags, then body;
//! newer first on a tie), all phrases required and, when no note has them all, any one.

use std::path::Path;

use super::store::sort_time;
use super::text::{self, Terms};
use super::{Hit, Query, note, read_note, walk};

struct Scored {
    all: bool,
    score: usize,
    when: i64,
    hit: Hit,
}

/// The hits for `terms` under `q`'s filter, best first, at most `q.limit`.
pub fn search(root: &Path, terms: &Terms, q: &Query) -> Vec<Hit> {
    let mut found = Vec::new();
    let from = q.filter.folder.map_or("", |f| f.as_str());
    walk::under(root, from, &mut found);
    let wanted: Vec<String> = q.filter.tags.iter().map(|t| t.to_lowercase()).collect();
    let mut scored: Vec<Scored> = found
        .into_iter()
        .filter_map(|(rel, stamp)| {
            let parsed = note::parse(&rel, &read_note(&root.join(&rel))?);
            let lower: Vec<String> = parsed.tags.iter().map(|t| t.to_lowercase()).collect();
            if !wanted.iter().all(|w| lower.contains(w)) {
                return None;
            }
            let per_field = [
                terms.count_in(&parsed.title),
                terms.count_in(&parsed.tags.join(" ")),
                terms.count_in(&parsed.body),
            ];
            let matched = terms
                .0
                .iter()
                .filter(|p| {
                    let one = Terms(vec![(*p).clone()]);
                    [&parsed.title, &parsed.tags.join(" "), &parsed.body]
                        .iter()
                        .any(|field| one.count_in(field) > 0)
                })
                .count();
            if matched == 0 {
                return None;
            }
            Some(Scored {
                all: matched == terms.0.len(),
                score: per_field[0] * 10 + per_field[1] * 5 + per_field[2],
                when: sort_time(parsed.created.as_deref(), &stamp),
                hit: Hit {
                    snippet: text::snippet(&parsed.body, terms),
                    path: rel,
                    title: parsed.title,
                    tags: parsed.tags,
                    created: parsed.created,
                },
            })
        })
        .collect();
    if scored.iter().any(|s| s.all) {
        scored.retain(|s| s.all);
    }
    scored.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then(b.when.cmp(&a.when))
            .then_with(|| a.hit.path.cmp(&b.hit.path))
    });
    scored.into_iter().take(q.limit).map(|s| s.hit).collect()
}
