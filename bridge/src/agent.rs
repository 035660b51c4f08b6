//! The agent: runs the LLM tool loop for one input, appending to the session's transcript.
//!
//! Invariants: the transcript only grows, and what the API sent is stored as received, less
//! empty text blocks; an assistant message with no content is never stored (the API
//! refuses it anywhere but last). It stays a valid conversation for the API: it is checked
//! against [`transcript::check`] before every request and repaired if it fails; roles
//! alternate user/assistant, starting with user, and every `tool_use` is answered id for id
//! by `tool_result` blocks at the start of the next user message. If an earlier run stopped
//! half-way, the next run closes the gap before it adds the new input (see [`Agent::run`]).
//! A 400 `invalid_request_error` that names the transcript is retried once, repaired. One run makes at most
//! [`MAX_TURNS`] API calls.
//!
//! The tool calls of one model turn (several `tool_use` blocks, "parallel tool use") run in
//! the fixed order of their [`Phase`] — reads together, then writes one at a time (a note
//! before its reply), then replies, then records — and all their results go back in ONE
//! user message, in the model's order, before any other block. The Messages API leaves the
//! order to the caller: "Tool calls in a single assistant turn are unordered … run them
//! concurrently, sequentially, or in any order", and wants "a `tool_result` for each
//! `tool_use` block, all in the next user message"
//! (https://platform.claude.com/docs/en/agents-and-tools/tool-use/parallel-tool-use).
//! A run stops without another request once a turn's calls all succeeded and leave the text
//! handled ([`ToolRunner::is_done`]): the results stay last in the transcript, and the next
//! run's input joins their user message after them. Message text and tool inputs are logged
//! only at `trace`.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};

use crate::anthropic::{self, Client, Response, StopReason, Usage, cache_last_tool, cached_system};
use crate::transcript::{self, NOT_RUN};

/// The most API calls one run may make.
pub const MAX_TURNS: u32 = 10;
/// The most tool calls carried out for one model turn; the rest get an error result.
pub const MAX_TOOL_CALLS_PER_TURN: usize = 20;
/// How long one run may take, by default ([`Agent::with_deadline`]).
pub const DEFAULT_RUN_DEADLINE: Duration = Duration::from_secs(5 * 60);

/// What the agent may call. The agent makes every decision; a runner only carries tools out.
pub trait ToolRunner: Sync {
    /// Tool definitions as sent to the API (`name`, `description`, `input_schema`, …).
    fn definitions(&self) -> Vec<Value>;
    /// Carries out one tool call. Failures are returned as error outputs, never raised.
    fn call(&self, name: &str, input: &Value) -> impl Future<Output = ToolOutput> + Send;
    /// When a call of tool `name` runs among the calls of one model turn.
    fn phase(&self, _name: &str) -> Phase {
        Phase::Write
    }
    /// Whether the run's work is done once a turn that called `tools` (by name) ended with
    /// no tool error: then no further request is made. By default a run goes on until the
    /// model ends its turn.
    fn is_done(&self, _tools: &[&str]) -> bool {
        false
    }
}

/// When a tool call runs among the calls of one model turn: phase by phase in this order;
/// [`Phase::Read`] calls all at once, the others one at a time in the model's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Changes nothing: run first, concurrently.
    Read,
    /// Writes (a note, and the reply it carries).
    Write,
    /// Replies of their own, after the writes they may speak of.
    Reply,
    /// Records of what was done: last.
    Record,
}

/// How a successful run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The model ended its turn.
    Finished,
    /// The tool calls left the work done ([`ToolRunner::is_done`]); no further request was
    /// made, and the transcript ends with their results.
    Handled,
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

/// What a successful run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// API calls made.
    pub turns: u32,
    /// Tokens used by all of them.
    pub usage: Usage,
    /// The text blocks of the last assistant message, joined (empty after
    /// [`RunEnd::Handled`]).
    pub final_text: String,
    /// How it ended.
    pub end: RunEnd,
}

/// Why a run ended without the model finishing its turn.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The API call failed (after its retries).
    #[error(transparent)]
    Api(#[from] anthropic::Error),
    /// The model's reply was cut off at `max_tokens`.
    #[error("the model's reply was cut off at the token limit")]
    MaxTokens,
    /// The model declined to answer.
    #[error("the model declined to answer")]
    Refusal,
    /// The model was still calling tools after this many API calls.
    #[error("the model did not finish within {0} API calls")]
    TurnLimit(u32),
    /// The model's reply did not make sense (e.g. `tool_use` without a usable tool call).
    #[error("the model's reply was malformed: {0}")]
    Malformed(String),
    /// The run did not finish before its deadline (a hung call, a stuck tool).
    #[error("the agent did not finish within {0:?}")]
    Deadline(Duration),
    /// The model stopped for a reason this version does not handle.
    #[error("the model stopped for an unexpected reason: {0}")]
    Stopped(String),
}

impl AgentError {
    /// Whether the API key was rejected: the user must fix it, retrying will not help.
    pub fn is_auth(&self) -> bool {
        matches!(self, AgentError::Api(err) if err.is_auth())
    }

    /// A few words for the user about what went wrong.
    pub fn short_reason(&self) -> &'static str {
        match self {
            AgentError::Api(err) if err.is_auth() => "the API key was rejected",
            AgentError::Api(_) => "the AI service did not answer",
            AgentError::Deadline(_) => "it took too long",
            _ => "the AI's answer was unusable",
        }
    }
}

/// Runs the tool loop with one system prompt. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Agent {
    client: Client,
    system: Value,
    deadline: Duration,
    /// Text added after each run's input (the current time), kept out of the cached system
    /// prompt.
    context: Option<fn() -> String>,
}

impl Agent {
    /// An agent that talks to the API through `client` with `system_prompt`, which is sent
    /// marked for prompt caching.
    pub fn new(client: Client, system_prompt: &str) -> Agent {
        Agent {
            client,
            system: cached_system(system_prompt),
            deadline: DEFAULT_RUN_DEADLINE,
            context: None,
        }
    }

    /// The same agent adding `context()` as a text block after each run's input.
    pub fn with_context(self, context: fn() -> String) -> Agent {
        Agent {
            context: Some(context),
            ..self
        }
    }

    /// The same agent with another limit on one run, measured on the runtime's clock.
    pub fn with_deadline(self, deadline: Duration) -> Agent {
        Agent { deadline, ..self }
    }

