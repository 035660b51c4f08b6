//! The agent's `vault_search` tool: input checked as strictly as the other tools', the
//! search run off the runtime, the hits returned as JSON.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Filter, Index, Query};
use crate::tools::Error;
use crate::vault::{self, Folder, Vault};

/// The tool's name.
pub const NAME: &str = "vault_search";
/// Hits returned when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 10;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 50;
/// Longest query accepted, in bytes.
const MAX_QUERY_BYTES: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    query: String,
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<i64>,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::Input {
        tool: NAME,
        reason: reason.into(),
    }
}

/// Runs `vault_search` with `input` over `vault`, through its running index when the bridge
/// started one (else by a scan).
pub async fn call(vault: &Vault, input: &Value) -> Result<String, Error> {
    let query = parse(input)?;
    let hits = vault
        .off_runtime(move |vault| {
            let index = Index::of_vault(vault.root())
                .unwrap_or_else(|| Index::new(vault.root(), std::path::Path::new("")));
            Ok(index.search(&query).0)
        })
        .await
        .map_err(|source| Error::Vault { tool: NAME, source })?;
    serde_json::to_string(&hits).map_err(|e| invalid(e.to_string()))
}

fn parse(input: &Value) -> Result<Query, Error> {
    if !input.is_object() {
        return Err(invalid("input must be a JSON object"));
    }
    let input = Input::deserialize(input).map_err(|e| invalid(e.to_string()))?;
    if input.query.trim().is_empty() {
        return Err(invalid("query is empty"));
    }
    if input.query.len() > MAX_QUERY_BYTES || input.query.contains('\0') {
        return Err(invalid(format!(
            "query must be under {MAX_QUERY_BYTES} bytes, without NUL"
        )));
    }
    let folder = input
        .folder
        .as_deref()
        .map(str::parse::<Folder>)
        .transpose()
        .map_err(|source| Error::Vault { tool: NAME, source })?;
    let limit = match input.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
        Some(_) => return Err(invalid(format!("limit must be from 1 to {MAX_LIMIT}"))),
    };
    let tags = vault::normalize_tags(&input.tags.unwrap_or_default())
        .map_err(|source| Error::Vault { tool: NAME, source })?;
    Ok(Query {
        text: input.query,
        filter: Filter { folder, tags },
        limit,
    })
}

/// The tool as sent to the Messages API.
pub fn definition() -> Value {
    let folders: Vec<&str> = Folder::ALL.iter().map(|f| f.as_str()).collect();
    json!({
        "name": NAME,
        "description": "Search notes by words (\"quoted\" = phrase), best first.",
        "input_schema": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "folder": {"type": "string", "enum": folders},
                "tags": {"type": "array", "items": {"type": "string"}},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            },
            "required": ["query"],
            "additionalProperties": false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn input_is_checked_and_hits_come_back_as_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Ideas")).unwrap();
        std::fs::write(
            dir.path().join("Ideas/a.md"),
            "---\ntags: [topic/food]\ncreated: 2026-01-01\n---\n# Ramen place\n\nTry the shop near the station.\n",
        )
        .unwrap();
        let vault = Vault::new(dir.path());
        let out = call(
            &vault,
            &json!({"query": "RAMEN", "folder": "Ideas", "limit": 50}),
        )
        .await
        .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            json!([{"path": "Ideas/a.md", "title": "Ramen place", "tags": ["topic/food"],
                    "created": "2026-01-01", "snippet": "Try the shop near the station."}])
        );
        let none = call(&vault, &json!({"query": "ramen", "tags": ["topic/travel"]})).await;
        assert_eq!(none.unwrap(), "[]");
        for (input, why) in [
            (json!({}), "missing field `query`"),
            (json!({"query": " "}), "query is empty"),
            (
                json!({"query": "a", "limit": 0}),
                "limit must be from 1 to 50",
            ),
            (
                json!({"query": "a", "limit": 51}),
                "limit must be from 1 to 50",
            ),
            (json!({"query": "a", "folder": "_system"}), "unknown folder"),
            (json!({"query": "a", "tags": ["123"]}), "tag"),
            (json!({"query": "a", "sort": "new"}), "unknown field `sort`"),
            (json!({"query": "a\u{0}"}), "without NUL"),
            (json!(["query"]), "JSON object"),
        ] {
            let err = call(&vault, &input).await.unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
    }
}
