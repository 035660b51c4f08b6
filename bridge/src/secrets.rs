//! The API key in the system keychain: the macOS Keychain, the Secret Service (GNOME Keyring,
//! KWallet) on Linux. The key is only ever read by the bridge itself; the app's window can set
//! or clear it and ask whether one is set.
//!
//! Invariants: every front end goes through a [`KeyStore`]: [`SystemKeychain`] in the app and
//! the CLI, [`MemoryKeyStore`] in tests (so no test reads this user's real key); a system
//! without a reachable keychain says so ([`SecretError::NoKeychain`]) instead of pretending
//! to keep the key.

use std::sync::Mutex;

/// The Keychain account under the app's service name.
const ACCOUNT: &str = "anthropic-api-key";

/// A keychain failure.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No keychain is reachable (no Secret Service on the session bus, or no D-Bus at all).
    #[error("No keychain on this system: set ANTHROPIC_API_KEY")]
    NoKeychain(#[source] keyring::Error),
    /// The keychain answered with an error.
    #[error("keychain: {0}")]
    Keychain(#[source] keyring::Error),
}

impl From<keyring::Error> for SecretError {
    fn from(err: keyring::Error) -> SecretError {
        match err {
            // keyring-3.6.3/src/secret_service.rs:581-595: on Linux every D-Bus failure (no
            // session bus, no Secret Service on it) becomes `PlatformFailure`; a locked
            // keyring or a refused prompt is `NoStorageAccess` and keeps its own words.
            keyring::Error::PlatformFailure(_) if cfg!(target_os = "linux") => {
                SecretError::NoKeychain(err)
            }
            other => SecretError::Keychain(other),
        }
    }
}

/// Where the API key is kept.
pub trait KeyStore: Send + Sync {
    /// The stored key, if any; blank keys count as none.
    fn api_key(&self) -> Result<Option<String>, SecretError>;
    /// Stores or replaces the key.
    fn set_api_key(&self, key: &str) -> Result<(), SecretError>;
    /// Removes the key; removing a missing key is not an error.
    fn clear_api_key(&self) -> Result<(), SecretError>;
}

/// The system keychain, under the app's bundle identifier.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemKeychain;

fn entry() -> Result<keyring::Entry, SecretError> {
    Ok(keyring::Entry::new(crate::config::BUNDLE_ID, ACCOUNT)?)
}

impl KeyStore for SystemKeychain {
    fn api_key(&self) -> Result<Option<String>, SecretError> {
        match entry()?.get_password() {
            Ok(key) => Ok(Some(key).filter(|k| !k.trim().is_empty())),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    fn set_api_key(&self, key: &str) -> Result<(), SecretError> {
        Ok(entry()?.set_password(key.trim())?)
    }

    fn clear_api_key(&self) -> Result<(), SecretError> {
        match entry()?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A keychain in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryKeyStore(Mutex<Option<String>>);

impl MemoryKeyStore {
    /// A store holding `key`.
    pub fn with_key(key: &str) -> MemoryKeyStore {
        MemoryKeyStore(Mutex::new(Some(key.to_owned())))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A plain swap: a panic cannot leave it half-done.
        crate::mutex::lock(&self.0)
    }
}

impl KeyStore for MemoryKeyStore {
    fn api_key(&self) -> Result<Option<String>, SecretError> {
        Ok(self.slot().clone().filter(|k| !k.trim().is_empty()))
    }

    fn set_api_key(&self, key: &str) -> Result<(), SecretError> {
        *self.slot() = Some(key.trim().to_owned());
        Ok(())
    }

    fn clear_api_key(&self) -> Result<(), SecretError> {
        *self.slot() = None;
        Ok(())
    }
}

/// The stored API key, if any. Errors count as "no key" (the setup check reports it).
pub fn api_key() -> Option<String> {
    SystemKeychain.api_key().ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_keeps_trims_and_clears() {
        let store = MemoryKeyStore::default();
        assert_eq!(store.api_key().unwrap(), None);
        store.set_api_key("  sk-ant-1 \n").unwrap();
        assert_eq!(store.api_key().unwrap().as_deref(), Some("sk-ant-1"));
        store.set_api_key(" ").unwrap();
        assert_eq!(store.api_key().unwrap(), None, "a blank key is no key");
        store.clear_api_key().unwrap();
        store.clear_api_key().unwrap();
        assert_eq!(store.api_key().unwrap(), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn an_unreachable_keychain_says_so() {
        let err = SecretError::from(keyring::Error::PlatformFailure("no bus".into()));
        assert_eq!(
            err.to_string(),
            "No keychain on this system: set ANTHROPIC_API_KEY"
        );
        let err = SecretError::from(keyring::Error::NoEntry);
        assert!(err.to_string().starts_with("keychain: "), "{err}");
    }
}
