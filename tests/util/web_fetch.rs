//! The fake API's knowledge of Anthropic's server-side web fetch tool: the tool's definition
//! is checked as the API checks it, and replies can carry the blocks the API adds when it
//! fetched a page (`server_tool_use`, then `web_fetch_tool_result`).
//!
//! Source: the web fetch tool page
//! (https://platform.claude.com/docs/en/agents-and-tools/tool-use/web-fetch-tool): the
//! versions `web_fetch_20250910`, `web_fetch_20260209`, `web_fetch_20260309` and
//! `web_fetch_20260318`, the tool's `name` `web_fetch`, its parameters (`max_uses`,
//! `allowed_domains` or `blocked_domains` but not both, `citations`, `max_content_tokens`,
//! `cache_control`), its status "stable" (no `anthropic-beta` header is asked for), and the
//! response's `server_tool_use` block (id `srvtoolu_…`, `input.url`) followed by its
//! `web_fetch_tool_result` (`content.type` `web_fetch_result` with the `url`, a `document`
//! and `retrieved_at`, or `web_fetch_tool_result_error` with an `error_code`). Error texts
//! follow the API's validation messages ("Input tag … does not match any of the expected
//! tags", "Extra inputs are not permitted", "Field required").

use serde_json::{Value, json};

/// The tool versions the API knows.
pub const TYPES: [&str; 4] = [
    "web_fetch_20250910",
    "web_fetch_20260209",
    "web_fetch_20260309",
    "web_fetch_20260318",
];

/// Whether `tool` claims to be a web fetch tool (by its type's prefix).
pub fn is_web_fetch(tool: &Value) -> bool {
    tool.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("web_fetch"))
}

/// Checks the definition `tools[i]` of a web fetch tool.
pub fn check_tool(i: usize, tool: &Value) -> Result<(), String> {
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or_default();
    if !TYPES.contains(&kind) {
        return Err(format!(
            "tools.{i}: Input tag '{kind}' found using 'type' does not match any of the expected \
             tags: {}",
            TYPES.map(|t| format!("'{t}'")).join(", ")
        ));
    }
    if tool.get("name").and_then(Value::as_str) != Some("web_fetch") {
        return Err(format!(
            "tools.{i}.{kind}.name: Input should be 'web_fetch'"
        ));
    }
    let Some(fields) = tool.as_object() else {
        return Err(format!("tools.{i}: Input should be an object"));
    };
    for (field, value) in fields {
        let fits = match field.as_str() {
            "type" | "name" => true,
            "max_uses" | "max_content_tokens" => value.as_u64().is_some_and(|n| n > 0),
            "allowed_domains" | "blocked_domains" => value
                .as_array()
                .is_some_and(|d| d.iter().all(Value::is_string)),
            "citations" => value.get("enabled").is_some_and(Value::is_boolean),
            "cache_control" => value.get("type").and_then(Value::as_str) == Some("ephemeral"),
            _ => {
                return Err(format!(
                    "tools.{i}.{kind}.{field}: Extra inputs are not permitted"
                ));
            }
        };
        if !fits {
            return Err(format!("tools.{i}.{kind}.{field}: Input is not valid"));
        }
    }
    if fields.contains_key("allowed_domains") && fields.contains_key("blocked_domains") {
        return Err(format!(
            "tools.{i}: allowed_domains and blocked_domains cannot be used together"
        ));
    }
    Ok(())
}

