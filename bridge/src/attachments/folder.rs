//! Where Obsidian keeps a vault's attachments, and how its notes link to them: the vault's
//! `.obsidian/app.json` keys `attachmentFolderPath` and `useMarkdownLinks` (Obsidian's
//! Settings › Files and links › "Default location for new attachments" and "Use [[Wikilinks]]").
//!
//! Forms of `attachmentFolderPath`: `/` the vault root, `./` the note's own folder, `./name`
//! a subfolder of the note's folder, anything else a folder of the vault. Without the file
//! or the key, copies go to `Attachments/`. A value that would leave the vault or enter a
//! hidden folder is not used (the default is).
//!
//! The note-relative forms resolve against the folder of the note the copy goes with, as
//! Obsidian does: its help page "Manage attachments" (help.obsidian.md, Files and folders ›
//! Attachments › "Change default attachment location") lists "Same folder as current file"
//! and "In subfolder under current folder" beside the vault folder and a folder given, and
//! stores them in `attachmentFolderPath` as `./` and `./<name>` (obsidian-typings'
//! `getAvailablePathForAttachments`: a value starting `./` is joined to the note's parent).

use std::path::Path;

use serde::Deserialize;

/// The folder used when the vault does not say.
pub const DEFAULT_FOLDER: &str = "Attachments";
/// Largest `app.json` read.
const MAX_APP_JSON: u64 = 1024 * 1024;

/// Where copies go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The vault root (`/`).
    Root,
    /// The note's folder (`./`).
    NoteFolder,
    /// A subfolder of the note's folder (`./name`).
    UnderNote(String),
    /// A folder of the vault, vault-relative.
    Vault(String),
}

/// How embeds are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinkStyle {
    /// `![[name]]`, Obsidian's default.
    #[default]
    Wiki,
    /// `![](path)`, with `useMarkdownLinks: true`.
    Markdown,
}

/// The vault's attachment settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachmentSettings {
    /// Where copies go.
    pub place: Place,
    /// How the note embeds them.
    pub links: LinkStyle,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppJson {
    #[serde(default)]
    attachment_folder_path: Option<String>,
    #[serde(default)]
    use_markdown_links: Option<bool>,
}

impl AttachmentSettings {
    /// Reads `<vault>/.obsidian/app.json`; a missing or unreadable file gives the defaults.
    pub fn load(vault: &Path) -> AttachmentSettings {
        let path = vault.join(".obsidian").join("app.json");
        let json = std::fs::File::open(&path).ok().and_then(|f| {
            use std::io::Read as _;
            let mut text = String::new();
            f.take(MAX_APP_JSON).read_to_string(&mut text).ok()?;
            serde_json::from_str::<AppJson>(&text).ok()
        });
        match json {
            Some(app) => AttachmentSettings {
                place: app
                    .attachment_folder_path
                    .as_deref()
                    .map_or(Place::default(), parse),
                links: if app.use_markdown_links == Some(true) {
                    LinkStyle::Markdown
                } else {
                    LinkStyle::Wiki
                },
            },
            None => AttachmentSettings {
                place: Place::default(),
                links: LinkStyle::Wiki,
            },
        }
    }

    /// The vault-relative folder for a note in `note_folder` (`""` is the root).
    pub fn folder(&self, note_folder: &str) -> String {
        let join = |a: &str, b: &str| match (a.is_empty(), b.is_empty()) {
            (true, _) => b.to_string(),
            (_, true) => a.to_string(),
            _ => format!("{a}/{b}"),
        };
        match &self.place {
            Place::Root => String::new(),
            Place::NoteFolder => note_folder.to_string(),
            Place::UnderNote(sub) => join(note_folder, sub),
            Place::Vault(path) => path.clone(),
        }
    }

    /// The embed of the vault file at `path` (vault-relative).
    pub fn embed(&self, path: &str) -> String {
        match self.links {
            LinkStyle::Wiki => {
                let name = path.rsplit('/').next().unwrap_or(path);
                format!("![[{name}]]")
            }
            LinkStyle::Markdown => format!("![]({})", path.replace('%', "%25").replace(' ', "%20")),
        }
    }
}

impl Place {
    /// Whether the folder depends on the note's (`./`, `./name`).
    pub fn follows_note(&self) -> bool {
        matches!(self, Place::NoteFolder | Place::UnderNote(_))
    }
}

impl Default for Place {
    fn default() -> Place {
        Place::Vault(DEFAULT_FOLDER.to_string())
    }
}

/// One `attachmentFolderPath` value.
fn parse(raw: &str) -> Place {
    let raw = raw.trim();
    if raw == "/" {
        return Place::Root;
    }
    if raw == "." || raw == "./" {
        return Place::NoteFolder;
    }
    let (under_note, rest) = match raw.strip_prefix("./") {
        Some(rest) => (true, rest),
        None => (false, raw.trim_start_matches('/')),
    };
    let levels: Vec<&str> = rest.split('/').filter(|l| !l.is_empty()).collect();
    let safe = !levels.is_empty()
        && levels
            .iter()
            .all(|l| !l.starts_with('.') && !l.contains('\\') && !l.chars().any(char::is_control));
    if !safe {
        return Place::default();
    }
    let path = levels.join("/");
    if under_note {
        Place::UnderNote(path)
    } else {
        Place::Vault(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: Option<&str>) -> AttachmentSettings {
        let dir = tempfile::tempdir().unwrap();
        if let Some(json) = json {
            std::fs::create_dir(dir.path().join(".obsidian")).unwrap();
            std::fs::write(dir.path().join(".obsidian/app.json"), json).unwrap();
        }
        AttachmentSettings::load(dir.path())
    }

    #[test]
    fn each_form_of_the_attachment_folder() {
        let cases: &[(Option<&str>, &str, &str)] = &[
            (None, "Tasks", "Attachments"),
            (Some("{}"), "Tasks", "Attachments"),
            (Some("not json"), "Tasks", "Attachments"),
            (Some(r#"{"attachmentFolderPath": "/"}"#), "Tasks", ""),
            (Some(r#"{"attachmentFolderPath": "./"}"#), "Tasks", "Tasks"),
            (
                Some(r#"{"attachmentFolderPath": "./assets"}"#),
                "Ideas",
                "Ideas/assets",
            ),
            (
                Some(r#"{"attachmentFolderPath": "Files/Media"}"#),
                "Ideas",
                "Files/Media",
            ),
            (
                Some(r#"{"attachmentFolderPath": "../outside"}"#),
                "Ideas",
                "Attachments",
            ),
            (
                Some(r#"{"attachmentFolderPath": ".obsidian"}"#),
                "Ideas",
                "Attachments",
            ),
            (
                Some(r#"{"attachmentFolderPath": "./.."}"#),
                "Ideas",
                "Attachments",
            ),
        ];
        for (json, note, want) in cases {
            assert_eq!(settings(*json).folder(note), *want, "{json:?}");
        }
    }

    #[test]
    fn embeds_follow_use_markdown_links() {
        let wiki = settings(None);
        assert_eq!(
            wiki.embed("Attachments/2026-12-02_img.jpg"),
            "![[2026-12-02_img.jpg]]"
        );
        let md = settings(Some(r#"{"useMarkdownLinks": true}"#));
        assert_eq!(md.links, LinkStyle::Markdown);
        assert_eq!(md.embed("My Files/a b.jpg"), "![](My%20Files/a%20b.jpg)");
    }
}
