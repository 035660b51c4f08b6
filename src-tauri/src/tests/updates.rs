//! "Check for Updates…" through the real updater plugin, over IPC like the update page,
//! against an update server on `127.0.0.1:0` that serves `latest.json` and an artifact
//! signed in the test with a throwaway minisign key pair (the private key never leaves the
//! process). The plugin's formats, from tauri-plugin-updater-2.12.0/src/updater.rs: the
//! pubkey is base64 of the minisign public key file's text, a manifest's `signature` base64
//! of the signature file's text (:1530-1541, :1606-1611); the platform key is `target()`
//! (:1393); a version signed into the trusted comment (`version:…`) must match the manifest's
//! (:1586-1600). Installing is never reached here: it would replace this test binary.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use base64::Engine as _;
use bridge::supervisor::updates::Updater;
pub use bridge::supervisor::updates::{ENDPOINT_ENV, Updates};
use tauri::Context;

use super::*;
use crate::updater::PluginUpdater;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The key pair the app under test trusts, made once per test process.
fn trusted() -> &'static minisign::KeyPair {
    static KEYS: OnceLock<minisign::KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| minisign::KeyPair::generate_unencrypted_keypair().unwrap())
}

/// The mock context with the updater plugin configured as `tauri.conf.json` configures it,
/// but trusting [`trusted`] and pointing at a port that refuses (tests set
/// `SECOND_BRAIN_UPDATE_URL`).
pub fn test_context() -> Context<MockRuntime> {
    let mut context = mock_context(noop_assets());
    let pubkey = b64(&trusted().pk.to_box().unwrap().to_string());
    let updater = json!({ "pubkey": pubkey, "endpoints": ["http://127.0.0.1:9/latest.json"] });
    context
        .config_mut()
        .plugins
        .0
        .insert("updater".into(), updater);
    context
}

/// `bytes` signed by `keys` for `version`, as a manifest carries it.
fn signature(keys: &minisign::KeyPair, bytes: &[u8], version: &str) -> String {
    let trusted_comment =
        format!("timestamp:1764633600\tfile:Second Brain.app.tar.gz\tversion:{version}");
    let signed = minisign::sign(
        Some(&keys.pk),
        &keys.sk,
        bytes,
        Some(&trusted_comment),
        None,
    );
    b64(&signed.unwrap().to_string())
}

/// Per path: the body, and the `Content-Length` to declare for it.
type Routes = HashMap<String, (Vec<u8>, usize)>;

