//! A small client for the Anthropic Messages API (`POST /v1/messages`, not streamed).
//!
//! Invariants: content blocks are returned exactly as received (unknown block types and
//! fields included), so a transcript can be sent back without loss. Only transient failures
//! are retried (408, 409, 429, 5xx and transport errors), at most `max_retries` times and
//! with no more than [`MAX_TOTAL_BACKOFF`] of waiting in all. The server's `retry-after-ms`
//! or `retry-after` header wins over our own backoff. All waiting uses `tokio::time`, so
//! tests can pause the clock. Redirects are not followed, so the key never goes to another
//! host. The key never shows up in `Debug` output or logs.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::ops::{Add, AddAssign};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where requests go unless configured otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The model used unless configured otherwise.
pub const DEFAULT_MODEL: &str = "claude-sonnet-5-5";
/// The `anthropic-version` header sent with every request.
pub const API_VERSION: &str = "2023-06-01";
/// Default cap on the tokens of one response.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 4;
/// Default limit on one attempt, from connecting to the end of the response body.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The most time spent waiting between attempts, over all retries of one call.
pub const MAX_TOTAL_BACKOFF: Duration = Duration::from_secs(60);

/// The first backoff step when the server gives no hint; each later one doubles.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest single backoff step when the server gives no hint.
const BACKOFF_CAP: Duration = Duration::from_secs(8);
/// Limit on the connection phase of one attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many characters of an API error message are kept.
const MESSAGE_LIMIT: usize = 300;

/// How requests are authenticated.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `x-api-key: <key>`, as the Anthropic API expects.
    ApiKey(String),
    /// `Authorization: Bearer <token>`, for Anthropic-compatible local servers
    /// (Ollama, llama.cpp).
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Scheme, host and optional path prefix; `/v1/messages` is appended.
    pub base_url: String,
    /// Credentials.
    pub auth: Auth,
    /// Model name sent with every request.
    pub model: String,
    /// `max_tokens` sent with every request.
    pub max_tokens: u32,
    /// Retries after the first attempt for transient failures.
    pub max_retries: u32,
    /// Limit on one attempt.
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// The defaults (Anthropic's endpoint, [`DEFAULT_MODEL`], …) with the given credentials.
    pub fn new(auth: Auth) -> ClientConfig {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_string(),
            auth,
            model: DEFAULT_MODEL.to_string(),
            max_tokens: DEFAULT_MAX_TOKENS,
            max_retries: DEFAULT_MAX_RETRIES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings cannot be used (bad base URL, key that is not a valid header, …).
    #[error("invalid API client settings: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The server refused the credentials (401 or 403).
    #[error("API key rejected (HTTP {status}): {message}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// The API's `error.message`, truncated.
        message: String,
    },
    /// The server refused the request as malformed (400 `invalid_request_error`).
    #[error("API refused the request (HTTP 400 invalid_request_error): {message}")]
    InvalidRequest {
        /// The API's `error.message`, truncated.
        message: String,
    },
    /// The server answered with an error status.
    #[error("API error (HTTP {status}): {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The API's `error.message` (or the body's start), truncated.
        message: String,
    },
    /// The request could not be sent or the response not read (connect error, timeout, …).
    #[error("could not reach the API: {0}")]
    Transport(#[source] reqwest::Error),
    /// A success status whose body is not a valid message.
    #[error("malformed API response: {reason}")]
    Malformed {
        /// What is wrong with the body.
        reason: String,
    },
    /// Every attempt failed with a transient error.
    #[error("API call failed after {attempts} attempts: {last}")]
    Exhausted {
        /// How many requests were made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error>,
    },
}

impl Error {
    /// Whether the server rejected the credentials: retrying will not help, the user must
    /// fix the key.
    pub fn is_auth(&self) -> bool {
        match self {
            Error::Unauthorized { .. } => true,
            Error::Exhausted { last, .. } => last.is_auth(),
            _ => false,
        }
    }

    /// Whether the API refused the request because of its `messages` (the transcript): its
    /// messages then start with the field path, `messages.3: …` or `messages: …`.
    pub fn names_transcript(&self) -> bool {
        matches!(self, Error::InvalidRequest { message } if message.starts_with("messages"))
    }
}

/// Why the model stopped, from the response's `stop_reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `end_turn`: the model finished.
    EndTurn,
    /// `tool_use`: the model wants tools run.
    ToolUse,
    /// `pause_turn`: a long turn was paused; send the transcript back to continue it.
    PauseTurn,
    /// `max_tokens`: the response was cut off.
    MaxTokens,
    /// `stop_sequence`: a stop sequence was produced.
    StopSequence,
    /// `refusal`: the model declined.
    Refusal,
    /// Any other value, kept as sent.
    Other(String),
}

