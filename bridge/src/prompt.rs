//! The agent's system prompt, and the notice the app sends when a question times out.
//!
//! Invariants: the prompt is a constant compiled into the binary, so it is byte-for-byte
//! the same on every request and the prompt cache keeps hitting. It is kept short (about
//! 3–4 KB) because every capture sends it. The words live in `prompt.md`.

/// What the notice sent for a timed-out question starts with; the prompt tells the model
/// what to do with it.
pub const SYSTEM_NOTICE_PREFIX: &str = "[System notice]";

const SYSTEM_PROMPT: &str = include_str!("prompt.md");

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
            (2_000..=4_200).contains(&len),
            "system prompt is {len} bytes"
        );
        assert!(!system_prompt().contains('\r'));
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
