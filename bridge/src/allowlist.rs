//! Who may reach the agent: the sender allowlist.
//!
//! Invariant: default deny. Handles are compared in one normal form: phone numbers as `+`
//! and their digits (country code required), email addresses lower-cased.

use std::collections::BTreeSet;
use std::fmt;

/// Why an allowlist entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Nothing usable was given.
    #[error("an allowed sender cannot be empty")]
    Empty,
    /// A phone number written without its country code would never match Messages' handles.
    #[error("{0:?}: write phone numbers with their country code, like +1 555 123 4567")]
    NoCountryCode(String),
    /// Neither a phone number nor an email address.
    #[error("{0:?} is neither a phone number nor an email address")]
    Unrecognised(String),
}

/// A sender handle in normal form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(String);

impl Handle {
    /// Normalises a handle as found in `chat.db` or typed by the user.
    pub fn parse(raw: &str) -> Result<Handle, HandleError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(HandleError::Empty);
        }
        if raw.contains('@') {
            let email = raw.strip_prefix("mailto:").unwrap_or(raw).to_lowercase();
            let valid = email.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && !host.is_empty() && !email.chars().any(char::is_whitespace)
            });
            return if valid {
                Ok(Handle(email))
            } else {
                Err(HandleError::Unrecognised(raw.into()))
            };
        }
        let phone = raw.strip_prefix("tel:").unwrap_or(raw);
        let allowed = |c: char| c.is_ascii_digit() || " +-().\u{a0}".contains(c);
        if !phone.chars().all(allowed) {
            return Err(HandleError::Unrecognised(raw.into()));
        }
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        if digits.len() < 3 {
            return Err(HandleError::Unrecognised(raw.into()));
        }
        let international = phone.trim_start().starts_with('+') || phone.starts_with("00");
        if !international {
            return Err(HandleError::NoCountryCode(raw.into()));
        }
        let digits = if phone.starts_with("00") {
            &digits[2..]
        } else {
            &digits[..]
        };
        Ok(Handle(format!("+{digits}")))
    }

    /// The normal form, e.g. `+15551234567` or `sarah@example.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The set of senders whose texts reach the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(BTreeSet<Handle>);

impl Allowlist {
    /// Parses every entry; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Allowlist, HandleError> {
        entries
            .iter()
            .map(|e| Handle::parse(e.as_ref()))
            .collect::<Result<_, _>>()
            .map(Allowlist)
    }

    /// Whether a sender (a `handle.id` from chat.db) is allowed. Unparsable handles never are.
    pub fn is_allowed(&self, sender: &str) -> bool {
        Handle::parse(sender).is_ok_and(|h| self.0.contains(&h))
    }

    /// Whether nobody is allowed (the bridge then answers no one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in normal form.
    pub fn iter(&self) -> impl Iterator<Item = &Handle> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        let cases = [
            ("+1 (555) 123-4567", "+15551234567"),
            ("+15551234567", "+15551234567"),
            ("0044 20 7946 0958", "+442079460958"),
            ("tel:+49 30 1234567", "+49301234567"),
            (" Sarah@Example.COM ", "sarah@example.com"),
            ("mailto:a.b@icloud.com", "a.b@icloud.com"),
        ];
        for (raw, want) in cases {
            assert_eq!(Handle::parse(raw).unwrap().as_str(), want, "{raw}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(Handle::parse("  "), Err(HandleError::Empty));
        assert!(matches!(
            Handle::parse("555-123-4567"),
            Err(HandleError::NoCountryCode(_))
        ));
        for bad in ["@", "a@", "bob", "+1 555 ☎", "a b@c.d", "+1\u{2028}5"] {
            assert!(Handle::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn default_deny_and_matching_across_forms() {
        assert!(!Allowlist::default().is_allowed("+15551234567"));
        let list = Allowlist::parse(&["+1 555 123 4567", "Me@iCloud.com"]).unwrap();
        assert!(list.is_allowed("+15551234567"));
        assert!(list.is_allowed("me@icloud.com"));
        assert!(!list.is_allowed("+15551234568"));
        assert!(!list.is_allowed("5551234567"));
        assert!(!list.is_allowed("someone@icloud.com"));
    }
}