    /// Gives the model `input` as the next user turn of `transcript` and runs tool calls
    /// until it ends its turn.
    ///
    /// Appends to `transcript` as it goes: the user turn, each assistant message as
    /// received, each user message of tool results. After `pause_turn` the transcript is
    /// sent again as it is, and the continuation is appended to the same assistant message.
    /// On error the transcript keeps everything that happened up to the failure.
    ///
    /// If an earlier run failed half-way, the transcript is first made valid again
    /// without rewriting anything: after a user message that got no answer, `input` is
    /// added to that message as another text block; tool calls that an earlier run left
    /// unanswered get error results before `input`.
    ///
    /// A run that has not finished by the deadline stops where it is
    /// ([`AgentError::Deadline`]); the transcript keeps what happened until then.
    pub async fn run<T: ToolRunner>(
        &self,
        transcript: &mut Vec<Value>,
        input: &str,
        tools: &T,
    ) -> Result<RunReport, AgentError> {
        self.run_with(transcript, input, Vec::new(), tools).await
    }

    /// [`Agent::run`] with content blocks (images of the text's attachments) given to the
    /// model before the input's text block, in the same user message.
    pub async fn run_with<T: ToolRunner>(
        &self,
        transcript: &mut Vec<Value>,
        input: &str,
        attached: Vec<Value>,
        tools: &T,
    ) -> Result<RunReport, AgentError> {
        let turns = self.run_turns(transcript, input, attached, tools);
        match tokio::time::timeout(self.deadline, turns).await {
            Ok(result) => result,
            Err(_) => Err(AgentError::Deadline(self.deadline)),
        }
    }

    async fn run_turns<T: ToolRunner>(
        &self,
        transcript: &mut Vec<Value>,
        input: &str,
        attached: Vec<Value>,
        tools: &T,
    ) -> Result<RunReport, AgentError> {
        add_user_input(transcript, input, attached);
        if let Some(context) = self.context
            && let Some(Value::Array(blocks)) = transcript.last_mut().map(|m| &mut m["content"])
        {
            blocks.push(json!({ "type": "text", "text": context() }));
        }
        let definitions = cache_last_tool(tools.definitions());
        let mut usage = Usage::default();
        let mut continuing = false;
        for turn in 1..=MAX_TURNS {
            let response = self.request(&definitions, transcript).await?;
            usage += response.usage;
            tracing::debug!(
                turn,
                stop_reason = %response.stop_reason,
                blocks = response.content.len(),
                output_tokens = response.usage.output_tokens,
                "model turn"
            );
            add_assistant_content(transcript, response.content, continuing);
            continuing = false;
            match response.stop_reason {
                StopReason::ToolUse => {
                    let turn_done = self.tool_turn(transcript, tools).await?;
                    if turn_done {
                        tracing::debug!(turns = turn, ?usage, "agent run handled its input");
                        return Ok(RunReport {
                            turns: turn,
                            usage,
                            final_text: String::new(),
                            end: RunEnd::Handled,
                        });
                    }
                }
                StopReason::PauseTurn => continuing = true,
                StopReason::EndTurn | StopReason::StopSequence => {
                    // An empty final turn stored nothing: then there are no final words.
                    let final_text = match transcript.last() {
                        Some(last) if role(last) == Some("assistant") => {
                            text_of(last_content(transcript))
                        }
                        _ => String::new(),
                    };
                    tracing::debug!(turns = turn, ?usage, "agent run finished");
                    return Ok(RunReport {
                        turns: turn,
                        usage,
                        final_text,
                        end: RunEnd::Finished,
                    });
                }
                StopReason::MaxTokens => return Err(AgentError::MaxTokens),
                StopReason::Refusal => return Err(AgentError::Refusal),
                StopReason::Other(reason) => return Err(AgentError::Stopped(reason)),
            }
        }
        Err(AgentError::TurnLimit(MAX_TURNS))
    }