impl StopReason {
    /// Maps the wire string to a variant; unknown strings become [`StopReason::Other`].
    pub fn parse(s: &str) -> StopReason {
        match s {
            "end_turn" => StopReason::EndTurn,
            "tool_use" => StopReason::ToolUse,
            "pause_turn" => StopReason::PauseTurn,
            "max_tokens" => StopReason::MaxTokens,
            "stop_sequence" => StopReason::StopSequence,
            "refusal" => StopReason::Refusal,
            other => StopReason::Other(other.to_string()),
        }
    }

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::ToolUse => "tool_use",
            StopReason::PauseTurn => "pause_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::Refusal => "refusal",
            StopReason::Other(s) => s,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token counts of one response, or a sum of several.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens not read from or written to the cache.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Reads a `usage` object leniently: a missing or `null` count is zero (local servers
    /// often leave the cache counts out).
    fn from_json(usage: Option<&Value>) -> Usage {
        let count = |name: &str| {
            usage
                .and_then(|u| u.get(name))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Usage {
            input_tokens: count("input_tokens"),
            output_tokens: count("output_tokens"),
            cache_creation_input_tokens: count("cache_creation_input_tokens"),
            cache_read_input_tokens: count("cache_read_input_tokens"),
        }
    }
}

impl Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            cache_creation_input_tokens: self
                .cache_creation_input_tokens
                .saturating_add(other.cache_creation_input_tokens),
            cache_read_input_tokens: self
                .cache_read_input_tokens
                .saturating_add(other.cache_read_input_tokens),
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        *self = *self + other;
    }
}

/// One model response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The content blocks exactly as received; unknown block types and fields are kept.
    pub content: Vec<Value>,
    /// Why the model stopped.
    pub stop_reason: StopReason,
    /// Token counts.
    pub usage: Usage,
}

/// A `system` value: one text block marked for prompt caching.
pub fn cached_system(text: &str) -> Value {
    json!([{ "type": "text", "text": text, "cache_control": { "type": "ephemeral" } }])
}

/// The type of Anthropic's server-side web fetch tool the bridge uses. The web fetch tool
/// page (platform.claude.com/docs/en/agents-and-tools/tool-use/web-fetch-tool, read
/// 2026-12-02; status "stable", so no `anthropic-beta` header, which only the tool's 2025
/// beta needed: `web-fetch-2025-09-10`) lists `web_fetch_20260318` as the latest version,
/// adding dynamic filtering (Claude 4.6 and later) and response inclusion to the earlier
/// ones, which "remain available", `web_fetch_20250910` being the basic fetch. The bridge
/// needs only the page's text, and the basic version works with any model `CLAUDE_MODEL`
/// may name, dynamic filtering only with some: the basic version.
pub const WEB_FETCH_TYPE: &str = "web_fetch_20250910";
/// Most pages one request may fetch.
const WEB_FETCH_MAX_USES: u32 = 3;
/// Longest page text given to the model, in tokens (the tool truncates the rest).
const WEB_FETCH_MAX_TOKENS: u32 = 20_000;

/// The server-side web fetch tool's definition: the API fetches the page during the
/// request and adds `server_tool_use` and `web_fetch_tool_result` blocks to the reply,
/// which are kept and sent back as they came (nothing is run here).
pub fn web_fetch_tool() -> Value {
    json!({
        "type": WEB_FETCH_TYPE,
        "name": "web_fetch",
        "max_uses": WEB_FETCH_MAX_USES,
        "max_content_tokens": WEB_FETCH_MAX_TOKENS,
    })
}

/// Marks the last tool definition for prompt caching, which caches all tool definitions.
pub fn cache_last_tool(mut tools: Vec<Value>) -> Vec<Value> {
    if let Some(Value::Object(last)) = tools.last_mut() {
        last.insert("cache_control".to_string(), json!({ "type": "ephemeral" }));
    }
    tools
}

/// A Messages API client. Cheap to clone; clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    model: String,
    max_tokens: u32,
    max_retries: u32,
}

/// The request body; borrows the caller's values so that the transcript is not copied.
#[derive(Serialize)]
struct RequestBody<'a> {
    model: &'a str,
    max_tokens: u32,
    system: &'a Value,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    tools: &'a [Value],
    messages: &'a [Value],
}

