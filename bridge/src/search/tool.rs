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
        "description": "Full-text search of notes, best first: path, title, tags, created, snippet. \"quotes\" keep a phrase.",
        "input_schema": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "folder": {"type": "string", "enum": folders},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "All must match"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            },
            "required": ["query"],
            "additionalProperties": false,
        },
    })
}
