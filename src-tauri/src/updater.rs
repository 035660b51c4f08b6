//! The bridge's `Updater` over Tauri's updater plugin (policy: `bridge::supervisor::updates`).
//! From tauri-plugin-updater-2.12.0/src/updater.rs: `check` fetches `latest.json` and picks this
//! platform's entry (:432-620); `download` refuses bytes whose minisign signature does not
//! verify against `plugins.updater.pubkey` (:680-752, :1530-1555); on macOS `install` unpacks
//! the `.app.tar.gz` and swaps it for the running bundle, asking for an administrator's
//! password when the folder needs it (:1294-1385). Installing on macOS is not run by tests.

use std::sync::Arc;

use bridge::supervisor::updates::{BoxFuture, Found, Release, UpdateError, Updater};
use tauri::{AppHandle, Runtime};
use tauri_plugin_updater::{Error, Update, UpdaterExt as _};

/// Asks the plugin; the endpoint, when given, replaces `tauri.conf.json`'s.
pub struct PluginUpdater<R: Runtime>(pub AppHandle<R>);

impl<R: Runtime> Updater for PluginUpdater<R> {
    fn check<'a>(
        &'a self,
        endpoint: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Arc<dyn Found>>, UpdateError>> {
        Box::pin(async move {
            let mut builder = self.0.updater_builder();
            if let Some(url) = endpoint {
                let url = url.parse().map_err(|e| reason(Error::UrlParse(e)))?;
                builder = builder.endpoints(vec![url]).map_err(reason)?;
            }
            let found = builder.build().map_err(reason)?.check().await;
            let found = found.map_err(reason)?;
            Ok(found.map(|update| Arc::new(PluginUpdate(update)) as Arc<dyn Found>))
        })
    }
}

struct PluginUpdate(Update);

impl Found for PluginUpdate {
    fn release(&self) -> Release {
        let (version, notes) = (self.0.version.clone(), self.0.body.clone());
        Release { version, notes }
    }

    fn download(&self) -> BoxFuture<'_, Result<Vec<u8>, UpdateError>> {
        Box::pin(async move { (self.0.download(|_, _| {}, || {}).await).map_err(reason) })
    }

    // On a blocking thread: the password prompt's AppleScript runs on the main one (:1357-1364).
    fn install(&self, bytes: &[u8]) -> Result<(), UpdateError> {
        self.0
            .install(bytes)
            .map_err(|e| UpdateError::Install(e.to_string()))
    }
}

/// The plugin's errors as the bridge's: a signature that does not verify is a refusal.
fn reason(err: Error) -> UpdateError {
    match err {
        Error::Minisign(_)
        | Error::Base64(_)
        | Error::SignatureUtf8(_)
        | Error::SignedVersionMismatch { .. }
        | Error::MissingSignedVersion => UpdateError::Refused(err.to_string()),
        other => UpdateError::Unreachable(other.to_string()),
    }
}