/// A tiny HTTP/1.1 server on `127.0.0.1:0`: one response per path, every request counted,
/// `Connection: close`. Stops when dropped.
struct UpdateServer {
    port: u16,
    routes: Arc<Mutex<Routes>>,
    requests: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl UpdateServer {
    fn start() -> UpdateServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = UpdateServer {
            port,
            routes: Arc::default(),
            requests: Arc::default(),
            count: Arc::default(),
            stop: Arc::default(),
        };
        let (routes, requests) = (Arc::clone(&server.routes), Arc::clone(&server.requests));
        let (count, stop) = (Arc::clone(&server.count), Arc::clone(&server.stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                answer(stream, &routes.lock().unwrap(), |path| {
                    requests.lock().unwrap().push(path.to_owned());
                    count.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Serves `body` at `path`, with a `Content-Length` of its length.
    fn serve(&self, path: &str, body: &[u8]) {
        self.serve_declaring(path, body, body.len());
    }

    /// Serves `body` at `path` declaring `length` bytes (more: the answer is cut short).
    fn serve_declaring(&self, path: &str, body: &[u8], length: usize) {
        let route = (body.to_vec(), length);
        self.routes.lock().unwrap().insert(path.to_owned(), route);
    }

    /// `latest.json` offering `version` for this platform, its artifact at `/app.tar.gz`.
    fn manifest(&self, version: &str, notes: &str, signature: &str) {
        let platform = json!({ "url": self.url("/app.tar.gz"), "signature": signature });
        let target = tauri_plugin_updater::target().unwrap();
        let manifest = json!({
            "version": version, "notes": notes, "pub_date": "2026-12-01T09:00:00Z",
            "platforms": { target: platform }
        });
        self.serve("/latest.json", manifest.to_string().as_bytes());
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for UpdateServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request head, records its path (before answering, so a client never sees an
/// answer not yet recorded) and answers it: the route's body, else 404.
fn answer(stream: TcpStream, routes: &Routes, record: impl FnOnce(&str)) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    // The rest of the head, up to the blank line (bounded: a head is small).
    let mut head = String::new();
    while reader.read_line(&mut head).is_ok_and(|n| n > 2) && head.len() < 64 * 1024 {}
    record(&path);
    let (status, (body, length)) = match routes.get(&path) {
        Some(route) => ("200 OK", route.clone()),
        None => ("404 Not Found", (b"not found".to_vec(), 9)),
    };
    let mut stream = reader.into_inner();
    let head =
        format!("HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body));
}

/// `bytes` served whole, their own length declared.
fn whole(bytes: Vec<u8>) -> Option<(Vec<u8>, usize)> {
    let length = bytes.len();
    Some((bytes, length))
}

/// The bytes of the "new version": any bytes do, the plugin only verifies them.
fn artifact() -> Vec<u8> {
    (0..64 * 1024).map(|i| (i * 31 % 251) as u8).collect()
}

fn harness_with(server: &UpdateServer) -> Harness {
    harness(Setup {
        update_url: Some(server.url("/latest.json")),
        ..Setup::default()
    })
}

/// What the test binary looks like on disk, to show that nothing was installed over it.
fn this_binary() -> (u64, std::time::SystemTime) {
    let meta = std::fs::metadata(std::env::current_exe().unwrap()).unwrap();
    (meta.len(), meta.modified().unwrap())
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn the_current_version_is_up_to_date() {
    let server = UpdateServer::start();
    server.manifest(
        "0.1.0",
        "Nothing new.",
        &signature(trusted(), &artifact(), "0.1.0"),
    );
    let h = harness_with(&server);
    let view = h.invoke("check_for_updates", json!({})).unwrap();
    assert_eq!(view["kind"], "up_to_date");
    assert_eq!(
        view["sentence"],
        "Second Brain is up to date (version 0.1.0)."
    );
    assert_eq!(server.requests(), ["/latest.json"]);
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_newer_version_is_shown_with_its_notes() {
    let server = UpdateServer::start();
    let notes = "Faster search.\nReminders “snooze”. 🧠";
    server.manifest("v0.2.0", notes, &signature(trusted(), &artifact(), "0.2.0"));
    let h = harness_with(&server);
    let view = h.invoke("check_for_updates", json!({})).unwrap();
    assert_eq!(
        view,
        json!({ "kind": "available", "version": "0.2.0", "notes": notes,
                "sentence": "Second Brain 0.2.0 is available." })
    );
    // Opening the window from the menu is how the page gets there.
    tray::handle(h.app.handle(), tray::UPDATES);
    assert!(h.app.get_webview_window("update").is_some());
}

/// The plugin accepts the download signed by the trusted key, byte for byte: the refusals
/// below are about the key and the bytes, not about the test's signing.
#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_download_signed_by_the_trusted_key_verifies() {
    let server = UpdateServer::start();
    server.manifest("0.2.0", "", &signature(trusted(), &artifact(), "0.2.0"));
    server.serve("/app.tar.gz", &artifact());
    let h = harness_with(&server);
    let updater = PluginUpdater(h.app.handle().clone());
    let endpoint = server.url("/latest.json");
    let bytes = tauri::async_runtime::block_on(async {
        let found = updater
            .check(Some(&endpoint))
            .await
            .unwrap()
            .expect("0.2.0");
        found.download().await
    });
    assert_eq!(bytes.unwrap(), artifact());
}

/// Installs that must fail: the download is asked for, is refused or does not arrive, and
/// nothing changes (the bridge keeps running, this binary is untouched). `served`: the
/// artifact's bytes and the length declared for them; `None`: 404.
fn failed_install(signature: String, served: Option<(Vec<u8>, usize)>) -> Value {
    let server = UpdateServer::start();
    server.manifest("0.2.0", "", &signature);
    if let Some((bytes, length)) = served {
        server.serve_declaring("/app.tar.gz", &bytes, length);
    }
    let h = harness_with(&server);
    let before = this_binary();
    let found = h.invoke("check_for_updates", json!({})).unwrap();
    assert_eq!(found["kind"], "available");
    let view = h.invoke("install_update", json!({})).unwrap();
    assert_eq!(server.requests(), ["/latest.json", "/app.tar.gz"]);
    assert_eq!(this_binary(), before);
    // The bridge was never stopped for an install: it still holds its data folder.
    assert!(bridge::lock::DataDirLock::is_held(&h.data()));
    view
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_manifest_signed_with_another_key_is_refused() {
    let stranger = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let view = failed_install(
        signature(&stranger, &artifact(), "0.2.0"),
        whole(artifact()),
    );
    assert_eq!(view["kind"], "refused", "{view}");
    assert_eq!(
        view["sentence"],
        "The update was refused and nothing was changed: the signature was created with a \
         different key than the one provided."
    );
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_truncated_artifact_is_refused() {
    let bytes = artifact();
    let half = bytes[..bytes.len() / 2].to_vec();
    let view = failed_install(signature(trusted(), &bytes, "0.2.0"), whole(half));
    assert_eq!(view["kind"], "refused", "{view}");
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_signature_for_another_version_is_refused() {
    let view = failed_install(
        signature(trusted(), &artifact(), "0.1.9"),
        whole(artifact()),
    );
    assert_eq!(view["kind"], "refused", "{view}");
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_server_that_is_down_could_not_check_and_nothing_changes() {
    // A port that was free a moment ago: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = harness(Setup {
        update_url: Some(format!("http://127.0.0.1:{port}/latest.json")),
        ..Setup::default()
    });
    h.wait_until("the bridge's status", |h| {
        h.status_line().starts_with("Needs setup")
    });
    let (status, settings) = (h.status_line(), h.settings_bytes());
    let view = h.invoke("check_for_updates", json!({})).unwrap();
    assert_eq!(view["kind"], "could_not_check", "{view}");
    assert!(
        view["sentence"]
            .as_str()
            .unwrap()
            .starts_with("Could not check for updates: ")
    );
    // Nothing to install either, and nothing else moved.
    assert_eq!(
        h.invoke("install_update", json!({})).unwrap()["kind"],
        "could_not_install"
    );
    assert_eq!((h.status_line(), h.settings_bytes()), (status, settings));
}

/// Updates over the real plugin and a bridge waiting for its setup, with `check_updates` as
/// given, on the test's (paused) clock.
async fn daily(dir: &Path, check_updates: bool, server: &UpdateServer) -> Arc<Updates> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = json!({ "check_updates": check_updates }).to_string();
    std::fs::write(data.join("settings.json"), file).unwrap();
    let vars: HashMap<String, String> = [
        (
            "SECOND_BRAIN_DATA_DIR".to_owned(),
            data.display().to_string(),
        ),
        (ENDPOINT_ENV.to_owned(), server.url("/latest.json")),
    ]
    .into();
    let env = Environment {
        overrides: Overrides::default(),
        vars: Arc::new(move |name| vars.get(name).cloned()),
        keys: Arc::new(MemoryKeyStore::default()),
        probe: Sender::with_program("true"),
        opener: Arc::new(|_| Err("no opener in tests".to_owned())),
    };
    let app = build_app(mock_builder(), test_context()).unwrap();
    let supervisor = Supervisor::new(env, Arc::new(|_| {})).unwrap();
    supervisor.launch().await;
    let updater = Arc::new(PluginUpdater(app.handle().clone()));
    let updates = Updates::new(updater, supervisor, "0.1.0");
    tokio::spawn(updates.daily());
    updates
}

/// Blocks (off the paused clock: `spawn_blocking` holds its auto-advance back) until the
/// server has had `n` requests, for at most [`WITHIN`].
async fn wait_for_requests(server: &UpdateServer, n: usize) {
    let count = Arc::clone(&server.count);
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + WITHIN;
        while count.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            std::thread::yield_now();
        }
    })
    .await
    .unwrap();
}

/// The automatic check off (the default): three days pass and the server never hears of us.
#[tokio::test(start_paused = true)]
async fn the_automatic_check_off_makes_no_request() {
    let (dir, server) = (tempfile::tempdir().unwrap(), UpdateServer::start());
    server.manifest("0.2.0", "", &signature(trusted(), &artifact(), "0.2.0"));
    let updates = daily(dir.path(), false, &server).await;
    tokio::time::sleep(bridge::supervisor::updates::CHECK_EVERY * 3).await;
    assert!(server.requests().is_empty());
    updates.stop();
}

/// On: no request at start-up, one a day later.
#[tokio::test(start_paused = true)]
async fn the_automatic_check_on_asks_the_server_a_day_after_start_up() {
    let (dir, server) = (tempfile::tempdir().unwrap(), UpdateServer::start());
    server.manifest("0.2.0", "", &signature(trusted(), &artifact(), "0.2.0"));
    let updates = daily(dir.path(), true, &server).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(server.requests().is_empty(), "never at start-up");
    tokio::time::sleep(bridge::supervisor::updates::CHECK_EVERY).await;
    wait_for_requests(&server, 1).await;
    assert_eq!(server.requests(), ["/latest.json"]);
    updates.stop();
}

/// "Check for updates automatically": off in a fresh install, saved by the settings page,
/// shown back, and off again when unticked (then left out of the file).
#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn the_automatic_check_is_a_setting_off_by_default() {
    let h = harness(Setup::default());
    assert_eq!(
        h.invoke("get_settings", json!({})).unwrap()["check_updates"],
        false
    );
    let mut form = h.settings_with_vault();
    form["check_updates"] = json!(true);
    let saved = h
        .invoke("save_settings", json!({ "settings": form }))
        .unwrap();
    assert_eq!(saved["check_updates"], true);
    let on_disk: Value = serde_json::from_slice(&h.settings_bytes().unwrap()).unwrap();
    assert_eq!(on_disk["check_updates"], true);
    form["check_updates"] = json!(false);
    h.invoke("save_settings", json!({ "settings": form }))
        .unwrap();
    let on_disk: Value = serde_json::from_slice(&h.settings_bytes().unwrap()).unwrap();
    assert_eq!(on_disk.get("check_updates"), None);
}

/// The daily check's news (`Change::Update`) opens the Software Update window, which then
/// checks and shows the version; other changes open nothing.
#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn news_of_a_new_version_opens_the_update_window() {
    let h = harness(Setup::default());
    let notice = production_notify(h.app.handle());
    notice(Change::Sessions);
    assert!(h.app.get_webview_window("update").is_none());
    notice(Change::Update);
    assert!(h.app.get_webview_window("update").is_some());
}

/// A download cut short (fewer bytes than declared) or answered 404 is not installed, and
/// the window says why.
#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_download_cut_short_or_missing_is_not_installed() {
    let bytes = artifact();
    let signed = signature(trusted(), &bytes, "0.2.0");
    let cut = Some((bytes[..1000].to_vec(), bytes.len()));
    for (served, what) in [(cut, "cut short"), (None, "404")] {
        let view = failed_install(signed.clone(), served);
        assert_eq!(view["kind"], "could_not_install", "{what}: {view}");
        let sentence = view["sentence"].as_str().unwrap();
        assert!(
            sentence.starts_with("The update was not installed; this version keeps running: "),
            "{what}: {sentence}"
        );
    }
}
