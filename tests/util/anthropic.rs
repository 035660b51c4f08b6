//! A strict fake of the Anthropic Messages API on `127.0.0.1:0`, for tests.
//!
//! It runs in the test's tokio runtime. Each request is recorded (with its size and arrival
//! time, for the benchmarks), then checked the way the real API checks it (see
//! [`check_messages`] for the transcript rules and where they are documented), and stricter in
//! a few places: the key and version headers, the required body fields, and prompt caching on
//! the system prompt and the last tool. A request that fails a check is answered 400
//! `invalid_request_error` in the real error shape, with the reason in `error.message`; the
//! reason is kept in [`FakeAnthropic::violations`] and, when `FAKE_ANTHROPIC_REJECTIONS` names
//! a file, appended to it. A request that passes goes to the test's responder.
//!
//! The same file is compiled into the bridge's unit tests (`agent.rs`), so it must not
//! use the `bridge` crate.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The largest request body the fake reads, as the real API.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// The only `anthropic-version` the fake accepts.
pub const API_VERSION: &str = "2023-06-01";

/// What the fake answers to a valid request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this message as the body (see [`text`], [`tool_use`], [`message`]).
    Message(Value),
    /// Any status, headers and raw body (errors, `retry-after`, malformed bodies).
    Status {
        /// HTTP status.
        status: u16,
        /// Extra response headers.
        headers: Vec<(String, String)>,
        /// The raw body.
        body: String,
    },
    /// Never answers, for client timeouts. Ends when the fake is dropped.
    Hang,
    /// Answers with the reply after a delay: the benchmarks' model that takes its time.
    Later(Duration, Box<Reply>),
}

impl From<Value> for Reply {
    fn from(message: Value) -> Reply {
        Reply::Message(message)
    }
}

impl Reply {
    /// An API error reply in the real shape:
    /// `{"type":"error","error":{"type":…,"message":…},"request_id":"req_…"}`.
    pub fn error(status: u16, kind: &str, message: &str) -> Reply {
        let n = NEXT_MESSAGE.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "type": "error",
            "error": { "type": kind, "message": message },
            "request_id": format!("req_fake{n:06}")
        });
        Reply::Status {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Header names (lower case) and values, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body as JSON; a body that is not JSON is kept as a JSON string.
    pub body: Value,
    /// The size of the body as sent, in bytes.
    pub bytes: usize,
    /// When the whole request had arrived (wall clock, comparable across processes).
    pub received_at: SystemTime,
}

impl Recorded {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The request's `messages`, or none.
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

type Responder = Box<dyn Fn(&Value) -> Reply + Send + Sync>;

struct Inner {
    /// The test that started the fake (its thread's name), for the rejections file.
    test: String,
    api_key: String,
    responder: Responder,
    recorded: Mutex<Vec<Recorded>>,
    violations: Mutex<Vec<String>>,
    /// How many requests have been recorded; `wait_for_requests` waits on it.
    count: watch::Sender<usize>,
    /// Set when the fake is dropped, to end hanging answers.
    closed: watch::Sender<bool>,
}

/// The fake server. Stops when dropped.
pub struct FakeAnthropic {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeAnthropic {
    /// Starts the fake on `127.0.0.1:0`, accepting `x-api-key: api_key`. Must be called
    /// inside a tokio runtime.
    pub fn start(
        api_key: &str,
        responder: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> FakeAnthropic {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let listener = tokio::net::TcpListener::from_std(listener).expect("inside a tokio runtime");
        let inner = Arc::new(Inner {
            test: std::thread::current().name().unwrap_or("?").to_string(),
            api_key: api_key.to_string(),
            responder: Box::new(responder),
            recorded: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            closed: watch::Sender::new(false),
        });
        // The API takes requests of up to 32 MB ("Maximum request size", the PDF guide,
        // https://platform.claude.com/docs/en/build-with-claude/pdf-support); axum's default
        // would refuse anything over 2 MB.
        let app = Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAnthropic {
            addr,
            inner,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, to use as the client's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, valid or not, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner.recorded).clone()
    }

    /// Why requests were refused, in order. A passing test expects none.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.inner.violations).clone()
    }

    /// Waits until at least `n` requests were received, then returns all of them.
    /// Panics (with the violations so far) if they do not arrive `within`.
    pub async fn wait_for_requests(&self, n: usize, within: Duration) -> Vec<Recorded> {
        let mut count = self.inner.count.subscribe();
        let arrived = tokio::time::timeout(within, count.wait_for(|c| *c >= n)).await;
        if !matches!(arrived, Ok(Ok(_))) {
            panic!(
                "expected {n} requests to the fake Anthropic API within {within:?}, got {}; \
                 violations: {:?}",
                lock(&self.inner.recorded).len(),
                self.violations()
            );
        }
        self.requests()
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.inner.closed.send_replace(true);
        self.server.abort();
    }
}

/// Locks, ignoring poisoning: a panicking test thread must not hide what was recorded.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at = SystemTime::now();
    let bytes = body.len();
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let verdict = check(&inner.api_key, &method, &uri, &headers, &body);
    if let Err(problem) = &verdict {
        lock(&inner.violations).push(problem.clone());
        record_rejection(&inner.test, problem);
    }
    let recorded = Recorded {
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        bytes,
        received_at,
    };
    let body = recorded.body.clone();
    lock(&inner.recorded).push(recorded);
    inner.count.send_modify(|c| *c += 1);

