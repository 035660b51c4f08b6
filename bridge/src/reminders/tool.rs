//! The agent's `vault_set_reminder`, `vault_list_reminders` and `vault_move` tools: input
//! checked as strictly as the other tools', the vault work done off the runtime.
//!
//! Invariants: a reminder is set only in the future and only while the bridge's scheduler
//! runs for this vault (so it is recorded which chat it goes to); setting, moving and
//! archiving tell the scheduler at once.

use chrono::Local;
use serde::Deserialize;
use serde_json::{Value, json};

use super::frontmatter::{self, reminder_lines, set_field, set_tasks_line};
use super::{Due, Live, format_due, local, of_vault, parse_due, pending};
use crate::chatdb::Chat;
use crate::tools::Error;
use crate::vault::{self, Folder, Vault};

/// `vault_set_reminder`.
pub const SET: &str = "vault_set_reminder";
/// `vault_list_reminders`.
pub const LIST: &str = "vault_list_reminders";
/// `vault_move`.
pub const MOVE: &str = "vault_move";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetInput {
    filepath: String,
    due: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListInput {
    #[serde(default)]
    due_before: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveInput {
    filepath: String,
    folder: String,
}

fn invalid(tool: &'static str, reason: impl Into<String>) -> Error {
    Error::Input {
        tool,
        reason: reason.into(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(tool: &'static str, input: &Value) -> Result<T, Error> {
    if !input.is_object() {
        return Err(invalid(tool, "input must be a JSON object"));
    }
    T::deserialize(input).map_err(|e| invalid(tool, e.to_string()))
}

fn live(tool: &'static str, vault: &Vault) -> Result<Live, Error> {
    of_vault(vault.root()).ok_or_else(|| invalid(tool, "reminders are not running for this vault"))
}

/// Sets the reminder of `filepath` at `due`, to be texted into `chat`.
pub async fn set(vault: &Vault, chat: &Chat, input: &Value) -> Result<String, Error> {
    let input: SetInput = parse(SET, input)?;
    let due = local(&parse_due(&input.due).map_err(|e| invalid(SET, e.to_string()))?);
    let now = Local::now();
    if due <= now {
        return Err(invalid(
            SET,
            format!(
                "due {} is in the past (it is now {}); ask the user when",
                format_due(&due),
                now.format("%Y-%m-%dT%H:%M")
            ),
        ));
    }
    let live = live(SET, vault)?;
    let rel = input.filepath.trim().to_string();
    let note = rel.clone();
    vault
        .off_runtime(move |vault| {
            let path = vault.note_file(&note)?;
            frontmatter::update(&path, |text| Some(with_reminder(&note, text, &due)))
                .map_err(|e| vault::Error::invalid("filepath", e.to_string()))?;
            Ok(())
        })
        .await
        .map_err(|source| Error::Vault { tool: SET, source })?;
    let (store, key, chat) = (live.store.clone(), rel.clone(), chat.clone());
    let recorded =
        tokio::task::spawn_blocking(move || store.set_chat(&key, &format_due(&due), &chat))
            .await
            .map_err(|e| invalid(SET, e.to_string()))?;
    recorded.map_err(|e| invalid(SET, format!("could not record the reminder's chat: {e}")))?;
    live.poke();
    Ok(format!(
        "reminder set for {} ({})",
        format_due(&due),
        due.format("%A %-d %B %H:%M")
    ))
}

/// `text` (the note at `rel`) with its reminder at `due`, and a task's Tasks line dated.
fn with_reminder(rel: &str, text: &str, due: &Due) -> String {
    let text = set_field(text, "reminder", Some(&reminder_lines(due, None)));
    if rel.split('/').next() != Some(Folder::Tasks.as_str()) {
        return text;
    }
    let title = crate::search::note::parse(rel, &text).title;
    set_tasks_line(&text, &title, due.date_naive())
}

/// The pending reminders (not in Archive), soonest first, due before `due_before` if given.
pub async fn list(vault: &Vault, input: &Value) -> Result<String, Error> {
    let input: ListInput = parse(LIST, input)?;
    let before = input
        .due_before
        .as_deref()
        .map(|raw| parse_due(raw).map_err(|e| invalid(LIST, e.to_string())))
        .transpose()?;
    let all = vault
        .off_runtime(|vault| Ok(pending(vault.root())))
        .await
        .map_err(|source| Error::Vault { tool: LIST, source })?;
    let shown: Vec<Value> = all
        .into_iter()
        .filter(|r| before.is_none_or(|b| r.due < b))
        .map(|r| json!({"path": r.path, "title": r.title, "due": format_due(&local(&r.due))}))
        .collect();
    Ok(Value::Array(shown).to_string())
}

/// Moves `filepath` into `folder` (archiving it there when `Archive`).
pub async fn move_note(vault: &Vault, input: &Value) -> Result<String, Error> {
    let input: MoveInput = parse(MOVE, input)?;
    let folder: Folder = input
        .folder
        .parse()
        .map_err(|source| Error::Vault { tool: MOVE, source })?;
    let rel = input.filepath.trim().to_string();
    let moved = vault
        .off_runtime(move |vault| vault.move_note(&rel, folder, Local::now()))
        .await
        .map_err(|source| Error::Vault { tool: MOVE, source })?;
    if let Some(live) = of_vault(vault.root()) {
        let (store, m) = (live.store.clone(), moved.clone());
        let _ = tokio::task::spawn_blocking(move || store.moved(&m.from, &m.to)).await;
        live.poke();
    }
    let archived = folder == Folder::Archive;
    Ok(match archived {
        true => format!(
            "archived to {} (its reminder, if any, is cancelled)",
            moved.to
        ),
        false => format!("moved to {}", moved.to),
    })
}

/// The three tools' definitions, as sent to the Messages API.
pub fn definitions() -> Vec<Value> {
    let folders: Vec<&str> = Folder::ALL.iter().map(|f| f.as_str()).collect();
    vec![
        json!({
            "name": SET,
            "description": "Text the user a reminder of a note at a time (in this chat).",
            "input_schema": {
                "type": "object",
                "properties": {
                    "filepath": {"type": "string", "description": "The note, relative to the vault"},
                    "due": {"type": "string", "description": "ISO 8601; local time when no offset, e.g. 2026-12-03T17:00"},
                },
                "required": ["filepath", "due"],
                "additionalProperties": false,
            },
        }),
        json!({
            "name": LIST,
            "description": "Pending reminders, soonest first: path, title, due.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "due_before": {"type": "string", "description": "ISO 8601"},
                },
                "additionalProperties": false,
            },
        }),
        json!({
            "name": MOVE,
            "description": "Move a note to another folder, keeping its name. Archive marks it done and cancels its reminder.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "filepath": {"type": "string"},
                    "folder": {"type": "string", "enum": folders},
                },
                "required": ["filepath", "folder"],
                "additionalProperties": false,
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::agent::ToolRunner;
    use crate::sender::Sender;
    use crate::state::StateDb;
    use crate::tools::Tools;

    const CHAT: &str = "iMessage;-;+15551234567";

    struct Fixture {
        dir: tempfile::TempDir,
        tools: Tools,
        live: Live,
        changes: tokio::sync::watch::Receiver<u64>,
        _registered: super::super::Registered,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let vault = Vault::new(dir.path());
            vault.check_writable().unwrap();
            let store =
                super::super::Store::open(std::sync::Arc::new(StateDb::in_memory())).unwrap();
            let (changed, changes) = tokio::sync::watch::channel(0);
            let live = Live { store, changed };
            let registered = super::super::register(dir.path(), live.clone());
            let chat = Chat {
                guid: CHAT.into(),
                identifier: "+15551234567".into(),
                is_group: false,
            };
            let tools = Tools::new(vault, Sender::with_program("/nonexistent"), chat, None);
            Fixture {
                dir,
                tools,
                live,
                changes,
                _registered: registered,
            }
        }

        fn put(&self, rel: &str, text: &str) {
            fs::write(self.dir.path().join(rel), text).unwrap();
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.dir.path().join(rel)).unwrap()
        }

        async fn call(&self, name: &str, input: Value) -> (String, bool) {
            let out = self.tools.call(name, &input).await;
            (out.content.clone(), out.is_error)
        }
    }

    const TASK: &str = "---\ncreated: 2026-12-01T09:00:00+01:00\ntags:\n- priority/normal\n- status/active\nconfidence: 90\n---\n# Call the dentist\n\n- [ ] Call the dentist\n";

    #[tokio::test]
    async fn set_reminder_writes_the_field_the_tasks_line_and_the_chat() {
        let f = Fixture::new();
        f.put("Tasks/call.md", TASK);
        let due = (Local::now() + chrono::Duration::days(1)).with_timezone(&Local);
        let raw = due.format("%Y-%m-%dT%H:%M").to_string();
        let (out, err) = f
            .call(SET, json!({"filepath": "Tasks/call.md", "due": raw}))
            .await;
        assert!(!err, "{out}");
        let due = parse_due(&raw).unwrap();
        let text = f.read("Tasks/call.md");
        assert_eq!(
            text,
            TASK.replace(
                "confidence: 90\n",
                &format!("confidence: 90\n{}", reminder_lines(&due, None))
            )
            .replace(
                "- [ ] Call the dentist\n",
                &format!("- [ ] Call the dentist 📅 {}\n", due.format("%Y-%m-%d"))
            )
        );
        assert!(
            out.starts_with(&format!("reminder set for {}", format_due(&due))),
            "{out}"
        );
        let chat = f
            .live
            .store
            .chat("Tasks/call.md", &format_due(&due))
            .unwrap();
        assert_eq!(chat.unwrap().guid, CHAT);
        assert!(f.changes.has_changed().unwrap(), "the scheduler was told");

        // Listed, soonest first, with the due in the Mac's offset.
        let (out, err) = f.call(LIST, json!({})).await;
        assert!(!err);
        let listed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            listed,
            json!([{"path": "Tasks/call.md", "title": "Call the dentist", "due": format_due(&due)}])
        );
        let (out, _) = f.call(LIST, json!({"due_before": format_due(&due)})).await;
        assert_eq!(out, "[]");
    }

    #[tokio::test]
    async fn set_reminder_refuses_the_past_bad_times_and_notes_outside() {
        let f = Fixture::new();
        f.put("Tasks/call.md", TASK);
        for (input, says) in [
            (
                json!({"filepath": "Tasks/call.md", "due": "2020-01-01T09:00:00Z"}),
                "in the past",
            ),
            (
                json!({"filepath": "Tasks/call.md", "due": "tomorrow at 5"}),
                "ISO 8601",
            ),
            (
                json!({"filepath": "../x.md", "due": "2999-01-01T09:00"}),
                "outside",
            ),
            (
                json!({"filepath": "Tasks/none.md", "due": "2999-01-01T09:00"}),
                "does not exist",
            ),
            (json!({"filepath": "Tasks/call.md"}), "missing field"),
            (
                json!({"filepath": "Tasks/call.md", "due": "2999-01-01T09:00", "x": 1}),
                "unknown field",
            ),
        ] {
            let (out, err) = f.call(SET, input.clone()).await;
            assert!(err && out.contains(says), "{input}: {out}");
        }
        assert_eq!(f.read("Tasks/call.md"), TASK, "untouched");
    }

    #[tokio::test]
    async fn archiving_stamps_cancels_keeps_the_name_and_takes_minus_one() {
        let f = Fixture::new();
        f.put("Tasks/call.md", TASK);
        f.put("Archive/call.md", "older\n");
        let (out, err) = f
            .call(
                SET,
                json!({"filepath": "Tasks/call.md", "due": "2999-01-01T09:00"}),
            )
            .await;
        assert!(!err, "{out}");
        let (out, err) = f
            .call(
                MOVE,
                json!({"filepath": "Tasks/call.md", "folder": "Archive"}),
            )
            .await;
        assert!(!err, "{out}");
        assert!(out.starts_with("archived to Archive/call-1.md"), "{out}");
        let text = f.read("Archive/call-1.md");
        assert!(!text.contains("reminder:"), "{text}");
        assert!(
            text.contains("- status/done\n") && !text.contains("status/active"),
            "{text}"
        );
        assert!(
            text.contains("original_folder: Tasks\narchived_at: ")
                || text.contains("archived_at: ")
        );
        assert!(text.contains("original_folder: Tasks\n"), "{text}");
        assert_eq!(f.read("Archive/call.md"), "older\n");
        assert!(!f.dir.path().join("Tasks/call.md").exists());
        let (out, _) = f.call(LIST, json!({})).await;
        assert_eq!(out, "[]", "cancelled");
        let (out, err) = f
            .call(
                MOVE,
                json!({"filepath": "Archive/call-1.md", "folder": "Nowhere"}),
            )
            .await;
        assert!(err && out.contains("unknown folder"), "{out}");
    }
}
