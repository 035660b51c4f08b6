//! The structural rules the Messages API holds a transcript (`messages`) to: checked before
//! every request, and used to repair transcripts saved by older versions.
//!
//! The rules, as the API states and enforces them (Messages API reference, `messages`:
//! "Consecutive user or assistant turns in your request will be combined into a single
//! turn", the first message uses the user role; the API's own 400 messages, quoted in
//! anthropics/claude-code#6774, #53473, #13460 and #5060), applied after merging consecutive
//! same-role turns as the API does:
//! - the first message is a user message;
//! - every message has non-empty content, except an optional final assistant message;
//! - no text block is empty or whitespace only;
//! - a user message's `tool_result` blocks come first, and each answers a `tool_use` of the
//!   assistant message just before it; every `tool_use` is answered in the next message.
//!
//! Invariant: [`repair`] only removes or adds what the rules require (empty blocks and
//! messages, results that answer nothing, "not run" results for calls never answered) and
//! merges what the API would merge; whatever it returns passes [`check`].

use serde_json::{Value, json};

/// The tool result given for a `tool_use` that was never answered.
pub const NOT_RUN: &str = "Not run: the previous attempt stopped before this tool was called.";

/// The first rule a transcript breaks, with the index of the (merged) message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The first message is not a user message.
    #[error("messages.0: the first message must use the user role")]
    FirstNotUser,
    /// A message other than the final assistant one has no content.
    #[error(
        "messages.{0}: all messages must have non-empty content except for the optional final \
         assistant message"
    )]
    EmptyContent(usize),
    /// A text block is empty or whitespace only.
    #[error("messages.{0}: text content blocks must contain non-whitespace text")]
    EmptyText(usize),
    /// A message is neither user nor assistant, or its content is neither text nor blocks.
    #[error("messages.{0}: a message needs the role user or assistant and content")]
    Shape(usize),
    /// A `tool_result` comes after another kind of block in its message.
    #[error("messages.{0}: tool_result blocks must come first in the content")]
    ResultNotFirst(usize),
    /// A `tool_result` answers no `tool_use` of the previous message.
    #[error("messages.{0}: tool_result {1:?} has no tool_use in the previous message")]
    UnexpectedResult(usize, String),
    /// A `tool_use` is not answered by the next message.
    #[error("messages.{0}: tool_use {1:?} has no tool_result in the next message")]
    Unanswered(usize, String),
}

fn role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

/// A message's content as blocks (a plain string is one text block); `None` for no content.
fn blocks(message: &Value) -> Option<Vec<Value>> {
    match message.get("content")? {
        Value::String(text) => Some(vec![json!({ "type": "text", "text": text })]),
        Value::Array(blocks) => Some(blocks.clone()),
        _ => None,
    }
}

/// Whether a block is a text block without visible text.
fn is_blank_text(block: &Value) -> bool {
    block_type(block) == Some("text")
        && block
            .get("text")
            .and_then(Value::as_str)
            .is_none_or(|t| t.trim().is_empty())
}

/// The transcript as the API sees it: consecutive same-role messages merged.
fn merged(messages: &[Value]) -> Result<Vec<(String, Vec<Value>)>, Problem> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = match role(message) {
            Some(r @ ("user" | "assistant")) => r.to_string(),
            _ => return Err(Problem::Shape(i)),
        };
        let content = blocks(message).ok_or(Problem::Shape(i))?;
        match out.last_mut() {
            Some((last, blocks)) if *last == role => blocks.extend(content),
            _ => out.push((role, content)),
        }
    }
    Ok(out)
}

/// The `tool_use` ids of a content list.
fn tool_use_ids(content: &[Value]) -> Vec<&str> {
    content
        .iter()
        .filter(|b| block_type(b) == Some("tool_use"))
        .filter_map(|b| b.get("id").and_then(Value::as_str))
        .collect()
}

/// Checks `messages` against the API's structural rules.
pub fn check(messages: &[Value]) -> Result<(), Problem> {
    let turns = merged(messages)?;
    if turns.first().is_some_and(|(role, _)| role != "user") {
        return Err(Problem::FirstNotUser);
    }
    let last = turns.len().saturating_sub(1);
    for (i, (role, content)) in turns.iter().enumerate() {
        if content.is_empty() && !(i == last && role == "assistant") {
            return Err(Problem::EmptyContent(i));
        }
        if content.iter().any(is_blank_text) {
            return Err(Problem::EmptyText(i));
        }
        if role == "assistant" {
            if let Some((_, next)) = turns.get(i + 1) {
                for id in tool_use_ids(content) {
                    let answered = next.iter().any(|b| {
                        block_type(b) == Some("tool_result")
                            && b.get("tool_use_id").and_then(Value::as_str) == Some(id)
                    });
                    if !answered {
                        return Err(Problem::Unanswered(i, id.to_string()));
                    }
                }
            }
            continue;
        }
        let results = content
            .iter()
            .take_while(|b| block_type(b) == Some("tool_result"))
            .count();
        if content[results..]
            .iter()
            .any(|b| block_type(b) == Some("tool_result"))
        {
            return Err(Problem::ResultNotFirst(i));
        }
        let asked = i
            .checked_sub(1)
            .map(|p| tool_use_ids(&turns[p].1))
            .unwrap_or_default();
        for block in &content[..results] {
            let id = block
                .get("tool_use_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !asked.contains(&id) {
                return Err(Problem::UnexpectedResult(i, id.to_string()));
            }
        }
    }
    Ok(())
}