    if let Err(problem) = verdict {
        return reply(Reply::error(400, "invalid_request_error", &problem), &inner).await;
    }
    match std::panic::catch_unwind(AssertUnwindSafe(|| (inner.responder)(&body))) {
        Ok(answer) => reply(answer, &inner).await,
        Err(_) => {
            let problem = "the test's responder panicked".to_string();
            lock(&inner.violations).push(problem.clone());
            reply(Reply::error(400, "invalid_request_error", &problem), &inner).await
        }
    }
}

/// Appends one line per refused request body to the file named by
/// `FAKE_ANTHROPIC_REJECTIONS`, when set, so that a whole test run can count them
/// (`wc -l`). Each line: the test that started the fake, a tab, the refusal.
fn record_rejection(test: &str, problem: &str) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os("FAKE_ANTHROPIC_REJECTIONS") else {
        return;
    };
    let line = format!("{test}\t{}\n", problem.replace('\n', " "));
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

async fn reply(answer: Reply, inner: &Inner) -> Response {
    match answer {
        Reply::Message(message) => (
            StatusCode::OK,
            [
                ("content-type", "application/json"),
                ("request-id", "req_fake"),
            ],
            message.to_string(),
        )
            .into_response(),
        Reply::Status {
            status,
            headers,
            body,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, body).into_response();
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(name.as_bytes()),
                    axum::http::HeaderValue::from_str(&value),
                ) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        Reply::Hang => {
            let mut closed = inner.closed.subscribe();
            let _ = closed.wait_for(|c| *c).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Reply::Later(delay, answer) => {
            tokio::time::sleep(delay).await;
            Box::pin(reply(*answer, inner)).await
        }
    }
}

/// `responder`, answering each request only after `latency`, as a real model takes its time.
pub fn slow(
    latency: Duration,
    responder: impl Fn(&Value) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    move |body| Reply::Later(latency, Box::new(responder(body)))
}

// ---- the checks ----

/// Checks one request as the real API would, and stricter; `Err` says what is wrong.
fn check(
    api_key: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Value,
) -> Result<(), String> {
    if method != Method::POST || uri.path() != "/v1/messages" {
        return Err(format!(
            "expected POST /v1/messages, got {method} {}",
            uri.path()
        ));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match header("x-api-key") {
        None => return Err("x-api-key header missing".into()),
        Some(key) if key != api_key => {
            return Err("x-api-key header is not the expected key".into());
        }
        Some(_) => {}
    }
    match header("anthropic-version") {
        Some(API_VERSION) => {}
        other => {
            return Err(format!(
                "anthropic-version must be {API_VERSION}, got {other:?}"
            ));
        }
    }
    if !header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        return Err("content-type must be application/json".into());
    }
    let Some(body) = body.as_object() else {
        return Err("body is not a JSON object".into());
    };
    let model = body.get("model").and_then(Value::as_str);
    if model.is_none_or(str::is_empty) {
        return Err("model: required, a non-empty string".into());
    }
    if body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .is_none_or(|n| n == 0)
    {
        return Err("max_tokens: required, a positive integer".into());
    }
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => return Err("messages: required, a non-empty array".into()),
    };
    check_system(body.get("system"))?;
    check_tools(body.get("tools"))?;
    check_tool_choice(body.get("tool_choice"))?;
    check_messages(messages)?;
    check_server_blocks(body.get("tools"), messages)?;
    crate::media::check(messages)
}

/// The server tools' blocks in assistant messages ([`crate::web_fetch`]).
fn check_server_blocks(tools: Option<&Value>, messages: &[Value]) -> Result<(), String> {
    let offered = tools
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(crate::web_fetch::is_web_fetch));
    for (i, message) in messages.iter().enumerate() {
        if message.get("role").and_then(Value::as_str) == Some("assistant") {
            crate::web_fetch::check_turn(i, &blocks(message)?, offered)?;
        }
    }
    Ok(())
}