/// Checks the server blocks of one (merged) assistant turn, `messages.{i}`: each
/// `server_tool_use` of the web fetch tool has an id, `input.url` and the tool's name, and
/// each `web_fetch_tool_result` answers one of them, before it, in the same turn, once.
/// `offered`: whether the request defines the tool.
pub fn check_turn(i: usize, content: &[Value], offered: bool) -> Result<(), String> {
    let mut calls: Vec<&str> = Vec::new();
    let mut answered: Vec<&str> = Vec::new();
    for (j, block) in content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("server_tool_use") => {
                let id = block.get("id").and_then(Value::as_str);
                let url = block.pointer("/input/url").and_then(Value::as_str);
                let name = block.get("name").and_then(Value::as_str);
                match (id, url, name) {
                    (Some(id), Some(_), Some("web_fetch")) if id.starts_with("srvtoolu_") => {
                        calls.push(id)
                    }
                    _ => {
                        return Err(format!(
                            "messages.{i}.content.{j}.server_tool_use: needs an id srvtoolu_…, \
                             the name web_fetch and input.url"
                        ));
                    }
                }
                if !offered {
                    return Err(format!(
                        "messages.{i}.content.{j}: server_tool_use of web_fetch, a tool not \
                         given in `tools`"
                    ));
                }
            }
            Some("web_fetch_tool_result") => {
                let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
                    return Err(format!(
                        "messages.{i}.content.{j}.web_fetch_tool_result.tool_use_id: Field \
                         required"
                    ));
                };
                if !calls.contains(&id) || answered.contains(&id) {
                    return Err(format!(
                        "messages.{i}.content.{j}: web_fetch_tool_result {id} answers no \
                         server_tool_use before it"
                    ));
                }
                check_result(i, j, block.get("content"))?;
                answered.push(id);
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_result(i: usize, j: usize, content: Option<&Value>) -> Result<(), String> {
    let bad = |what: &str| {
        Err(format!(
            "messages.{i}.content.{j}.web_fetch_tool_result.content: {what}"
        ))
    };
    let Some(content) = content else {
        return bad("Field required");
    };
    match content.get("type").and_then(Value::as_str) {
        Some("web_fetch_result") => {
            if content.get("url").and_then(Value::as_str).is_none() {
                return bad("url: Field required");
            }
            if content.pointer("/content/type").and_then(Value::as_str) != Some("document") {
                return bad("content: Input should be a document block");
            }
            Ok(())
        }
        Some("web_fetch_tool_result_error") if content.get("error_code").is_some() => Ok(()),
        _ => bad("Input tag does not match 'web_fetch_result' or 'web_fetch_tool_result_error'"),
    }
}

/// The two blocks the API adds to a reply when it fetched `url` for the model: the call
/// (`id`, `srvtoolu_…`) and its result, the page's `text` as a plain-text document.
pub fn fetched(id: &str, url: &str, title: &str, text: &str) -> [Value; 2] {
    [
        json!({"type": "server_tool_use", "id": id, "name": "web_fetch", "input": {"url": url}}),
        json!({
            "type": "web_fetch_tool_result",
            "tool_use_id": id,
            "content": {
                "type": "web_fetch_result",
                "url": url,
                "content": {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": text},
                    "title": title,
                    "citations": {"enabled": false}
                },
                "retrieved_at": "2026-12-02T06:00:00.000000+00:00"
            }
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tool_is_checked_as_the_api_checks_it() {
        let good = json!({"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 3,
                          "max_content_tokens": 20000, "cache_control": {"type": "ephemeral"}});
        assert_eq!(check_tool(2, &good), Ok(()));
        let refused = [
            (
                json!({"type": "web_fetch_2025", "name": "web_fetch"}),
                "does not match any",
            ),
            (
                json!({"type": "web_fetch_20250910", "name": "fetch"}),
                "should be 'web_fetch'",
            ),
            (
                json!({"type": "web_fetch_20250910", "name": "web_fetch", "depth": 2}),
                "Extra inputs",
            ),
            (
                json!({"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 0}),
                "max_uses",
            ),
            (
                json!({"type": "web_fetch_20250910", "name": "web_fetch",
                       "allowed_domains": ["a.com"], "blocked_domains": ["b.com"]}),
                "cannot be used together",
            ),
        ];
        for (tool, why) in refused {
            let err = check_tool(2, &tool).unwrap_err();
            assert!(err.starts_with("tools.2") && err.contains(why), "{err}");
        }
    }

    #[test]
    fn server_blocks_must_pair_up_and_the_tool_must_be_offered() {
        let [call, result] = fetched("srvtoolu_1", "https://a.example/", "A", "words");
        assert_eq!(check_turn(1, &[call.clone(), result.clone()], true), Ok(()));
        let err = check_turn(1, std::slice::from_ref(&result), true).unwrap_err();
        assert!(err.contains("answers no server_tool_use"), "{err}");
        let err = check_turn(1, &[call.clone(), result.clone()], false).unwrap_err();
        assert!(err.contains("not given in `tools`"), "{err}");
        let mut bare = result;
        bare["content"] = json!({"type": "web_fetch_result"});
        let err = check_turn(1, &[call, bare], true).unwrap_err();
        assert!(err.contains("url: Field required"), "{err}");
    }
}
