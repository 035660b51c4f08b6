//! Model turns per text (issue 16): what a person waits for is the model, 1–4 s a request,
//! so this benchmark gives the fake model 1.5 s per request and counts, per text, the
//! requests made, the tokens they carried and the time from the text to its reply.
//!
//! Three scripts, each against the real release binary, the strict fake API and the fake
//! `osascript` (all from `tests/util`), texts sent one at a time:
//! - one turn: `vault_write` with its `reply`, and `log_interaction`, as parallel calls;
//! - one tool per turn: `vault_write`, then `log_interaction`, then `send_message`;
//! - a question in one turn (`log_interaction` and `send_message`), then its answer filed in
//!   one turn.
//!
//! Requests are counted by the fake and by the bridge's status (`model_requests`; a text is
//! over when `model_runs` counts it, so a late extra request would be seen). Tokens are the
//! fake's estimate, 4 bytes a token: the system prompt and tools as the cached prefix (cache
//! write on the very first request, read after), the messages as input, the reply's content
//! as output; the bridge reads the same `usage`. Reply latency: the insert's commit to the
//! fake osascript's own start timestamp. Prints one table and writes
//! `<target>/bench/turns.json` and `turns.md`. Run without `--bench` (as `cargo test
//! --benches` does) it only checks, with one text per script and a short delay, that the
//! driver works.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use util::anthropic::{self as fake, Reply};
use util::bridge::{ME, ME_CHAT, World};

use support::{Row, Summary};

/// The model's time per request in `make bench`.
const MODEL_LATENCY: Duration = Duration::from_millis(1500);
/// Texts per script in `make bench`.
const TEXTS: usize = 5;
/// Where the fake model files every text.
const TAGS: &[&str] = &["priority/normal", "status/active"];
/// The question of the clarification script.
const QUESTION: &str = "Is this a task or a note? (task / note)";
/// How long one wait may take.
const WAIT: Duration = Duration::from_secs(60);
/// Bytes per token, for the fake's usage.
const BYTES_PER_TOKEN: usize = 4;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let (latency, texts) = if full {
        (MODEL_LATENCY, TEXTS)
    } else {
        (Duration::from_millis(20), 1)
    };
    let rows = runtime.block_on(async {
        let mut rows = Vec::new();
        for script in [Script::OneTurn, Script::OneToolPerTurn, Script::Question] {
            let measured = measure(script, latency, texts).await;
            eprintln!("turns: {} measured", script.name());
            rows.extend(measured.rows(script, latency));
        }
        rows
    });
    if !full {
        println!("turns: the three scripts ran end to end; `make bench` gives the figures");
        return;
    }
    let heading = format!(
        "model turns per text (fake model {} s a request",
        latency.as_secs_f64()
    );
    support::publish("turns", &heading, &rows);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Script {
    OneTurn,
    OneToolPerTurn,
    Question,
}

impl Script {
    fn name(self) -> &'static str {
        match self {
            Script::OneTurn => "capture in one turn",
            Script::OneToolPerTurn => "capture one tool per turn",
            Script::Question => "question in one turn",
        }
    }

    fn responder(self) -> Box<dyn Fn(&Value) -> Reply + Send + Sync> {
        let one_turn =
            || fake::one_turn_capture("Tasks", "Benchmark task", TAGS, "Saved to {path}");
        match self {
            Script::OneTurn => Box::new(one_turn()),
            Script::OneToolPerTurn => Box::new(fake::capture_flow(
                "Tasks",
                "Benchmark task",
                TAGS,
                "Saved to Tasks: Benchmark task",
            )),
            Script::Question => Box::new(fake::one_turn_question(QUESTION, one_turn())),
        }
    }
}

/// Tokens of one request, as the fake reported them.
#[derive(Clone, Copy, Debug, Default)]
struct Tokens {
    input: u64,
    cached: u64,
    output: u64,
}

/// The fake's usage per reply, filed under the text being handled.
#[derive(Default)]
struct Meter {
    current: AtomicUsize,
    replies: Mutex<Vec<(usize, Tokens)>>,
}

/// `responder` answering after `latency`, with a usage estimated from the request and the
/// reply, recorded in `meter`.
fn metered(
    responder: Box<dyn Fn(&Value) -> Reply + Send + Sync>,
    meter: Arc<Meter>,
    latency: Duration,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    let metered = move |body: &Value| {
        let mut reply = responder(body);
        if let Reply::Message(message) = &mut reply {
            let size = |v: &Value| (v.to_string().len() / BYTES_PER_TOKEN) as u64;
            let mut replies = meter.replies.lock().unwrap();
            let prefix = size(&body["system"]) + size(&body["tools"]);
            let tokens = Tokens {
                input: size(&body["messages"]),
                cached: prefix,
                output: size(&message["content"]),
            };
            let (written, read) = if replies.is_empty() {
                (prefix, 0)
            } else {
                (0, prefix)
            };
            message["usage"] = json!({
                "input_tokens": tokens.input,
                "output_tokens": tokens.output,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
            });
            replies.push((meter.current.load(Ordering::SeqCst), tokens));
        }
        reply
    };
    fake::slow(latency, metered)
}