/// `tool_choice`, when sent, is an object with a known `type`; stricter than the API, it must
/// not set `disable_parallel_tool_use`: the bridge relies on several tool calls per turn
/// (https://platform.claude.com/docs/en/agents-and-tools/tool-use/parallel-tool-use: "By
/// default, Claude may use multiple tools … You can disable this behavior by setting
/// `disable_parallel_tool_use=true`").
fn check_tool_choice(choice: Option<&Value>) -> Result<(), String> {
    let Some(choice) = choice else {
        return Ok(());
    };
    let kind = choice.get("type").and_then(Value::as_str);
    if !matches!(kind, Some("auto" | "any" | "tool" | "none")) {
        return Err(format!(
            "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', got {kind:?}"
        ));
    }
    if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
        return Err(
            "tool_choice.disable_parallel_tool_use: this bridge must never turn parallel tool \
             use off"
                .into(),
        );
    }
    Ok(())
}

fn is_cached(block: &Value) -> bool {
    block
        .get("cache_control")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        == Some("ephemeral")
}

fn check_system(system: Option<&Value>) -> Result<(), String> {
    match system {
        Some(Value::Array(blocks)) if blocks.last().is_some_and(is_cached) => Ok(()),
        Some(Value::Array(_)) => Err("system: the last block has no cache_control".into()),
        Some(Value::String(_)) => Err("system: a plain string cannot carry cache_control".into()),
        _ => Err("system: missing; expected text blocks with cache_control".into()),
    }
}

fn check_tools(tools: Option<&Value>) -> Result<(), String> {
    let Some(Value::Array(tools)) = tools else {
        return Err("tools: missing; expected the tool definitions".into());
    };
    let Some(last) = tools.last() else {
        return Err("tools: empty".into());
    };
    for (i, tool) in tools.iter().enumerate() {
        if crate::web_fetch::is_web_fetch(tool) {
            crate::web_fetch::check_tool(i, tool)?;
            continue;
        }
        if tool.get("name").and_then(Value::as_str).is_none()
            || !tool.get("input_schema").is_some_and(Value::is_object)
        {
            return Err(format!(
                "tools[{i}]: needs a name and an input_schema object"
            ));
        }
    }
    if !is_cached(last) {
        return Err("tools: the last tool has no cache_control".into());
    }
    Ok(())
}

/// The content of a message as blocks; a plain string counts as one text block.
fn blocks(message: &Value) -> Result<Vec<Value>, String> {
    match message.get("content") {
        Some(Value::String(text)) => Ok(vec![json!({ "type": "text", "text": text })]),
        Some(Value::Array(blocks)) => Ok(blocks.clone()),
        _ => Err("content must be a string or an array of blocks".into()),
    }
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

/// The transcript rules of the real API, with its own error messages. Sources: the Messages
/// API reference (https://docs.anthropic.com/en/api/messages, `messages`: "Consecutive user
/// or assistant turns in your request will be combined into a single turn", and the first
/// message uses the user role); the API's 400 bodies quoted in public reports:
/// "messages.0: all messages must have non-empty content except for the optional final
/// assistant message" (anthropics/claude-code#6774), "messages: text content blocks must be
/// non-empty" (#53473) and "… must contain non-whitespace text" (#23440), "unexpected
/// `tool_use_id` found in `tool_result` blocks: … Each `tool_result` block must have a
/// corresponding `tool_use` block in the previous message." (#13460), "`tool_use` ids were
/// found without `tool_result` blocks immediately after: … Each `tool_use` block must have a
/// corresponding `tool_result` block in the next message." (#5060). For several calls in one
/// turn, the tool-use guides: "return one `tool_result` for each `tool_use` block, all in the
/// next user message" (https://platform.claude.com/docs/en/agents-and-tools/tool-use/parallel-tool-use)
/// and "tool result blocks must immediately follow their corresponding tool use blocks …
/// must come FIRST in the content array" (…/tool-use/handle-tool-calls). Checked after merging
/// consecutive same-role turns, as the API does; indices are those of the request.
fn check_messages(messages: &[Value]) -> Result<(), String> {
    let turns = merged_turns(messages)?;
    if turns.first().is_some_and(|(role, _, _)| *role != "user") {
        return Err("messages: first message must use the \"user\" role".into());
    }
    let last = turns.len() - 1;
    for (t, (role, i, content)) in turns.iter().enumerate() {
        let i = *i;
        if content.is_empty() && !(t == last && *role == "assistant") {
            return Err(format!(
                "messages.{i}: all messages must have non-empty content except for the optional \
                 final assistant message"
            ));
        }
        check_texts(content)?;
        if *role == "assistant" {
            // A final assistant turn is a prefill: its calls can never be answered (stricter
            // than documented, since nothing this bridge sends should end that way).
            let empty = Vec::new();
            let next = turns.get(t + 1).map_or(&empty, |(_, _, next)| next);
            check_calls_answered(i, content, next)?;
            continue;
        }
        check_results(t, i, content, &turns)?;
    }
    Ok(())
}

/// One turn of a request: its role, the index of its first message, and the content of its
/// messages merged.
type Turn<'a> = (&'a str, usize, Vec<Value>);