impl Client {
    /// Checks the settings and builds the HTTP client. Nothing is sent yet.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let invalid = |reason: String| Error::Config { reason };
        let base = reqwest::Url::parse(&config.base_url)
            .map_err(|e| invalid(format!("base URL {:?}: {e}", config.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "base URL {:?} is not http(s)",
                config.base_url
            )));
        }
        if config.model.trim().is_empty() {
            return Err(invalid("model name is empty".to_string()));
        }
        if config.max_tokens == 0 {
            return Err(invalid("max_tokens is 0".to_string()));
        }

        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let (name, value) = match &config.auth {
            Auth::ApiKey(key) if key.trim().is_empty() => {
                return Err(invalid("API key is empty".to_string()));
            }
            Auth::ApiKey(key) => (HeaderName::from_static("x-api-key"), key.trim().to_string()),
            Auth::Bearer(token) => (AUTHORIZATION, format!("Bearer {}", token.trim())),
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| invalid("API key contains characters not allowed in a header".into()))?;
        value.set_sensitive(true);
        headers.insert(name, value);

        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("second-brain/", env!("CARGO_PKG_VERSION")))
            .timeout(config.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(config.request_timeout))
            .redirect(reqwest::redirect::Policy::none());
        if is_loopback(&base) {
            // A local model server is never reached through a proxy.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("HTTP client: {e}")))?;

        let url = format!("{}/v1/messages", config.base_url.trim_end_matches('/'));
        Ok(Client {
            http,
            url,
            model: config.model,
            max_tokens: config.max_tokens,
            max_retries: config.max_retries,
        })
    }

    /// The model requests are made with.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Sends one Messages request, retrying transient failures.
    ///
    /// `system` goes out as given (see [`cached_system`]); `tools` is left out when empty
    /// (see [`cache_last_tool`]).
    pub async fn create(
        &self,
        system: &Value,
        tools: &[Value],
        messages: &[Value],
    ) -> Result<Response, Error> {
        let body = RequestBody {
            model: &self.model,
            max_tokens: self.max_tokens,
            system,
            tools,
            messages,
        };
        let body = serde_json::to_vec(&body).map_err(|e| Error::Config {
            reason: format!("request body not encodable: {e}"),
        })?;
        tracing::debug!(
            bytes = body.len(),
            messages = messages.len(),
            "calling the Messages API"
        );
        with_retries(self.max_retries, || self.attempt(&body)).await
    }

    /// One request: sends, reads the whole body, classifies the outcome.
    async fn attempt(&self, body: &[u8]) -> Result<Response, Failure> {
        let response = self
            .http
            .post(&self.url)
            .body(body.to_vec())
            .send()
            .await
            .map_err(Failure::transport)?;
        let status = response.status().as_u16();
        let hint = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(Failure::transport)?;
        if (200..300).contains(&status) {
            return parse_response(&bytes).map_err(Failure::fatal);
        }
        let message = error_message(&bytes);
        if status == 400 && error_type(&bytes).as_deref() == Some("invalid_request_error") {
            return Err(Failure::fatal(Error::InvalidRequest { message }));
        }
        match status {
            401 | 403 => Err(Failure::fatal(Error::Unauthorized { status, message })),
            408 | 409 | 429 | 500..=599 => Err(Failure {
                error: Error::Status { status, message },
                retryable: true,
                hint,
            }),
            _ => Err(Failure::fatal(Error::Status { status, message })),
        }
    }
}

/// Whether the URL points at this machine.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A failed attempt, and whether another one may succeed.
#[derive(Debug)]
struct Failure {
    error: Error,
    retryable: bool,
    /// The server's wish for how long to wait.
    hint: Option<Duration>,
}

impl Failure {
    fn fatal(error: Error) -> Failure {
        Failure {
            error,
            retryable: false,
            hint: None,
        }
    }

    fn transport(err: reqwest::Error) -> Failure {
        // A request that could not even be built will not build next time either.
        Failure {
            retryable: !err.is_builder(),
            error: Error::Transport(err),
            hint: None,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, runs out of retries, or would wait
/// more than [`MAX_TOTAL_BACKOFF`] in all.
async fn with_retries<T, F, Fut>(max_retries: u32, mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut waited = Duration::ZERO;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let failure = match attempt().await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        if !failure.retryable {
            return Err(failure.error);
        }
        let delay = failure.hint.unwrap_or_else(|| backoff(attempts, jitter()));
        if attempts > max_retries || waited + delay > MAX_TOTAL_BACKOFF {
            tracing::warn!(attempts, cause = %failure.error, "API call failed; giving up");
            return Err(Error::Exhausted {
                attempts,
                last: Box::new(failure.error),
            });
        }
        tracing::warn!(
            attempt = attempts,
            delay_ms = delay.as_millis() as u64,
            cause = %failure.error,
            "API call failed; retrying"
        );
        tokio::time::sleep(delay).await;
        waited += delay;
    }
}

/// The wait after the `attempt`-th failure: 0.5 s, 1 s, 2 s, … capped at 8 s, shortened
/// by up to a quarter (`jitter` in `[0, 1)`) so that clients do not retry in step.
fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let step = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_CAP);
    step.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
}