/// What one text (or, for the question script, one question and its answer) took.
#[derive(Clone, Debug, Default)]
struct Text {
    requests: usize,
    latency_ms: f64,
    tokens: Tokens,
}

/// A script's texts, and for the question script the answers.
#[derive(Default)]
struct Measured {
    texts: Vec<Text>,
    answers: Vec<Text>,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

async fn measure(script: Script, latency: Duration, texts: usize) -> Measured {
    let meter = Arc::new(Meter::default());
    let world = World::new(metered(script.responder(), Arc::clone(&meter), latency)).await;
    let env = [("LOG_LEVEL", "info"), ("RATE_LIMIT_PER_MINUTE", "100000")];
    let bridge = world.start_with(&env).await;
    let mut measured = Measured::default();
    let mut runs = 0;
    for i in 0..texts {
        let text = format!("Benchmark text number {}", i + 1);
        runs += 1;
        let first = one_text(&world, &meter, runs, &text).await;
        measured.texts.push(first);
        if script == Script::Question {
            runs += 1;
            let answer = one_text(&world, &meter, runs, "task").await;
            measured.answers.push(answer);
        }
    }
    bridge.stop().await;
    let violations = world.api.violations();
    assert!(
        violations.is_empty(),
        "the fake API refused requests: {violations:?}"
    );
    measured
}

/// Sends one text as the `run`th of the world and waits until its run has ended; returns
/// its requests, its reply's latency and its tokens.
async fn one_text(world: &World, meter: &Meter, run: usize, text: &str) -> Text {
    meter.current.store(run, Ordering::SeqCst);
    let requests_before = world.api.requests().len();
    let calls_before = world.osascript.calls().len();
    world.db.incoming(ME_CHAT, ME, text);
    let sent_ns = now_ns();
    let calls = world.osascript.wait_for_calls(calls_before + 1, WAIT).await;
    let replied_ns = calls[calls_before].started_ns;
    let status = world
        .wait_status("the text's run ended", |s| s["model_runs"] == run)
        .await;
    let requests = world.api.requests().len() - requests_before;
    assert_eq!(
        status["last_text_requests"], requests,
        "the status counts what the fake saw"
    );
    let tokens = meter
        .replies
        .lock()
        .unwrap()
        .iter()
        .filter(|(text, _)| *text == run)
        .fold(Tokens::default(), |sum, (_, t)| Tokens {
            input: sum.input + t.input,
            cached: sum.cached + t.cached,
            output: sum.output + t.output,
        });
    Text {
        requests,
        latency_ms: (replied_ns as f64 - sent_ns as f64) / 1e6,
        tokens,
    }
}

impl Measured {
    fn rows(&self, script: Script, latency: Duration) -> Vec<Row> {
        let model_s = latency.as_secs_f64();
        let mut rows = text_rows(script.name(), &self.texts, script, model_s);
        if !self.answers.is_empty() {
            rows.extend(text_rows(
                "its answer, filed in one turn",
                &self.answers,
                Script::OneTurn,
                model_s,
            ));
        }
        rows
    }
}

/// Requests, reply latency and tokens per text of one script, with their targets.
fn text_rows(name: &str, texts: &[Text], script: Script, model_s: f64) -> Vec<Row> {
    let n = texts.len();
    let requests: Vec<f64> = texts.iter().map(|t| t.requests as f64).collect();
    let latency: Vec<f64> = texts.iter().map(|t| t.latency_ms).collect();
    let requests = Summary::of(&requests).expect("texts were sent");
    let latency = Summary::of(&latency).expect("texts were sent");
    let want_requests = match script {
        Script::OneToolPerTurn => 3.0,
        Script::OneTurn | Script::Question => 1.0,
    };
    let mean =
        |f: fn(&Tokens) -> u64| texts.iter().map(|t| f(&t.tokens)).sum::<u64>() as f64 / n as f64;
    let (input, cached, output) = (mean(|t| t.input), mean(|t| t.cached), mean(|t| t.output));
    let mut latency_row = Row::new(
        format!("{name}: text → reply (n={n})"),
        format!(
            "p50 {} · max {}",
            support::ms(latency.p50),
            support::ms(latency.max)
        ),
    )
    .num("p50_ms", latency.p50)
    .num("max_ms", latency.max);
    if script == Script::OneTurn {
        let limit = 1600.0 * model_s / 1.5;
        latency_row = latency_row.target(format!("≤ {}", support::ms(limit)), latency.max <= limit);
    }
    vec![
        Row::new(
            format!("{name}: model requests per text (n={n})"),
            format!("{} (max {})", requests.mean, requests.max),
        )
        .target(
            format!("{want_requests}, no more"),
            requests.max == want_requests && requests.p50 == want_requests,
        )
        .num("mean", requests.mean)
        .num("max", requests.max),
        latency_row,
        Row::new(
            format!("{name}: tokens per text, input · cached · output"),
            format!("{input:.0} · {cached:.0} · {output:.0}"),
        )
        .target_unjudged("estimated by the fake at 4 bytes a token")
        .num("input", input)
        .num("cached", cached)
        .num("output", output),
    ]
}