    /// One API call on a transcript checked first (and repaired if it breaks the API's
    /// rules); a refusal that names the transcript is retried once with it repaired.
    async fn request(
        &self,
        definitions: &[Value],
        transcript: &mut Vec<Value>,
    ) -> Result<Response, AgentError> {
        if let Err(problem) = transcript::check(transcript) {
            tracing::warn!(%problem, "transcript breaks the API's rules; repaired before sending");
            transcript::repair(transcript);
        }
        match self
            .client
            .create(&self.system, definitions, transcript)
            .await
        {
            Err(err) if err.names_transcript() => {
                tracing::warn!(cause = %err, "the API refused the transcript; retrying once repaired");
                transcript::repair(transcript);
                Ok(self
                    .client
                    .create(&self.system, definitions, transcript)
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// Carries out the last assistant message's tool calls and appends their results as one
    /// user message; returns whether that left the work done (every call succeeded and the
    /// runner says so).
    async fn tool_turn<T: ToolRunner>(
        &self,
        transcript: &mut Vec<Value>,
        tools: &T,
    ) -> Result<bool, AgentError> {
        let content = last_content(transcript);
        let calls = tool_calls(content)?;
        if calls.is_empty() {
            return Err(AgentError::Malformed(
                "stop reason tool_use without a tool_use block".into(),
            ));
        }
        let names: Vec<String> = calls.iter().map(|c| c.name.to_string()).collect();
        let results = call_tools(calls, tools).await;
        let failed = results
            .iter()
            .any(|r| r.get("is_error") == Some(&Value::Bool(true)));
        transcript.push(json!({ "role": "user", "content": results }));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(!failed && tools.is_done(&names))
    }
}

/// Carries out `calls` phase by phase ([`Phase`]): the reads of a phase concurrently, the
/// rest one at a time in the model's order. Returns the `tool_result` blocks in the model's
/// order; calls past [`MAX_TOOL_CALLS_PER_TURN`] get an error result and are not run.
async fn call_tools<T: ToolRunner>(calls: Vec<ToolCall<'_>>, tools: &T) -> Vec<Value> {
    let mut outputs: Vec<Option<ToolOutput>> = vec![None; calls.len()];
    let mut order: Vec<(Phase, usize)> = calls
        .iter()
        .enumerate()
        .take(MAX_TOOL_CALLS_PER_TURN)
        .map(|(i, call)| (tools.phase(call.name), i))
        .collect();
    order.sort(); // stable by (phase, index): the model's order within a phase
    let (reads, rest): (Vec<_>, Vec<_>) = order.into_iter().partition(|(p, _)| *p == Phase::Read);
    let read = reads.iter().map(|&(_, i)| call_one(&calls[i], tools));
    for ((_, i), output) in reads.iter().zip(futures_util::future::join_all(read).await) {
        outputs[*i] = Some(output);
    }
    for (_, i) in rest {
        outputs[i] = Some(call_one(&calls[i], tools).await);
    }
    calls
        .iter()
        .zip(outputs)
        .map(|(call, output)| match output {
            Some(output) => tool_result(call.id, &output.content, output.is_error),
            None => tool_result(
                call.id,
                &format!(
                    "Not run: at most {MAX_TOOL_CALLS_PER_TURN} tool calls per turn are carried out."
                ),
                true,
            ),
        })
        .collect()
}

async fn call_one<T: ToolRunner>(call: &ToolCall<'_>, tools: &T) -> ToolOutput {
    tracing::trace!(tool = call.name, id = call.id, input = %call.input, "tool call");
    let output = tools.call(call.name, &call.input).await;
    tracing::debug!(tool = call.name, is_error = output.is_error, "tool called");
    output
}

/// One `tool_use` block, read.
struct ToolCall<'a> {
    id: &'a str,
    name: &'a str,
    input: Value,
}

/// The `tool_use` blocks of an assistant message, in order.
fn tool_calls(content: &[Value]) -> Result<Vec<ToolCall<'_>>, AgentError> {
    let mut calls = Vec::new();
    for (i, block) in content.iter().enumerate() {
        if block_type(block) != Some("tool_use") {
            continue;
        }
        let field = |name: &str| {
            block
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let (Some(id), Some(name)) = (field("id"), field("name")) else {
            return Err(AgentError::Malformed(format!(
                "tool_use block {i} lacks an id or a name"
            )));
        };
        let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
        calls.push(ToolCall { id, name, input });
    }
    Ok(calls)
}

/// A `tool_result` block. The API refuses an empty error result, so emptiness is spelled out.
fn tool_result(id: &str, content: &str, is_error: bool) -> Value {
    let content = if content.is_empty() {
        "(no output)"
    } else {
        content
    };
    let mut block = json!({ "type": "tool_result", "tool_use_id": id, "content": content });
    if is_error {
        block["is_error"] = Value::Bool(true);
    }
    block
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

fn role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

/// The content blocks of the transcript's last message.
fn last_content(transcript: &[Value]) -> &[Value] {
    transcript
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The text blocks of `content`, joined.
fn text_of(content: &[Value]) -> String {
    content
        .iter()
        .filter(|b| block_type(b) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect()
}

/// Appends the user's `input`, keeping the transcript valid after an earlier failed run.
fn add_user_input(transcript: &mut Vec<Value>, input: &str, attached: Vec<Value>) {
    let mut text = attached;
    text.push(json!({ "type": "text", "text": input }));
    match transcript.last_mut() {
        // The previous run's last user message got no answer: the input joins it.
        Some(last) if role(last) == Some("user") => {
            tracing::debug!("previous user turn was not answered; adding the input to it");
            match last.get_mut("content") {
                Some(Value::Array(blocks)) => blocks.extend(text),
                Some(Value::String(s)) => {
                    let mut blocks = vec![json!({ "type": "text", "text": std::mem::take(s) })];
                    blocks.extend(text);
                    last["content"] = Value::Array(blocks);
                }
                _ => last["content"] = Value::Array(text),
            }
        }
        Some(last) if role(last) == Some("assistant") => {
            let content = last
                .get("content")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            let mut blocks: Vec<Value> = content
                .iter()
                .filter(|b| block_type(b) == Some("tool_use"))
                .filter_map(|b| b.get("id").and_then(Value::as_str))
                .map(|id| tool_result(id, NOT_RUN, true))
                .collect();
            if !blocks.is_empty() {
                tracing::debug!(
                    open = blocks.len(),
                    "closing tool calls left open by an earlier run"
                );
            }
            blocks.extend(text);
            transcript.push(json!({ "role": "user", "content": blocks }));
        }
        _ => transcript.push(json!({ "role": "user", "content": text })),
    }
}

/// Appends an assistant message, or extends the last one when continuing a paused turn.
/// Empty text blocks are dropped, and a message left with no content is not stored.
fn add_assistant_content(transcript: &mut Vec<Value>, content: Vec<Value>, continuing: bool) {
    let content: Vec<Value> = content
        .into_iter()
        .filter(|b| {
            block_type(b) != Some("text")
                || b.get("text")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !t.trim().is_empty())
        })
        .collect();
    if content.is_empty() {
        tracing::debug!("the model's turn had no content; nothing stored");
        return;
    }
    if continuing
        && let Some(last) = transcript
            .last_mut()
            .filter(|m| role(m) == Some("assistant"))
        && let Some(Value::Array(blocks)) = last.get_mut("content")
    {
        blocks.extend(content);
        return;
    }
    transcript.push(json!({ "role": "assistant", "content": content }));
}

// The strict fake Messages API of the end-to-end tests, used by these unit tests too so that
// it is proven against the real loop.
#[cfg(test)]
use util::anthropic as fake;

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::fake::{self, FakeAnthropic, Reply};
    use super::*;
    use crate::anthropic::{Auth, ClientConfig};

    const KEY: &str = "sk-ant-test";
    const WAIT: Duration = Duration::from_secs(10);

    /// A runner that records every call and answers from a fixed table by tool name.
    /// With `phased`, it orders calls as the bridge's tools do, and is done once a
    /// `send_message` was called in a turn that read nothing; `vault_read` calls wait for
    /// each other (`reads`).
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<(String, Value)>>,
        failing: Vec<&'static str>,
        phased: bool,
        reads: Option<tokio::sync::Barrier>,
    }

    impl Recording {
        fn failing(names: &[&'static str]) -> Recording {
            Recording {
                failing: names.to_vec(),
                ..Recording::default()
            }
        }

        fn calls(&self) -> Vec<(String, Value)> {
            self.calls.lock().unwrap().clone()
        }

        fn phased(failing: &[&'static str]) -> Recording {
            Recording {
                phased: true,
                ..Recording::failing(failing)
            }
        }

        fn names(&self) -> Vec<String> {
            self.calls().into_iter().map(|(n, _)| n).collect()
        }
    }

    impl ToolRunner for Recording {
        fn definitions(&self) -> Vec<Value> {
            ["vault_write", "log_interaction", "send_message"]
                .iter()
                .map(|name| json!({"name": name, "description": "d", "input_schema": {"type": "object"}}))
                .collect()
        }

        fn phase(&self, name: &str) -> Phase {
            match name {
                _ if !self.phased => Phase::Write,
                "vault_read" => Phase::Read,
                "send_message" => Phase::Reply,
                "log_interaction" => Phase::Record,
                _ => Phase::Write,
            }
        }

        fn is_done(&self, tools: &[&str]) -> bool {
            self.phased
                && !tools.contains(&"vault_read")
                && self.calls().iter().any(|(n, _)| n == "send_message")
        }

        async fn call(&self, name: &str, input: &Value) -> ToolOutput {
            self.calls
                .lock()
                .unwrap()
                .push((name.to_string(), input.clone()));
            if name == "vault_read"
                && let Some(reads) = &self.reads
            {
                // Both reads must be under way at once, or this never returns.
                reads.wait().await;
            }
            match name {
                _ if self.failing.contains(&name) => ToolOutput::error(format!("{name} failed")),
                "vault_write" => ToolOutput::ok("Tasks/2025-01-01_call-sarah.md"),
                "send_message" => ToolOutput::ok(""),
                _ => ToolOutput::ok("ok"),
            }
        }
    }

    fn agent(fake: &FakeAnthropic) -> Agent {
        let mut config = ClientConfig::new(Auth::ApiKey(KEY.into()));
        config.base_url = fake.base_url();
        config.max_retries = 0;
        Agent::new(Client::new(config).unwrap(), "You file notes.")
    }

    fn messages(recorded: &fake::Recorded) -> Vec<Value> {
        recorded.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn assert_strict(fake: &FakeAnthropic) {
        assert_eq!(fake.violations(), Vec::<String>::new());
    }

    /// Issue 15: the API returns `end_turn` with `content: []`, mostly after tool results.
    /// Nothing is stored for it, so the user's answer that follows reaches the model in a
    /// transcript the (strict) API accepts.
    #[tokio::test]
    async fn an_empty_final_turn_is_not_stored_and_the_answer_reaches_the_model() {
        let fake = FakeAnthropic::start(
            KEY,
            fake::scripted(vec![
                fake::tool_use("toolu_1", "log_interaction", json!({"input": "dinner?"})),
                fake::message(vec![], "end_turn"),
                fake::text("Filed: dinner with Sam."),
            ]),
        );
        let tools = Recording::default();
        let mut transcript = Vec::new();
        let first = agent(&fake)
            .run(&mut transcript, "dinner?", &tools)
            .await
            .unwrap();
        assert_eq!(first.final_text, "", "no words: no reply to send");
        assert_eq!(
            transcript.len(),
            3,
            "user, tool call, results; no empty turn"
        );
        assert!(transcript.iter().all(|m| m["content"] != json!([])));
        let second = agent(&fake)
            .run(&mut transcript, "with sam on friday", &tools)
            .await
            .unwrap();
        assert_eq!(second.final_text, "Filed: dinner with Sam.");
        assert_strict(&fake);
        let last = messages(&fake.requests()[2]);
        assert_eq!(last.len(), 3);
        assert_eq!(last[2]["content"][1]["text"], "with sam on friday");
    }

    /// Issue 15: a stored transcript the API would refuse is repaired before it is sent.
    #[tokio::test]
    async fn a_broken_stored_transcript_is_repaired_before_sending() {
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![fake::text("Which day?")]));
        let mut transcript = vec![
            json!({"role":"user","content":[{"type":"text","text":"dinner with sam"}]}),
            json!({"role":"assistant","content":[]}),
        ];
        agent(&fake)
            .run(&mut transcript, "friday", &Recording::default())
            .await
            .unwrap();
        assert_strict(&fake);
        let sent = messages(&fake.requests()[0]);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["content"][1]["text"], "friday");
    }

    /// Issue 15: a 400 `invalid_request_error` naming the transcript is retried once with
    /// it repaired; any other 400 is not retried.
    #[tokio::test]
    async fn a_refused_transcript_is_retried_once() {
        let refusal = || {
            Reply::error(
                400,
                "invalid_request_error",
                "messages.0.content.0: a rule this version does not know",
            )
        };
        let fake = FakeAnthropic::start(
            KEY,
            fake::scripted(vec![refusal(), Reply::from(fake::text("ok"))]),
        );
        let report = agent(&fake)
            .run(&mut Vec::new(), "hi", &Recording::default())
            .await
            .unwrap();
        assert_eq!(report.final_text, "ok");
        assert_eq!(fake.requests().len(), 2);

        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![refusal(), refusal()]));
        let err = agent(&fake)
            .run(&mut Vec::new(), "hi", &Recording::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid_request_error"), "{err}");
        assert_eq!(fake.requests().len(), 2, "retried once, not more");

        let other = Reply::error(400, "invalid_request_error", "max_tokens: too large");
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![other]));
        agent(&fake)
            .run(&mut Vec::new(), "hi", &Recording::default())
            .await
            .unwrap_err();
        assert_eq!(fake.requests().len(), 1);
    }