/// A number in `[0, 1)` that differs from call to call.
fn jitter() -> f64 {
    // `RandomState` is seeded randomly per process and differs per instance: enough for
    // spreading retries, without a random-number crate.
    let bits = RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The server's wait hint: `retry-after-ms` (milliseconds), else `retry-after` (seconds).
/// HTTP dates and nonsense are ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let value = headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    number("retry-after").and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// The `error.message` of an API error body, else the start of the body, truncated.
fn error_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v.get("error")
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    if text.is_empty() {
        "(no message)".to_string()
    } else {
        truncate(&text, MESSAGE_LIMIT)
    }
}

/// The `error.type` of an API error body.
fn error_type(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    Some(value.get("error")?.get("type")?.as_str()?.to_string())
}

/// At most `max` characters of `text`, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Reads a success body into a [`Response`], keeping the content blocks as they are.
fn parse_response(body: &[u8]) -> Result<Response, Error> {
    let malformed = |reason: String| Error::Malformed { reason };
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("body is not JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(malformed("body is not a JSON object".to_string()));
    };
    if object.get("type").and_then(Value::as_str) == Some("error") {
        return Err(malformed(format!(
            "error body with a success status: {}",
            error_message(body)
        )));
    }
    let content = match object.remove("content") {
        Some(Value::Array(blocks)) => blocks,
        Some(_) => return Err(malformed("`content` is not an array".to_string())),
        None => return Err(malformed("no `content`".to_string())),
    };
    if let Some(i) = content
        .iter()
        .position(|b| b.get("type").and_then(Value::as_str).is_none())
    {
        return Err(malformed(format!("content block {i} has no `type`")));
    }
    let stop_reason = match object.get("stop_reason") {
        Some(Value::String(s)) => StopReason::parse(s),
        _ => return Err(malformed("no `stop_reason`".to_string())),
    };
    let usage = Usage::from_json(object.get("usage"));
    Ok(Response {
        content,
        stop_reason,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode};
    use axum::response::{IntoResponse, Response as AxumResponse};
    use axum::routing::post;

    use super::*;

    // ---- the retry policy, on tokio's paused clock (no sockets: paused time would jump
    // ---- to reqwest's timeout while a real socket is waiting) ----

    fn transient(hint: Option<Duration>) -> Failure {
        Failure {
            error: Error::Status {
                status: 529,
                message: "Overloaded".into(),
            },
            retryable: true,
            hint,
        }
    }

    /// Runs `with_retries` over a script of outcomes; returns the result, the number of
    /// attempts and the (virtual) time it took.
    async fn run_script(
        max_retries: u32,
        script: Vec<Result<u32, Failure>>,
    ) -> (Result<u32, Error>, usize, Duration) {
        let script = Mutex::new(VecDeque::from(script));
        let calls = Mutex::new(0usize);
        let start = tokio::time::Instant::now();
        let result = with_retries(max_retries, || {
            *calls.lock().unwrap() += 1;
            let next = script.lock().unwrap().pop_front();
            async move { next.unwrap_or_else(|| Err(transient(None))) }
        })
        .await;
        let calls = *calls.lock().unwrap();
        (result, calls, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_exactly_as_long_as_the_server_asks() {
        let (result, calls, elapsed) = run_script(
            4,
            vec![Err(transient(Some(Duration::from_millis(2500)))), Ok(7)],
        )
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls, 2);
        assert_eq!(elapsed, Duration::from_millis(2500));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_without_hint_backs_off_exponentially_with_jitter() {
        let script = vec![
            Err(transient(None)),
            Err(transient(None)),
            Err(transient(None)),
            Ok(1),
        ];
        let (result, calls, elapsed) = run_script(4, script).await;
        assert_eq!(result.unwrap(), 1);
        assert_eq!(calls, 4);
        // 0.5 + 1 + 2 s, each shortened by at most a quarter.
        assert!(elapsed <= Duration::from_millis(3500), "{elapsed:?}");
        assert!(elapsed >= Duration::from_millis(2625), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_after_max_retries_plus_one_attempts() {
        let (result, calls, _) = run_script(2, vec![]).await;
        assert_eq!(calls, 3);
        match result {
            Err(Error::Exhausted { attempts: 3, last }) => {
                assert!(
                    matches!(*last, Error::Status { status: 529, .. }),
                    "{last:?}"
                )
            }
            other => panic!("expected Exhausted, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_never_waits_more_than_the_total_budget() {
        let script = vec![
            Err(transient(Some(Duration::from_secs(50)))),
            Err(transient(Some(Duration::from_secs(20)))),
            Ok(1),
        ];
        let (result, calls, elapsed) = run_script(10, script).await;
        assert!(
            matches!(result, Err(Error::Exhausted { attempts: 2, .. })),
            "{result:?}"
        );
        assert_eq!(calls, 2);
        assert_eq!(elapsed, Duration::from_secs(50));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_with_zero_retries_makes_one_attempt() {
        let (result, calls, elapsed) = run_script(0, vec![]).await;
        assert!(
            matches!(result, Err(Error::Exhausted { attempts: 1, .. })),
            "{result:?}"
        );
        assert_eq!((calls, elapsed), (1, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_failure_is_returned_at_once() {
        let fatal = Failure::fatal(Error::Unauthorized {
            status: 401,
            message: "bad key".into(),
        });
        let (result, calls, elapsed) = run_script(4, vec![Err(fatal)]).await;
        assert!(result.as_ref().is_err_and(Error::is_auth), "{result:?}");
        assert_eq!((calls, elapsed), (1, Duration::ZERO));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let steps: Vec<u64> = (1..=7)
            .map(|n| backoff(n, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(steps, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(backoff(u32::MAX, 0.0), BACKOFF_CAP);
        assert_eq!(
            backoff(1, 0.999_999),
            Duration::from_millis(500).mul_f64(1.0 - 0.25 * 0.999_999)
        );
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn retry_after_headers_table() {
        type Headers = &'static [(&'static str, &'static str)];
        let cases: &[(Headers, Option<Duration>)] = &[
            (
                &[("retry-after-ms", "1500")],
                Some(Duration::from_millis(1500)),
            ),
            (
                &[("retry-after-ms", "0.5")],
                Some(Duration::from_micros(500)),
            ),
            (
                &[("retry-after-ms", "250"), ("retry-after", "9")],
                Some(Duration::from_millis(250)),
            ),
            (&[("retry-after", "3")], Some(Duration::from_secs(3))),
            (
                &[("retry-after", " 1.5 ")],
                Some(Duration::from_millis(1500)),
            ),
            (&[("retry-after", "0")], Some(Duration::ZERO)),
            (&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
            (&[("retry-after", "-1")], None),
            (&[("retry-after", "NaN")], None),
            (&[("retry-after", "inf")], None),
            (
                &[("retry-after-ms", "soon"), ("retry-after", "2")],
                Some(Duration::from_secs(2)),
            ),
            (&[], None),
        ];
        for (headers, expected) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in *headers {
                map.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            assert_eq!(retry_after(&map), *expected, "{headers:?}");
        }
    }

    #[test]
    fn error_messages_are_taken_from_the_body_and_truncated() {
        let api = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(error_message(api), "Overloaded");
        assert_eq!(
            error_message(b"  upstream connect error  "),
            "upstream connect error"
        );
        assert_eq!(error_message(b""), "(no message)");
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "🦀".repeat(1000));
        let message = error_message(long.as_bytes());
        assert_eq!(message.chars().count(), MESSAGE_LIMIT + 1);
        assert!(message.ends_with('…'));
    }

    #[test]
    fn stop_reasons_round_trip() {
        for s in [
            "end_turn",
            "tool_use",
            "pause_turn",
            "max_tokens",
            "stop_sequence",
            "refusal",
            "model_context_window_exceeded",
            "",
        ] {
            assert_eq!(StopReason::parse(s).as_str(), s);
        }
        assert_eq!(
            StopReason::parse("weird"),
            StopReason::Other("weird".into())
        );
    }

    #[test]
    fn usage_adds_up_and_reads_leniently() {
        let a = Usage::from_json(Some(&json!({
            "input_tokens": 10, "output_tokens": 5,
            "cache_creation_input_tokens": null, "cache_read_input_tokens": 7
        })));
        assert_eq!(
            a,
            Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 7
            }
        );
        let mut sum = a + a;
        sum += Usage {
            input_tokens: u64::MAX,
            ..Usage::default()
        };
        assert_eq!(sum.input_tokens, u64::MAX);
        assert_eq!(sum.cache_read_input_tokens, 14);
        assert_eq!(Usage::from_json(None), Usage::default());
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            json!({"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":0,"cache_read_input_tokens":7})
        );
    }

    #[test]
    fn caching_helpers_mark_the_right_blocks() {
        assert_eq!(
            cached_system("be brief"),
            json!([{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}])
        );
        let tools = cache_last_tool(vec![json!({"name":"a"}), json!({"name":"b"})]);
        assert_eq!(
            tools,
            vec![
                json!({"name":"a"}),
                json!({"name":"b","cache_control":{"type":"ephemeral"}})
            ]
        );
        assert!(cache_last_tool(vec![]).is_empty());
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        let cases = [
            ("http://127.0.0.1:8080", true),
            ("http://127.8.9.10", true),
            ("http://localhost:11434/", true),
            ("http://LOCALHOST", true),
            ("http://[::1]:8080", true),
            ("https://api.anthropic.com", false),
            ("http://192.168.1.2:11434", false),
            ("http://localhost.example.com", false),
            ("http://[::2]", false),
        ];
        for (url, expected) in cases {
            assert_eq!(
                is_loopback(&reqwest::Url::parse(url).unwrap()),
                expected,
                "{url}"
            );
        }
    }

    #[test]
    fn auth_debug_never_shows_the_key() {
        let config = ClientConfig::new(Auth::ApiKey("sk-ant-secret".into()));
        assert!(!format!("{config:?}").contains("secret"));
        assert!(!format!("{:?}", Auth::Bearer("tok-secret".into())).contains("secret"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let with = |f: &dyn Fn(&mut ClientConfig)| {
            let mut config = ClientConfig::new(Auth::ApiKey("k".into()));
            f(&mut config);
            Client::new(config)
        };
        let cases: Vec<(&str, Result<Client, Error>)> = vec![
            (
                "not a url",
                with(&|c| c.base_url = "api.anthropic.com".into()),
            ),
            ("ftp", with(&|c| c.base_url = "ftp://example.com".into())),
            ("empty key", with(&|c| c.auth = Auth::ApiKey("  ".into()))),
            (
                "newline in key",
                with(&|c| c.auth = Auth::ApiKey("a\nb".into())),
            ),
            ("empty model", with(&|c| c.model = String::new())),
            ("zero tokens", with(&|c| c.max_tokens = 0)),
        ];
        for (name, result) in cases {
            assert!(
                matches!(result, Err(Error::Config { .. })),
                "{name}: {result:?}"
            );
        }
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|c| c.base_url = "http://localhost:11434/".into()).is_ok());
    }

    // ---- the client against a tiny local server ----

    /// One canned answer of the test server.
    #[derive(Clone)]
    enum Canned {
        Answer {
            status: u16,
            headers: Vec<(&'static str, String)>,
            body: String,
        },
        Hang,
    }

    fn ok(body: Value) -> Canned {
        Canned::Answer {
            status: 200,
            headers: vec![],
            body: body.to_string(),
        }
    }

    fn status(status: u16, headers: &[(&'static str, &str)], message: &str) -> Canned {
        let body = json!({"type":"error","error":{"type":"some_error","message":message}});
        Canned::Answer {
            status,
            headers: headers.iter().map(|(n, v)| (*n, v.to_string())).collect(),
            body: body.to_string(),
        }
    }

    fn message(content: Value, stop_reason: &str) -> Value {
        json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "m",
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 3,
                      "cache_creation_input_tokens": 100, "cache_read_input_tokens": 0}
        })
    }

    struct Seen {
        headers: AxumHeaders,
        body: Bytes,
    }

    #[derive(Default)]
    struct Shared {
        script: Mutex<VecDeque<Canned>>,
        seen: Mutex<Vec<Seen>>,
    }

    struct TestServer {
        addr: SocketAddr,
        shared: Arc<Shared>,
    }

    impl TestServer {
        /// Serves `script` in order; the last answer repeats.
        async fn start(script: Vec<Canned>) -> TestServer {
            let shared = Arc::new(Shared {
                script: Mutex::new(script.into()),
                ..Shared::default()
            });
            let app = Router::new()
                .route("/v1/messages", post(answer))
                .with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            TestServer { addr, shared }
        }

        fn client(&self, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
            let mut config = ClientConfig::new(Auth::ApiKey("sk-test-key".into()));
            config.base_url = format!("http://{}", self.addr);
            config.model = "claude-test".into();
            config.max_tokens = 321;
            tweak(&mut config);
            Client::new(config).unwrap()
        }

        fn requests(&self) -> usize {
            self.shared.seen.lock().unwrap().len()
        }
    }

    async fn answer(
        State(shared): State<Arc<Shared>>,
        headers: AxumHeaders,
        body: Bytes,
    ) -> AxumResponse {
        shared.seen.lock().unwrap().push(Seen { headers, body });
        let canned = {
            let mut script = shared.script.lock().unwrap();
            if script.len() > 1 {
                script.pop_front()
            } else {
                script.front().cloned()
            }
        };
        match canned {
            Some(Canned::Answer {
                status,
                headers,
                body,
            }) => {
                let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
            Some(Canned::Hang) => std::future::pending().await,
            None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }

    fn user(text: &str) -> Value {
        json!({"role":"user","content":[{"type":"text","text":text}]})
    }

    #[tokio::test]
    async fn sends_the_documented_headers_and_body() {
        let server = TestServer::start(vec![ok(message(
            json!([{"type":"text","text":"hi"}]),
            "end_turn",
        ))])
        .await;
        let client = server.client(|_| {});
        let system = cached_system("sys");
        let tools = cache_last_tool(vec![json!({"name":"t","input_schema":{"type":"object"}})]);
        let messages = vec![user("héllo 🦀 مرحبا\r\n\u{2028}")];
        let response = client.create(&system, &tools, &messages).await.unwrap();
        assert_eq!(response.content, vec![json!({"type":"text","text":"hi"})]);
        assert_eq!(response.stop_reason, StopReason::EndTurn);
        assert_eq!(response.usage.cache_creation_input_tokens, 100);

        let seen = server.shared.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let h = &seen[0].headers;
        assert_eq!(h["x-api-key"], "sk-test-key");
        assert_eq!(h["anthropic-version"], "2023-06-01");
        assert_eq!(h["content-type"], "application/json");
        assert!(h.get("authorization").is_none());
        let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["model", "max_tokens", "system", "tools", "messages"]);
        assert_eq!(
            body,
            json!({"model":"claude-test","max_tokens":321,"system":system,"tools":tools,"messages":messages})
        );
    }

    #[tokio::test]
    async fn bearer_auth_and_no_tools() {
        let server = TestServer::start(vec![ok(message(json!([]), "end_turn"))]).await;
        let client = server.client(|c| {
            c.auth = Auth::Bearer("local-token".into());
            c.base_url.push('/');
        });
        client
            .create(&cached_system("s"), &[], &[user("x")])
            .await
            .unwrap();
        let seen = server.shared.seen.lock().unwrap();
        assert_eq!(seen[0].headers["authorization"], "Bearer local-token");
        assert!(seen[0].headers.get("x-api-key").is_none());
        let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
        assert!(body.get("tools").is_none(), "{body}");
    }

    #[tokio::test]
    async fn retries_429_as_told_by_retry_after_ms_then_succeeds() {
        let server = TestServer::start(vec![
            status(429, &[("retry-after-ms", "1")], "rate limited"),
            ok(message(json!([{"type":"text","text":"done"}]), "end_turn")),
        ])
        .await;
        let response = server
            .client(|_| {})
            .create(&cached_system("s"), &[], &[user("x")])
            .await
            .unwrap();
        assert_eq!(response.content[0]["text"], "done");
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn retries_529_overloaded_then_succeeds() {
        let server = TestServer::start(vec![
            status(529, &[("retry-after", "0")], "Overloaded"),
            status(503, &[("retry-after-ms", "1")], "unavailable"),
            ok(message(json!([]), "end_turn")),
        ])
        .await;
        server
            .client(|_| {})
            .create(&cached_system("s"), &[], &[user("x")])
            .await
            .unwrap();
        assert_eq!(server.requests(), 3);
    }

    #[tokio::test]
    async fn unauthorized_is_not_retried() {
        let server = TestServer::start(vec![status(
            401,
            &[("retry-after-ms", "1")],
            "invalid x-api-key",
        )])
        .await;
        let err = server
            .client(|_| {})
            .create(&cached_system("s"), &[], &[user("x")])
            .await
            .unwrap_err();
        assert!(err.is_auth());
        match &err {
            Error::Unauthorized {
                status: 401,
                message,
            } => assert_eq!(message, "invalid x-api-key"),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("API key rejected"));
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        for code in [400u16, 403, 404, 413, 422] {
            let server =
                TestServer::start(vec![status(code, &[("retry-after-ms", "1")], "nope")]).await;
            let err = server
                .client(|_| {})
                .create(&cached_system("s"), &[], &[user("x")])
                .await
                .unwrap_err();
            assert_eq!(server.requests(), 1, "HTTP {code}");
            match (code, &err) {
                (403, Error::Unauthorized { status: 403, .. }) => {}
                (_, Error::Status { status, message }) if *status == code => {
                    assert_eq!(message, "nope")
                }
                _ => panic!("HTTP {code}: {err:?}"),
            }
        }
    }

    #[tokio::test]
    async fn exhausted_after_max_retries_plus_one_attempts() {
        let server = TestServer::start(vec![status(500, &[("retry-after-ms", "1")], "boom")]).await;
        let err = server
            .client(|c| c.max_retries = 2)
            .create(&cached_system("s"), &[], &[user("x")])
            .await
            .unwrap_err();
        assert_eq!(server.requests(), 3);
        match err {
            Error::Exhausted { attempts: 3, last } => {
                assert!(
                    matches!(*last, Error::Status { status: 500, ref message } if message == "boom")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_bodies_are_reported() {
        let cases = [
            ("not json", "{\"content\": ["),
            ("not an object", "[1,2]"),
            ("no content", r#"{"stop_reason":"end_turn"}"#),
            (
                "content not array",
                r#"{"content":"hi","stop_reason":"end_turn"}"#,
            ),
            (
                "block without type",
                r#"{"content":[{"text":"hi"}],"stop_reason":"end_turn"}"#,
            ),
            ("no stop reason", r#"{"content":[],"stop_reason":null}"#),
            (
                "error body",
                r#"{"type":"error","error":{"type":"x","message":"m"}}"#,
            ),
        ];
        for (name, body) in cases {
            let server = TestServer::start(vec![Canned::Answer {
                status: 200,
                headers: vec![],
                body: body.into(),
            }])
            .await;
            let err = server
                .client(|_| {})
                .create(&cached_system("s"), &[], &[user("x")])
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{name}: {err:?}");
            assert_eq!(server.requests(), 1, "{name}");
        }
    }

    #[tokio::test]
    async fn unknown_blocks_are_kept_byte_for_byte() {
        let unknown = "{\"type\":\"future_block\",\"zeta\":{\"b\":[1,-3,0.5,{\"ü\":\"🦀\u{2028}שלום\\r\\n\\u0001\"}],\"a\":null},\"alpha\":true,\"id\":\"x_1\"}";
        let body = format!(
            "{{\"id\":\"msg\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{{\"type\":\"text\",\"text\":\"a\",\"citations\":null}},{unknown}],\"stop_reason\":\"end_turn\",\"usage\":{{\"input_tokens\":1,\"output_tokens\":2}}}}"
        );
        let server = TestServer::start(vec![Canned::Answer {
            status: 200,
            headers: vec![],
            body,
        }])
        .await;
        let response = server
            .client(|_| {})
            .create(&cached_system("s"), &[], &[user("x")])
            .await
            .unwrap();
        assert_eq!(response.content.len(), 2);
        assert_eq!(
            serde_json::to_string(&response.content[0]).unwrap(),
            r#"{"type":"text","text":"a","citations":null}"#
        );
        assert_eq!(
            serde_json::to_string(&response.content[1]).unwrap(),
            unknown
        );
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 1,
                output_tokens: 2,
                ..Usage::default()
            }
        );
    }

    #[tokio::test]
    async fn a_timed_out_attempt_is_retried() {
        let server =
            TestServer::start(vec![Canned::Hang, ok(message(json!([]), "end_turn"))]).await;
        let client = server.client(|c| {
            c.request_timeout = Duration::from_millis(500);
            c.max_retries = 1;
        });
        client
            .create(&cached_system("s"), &[], &[user("x")])
            .await
            .unwrap();
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transient_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut config = ClientConfig::new(Auth::ApiKey("k".into()));
        config.base_url = format!("http://{addr}");
        config.max_retries = 0;
        let err = Client::new(config)
            .unwrap()
            .create(&cached_system("s"), &[], &[])
            .await
            .unwrap_err();
        match err {
            Error::Exhausted { attempts: 1, last } => {
                assert!(matches!(*last, Error::Transport(_)), "{last:?}")
            }
            other => panic!("{other:?}"),
        }
    }
}
