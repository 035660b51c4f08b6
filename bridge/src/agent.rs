//! The agent: runs the LLM tool loop for one input, appending to the session's transcript.

use std::future::Future;

use serde_json::Value;

/// What the agent may call. The agent makes every decision; a runner only carries tools out.
pub trait ToolRunner: Sync {
    /// Tool definitions as sent to the API (`name`, `description`, `input_schema`, …).
    fn definitions(&self) -> Vec<Value>;
    /// Carries out one tool call. Failures are returned as error outputs, never raised.
    fn call(&self, name: &str, input: &Value) -> impl Future<Output = ToolOutput> + Send;
}

/// The result of one tool call, sent back to the model as a `tool_result` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolOutput {
    /// Text for the model.
    pub content: String,
    /// Whether the call failed (`is_error: true` in the tool result).
    pub is_error: bool,
}

impl ToolOutput {
    /// A successful result.
    pub fn ok(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: false,
        }
    }

    /// A failed call with a short reason for the model.
    pub fn error(reason: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: reason.into(),
            is_error: true,
        }
    }
}