/// Makes `messages` pass [`check`]; returns whether anything had to change. Blocks of
/// kinds it does not know (server tools' blocks, say) are kept as they are.
pub fn repair(messages: &mut Vec<Value>) -> bool {
    if check(messages).is_ok() {
        return false;
    }
    let mut turns = turns_without_blanks(messages);
    for i in 0..turns.len() {
        if turns[i].0 == "user" {
            let asked: Vec<String> = i
                .checked_sub(1)
                .map(|p| {
                    tool_use_ids(&turns[p].1)
                        .into_iter()
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            settle_results(&mut turns[i].1, &asked);
        }
    }
    // A trailing assistant turn with calls nobody answered would need results: drop it.
    if turns
        .last()
        .is_some_and(|(role, content)| role == "assistant" && !tool_use_ids(content).is_empty())
    {
        turns.pop();
    }
    *messages = rebuilt(turns);
    if check(messages).is_err() {
        // Dropping a turn can leave results without their call: one more pass settles it.
        repair(messages);
    }
    true
}

/// The user and assistant turns of `messages`, consecutive same-role ones merged, blank
/// text blocks left out.
fn turns_without_blanks(messages: &[Value]) -> Vec<(String, Vec<Value>)> {
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for message in messages {
        let Some(role @ ("user" | "assistant")) = role(message) else {
            continue;
        };
        let content: Vec<Value> = blocks(message)
            .unwrap_or_default()
            .into_iter()
            .filter(|b| !is_blank_text(b))
            .collect();
        match turns.last_mut() {
            Some((last, blocks)) if last == role => blocks.extend(content),
            _ => turns.push((role.to_string(), content)),
        }
    }
    turns
}

/// A user turn's results put first; results that answer nothing in `asked` (or answer a
/// call twice) dropped; each call of `asked` left unanswered given a "not run" result.
fn settle_results(content: &mut Vec<Value>, asked: &[String]) {
    let (results, others): (Vec<Value>, Vec<Value>) = std::mem::take(content)
        .into_iter()
        .partition(|b| block_type(b) == Some("tool_result"));
    let answers = |kept: &[Value], id: Option<&str>| {
        kept.iter()
            .any(|k| k.get("tool_use_id").and_then(Value::as_str) == id)
    };
    let mut kept: Vec<Value> = Vec::new();
    for result in results {
        let id = result.get("tool_use_id").and_then(Value::as_str);
        if id.is_some_and(|id| asked.iter().any(|a| a == id)) && !answers(&kept, id) {
            kept.push(result);
        }
    }
    for id in asked {
        if !answers(&kept, Some(id)) {
            kept.push(json!({
                "type": "tool_result", "tool_use_id": id, "content": NOT_RUN, "is_error": true
            }));
        }
    }
    kept.extend(others);
    *content = kept;
}

/// Messages from `turns`: empty ones and a leading assistant one left out, neighbours of
/// one role (after those are gone) merged.
fn rebuilt(turns: Vec<(String, Vec<Value>)>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for (role, content) in turns {
        if content.is_empty() || (out.is_empty() && role != "user") {
            continue;
        }
        match out.last_mut() {
            Some(last) if role_of(last) == role => {
                if let Some(Value::Array(blocks)) = last.get_mut("content") {
                    blocks.extend(content);
                }
            }
            _ => out.push(json!({ "role": role, "content": content })),
        }
    }
    out
}

fn role_of(message: &Value) -> &str {
    role(message).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Value {
        json!({ "role": "user", "content": [{ "type": "text", "text": text }] })
    }
    fn assistant(content: Value) -> Value {
        json!({ "role": "assistant", "content": content })
    }
    fn call(id: &str) -> Value {
        json!({ "type": "tool_use", "id": id, "name": "vault_list", "input": {} })
    }
    fn result(id: &str) -> Value {
        json!({ "type": "tool_result", "tool_use_id": id, "content": "ok" })
    }

    /// Server tools' blocks (the API's web fetch) need no result from us: they pass, and a
    /// repair elsewhere in the transcript keeps them exactly.
    #[test]
    fn server_tool_blocks_pass_and_survive_a_repair() {
        let server = json!([
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_fetch",
             "input": {"url": "https://a.example/"}},
            {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_1",
             "content": {"type": "web_fetch_result", "url": "https://a.example/", "future": [1, 2]}},
            {"type": "text", "text": "read it"}
        ]);
        let good = vec![user("hi"), assistant(server.clone()), user("thanks")];
        assert_eq!(check(&good), Ok(()));
        let mut broken = vec![
            user("hi"),
            assistant(server.clone()),
            user(" "),
            assistant(json!([call("t9")])),
        ];
        assert!(repair(&mut broken));
        assert_eq!(check(&broken), Ok(()));
        assert_eq!(broken[1]["content"], server, "kept as it came");
    }

    #[test]
    fn valid_transcripts_pass_and_are_left_alone() {
        let cases = vec![
            vec![user("hi")],
            vec![
                user("hi"),
                assistant(json!([{ "type": "text", "text": "hello" }])),
            ],
            // The final assistant message may be empty.
            vec![user("hi"), assistant(json!([]))],
            vec![
                user("hi"),
                assistant(json!([call("t1"), call("t2")])),
                json!({ "role": "user", "content": [result("t1"), result("t2"), { "type": "text", "text": "and" }] }),
            ],
            // Consecutive user turns are merged by the API, not refused.
            vec![user("a"), user("b")],
        ];
        for (i, case) in cases.into_iter().enumerate() {
            assert_eq!(check(&case), Ok(()), "case {i}");
            let mut copy = case.clone();
            assert!(!repair(&mut copy), "case {i}");
            assert_eq!(copy, case);
        }
    }

    /// Issue 15: what the API refuses is refused here too, and repaired into what it takes.
    #[test]
    fn broken_transcripts_are_named_and_repaired() {
        let cases: Vec<(&str, Vec<Value>, Problem)> = vec![
            (
                "empty assistant turn before the answer",
                vec![user("dinner?"), assistant(json!([])), user("with sam")],
                Problem::EmptyContent(1),
            ),
            (
                "empty text block",
                vec![
                    user("a"),
                    assistant(json!([{ "type": "text", "text": " \n" }])),
                    user("b"),
                ],
                Problem::EmptyText(1),
            ),
            (
                "assistant first",
                vec![
                    assistant(json!([{ "type": "text", "text": "hi" }])),
                    user("b"),
                ],
                Problem::FirstNotUser,
            ),
            (
                "result for no call",
                vec![
                    user("a"),
                    assistant(json!([{ "type": "text", "text": "ok" }])),
                    json!({ "role": "user", "content": [result("ghost"), { "type": "text", "text": "b" }] }),
                ],
                Problem::UnexpectedResult(2, "ghost".into()),
            ),
            (
                "call never answered",
                vec![user("a"), assistant(json!([call("t1")])), user("b")],
                Problem::Unanswered(1, "t1".into()),
            ),
            (
                "result after text",
                vec![
                    user("a"),
                    assistant(json!([call("t1")])),
                    json!({ "role": "user", "content": [{ "type": "text", "text": "b" }, result("t1")] }),
                ],
                Problem::ResultNotFirst(2),
            ),
        ];
        for (name, mut transcript, problem) in cases {
            assert_eq!(check(&transcript), Err(problem), "{name}");
            assert!(repair(&mut transcript), "{name}");
            assert_eq!(check(&transcript), Ok(()), "{name}: {transcript:#?}");
            let texts: String = transcript
                .iter()
                .filter(|m| role_of(m) == "user")
                .flat_map(|m| blocks(m).unwrap_or_default())
                .filter_map(|b| b.get("text").and_then(Value::as_str).map(String::from))
                .collect();
            assert!(
                texts.ends_with('b') || texts.ends_with("with sam"),
                "{name}: user words kept"
            );
        }
    }

    #[test]
    fn a_call_left_open_by_an_empty_turn_gets_a_not_run_result() {
        let mut transcript = vec![
            user("a"),
            assistant(json!([call("t1")])),
            assistant(json!([])),
            user("b"),
        ];
        assert_eq!(check(&transcript), Err(Problem::Unanswered(1, "t1".into())));
        assert!(repair(&mut transcript));
        assert_eq!(check(&transcript), Ok(()));
        let answer = &transcript[2]["content"];
        assert_eq!(answer[0]["tool_use_id"], "t1");
        assert_eq!(answer[0]["content"], NOT_RUN);
        assert_eq!(answer[1]["text"], "b");
    }
}
