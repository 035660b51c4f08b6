//! `second-brain-bridge`: the Second Brain bridge without its menu-bar app — for servers,
//! scripts and tests. Parses arguments and calls into the `bridge` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bridge::config::{Config, Overrides};
use bridge::lock::DataDirLock;
use bridge::sessions::SessionStore;
use clap::{Args, Parser, Subcommand};
use tokio_util::task::TaskTracker;

#[derive(Parser)]
#[command(
    name = "second-brain-bridge",
    version,
    about = "Texts in, notes out: the Second Brain iMessage bridge"
)]
struct Cli {
    #[command(flatten)]
    paths: Paths,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Paths {
    /// Messages' database (default: ~/Library/Messages/chat.db, or CHAT_DB_PATH).
    #[arg(long, global = true)]
    chat_db: Option<PathBuf>,
    /// The Obsidian vault folder (or VAULT_PATH).
    #[arg(long, global = true)]
    vault: Option<PathBuf>,
    /// Where sessions, the ledger and settings live (or SECOND_BRAIN_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge in the foreground until Ctrl-C or SIGTERM.
    Run,
    /// Check the setup; exits 1 when something needs fixing.
    Doctor,
    /// List or clear conversations.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Show what a running bridge is doing.
    Status,
    /// The morning digest.
    #[command(subcommand)]
    Digest(DigestCommand),
    /// Pending reminders.
    #[command(subcommand)]
    Reminders(RemindersCommand),
}

#[derive(Subcommand)]
enum RemindersCommand {
    /// List pending reminders, soonest first.
    List,
    /// Remove the reminder from a note (a running bridge follows the change).
    Cancel {
        /// The note, relative to the vault, as `reminders list` shows it.
        path: String,
    },
}

#[derive(Subcommand)]
enum DigestCommand {
    /// Print the digest as it would be texted now (nothing is sent).
    Preview {
        /// The day to compose it for (default: today), as YYYY-MM-DD.
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List active conversations.
    List,
    /// Clear one conversation (by chat guid) or all of them.
    Clear {
        /// The chat guid, as `sessions list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Clear every conversation.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("second-brain-bridge: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        chat_db: cli.paths.chat_db,
        vault: cli.paths.vault,
        data_dir: cli.paths.data_dir,
    };
    let config = Config::from_env(&overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run => {
            if let Some(missing) = config.missing_setup() {
                anyhow::bail!("cannot run: {missing} (see `second-brain-bridge doctor`)");
            }
            bridge::logging::init(&config.log_level, &config.log_dir, "bridge")?;
            let result = runtime.block_on(bridge::run(config, shutdown_signal()));
            // The drain is over: whatever a blocking thread may still be stuck in, exit now
            // rather than wait for it (a runtime dropped normally waits for every one).
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => Ok(doctor(&config, &runtime)),
        Command::Sessions(command) => runtime.block_on(sessions(&config, command)),
        Command::Status => {
            print_status(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Digest(DigestCommand::Preview { date }) => digest_preview(&config, date),
        Command::Reminders(command) => reminders(&config, command),
    }
}

/// `reminders list` (one line each: due, path, title) and `reminders cancel <path>`.
fn reminders(config: &Config, command: RemindersCommand) -> anyhow::Result<ExitCode> {
    let root = config
        .vault
        .as_deref()
        .context("no vault folder chosen (see `second-brain-bridge doctor`)")?;
    let vault = bridge::vault::Vault::new(root);
    match command {
        RemindersCommand::List => {
            let pending = bridge::reminders::pending(root);
            if pending.is_empty() {
                eprintln!("no pending reminders");
            }
            for r in pending {
                let due = bridge::reminders::format_due(&bridge::reminders::local(&r.due));
                println!("{due}\t{}\t{}", r.path, r.title);
            }
            Ok(ExitCode::SUCCESS)
        }
        RemindersCommand::Cancel { path } => match bridge::reminders::cancel(&vault, &path)? {
            bridge::reminders::Cancelled::Removed => {
                println!("cancelled the reminder of {path}");
                Ok(ExitCode::SUCCESS)
            }
            bridge::reminders::Cancelled::NothingPending => {
                eprintln!("{path} has no pending reminder");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// Prints the digest for `date` (today by default) on stdout; when and to whom on stderr.
fn digest_preview(config: &Config, date: Option<chrono::NaiveDate>) -> anyhow::Result<ExitCode> {
    use bridge::digest;
    let vault = config
        .vault
        .as_deref()
        .context("no vault folder chosen (see `second-brain-bridge doctor`)")?;
    let date = date.unwrap_or_else(|| chrono::Local::now().date_naive());
    match &config.digest {
        Some(s) => eprintln!("sent at {} to {}", s.time.format("%H:%M"), s.recipient),
        None => eprintln!("the morning digest is off (digest.enabled in the settings)"),
    }
    match digest::compose(&digest::gather(vault, date), date) {
        Some(text) => println!("{text}"),
        None => eprintln!("nothing to send on {date}: no text would go out"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the checklist; fails when something needs fixing.
fn doctor(config: &Config, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let mut checks = bridge::doctor::checks(config);
    if cfg!(target_os = "macos") {
        let sender = bridge::sender::Sender::default();
        checks.push(runtime.block_on(bridge::doctor::automation(&sender)));
    }
    for check in &checks {
        let mark = if check.ok { "ok  " } else { "FAIL" };
        println!("{mark} {}: {}", check.label, check.detail);
        if let Some(fix) = &check.fix {
            println!("     fix: {fix}");
        }
    }
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints what a running bridge reports in `status.json`.
fn print_status(config: &Config) -> anyhow::Result<()> {
    let running = DataDirLock::is_held(&config.data_dir);
    let file = config.data_dir.join("status.json");
    let status: bridge::status::Status = match std::fs::read(&file) {
        Ok(bytes) if running => {
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", file.display()))?
        }
        _ if running => {
            println!("running (no status yet)");
            return Ok(());
        }
        _ => {
            println!("not running");
            return Ok(());
        }
    };
    println!("{}", status.line());
    println!(
        "handled {} · filed to Inbox {}",
        status.handled, status.failed
    );
    if let Some(problem) = &status.vault_problem {
        println!("vault: {problem} ({} texts waiting)", status.waiting);
    }
    for warning in status.vault_warnings() {
        println!("vault: {warning}");
    }
    if let Some(problem) = &status.api_problem {
        println!("API: {problem}");
    }
    println!("tokens today: {}", status.tokens_today);
    if status.model_runs > 0 {
        println!(
            "model requests per text: {:.1}; the last text took {}",
            status.model_requests as f64 / status.model_runs as f64,
            status.last_text_requests.unwrap_or_default()
        );
    }
    for (count, what) in [
        (
            status.skipped_old,
            "older than the catch-up window, skipped",
        ),
        (status.skipped_backfill, "history synced in late, skipped"),
        (status.rate_limited, "over the rate limit, not handled"),
        (status.over_budget, "over the token budget, filed to Inbox"),
        (status.unconfirmed_sends, "replies unconfirmed, not resent"),
    ] {
        if count > 0 {
            println!("{what}: {count}");
        }
    }
    for moved in &status.moved_aside {
        println!("moved aside: {moved}");
    }
    if let Some(err) = status.last_error {
        println!("last error: {err}");
    }
    for stranger in status.strangers {
        println!(
            "ignored sender: {} (last {})",
            stranger.handle,
            stranger.last_seen.to_rfc3339()
        );
    }
    Ok(())
}

async fn sessions(config: &Config, command: SessionsCommand) -> anyhow::Result<ExitCode> {
    let path = config.data_dir.join("sessions.json");
    // Reading needs no lock; changing state does, so that a running bridge is never raced.
    let lock = match command {
        SessionsCommand::List => None,
        SessionsCommand::Clear { .. } => Some(DataDirLock::acquire(&config.data_dir)?),
    };
    let tracker = TaskTracker::new();
    let (store, report) =
        SessionStore::open(path, config.session_timeout, chrono::Utc::now(), &tracker)?;
    if let Some(moved) = report.moved_aside {
        eprintln!("{moved}");
    }
    match command {
        SessionsCommand::List => {
            let list = store.list();
            if list.is_empty() {
                println!("no active sessions");
            }
            for s in list {
                let state = format!("{:?}", s.state.kind()).to_lowercase();
                let text = s.shown_text().unwrap_or("");
                println!(
                    "{}\t{}\t{}\t{} messages\tlast {}\t{}",
                    s.chat.guid,
                    s.sender,
                    state,
                    s.message_count,
                    s.last_activity.to_rfc3339(),
                    text.replace(['\n', '\r'], " ")
                );
            }
        }
        SessionsCommand::Clear { id: Some(id), .. } => {
            if store.remove(&id).is_none() {
                anyhow::bail!("no session {id:?}; `sessions list` shows the ids");
            }
            println!("cleared {id}");
        }
        SessionsCommand::Clear { id: None, .. } => {
            println!("cleared {} sessions", store.clear_all())
        }
    }
    store.flush().await?;
    store.close();
    tracker.close();
    tracker.wait().await;
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    bridge::supervisor::quit_signal().await;
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
