//! The agent's system prompt, and the notice the app sends when a question times out.
//!
//! Invariants: the prompt is a constant compiled into the binary, so it is byte-for-byte
//! the same on every request and the prompt cache keeps hitting. It is kept short (about
//! 4–5 KB) because every capture sends it. The words live in `prompt.md`.
//!
//! What changes from run to run — the current time — goes into the user turn instead
//! ([`now_context`], added after each run's input by [`crate::agent::Agent::with_context`]):
//! the API caches the prefix of a request up to a `cache_control` breakpoint in the order
//! tools, system, messages, so a change in the system prompt would miss the cache for all of
//! it, while a change in the newest user turn leaves the cached tools and system prompt
//! hitting (<https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching>, "Cache
//! prefixes are created in the following order: tools, system, then messages").

/// What the notice sent for a timed-out question starts with; the prompt tells the model
/// what to do with it.
pub const SYSTEM_NOTICE_PREFIX: &str = "[System notice]";

const SYSTEM_PROMPT: &str = include_str!("prompt.md");

/// What the line telling the model the current time starts with.
pub const NOW_PREFIX: &str = "[Now]";

/// The current local time, for the end of each run's user turn.
pub fn now_context() -> String {
    let zone = iana_time_zone::get_timezone().ok();
    now_line(chrono::Local::now().fixed_offset(), zone.as_deref())
}

/// "[Now] Wednesday 2026-12-02 17:05 (Europe/Paris, UTC+01:00)": the date, weekday, time
/// and time zone the model resolves "tomorrow at 5" from.
pub fn now_line(now: chrono::DateTime<chrono::FixedOffset>, zone: Option<&str>) -> String {
    let offset = now.format("UTC%:z");
    let zone = match zone {
        Some(name) => format!("{name}, {offset}"),
        None => offset.to_string(),
    };
    format!("{NOW_PREFIX} {} ({zone})", now.format("%A %Y-%m-%d %H:%M"))
}

/// The system prompt: role, folders, tags, when to ask, workflow, timeout behaviour.
pub fn system_prompt() -> &'static str {
    SYSTEM_PROMPT
}

/// The user turn sent when the question about `original` got no answer in time: the model
/// files `original` to Inbox, tells the user and logs it.
pub fn timeout_notice(original: &str) -> String {
    format!(
        "{SYSTEM_NOTICE_PREFIX} Your question got no answer before the session timed out. File \
         the original text below to Inbox, noting that clarification was not received, tell \
         the user briefly, and log it.\n\nOriginal text:\n{original}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_names_every_folder_tag_family_and_tool() {
        let prompt = system_prompt();
        let required = [
            // folders
            "Tasks",
            "Ideas",
            "Reference",
            "Projects",
            "Inbox",
            "Archive",
            // tag families and their values
            "person/",
            "project/",
            "topic/",
            "company/",
            "priority/urgent",
            "priority/high",
            "priority/normal",
            "priority/low",
            "priority/someday",
            "status/waiting",
            "status/active",
            "status/scheduled",
            "status/done",
            // tools and the workflow's words
            "vault_write",
            "log_interaction",
            "send_message",
            "vault_list",
            "vault_search",
            "category query",
            "one specific question",
            "Always log",
            "always reply",
            SYSTEM_NOTICE_PREFIX,
            "clarification was not received",
            // issue 16: a capture in one turn, its reply carried by the note
            "ONE turn",
            "reply = ",
            "{path}",
            // issue 11: the time, reminders, done
            NOW_PREFIX,
            "09:00",
            "Monday 09:00",
            "vault_set_reminder",
            "vault_list_reminders",
            "vault_move",
            "Done with X",
            "ask which",
        ];
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|w| !prompt.contains(w))
            .collect();
        assert!(
            missing.is_empty(),
            "the system prompt does not mention {missing:?}"
        );
    }

    #[test]
    fn the_prompt_stays_compact() {
        let len = system_prompt().len();
        assert!(
            (2_000..=5_000).contains(&len),
            "system prompt is {len} bytes"
        );
        assert!(!system_prompt().contains('\r'));
    }

    #[test]
    fn the_time_line_names_the_weekday_date_time_and_zone() {
        let paris = chrono::FixedOffset::east_opt(3600).unwrap();
        let now = chrono::TimeZone::with_ymd_and_hms(&paris, 2026, 12, 2, 17, 5, 9).unwrap();
        assert_eq!(
            now_line(now, Some("Europe/Paris")),
            "[Now] Wednesday 2026-12-02 17:05 (Europe/Paris, UTC+01:00)"
        );
        let kolkata = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        assert_eq!(
            now_line(now.with_timezone(&kolkata), None),
            "[Now] Wednesday 2026-12-02 21:35 (UTC+05:30)"
        );
    }

    #[test]
    fn the_timeout_notice_quotes_the_original_verbatim() {
        for original in [
            "",
            "call sarah",
            "🦀 astral 𝄞",
            "مرحبا بالعالم",
            "a\r\nb",
            "x\u{2028}y",
            "[System notice] nested",
        ] {
            let notice = timeout_notice(original);
            assert!(notice.starts_with(SYSTEM_NOTICE_PREFIX), "{notice:?}");
            assert!(
                notice.ends_with(&format!("Original text:\n{original}")),
                "{notice:?}"
            );
            assert!(notice.contains("Inbox"));
        }
    }
}
