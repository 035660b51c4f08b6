//! The API key in the system keychain (macOS Keychain). The key is only ever read by the
//! bridge itself; the app's window can set or clear it and ask whether one is set.

/// The Keychain account under the app's service name.
const ACCOUNT: &str = "anthropic-api-key";

/// A keychain failure.
#[derive(Debug, thiserror::Error)]
#[error("keychain: {0}")]
pub struct SecretError(#[from] keyring::Error);

fn entry() -> Result<keyring::Entry, SecretError> {
    Ok(keyring::Entry::new(crate::config::BUNDLE_ID, ACCOUNT)?)
}

/// The stored API key, if any. Errors count as "no key" (the setup check reports it).
pub fn api_key() -> Option<String> {
    entry()
        .ok()?
        .get_password()
        .ok()
        .filter(|k| !k.trim().is_empty())
}

/// Stores (or replaces) the API key.
pub fn set_api_key(key: &str) -> Result<(), SecretError> {
    Ok(entry()?.set_password(key.trim())?)
}

/// Removes the API key; removing a missing key is not an error.
pub fn clear_api_key() -> Result<(), SecretError> {
    match entry()?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