    #[tokio::test]
    async fn a_tool_turn_is_answered_by_a_result_turn() {
        let fake = FakeAnthropic::start(
            KEY,
            fake::scripted(vec![
                fake::tool_use(
                    "toolu_1",
                    "vault_write",
                    json!({"folder": "Tasks", "title": "Call Sarah"}),
                ),
                fake::text("Saved."),
            ]),
        );
        let tools = Recording::default();
        let mut transcript = Vec::new();
        let report = agent(&fake)
            .run(&mut transcript, "call sarah 📞", &tools)
            .await
            .unwrap();

        assert_eq!(
            tools.calls(),
            vec![(
                "vault_write".to_string(),
                json!({"folder": "Tasks", "title": "Call Sarah"})
            )]
        );
        assert_eq!(report.turns, 2);
        assert_eq!(report.final_text, "Saved.");
        let one: Usage = serde_json::from_value(fake::usage()).unwrap();
        assert_eq!(report.usage, one + one);

        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            messages(&requests[0]),
            vec![json!({"role":"user","content":[{"type":"text","text":"call sarah 📞"}]})]
        );
        let second = messages(&requests[1]);
        assert_eq!(second.len(), 3);
        assert_eq!(
            second[1]["content"],
            fake::tool_use(
                "toolu_1",
                "vault_write",
                json!({"folder": "Tasks", "title": "Call Sarah"})
            )["content"]
        );
        assert_eq!(
            second[2],
            json!({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"Tasks/2025-01-01_call-sarah.md"}]})
        );
        // The transcript is what was sent, plus the final answer.
        assert_eq!(transcript[..3], second[..]);
        assert_eq!(
            transcript[3],
            json!({"role":"assistant","content":[{"type":"text","text":"Saved."}]})
        );
        assert_eq!(requests[1].body["system"], cached_system("You file notes."));
        assert_eq!(
            requests[1].body["tools"][2]["cache_control"],
            json!({"type":"ephemeral"})
        );
        assert_strict(&fake);
    }

    #[tokio::test]
    async fn two_tool_uses_in_one_turn_get_one_result_message_in_order() {
        let both = fake::message(
            vec![
                json!({"type":"text","text":"Filing."}),
                fake::tool_use_block("toolu_a", "log_interaction", json!({"input": "x"})),
                fake::tool_use_block("toolu_b", "send_message", json!({"message": "Done"})),
            ],
            "tool_use",
        );
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![both, fake::text("")]));
        let tools = Recording::failing(&["send_message"]);
        let mut transcript = Vec::new();
        let report = agent(&fake)
            .run(&mut transcript, "x", &tools)
            .await
            .unwrap();

        let names: Vec<String> = tools.calls().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["log_interaction", "send_message"]);
        assert_eq!(
            transcript[2],
            json!({"role":"user","content":[
                {"type":"tool_result","tool_use_id":"toolu_a","content":"ok"},
                {"type":"tool_result","tool_use_id":"toolu_b","content":"send_message failed","is_error":true}
            ]})
        );
        assert_eq!(report.final_text, "");
        assert_eq!(fake.requests().len(), 2);
        assert_strict(&fake);
    }

    #[tokio::test]
    async fn pause_turn_calls_again_without_a_new_user_message() {
        let paused = fake::message(vec![json!({"type":"text","text":"Looking "})], "pause_turn");
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![paused, fake::text("it up.")]));
        let mut transcript = Vec::new();
        let report = agent(&fake)
            .run(&mut transcript, "q", &Recording::default())
            .await
            .unwrap();

        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        let second = messages(&requests[1]);
        assert_eq!(second.len(), 2);
        assert_eq!(
            second[1],
            json!({"role":"assistant","content":[{"type":"text","text":"Looking "}]})
        );
        assert_eq!(transcript.len(), 2);
        assert_eq!(
            transcript[1]["content"],
            json!([{"type":"text","text":"Looking "},{"type":"text","text":"it up."}])
        );
        assert_eq!(report.final_text, "Looking it up.");
        assert_eq!(report.turns, 2);
        assert_strict(&fake);
    }

    #[tokio::test]
    async fn unusable_stop_reasons_fail_and_keep_what_was_received() {
        type Check = fn(&AgentError) -> bool;
        let cases: [(&str, Check); 4] = [
            ("max_tokens", |e| matches!(e, AgentError::MaxTokens)),
            ("refusal", |e| matches!(e, AgentError::Refusal)),
            (
                "model_context_window_exceeded",
                |e| matches!(e, AgentError::Stopped(s) if s == "model_context_window_exceeded"),
            ),
            ("tool_use", |e| matches!(e, AgentError::Malformed(_))),
        ];
        for (stop_reason, expected) in cases {
            let reply = fake::message(vec![json!({"type":"text","text":"partial"})], stop_reason);
            let fake = FakeAnthropic::start(KEY, fake::scripted(vec![reply]));
            let mut transcript = Vec::new();
            let err = agent(&fake)
                .run(&mut transcript, "x", &Recording::default())
                .await
                .unwrap_err();
            assert!(expected(&err), "{stop_reason}: {err:?}");
            assert_eq!(transcript.len(), 2, "{stop_reason}");
            assert_eq!(
                transcript[1]["content"],
                json!([{"type":"text","text":"partial"}])
            );
            assert_eq!(fake.requests().len(), 1);
        }
    }

    #[tokio::test]
    async fn a_tool_use_without_id_is_malformed() {
        let reply = fake::message(
            vec![json!({"type":"tool_use","name":"vault_write","input":{}})],
            "tool_use",
        );
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![reply]));
        let tools = Recording::default();
        let err = agent(&fake)
            .run(&mut Vec::new(), "x", &tools)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AgentError::Malformed(ref m) if m.contains("id")),
            "{err:?}"
        );
        assert!(tools.calls().is_empty());
    }

    #[tokio::test]
    async fn the_turn_limit_stops_after_exactly_max_turns_requests() {
        let replies: Vec<Value> = (0..=MAX_TURNS)
            .map(|n| fake::tool_use(&format!("toolu_{n}"), "log_interaction", json!({"n": n})))
            .collect();
        let fake = FakeAnthropic::start(KEY, fake::scripted(replies));
        let tools = Recording::default();
        let mut transcript = Vec::new();
        let err = agent(&fake)
            .run(&mut transcript, "loop", &tools)
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::TurnLimit(10)), "{err:?}");
        assert_eq!(fake.requests().len(), MAX_TURNS as usize);
        assert_eq!(tools.calls().len(), MAX_TURNS as usize);
        assert_eq!(transcript.len(), 1 + 2 * MAX_TURNS as usize);
        assert_strict(&fake);
    }

    #[tokio::test]
    async fn a_second_run_resumes_the_transcript_byte_for_byte() {
        let fake = FakeAnthropic::start(
            KEY,
            fake::scripted(vec![
                fake::text("Task or note? (task / note)"),
                fake::tool_use("toolu_9", "vault_write", json!({"folder": "Tasks"})),
                fake::text("Saved."),
            ]),
        );
        let agent = agent(&fake);
        let tools = Recording::default();
        let mut transcript = Vec::new();
        agent
            .run(&mut transcript, "sarah\u{2028}שלום", &tools)
            .await
            .unwrap();
        let before = serde_json::to_string(&transcript).unwrap();

        let report = agent.run(&mut transcript, "task", &tools).await.unwrap();
        assert_eq!(report.turns, 2);
        let requests = fake.requests();
        assert_eq!(requests.len(), 3);
        for request in &requests[1..] {
            let sent = messages(request);
            assert_eq!(serde_json::to_string(&sent[..2]).unwrap(), before);
            assert_eq!(
                sent[2],
                json!({"role":"user","content":[{"type":"text","text":"task"}]})
            );
        }
        assert_eq!(serde_json::to_string(&transcript[..2]).unwrap(), before);
        assert_eq!(transcript.len(), 6);
        assert_strict(&fake);
    }

    #[tokio::test]
    async fn a_run_after_a_failed_api_call_joins_the_unanswered_user_turn() {
        let fake = FakeAnthropic::start(
            KEY,
            fake::scripted(vec![
                Reply::Status {
                    status: 500,
                    headers: vec![],
                    body: "{}".into(),
                },
                fake::text("ok").into(),
            ]),
        );
        let agent = agent(&fake);
        let mut transcript = Vec::new();
        let err = agent
            .run(&mut transcript, "first", &Recording::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                AgentError::Api(anthropic::Error::Exhausted { attempts: 1, .. })
            ),
            "{err:?}"
        );
        assert_eq!(transcript.len(), 1);

        agent
            .run(&mut transcript, "second", &Recording::default())
            .await
            .unwrap();
        assert_eq!(
            messages(&fake.requests()[1]),
            vec![
                json!({"role":"user","content":[{"type":"text","text":"first"},{"type":"text","text":"second"}]})
            ]
        );
        assert_strict(&fake);
    }

    #[tokio::test]
    async fn a_run_after_an_unanswered_tool_use_closes_it_first() {
        let cut = fake::message(
            vec![fake::tool_use_block("toolu_cut", "vault_write", json!({}))],
            "max_tokens",
        );
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![cut, fake::text("ok")]));
        let agent = agent(&fake);
        let tools = Recording::default();
        let mut transcript = Vec::new();
        assert!(matches!(
            agent.run(&mut transcript, "a", &tools).await,
            Err(AgentError::MaxTokens)
        ));
        agent.run(&mut transcript, "b", &tools).await.unwrap();
        assert!(tools.calls().is_empty());
        assert_eq!(
            transcript[2],
            json!({"role":"user","content":[
                {"type":"tool_result","tool_use_id":"toolu_cut","content":NOT_RUN,"is_error":true},
                {"type":"text","text":"b"}
            ]})
        );
        assert_strict(&fake);
    }

    #[tokio::test]
    async fn an_unauthorized_key_is_reported_as_such() {
        let fake = FakeAnthropic::start("another-key", fake::scripted(Vec::<Reply>::new()));
        let err = agent(&fake)
            .run(&mut Vec::new(), "x", &Recording::default())
            .await
            .unwrap_err();
        // The strict fake answers a wrong key with 400, so the client reports a status
        // error; only a real 401/403 counts as an auth failure.
        assert!(!err.is_auth());
        assert_eq!(fake.violations().len(), 1);
        assert!(fake.violations()[0].contains("x-api-key"));
        let real = AgentError::Api(anthropic::Error::Unauthorized {
            status: 401,
            message: "m".into(),
        });
        assert!(real.is_auth());
    }

    #[tokio::test]
    async fn the_fake_capture_flow_drives_a_whole_capture() {
        let fake = FakeAnthropic::start(
            KEY,
            fake::capture_flow(
                "Tasks",
                "Call Sarah",
                &["person/sarah", "priority/high"],
                "Saved to Tasks ✅",
            ),
        );
        let tools = Recording::default();
        let mut transcript = Vec::new();
        let report = agent(&fake)
            .run(&mut transcript, "remind me to call Sarah 📞", &tools)
            .await
            .unwrap();

        let calls = tools.calls();
        let names: Vec<&str> = calls.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["vault_write", "log_interaction", "send_message"]);
        assert_eq!(calls[0].1["folder"], "Tasks");
        assert_eq!(calls[0].1["title"], "Call Sarah");
        assert_eq!(calls[0].1["content"], "remind me to call Sarah 📞");
        assert_eq!(calls[0].1["tags"], json!(["person/sarah", "priority/high"]));
        assert_eq!(calls[1].1["stored_path"], "Tasks/2025-01-01_call-sarah.md");
        assert_eq!(calls[2].1, json!({"message": "Saved to Tasks ✅"}));
        assert_eq!(report.turns, 4);
        assert_eq!(transcript.len(), 8);
        let requests = fake.wait_for_requests(4, WAIT).await;
        assert_eq!(requests.len(), 4);
        assert_eq!(requests[0].header("x-api-key"), Some(KEY));
        assert_strict(&fake);
    }

    #[tokio::test]
    async fn the_fake_clarify_flow_asks_and_logs() {
        let fake = FakeAnthropic::start(KEY, fake::clarify_flow("Task or note? (task / note)"));
        let tools = Recording::default();
        agent(&fake)
            .run(&mut Vec::new(), "sarah", &tools)
            .await
            .unwrap();
        let calls = tools.calls();
        let names: Vec<&str> = calls.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["log_interaction", "send_message"]);
        assert_eq!(calls[0].1["clarification"], "Task or note? (task / note)");
        assert_eq!(
            calls[1].1,
            json!({"message": "Task or note? (task / note)"})
        );
        assert_strict(&fake);
    }

    /// Issue 16: the calls of one turn run reads first (together), then the note, then the
    /// reply, then the log, whatever the model's order; the results go back in ONE user
    /// message, in the model's order, and the strict fake accepts it.
    #[tokio::test]
    async fn a_turn_runs_its_calls_in_a_safe_order_and_answers_them_in_one_message() {
        let turn = fake::message(
            vec![
                json!({"type":"text","text":"On it."}),
                fake::tool_use_block("toolu_log", "log_interaction", json!({"input": "x"})),
                fake::tool_use_block("toolu_send", "send_message", json!({"message": "Saved"})),
                fake::tool_use_block("toolu_write", "vault_write", json!({"folder": "Tasks"})),
                fake::tool_use_block("toolu_r1", "vault_read", json!({"filepath": "a.md"})),
                fake::tool_use_block("toolu_r2", "vault_read", json!({"filepath": "b.md"})),
            ],
            "tool_use",
        );
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![turn, fake::text("Done.")]));
        let tools = Recording {
            reads: Some(tokio::sync::Barrier::new(2)),
            ..Recording::phased(&[])
        };
        let mut transcript = Vec::new();
        let agent = agent(&fake);
        let run = agent.run(&mut transcript, "x", &tools);
        let report = tokio::time::timeout(WAIT, run)
            .await
            .expect("the two reads ran at once")
            .unwrap();
        let names = tools.names();
        assert_eq!(
            names[2..],
            ["vault_write", "send_message", "log_interaction"]
        );
        assert_eq!(names[..2], ["vault_read", "vault_read"]);
        let ids: Vec<&str> = transcript[2]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["tool_use_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "toolu_log",
                "toolu_send",
                "toolu_write",
                "toolu_r1",
                "toolu_r2"
            ]
        );
        // The turn read the vault: the model has not seen what it read, so the run goes on.
        assert_eq!(report.end, RunEnd::Finished);
        assert_eq!(fake.requests().len(), 2);
        assert_strict(&fake);
    }

    /// Issue 16: once a turn's calls all succeed and leave the work done, the run stops
    /// with no further request; the results stay last, and the next run's input joins their
    /// user message after them, as the API accepts.
    #[tokio::test]
    async fn a_run_stops_once_done_and_the_next_input_follows_the_kept_results() {
        let ask = fake::message(
            vec![
                fake::tool_use_block("toolu_l", "log_interaction", json!({"input": "sam"})),
                fake::tool_use_block("toolu_s", "send_message", json!({"message": "Which?"})),
            ],
            "tool_use",
        );
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![ask, fake::text("Filed.")]));
        let tools = Recording::phased(&[]);
        let mut transcript = Vec::new();
        let report = agent(&fake)
            .run(&mut transcript, "sam", &tools)
            .await
            .unwrap();
        assert_eq!((report.turns, report.end), (1, RunEnd::Handled));
        assert_eq!(report.final_text, "");
        assert_eq!(fake.requests().len(), 1, "no request after the question");
        assert_eq!(transcript.len(), 3);
        assert_eq!(transcript[2]["content"][1]["tool_use_id"], "toolu_s");

        let report = agent(&fake)
            .run(&mut transcript, "the task", &Recording::default())
            .await
            .unwrap();
        assert_eq!(report.final_text, "Filed.");
        let sent = messages(&fake.requests()[1]);
        assert_eq!(sent.len(), 3);
        let content = sent[2]["content"].as_array().unwrap();
        assert_eq!(content.len(), 3);
        assert_eq!(content[0]["type"], "tool_result");
        assert_eq!(content[1]["type"], "tool_result");
        assert_eq!(content[2], json!({"type":"text","text":"the task"}));
        assert_strict(&fake);
    }

    /// Issue 16: a tool error goes back to the model even when the rest of the turn left
    /// the work done, so it can correct itself.
    #[tokio::test]
    async fn a_tool_error_goes_back_to_the_model_even_when_done() {
        let both = fake::message(
            vec![
                fake::tool_use_block("toolu_w", "vault_write", json!({})),
                fake::tool_use_block("toolu_s", "send_message", json!({"message": "Saved"})),
            ],
            "tool_use",
        );
        let retry = fake::tool_use("toolu_w2", "log_interaction", json!({"input": "x"}));
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![both, retry]));
        let tools = Recording::phased(&["vault_write"]);
        let report = agent(&fake)
            .run(&mut Vec::new(), "x", &tools)
            .await
            .unwrap();
        assert_eq!((report.turns, report.end), (2, RunEnd::Handled));
        let second = messages(&fake.requests()[1]);
        assert_eq!(second[2]["content"][0]["is_error"], true);
        assert_eq!(
            tools.names(),
            ["vault_write", "send_message", "log_interaction"]
        );
        assert_strict(&fake);
    }

    #[test]
    fn the_run_future_is_send() {
        fn assert_send<F: Future + Send>(_: F) {}
        let client = Client::new(ClientConfig::new(Auth::ApiKey("k".into()))).unwrap();
        let agent = Agent::new(client, "p");
        let mut transcript = Vec::new();
        let tools = Recording::default();
        assert_send(agent.run(&mut transcript, "x", &tools));
    }

    /// Sends a raw request to the fake; returns the status and `error.message`.
    async fn send_raw(
        fake: &FakeAnthropic,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, String) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", fake.base_url()))
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (
            status,
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }

    #[tokio::test]
    async fn the_fake_refuses_what_the_api_would_refuse() {
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![fake::text("fine")]));
        let ok_headers: &[(&str, &str)] = &[
            ("x-api-key", KEY),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ];
        let tools = cache_last_tool(vec![json!({"name":"t","input_schema":{"type":"object"}})]);
        let user = |t: &str| json!({"role":"user","content":[{"type":"text","text":t}]});
        let assistant_uses = |id: &str| json!({"role":"assistant","content":[{"type":"tool_use","id":id,"name":"t","input":{}}]});
        let result = |id: &str| json!({"type":"tool_result","tool_use_id":id,"content":"r"});
        let body = |messages: Value| {
            json!({
                "model":"m","max_tokens":10,"system":cached_system("s"),"tools":tools,"messages":messages
            })
        };
        let good = body(json!([user("hi 👋")]));
        let with = |key: &str, value: Value| {
            let mut b = good.clone();
            b[key] = value;
            b
        };
        let without = |key: &str| {
            let mut b = good.clone();
            b.as_object_mut().unwrap().remove(key);
            b
        };
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: Vec<(&str, Headers, Value, &str)> = vec![
            (
                "/v1/complete",
                ok_headers,
                good.clone(),
                "expected POST /v1/messages",
            ),
            (
                "/v1/messages",
                &ok_headers[1..],
                good.clone(),
                "x-api-key header missing",
            ),
            (
                "/v1/messages",
                &[
                    ("x-api-key", "wrong"),
                    ("anthropic-version", "2023-06-01"),
                    ("content-type", "application/json"),
                ],
                good.clone(),
                "not the expected key",
            ),
            (
                "/v1/messages",
                &[
                    ("x-api-key", KEY),
                    ("anthropic-version", "2024-01-01"),
                    ("content-type", "application/json"),
                ],
                good.clone(),
                "anthropic-version",
            ),
            (
                "/v1/messages",
                &ok_headers[..2],
                good.clone(),
                "content-type",
            ),
            (
                "/v1/messages",
                ok_headers,
                json!("text"),
                "not a JSON object",
            ),
            ("/v1/messages", ok_headers, without("model"), "model"),
            (
                "/v1/messages",
                ok_headers,
                with("max_tokens", json!(0)),
                "max_tokens",
            ),
            (
                "/v1/messages",
                ok_headers,
                with("messages", json!([])),
                "messages",
            ),
            (
                "/v1/messages",
                ok_headers,
                without("system"),
                "system: missing",
            ),
            (
                "/v1/messages",
                ok_headers,
                with("system", json!("plain")),
                "plain string",
            ),
            (
                "/v1/messages",
                ok_headers,
                with("system", json!([{"type":"text","text":"s"}])),
                "system: the last block",
            ),
            (
                "/v1/messages",
                ok_headers,
                without("tools"),
                "tools: missing",
            ),
            (
                "/v1/messages",
                ok_headers,
                with(
                    "tools",
                    json!([{"name":"t","input_schema":{"type":"object"}}]),
                ),
                "last tool has no cache_control",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(json!([{"role":"assistant","content":"x"}])),
                "first message must use the \"user\" role",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(json!([user("a"), {"role":"assistant","content":[]}, user("b")])),
                "messages.1: all messages must have non-empty content except for the optional final assistant message",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(json!([{"role":"user","content":[]}])),
                "messages.0: all messages must have non-empty content",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(
                    json!([user("a"), {"role":"assistant","content":[{"type":"text","text":""}]}, user("b")]),
                ),
                "messages: text content blocks must be non-empty",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(json!([user(" \n ")])),
                "text content blocks must contain non-whitespace text",
            ),
            (
                "/v1/messages",
                ok_headers,
                with(
                    "tool_choice",
                    json!({"type": "auto", "disable_parallel_tool_use": true}),
                ),
                "disable_parallel_tool_use",
            ),
            (
                "/v1/messages",
                ok_headers,
                with("tool_choice", json!({"type": "sometimes"})),
                "tool_choice.type",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(
                    json!([user("a"), {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"t","input":{}},{"type":"tool_use","id":"t2","name":"t","input":{}}]}, {"role":"user","content":[result("t2")]}]),
                ),
                "`tool_use` ids were found without `tool_result` blocks immediately after: t1",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(json!([user("a"), assistant_uses("t1"), user("b")])),
                "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: t1",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(json!([user("a"), assistant_uses("t1")])),
                "`tool_use` ids were found without `tool_result` blocks",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(json!([{"role":"user","content":[result("t0")]}])),
                "unexpected `tool_use_id` found in `tool_result` blocks: t0",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(
                    json!([user("a"), assistant_uses("t1"), {"role":"user","content":[{"type":"text","text":"b"}, result("t1")]}]),
                ),
                "must come FIRST",
            ),
            (
                "/v1/messages",
                ok_headers,
                body(
                    json!([user("a"), assistant_uses("t1"), {"role":"user","content":[result("t1"), result("t1")]}]),
                ),
                "unexpected `tool_use_id`",
            ),
        ];
        for (i, (path, headers, body, expected)) in cases.iter().enumerate() {
            let (status, message) = send_raw(&fake, path, headers, body).await;
            assert_eq!(status, 400, "case {i}: {expected}");
            assert!(
                message.contains(expected),
                "case {i}: {message:?} lacks {expected:?}"
            );
            assert_eq!(fake.violations().len(), i + 1, "case {i}");
            assert_eq!(fake.violations()[i], message);
        }
        // Accepted as the real API accepts them: results then text; consecutive user turns
        // (merged, not refused); an empty final assistant message.
        let valid = [
            json!([user("a"), assistant_uses("t1"), {"role":"user","content":[result("t1"), {"type":"text","text":"b"}]}]),
            // Parallel calls: both results in one user message, in any order.
            json!([user("a"), {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"t","input":{}},{"type":"tool_use","id":"t2","name":"t","input":{}}]}, {"role":"user","content":[result("t2"), result("t1")]}]),
            json!([user("a"), user("b")]),
            json!([user("a"), {"role":"assistant","content":[]}]),
        ];
        for (i, messages) in valid.iter().enumerate() {
            let fake = FakeAnthropic::start(KEY, fake::scripted(vec![fake::text("fine")]));
            let answer = send_raw(&fake, "/v1/messages", ok_headers, &body(messages.clone())).await;
            assert_eq!(answer.0, 200, "valid {i}: {answer:?}");
        }
        assert_eq!(fake.violations().len(), cases.len());
        assert_eq!(
            fake.wait_for_requests(cases.len(), WAIT).await.len(),
            cases.len()
        );
    }

    #[tokio::test]
    async fn the_fake_hangs_until_dropped_and_counts_requests() {
        let fake = FakeAnthropic::start(KEY, |_: &Value| Reply::Hang);
        let mut config = ClientConfig::new(Auth::ApiKey(KEY.into()));
        config.base_url = fake.base_url();
        config.max_retries = 1;
        config.request_timeout = Duration::from_millis(100);
        let client = Client::new(config).unwrap();
        let err = client
            .create(
                &cached_system("s"),
                &cache_last_tool(Recording::default().definitions()),
                &[json!({"role":"user","content":"x"})],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, anthropic::Error::Exhausted { attempts: 2, .. }),
            "{err:?}"
        );
        assert_eq!(fake.wait_for_requests(2, WAIT).await.len(), 2);
        assert_strict(&fake);
    }

    /// Issue 9: an agent run had no overall deadline. A run that never finishes (the API
    /// never answers; measured on the paused runtime clock) ends with `Deadline`.
    #[tokio::test(start_paused = true)]
    async fn a_run_that_never_finishes_stops_at_its_deadline() {
        let fake = FakeAnthropic::start(KEY, |_: &Value| fake::Reply::Hang);
        let deadline = Duration::from_secs(30);
        assert!(deadline < crate::anthropic::DEFAULT_REQUEST_TIMEOUT);
        let tools = Recording::default();
        let mut transcript = Vec::new();
        let err = agent(&fake)
            .with_deadline(deadline)
            .run(&mut transcript, "x", &tools)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AgentError::Deadline(d) if d == deadline),
            "{err:?}"
        );
        assert_eq!(err.short_reason(), "it took too long");
        assert_eq!(transcript.len(), 1, "the input is kept");
        assert_eq!(DEFAULT_RUN_DEADLINE, Duration::from_secs(300));
    }

    /// Issue 9: at most 20 tool calls of one model turn are carried out; the rest are
    /// answered with an error result, so the transcript stays valid.
    #[tokio::test]
    async fn at_most_twenty_tool_calls_of_one_turn_are_carried_out() {
        let blocks: Vec<Value> = (0..25)
            .map(|i| {
                fake::tool_use_block(
                    &format!("toolu_{i}"),
                    "log_interaction",
                    json!({"input": "x"}),
                )
            })
            .collect();
        let many = fake::message(blocks, "tool_use");
        let fake = FakeAnthropic::start(KEY, fake::scripted(vec![many, fake::text("")]));
        let tools = Recording::default();
        let mut transcript = Vec::new();
        agent(&fake)
            .run(&mut transcript, "x", &tools)
            .await
            .unwrap();
        assert_eq!(tools.calls().len(), MAX_TOOL_CALLS_PER_TURN);
        let results = transcript[2]["content"].as_array().unwrap();
        assert_eq!(results.len(), 25);
        for (i, result) in results.iter().enumerate() {
            assert_eq!(result["tool_use_id"], format!("toolu_{i}"));
            assert_eq!(result["is_error"] == true, i >= 20, "{result}");
        }
        assert!(
            results[24]["content"]
                .as_str()
                .unwrap()
                .contains("at most 20 tool calls")
        );
        assert_strict(&fake);
    }
}
