//! Who may reach the agent: the sender allowlist.
//!
//! Invariant: default deny. Handles are compared in one normal form, taken after Unicode
//! NFKC (so full-width digits count as digits): phone numbers as `+` and their digits
//! (country code required, a trunk `(0)` after the country code dropped, as the number is
//! dialled from abroad), email addresses with ASCII letters lower-cased and nothing else
//! folded. An email address that NFKC would change (a Kelvin sign `\u{212A}` for `K`, a
//! full-width `＠`) is not the address it looks like: it is refused, so such a sender stays
//! a stranger.

use std::collections::BTreeSet;
use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Why an allowlist entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Nothing usable was given.
    #[error("an allowed sender cannot be empty")]
    Empty,
    /// A phone number written without its country code would never match Messages' handles.
    #[error("{0:?}: write phone numbers with their country code, like +1 555 123 4567")]
    NoCountryCode(String),
    /// A `(0)` that is not the trunk prefix right after the country code.
    #[error(
        "{0:?}: a \"(0)\" belongs right after the country code (+44 (0)20 …); write the number \
         as it is dialled from abroad, without the (0)"
    )]
    MisplacedTrunkPrefix(String),
    /// An email address with characters that only look like plain ones.
    #[error(
        "{0:?} contains look-alike characters (such as a Kelvin sign for K); type the address \
         in plain letters"
    )]
    LookAlike(String),
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
        let folded: String = raw.nfkc().collect();
        if folded.contains('@') {
            return parse_email(raw, &folded);
        }
        parse_phone(raw, folded.trim())
    }

    /// The normal form, e.g. `+15551234567` or `sarah@example.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn parse_email(raw: &str, folded: &str) -> Result<Handle, HandleError> {
    if folded != raw {
        return Err(HandleError::LookAlike(raw.into()));
    }
    let email = raw
        .strip_prefix("mailto:")
        .unwrap_or(raw)
        .to_ascii_lowercase();
    let valid = email.split_once('@').is_some_and(|(user, host)| {
        !user.is_empty() && !host.is_empty() && !email.chars().any(char::is_whitespace)
    });
    if valid {
        Ok(Handle(email))
    } else {
        Err(HandleError::Unrecognised(raw.into()))
    }
}

fn parse_phone(raw: &str, folded: &str) -> Result<Handle, HandleError> {
    let phone = folded.strip_prefix("tel:").unwrap_or(folded);
    let allowed = |c: char| c.is_ascii_digit() || " +-().\u{a0}".contains(c);
    if !phone.chars().all(allowed) {
        return Err(HandleError::Unrecognised(raw.into()));
    }
    let international = phone.starts_with('+') || phone.starts_with("00");
    let phone = drop_trunk_prefix(phone, raw)?;
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 3 {
        return Err(HandleError::Unrecognised(raw.into()));
    }
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

/// Removes a trunk `(0)` that follows a one- to three-digit country code (`+44 (0)20 …`);
/// any other `(0)` is refused, since the number it stands for cannot be known.
fn drop_trunk_prefix(phone: &str, raw: &str) -> Result<String, HandleError> {
    let compact: String = phone
        .chars()
        .filter(|c| !" \u{a0}-.".contains(*c))
        .collect();
    let Some(at) = compact.find("(0)") else {
        return Ok(phone.to_string());
    };
    let prefix = &compact[..at];
    let country = prefix
        .strip_prefix('+')
        .or_else(|| prefix.strip_prefix("00"));
    let is_country_code = country
        .is_some_and(|c| (1..=3).contains(&c.len()) && c.chars().all(|d| d.is_ascii_digit()));
    let rest = &compact[at + 3..];
    if !is_country_code || rest.contains("(0)") {
        return Err(HandleError::MisplacedTrunkPrefix(raw.into()));
    }
    Ok(format!("{prefix}{rest}"))
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

/// Who and what may reach the agent: allowed senders, the group chats allowed by guid, and
/// whether SMS/RCS texts count (an SMS sender id is easy to spoof, so by default they do
/// not). A text from an allowed group still needs an allowed sender.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Senders whose texts reach the agent.
    pub senders: Allowlist,
    /// Group chats (`chat.guid`) whose allowed members' texts reach the agent.
    pub groups: BTreeSet<String>,
    /// Whether SMS and RCS texts count as much as iMessage ones.
    pub allow_sms: bool,
}

impl Admission {
    /// Only these senders, iMessage only, no group.
    pub fn senders(senders: Allowlist) -> Admission {
        Admission {
            senders,
            ..Admission::default()
        }
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
            // Issue 15: the trunk (0) is dropped, as the number is dialled from abroad.
            ("+44 (0)20 7946 0958", "+442079460958"),
            ("+44(0)2079460958", "+442079460958"),
            ("0049 (0) 30 1234567", "+49301234567"),
            ("+353 (0)1 234 5678", "+35312345678"),
            // NFKC: full-width digits and plus are digits and plus.
            ("＋４４ ２０ ７９４６ ０９５８", "+442079460958"),
            // Only ASCII letters are folded.
            ("ÉLODIE@example.fr", "Élodie@example.fr"),
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
        for misplaced in [
            "+44 20 (0)7946 0958",
            "(0)20 7946 0958",
            "+44 (0)(0)20 7946",
        ] {
            let err = Handle::parse(misplaced).unwrap_err();
            assert!(
                matches!(err, HandleError::MisplacedTrunkPrefix(_)),
                "{misplaced}: {err:?}"
            );
            assert!(err.to_string().contains("dialled from abroad"));
        }
        for look_alike in [
            "\u{212A}ate@icloud.com",
            "kate＠icloud.com",
            "ｋate@icloud.com",
        ] {
            assert!(
                matches!(Handle::parse(look_alike), Err(HandleError::LookAlike(_))),
                "{look_alike}"
            );
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

    /// Issue 15: a Kelvin sign (U+212A) is not a K: that sender stays a stranger, though
    /// Unicode lower-casing would have made it `kate@icloud.com`.
    #[test]
    fn the_kelvin_sign_stays_a_stranger() {
        let list = Allowlist::parse(&["kate@icloud.com", "+44 (0)20 7946 0958"]).unwrap();
        assert!(list.is_allowed("kate@icloud.com"));
        assert!(list.is_allowed("KATE@icloud.com"));
        assert!(!list.is_allowed("\u{212A}ate@icloud.com"));
        assert!(
            list.is_allowed("+442079460958"),
            "the (0) entry matches Messages' handle"
        );
    }
}