/// The request's turns, consecutive messages of one role merged as the API does.
fn merged_turns(messages: &[Value]) -> Result<Vec<Turn<'_>>, String> {
    let mut turns: Vec<Turn<'_>> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = match message.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant")) => role,
            other => {
                return Err(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant', got {other:?}"
                ));
            }
        };
        let blocks = blocks(message).map_err(|e| format!("messages.{i}: {e}"))?;
        for (j, block) in blocks.iter().enumerate() {
            if block_type(block).is_none() {
                return Err(format!("messages.{i}.content.{j}: block without a type"));
            }
        }
        match turns.last_mut() {
            Some((last, _, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, i, blocks)),
        }
    }
    Ok(turns)
}

/// Every text block has non-whitespace text.
fn check_texts(content: &[Value]) -> Result<(), String> {
    for block in content.iter().filter(|b| block_type(b) == Some("text")) {
        match block.get("text").and_then(Value::as_str) {
            None | Some("") => {
                return Err("messages: text content blocks must be non-empty".into());
            }
            Some(text) if text.trim().is_empty() => {
                return Err(
                    "messages: text content blocks must contain non-whitespace text".into(),
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// An assistant turn's `tool_use` blocks are whole and each is answered in `next`.
fn check_calls_answered(i: usize, content: &[Value], next: &[Value]) -> Result<(), String> {
    let mut ids = Vec::new();
    for (j, block) in
        (content.iter().enumerate()).filter(|(_, b)| block_type(b) == Some("tool_use"))
    {
        let id = block.get("id").and_then(Value::as_str);
        let named = block.get("name").and_then(Value::as_str).is_some();
        match id {
            Some(id) if named && block.get("input").is_some_and(Value::is_object) => {
                ids.push(id.to_string())
            }
            _ => {
                return Err(format!(
                    "messages.{i}.content.{j}: tool_use needs id, name and an input object"
                ));
            }
        }
    }
    let answered = |id: &str| {
        next.iter().any(|b| {
            block_type(b) == Some("tool_result")
                && b.get("tool_use_id").and_then(Value::as_str) == Some(id)
        })
    };
    let missing: Vec<&str> = (ids.iter().map(String::as_str))
        .filter(|id| !answered(id))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately \
             after: {}. Each `tool_use` block must have a corresponding `tool_result` block in \
             the next message.",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// A user turn's `tool_result` blocks: first in the content, each answering a `tool_use` of
/// the assistant turn just before, once.
fn check_results(t: usize, i: usize, content: &[Value], turns: &[Turn<'_>]) -> Result<(), String> {
    let asked: Vec<&str> = t
        .checked_sub(1)
        .map(|p| {
            turns[p]
                .2
                .iter()
                .filter(|b| block_type(b) == Some("tool_use"))
                .filter_map(|b| b.get("id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let results = content
        .iter()
        .take_while(|b| block_type(b) == Some("tool_result"))
        .count();
    if content[results..]
        .iter()
        .any(|b| block_type(b) == Some("tool_result"))
    {
        return Err(format!(
            "messages.{i}: tool_result blocks must come FIRST in the content array, before any \
             other block"
        ));
    }
    let mut answered: Vec<&str> = Vec::new();
    for (j, block) in content[..results].iter().enumerate() {
        let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
            return Err(format!(
                "messages.{i}.content.{j}.tool_result.tool_use_id: Field required"
            ));
        };
        if !matches!(
            block.get("content"),
            None | Some(Value::String(_)) | Some(Value::Array(_))
        ) {
            return Err(format!(
                "messages.{i}.content.{j}: tool_result content must be a string or blocks"
            ));
        }
        if block.get("is_error").is_some_and(|e| !e.is_boolean()) {
            return Err(format!(
                "messages.{i}.content.{j}.tool_result.is_error: Input should be a valid boolean"
            ));
        }
        if !asked.contains(&id) || answered.contains(&id) {
            return Err(format!(
                "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` \
                 blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` \
                 block in the previous message."
            ));
        }
        answered.push(id);
    }
    Ok(())
}

// ---- building replies ----

static NEXT_MESSAGE: AtomicU64 = AtomicU64::new(1);

/// The `usage` of every reply built here.
pub fn usage() -> Value {
    json!({
        "input_tokens": 120,
        "output_tokens": 30,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2000
    })
}

/// A full assistant message with `content` and `stop_reason`.
pub fn message(content: Vec<Value>, stop_reason: &str) -> Value {
    let n = NEXT_MESSAGE.fetch_add(1, Ordering::Relaxed);
    json!({
        "id": format!("msg_fake_{n:04}"),
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage()
    })
}

/// A `tool_use` content block.
pub fn tool_use_block(id: &str, name: &str, input: Value) -> Value {
    json!({ "type": "tool_use", "id": id, "name": name, "input": input })
}

/// A message that calls one tool (`stop_reason: "tool_use"`).
pub fn tool_use(id: &str, name: &str, input: Value) -> Value {
    message(vec![tool_use_block(id, name, input)], "tool_use")
}

/// A message that ends the turn with `text` (`stop_reason: "end_turn"`).
pub fn text(text: &str) -> Value {
    message(vec![json!({ "type": "text", "text": text })], "end_turn")
}

/// Answers with `replies` in order, then with a 400 saying the script ran out.
pub fn scripted<R: Into<Reply>>(
    replies: impl IntoIterator<Item = R>,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    let replies: Mutex<std::collections::VecDeque<Reply>> =
        Mutex::new(replies.into_iter().map(Into::into).collect());
    move |_| {
        lock(&replies).pop_front().unwrap_or_else(|| {
            Reply::error(
                400,
                "invalid_request_error",
                "the fake's script has no more replies",
            )
        })
    }
}

/// Where a transcript stands, as the flows below see it.
enum Step {
    /// The last user message carries new text: the run's input.
    Input,
    /// The last user message answers the named tool, with this result text.
    After { tool: String, result: String },
}

fn step(body: &Value) -> Step {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let Some(last) = messages.last() else {
        return Step::Input;
    };
    let content = blocks(last).unwrap_or_default();
    if content.iter().any(|b| block_type(b) == Some("text")) {
        return Step::Input;
    }
    let Some(result) = content
        .iter()
        .find(|b| block_type(b) == Some("tool_result"))
    else {
        return Step::Input;
    };
    let id = result
        .get("tool_use_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let previous = messages.len().checked_sub(2).map(|i| &messages[i]);
    let tool = previous
        .and_then(|m| blocks(m).ok())
        .and_then(|b| {
            b.into_iter()
                .find(|b| b.get("id").and_then(Value::as_str) == Some(id))
        })
        .and_then(|b| b.get("name").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    let result = match result.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    Step::After { tool, result }
}

/// The text of the latest user message that has text: the input being handled.
fn input_text(body: &Value) -> String {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    messages
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| blocks(m).unwrap_or_default())
        .find(|b| b.iter().any(|b| block_type(b) == Some("text")))
        .map(|b| {
            b.iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                // The local time the bridge adds after each input (issue 11) is not the text.
                .filter(|t| !t.starts_with("[Now]"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A unique tool_use id within a transcript: it grows with every turn.
fn tool_id(body: &Value, name: &str) -> String {
    let turn = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    format!("toolu_{turn:02}_{name}")
}

/// A model that files every input the same way: `vault_write` (the input as content),
/// then `log_interaction`, then `send_message` with `reply_text`, then ends its turn.
pub fn capture_flow(
    folder: &str,
    title: &str,
    tags: &[&str],
    reply_text: &str,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    let (folder, title, reply_text) = (
        folder.to_string(),
        title.to_string(),
        reply_text.to_string(),
    );
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    move |body| {
        let input = input_text(body);
        let reply = match step(body) {
            Step::Input => tool_use(
                &tool_id(body, "vault_write"),
                "vault_write",
                json!({ "folder": folder, "title": title, "content": input, "tags": tags, "confidence": 92 }),
            ),
            Step::After { tool, result } if tool == "vault_write" => tool_use(
                &tool_id(body, "log_interaction"),
                "log_interaction",
                json!({
                    "input": input, "category": folder, "confidence": 92, "tags": tags,
                    "stored_path": result, "reasoning": "clear intent"
                }),
            ),
            Step::After { tool, .. } if tool == "log_interaction" => tool_use(
                &tool_id(body, "send_message"),
                "send_message",
                json!({ "message": reply_text }),
            ),
            Step::After { .. } => text("Filed."),
        };
        Reply::Message(reply)
    }
}

/// A model that asks `question` about every input: `log_interaction` (with the question
/// as `clarification`), then `send_message` with it, then ends its turn.
pub fn clarify_flow(question: &str) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    let question = question.to_string();
    move |body| {
        let reply = match step(body) {
            Step::Input => tool_use(
                &tool_id(body, "log_interaction"),
                "log_interaction",
                json!({ "input": input_text(body), "confidence": 40, "clarification": question }),
            ),
            Step::After { tool, .. } if tool == "log_interaction" => tool_use(
                &tool_id(body, "send_message"),
                "send_message",
                json!({ "message": question }),
            ),
            Step::After { .. } => text("Asked."),
        };
        Reply::Message(reply)
    }
}

/// Whether the last user message carries an error result: a call of the turn before failed.
fn last_results_failed(body: &Value) -> bool {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| blocks(m).ok())
        .is_some_and(|b| {
            b.iter().any(|b| {
                block_type(b) == Some("tool_result")
                    && b.get("is_error").and_then(Value::as_bool) == Some(true)
            })
        })
}

/// A model that files every input in ONE turn, as the system prompt asks: `vault_write` with
/// its `reply` (`reply_template`, `{path}` left for the bridge to fill) and `log_interaction`
/// as two `tool_use` blocks of one message. Should a call fail, it writes the note again
/// alone; after results with no error it ends its turn (a request the bridge should not make).
pub fn one_turn_capture(
    folder: &str,
    title: &str,
    tags: &[&str],
    reply_template: &str,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    let (folder, title, reply_template) = (
        folder.to_string(),
        title.to_string(),
        reply_template.to_string(),
    );
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    move |body| {
        let input = input_text(body);
        let write = |id: &str| {
            tool_use_block(
                id,
                "vault_write",
                json!({ "folder": folder, "title": title, "content": input, "tags": tags,
                        "confidence": 92, "reply": reply_template }),
            )
        };
        let reply = match step(body) {
            Step::Input => message(
                vec![
                    json!({ "type": "text", "text": "Filing it." }),
                    write(&tool_id(body, "vault_write")),
                    tool_use_block(
                        &tool_id(body, "log_interaction"),
                        "log_interaction",
                        json!({ "input": input, "category": folder, "confidence": 92,
                                "tags": tags, "reasoning": "clear intent" }),
                    ),
                ],
                "tool_use",
            ),
            Step::After { .. } if last_results_failed(body) => {
                message(vec![write(&tool_id(body, "vault_write"))], "tool_use")
            }
            Step::After { .. } => text("Filed."),
        };
        Reply::Message(reply)
    }
}

/// A model that asks `question` about a text in ONE turn (`log_interaction` and
/// `send_message` together); every later request of the conversation (the answer, whose user
/// message starts with the question's results, kept by the bridge) goes to `capture`.
pub fn one_turn_question(
    question: &str,
    capture: impl Fn(&Value) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    let question = question.to_string();
    move |body| {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        if messages.len() > 1 {
            return capture(body);
        }
        let input = input_text(body);
        Reply::Message(message(
            vec![
                tool_use_block(
                    &tool_id(body, "log_interaction"),
                    "log_interaction",
                    json!({ "input": input, "confidence": 40, "clarification": question }),
                ),
                tool_use_block(
                    &tool_id(body, "send_message"),
                    "send_message",
                    json!({ "message": question }),
                ),
            ],
            "tool_use",
        ))
    }
}
