//! Issue 10: photos and other files sent with a text reach the model and the vault. Each
//! test writes the rows as Messages does (message, attachment, joins) with the files under
//! the fixture home's `Library/Messages/Attachments/`, runs the real binary against the strict
//! fake API (which checks image blocks as the real API does, `util::media`), and asserts on
//! the request the fake received, the copies in the vault and the note's bytes.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

use crate::util::anthropic as fake;
use crate::util::bridge::{ME, ME_CHAT, World};
use crate::util::chatdb::{AttachedFile, FileRow, Msg, data_dir, write_file};
use crate::util::media;

/// A photo as a camera writes it: a JPEG of `w`×`h` with some detail in it.
fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 7) as u8])
    });
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
        .unwrap();
    out
}

/// Writes `msg` with one JPEG attachment row, then the file whole under the fixture home,
/// as Messages does once a photo has arrived.
fn send_with_photo(world: &World, msg: &Msg, name: &str, jpeg: &[u8]) {
    let (_, attached) = world.db.insert_with_files(
        msg,
        &[FileRow::new(name, "image/jpeg", jpeg.len())],
        world.dir.path(),
    );
    write_file(&attached[0].path, jpeg);
}

/// The files in a vault folder, sorted by name.
fn files(world: &World, folder: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(world.vault().join(folder))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn capture() -> impl Fn(&serde_json::Value) -> fake::Reply + Send + Sync + 'static {
    fake::one_turn_capture(
        "Reference",
        "Whiteboard",
        &["topic/work"],
        "Saved to {path}",
    )
}

/// Issue 10: a photo with a caption: the model gets the caption and the photo as an image
/// block (a JPEG whose long edge is 1568 px); the photo is copied byte for byte into
/// `Attachments/` and the note embeds the copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_photo_with_a_caption_reaches_the_model_and_the_note_embeds_its_copy() {
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    let jpeg = photo(2400, 1600);
    let msg = Msg::new(ME_CHAT, ME).text("\u{FFFC}whiteboard from the planning meeting");
    send_with_photo(&world, &msg, "IMG_0042.JPG", &jpeg);
    let status = world
        .wait_status("the photo captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(status["handled"], 1);
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let request = &world.api.requests()[0].body;
    let images = media::images(request);
    assert_eq!(images.len(), 1, "one image block");
    assert_eq!(images[0].0, "image/jpeg");
    let shown = image::load_from_memory_with_format(&images[0].1, ImageFormat::Jpeg).unwrap();
    assert_eq!((shown.width(), shown.height()), (1568, 1045));
    let text = request.to_string();
    assert!(
        text.contains("whiteboard from the planning meeting"),
        "the caption reaches the model"
    );
    assert!(
        text.contains("IMG_0042.JPG"),
        "the model is told the file's name"
    );

    let copies = files(&world, "Attachments");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(copies[0].ends_with("_img0042.jpg"), "{copies:?}");
    assert_eq!(
        std::fs::read(world.vault().join("Attachments").join(&copies[0])).unwrap(),
        jpeg
    );
    let notes = world.notes("Reference");
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].1.contains(&format!("![[{}]]", copies[0])),
        "{}",
        notes[0].1
    );
}

/// Issue 10: the real HEIC Messages stored (a sticker with transparency) is converted by
/// `heif-convert` (Linux), shown to the model as a PNG of its 900×721 pixels, and kept in
/// the vault as the original `.heic`; a body of only the placeholder still reaches the model.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_heic_is_converted_shown_and_kept() {
    let heic = std::fs::read(data_dir().join("attachments/sticker.heic")).unwrap();
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    let msg = Msg::new(ME_CHAT, ME).text("\u{FFFC}");
    let (_, attached) = world.db.insert_with_files(
        &msg,
        &[FileRow {
            uti: Some("public.heic".into()),
            ..FileRow::new("IMG_7001.HEIC", "image/heic", heic.len())
        }],
        world.dir.path(),
    );
    write_file(&attached[0].path, &heic);
    world
        .wait_status("the HEIC captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let images = media::images(&world.api.requests()[0].body);
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].0, "image/png", "transparency kept");
    let shown = image::load_from_memory_with_format(&images[0].1, ImageFormat::Png).unwrap();
    assert_eq!((shown.width(), shown.height()), (900, 721));
    let copies = files(&world, "Attachments");
    assert_eq!(copies.len(), 1);
    assert!(copies[0].ends_with("_img7001.heic"), "{copies:?}");
    assert_eq!(
        std::fs::read(world.vault().join("Attachments").join(&copies[0])).unwrap(),
        heic
    );
    let notes = world.notes("Reference");
    assert!(
        notes[0].1.contains(&format!("![[{}]]", copies[0])),
        "{}",
        notes[0].1
    );
}

/// The images a note embeds, as a CommonMark parser reads them: `![](dest)` destinations.
fn image_links(note: &str) -> Vec<String> {
    use pulldown_cmark::{Event, Parser, Tag};
    Parser::new(note)
        .filter_map(|event| match event {
            Event::Start(Tag::Image { dest_url, .. }) => Some(dest_url.into_string()),
            _ => None,
        })
        .collect()
}

/// Writes the vault's `.obsidian/app.json`.
fn obsidian_settings(world: &World, json: &str) {
    std::fs::create_dir_all(world.vault().join(".obsidian")).unwrap();
    std::fs::write(world.vault().join(".obsidian/app.json"), json).unwrap();
}

/// Issue 10: each form of `attachmentFolderPath` (vault root `/`, the note's folder `./`,
/// a subfolder of it `./assets`, a vault folder) puts the one copy where Obsidian would for
/// the note the run writes (in `Reference/` here), and with `useMarkdownLinks: true` the
/// note embeds it as a Markdown image whose destination is the copy's vault path.
#[tokio::test(flavor = "multi_thread")]
async fn each_attachment_folder_form_resolves_against_the_note_written() {
    let cases = [
        ("/", ""),
        ("./", "Reference"),
        ("./assets", "Reference/assets"),
        ("Files/Media", "Files/Media"),
    ];
    for (form, folder) in cases {
        let world = World::new(capture()).await;
        obsidian_settings(
            &world,
            &format!(r#"{{"attachmentFolderPath": "{form}", "useMarkdownLinks": true}}"#),
        );
        let bridge = world.start().await;
        let jpeg = photo(200, 100);
        let msg = Msg::new(ME_CHAT, ME).text("receipt");
        send_with_photo(&world, &msg, "receipt.jpeg", &jpeg);
        world
            .wait_status("the receipt captured", |s| s["captured"] == 1)
            .await;
        bridge.stop().await;
        assert_eq!(world.api.violations(), Vec::<String>::new(), "{form}");
        let copies: Vec<String> = files(&world, folder)
            .into_iter()
            .filter(|f| f.ends_with("_receipt.jpeg"))
            .collect();
        assert_eq!(copies.len(), 1, "{form}: {copies:?}");
        let path = match folder {
            "" => copies[0].clone(),
            _ => format!("{folder}/{}", copies[0]),
        };
        assert_eq!(
            std::fs::read(world.vault().join(&path)).unwrap(),
            jpeg,
            "{form}"
        );
        assert!(files(&world, "Attachments").is_empty(), "{form}");
        let notes = world.notes("Reference");
        assert_eq!(image_links(&notes[0].1), [path], "{form}: {}", notes[0].1);
    }
}

/// Issue 10: a note-relative attachment folder also holds for the Inbox notes the bridge
/// writes itself: a voice message without a transcript has its audio copied under
/// `Inbox/audio`, embedded by its name.
#[tokio::test(flavor = "multi_thread")]
async fn a_note_relative_attachment_folder_holds_for_inbox_notes() {
    let world = World::new(capture()).await;
    obsidian_settings(&world, r#"{"attachmentFolderPath": "./audio"}"#);
    let bridge = world.start_with(&[("ATTACHMENT_WAIT_MS", "1000")]).await;
    let (_, audio) = voice_without_transcript(&world);
    world
        .wait_status("the voice message filed", |s| s["failed"] == 1)
        .await;
    bridge.stop().await;
    let copies = files(&world, "Inbox/audio");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        std::fs::read(world.vault().join("Inbox/audio").join(&copies[0])).unwrap(),
        audio
    );
    assert!(files(&world, "Attachments").is_empty());
    let note = &world.notes("Inbox")[0].1;
    assert!(note.contains(&format!("![[{}]]", copies[0])), "{note}");
}

/// Issue 10: a question about a photo, then the answer: `sessions.json` holds no image bytes
/// while the question waits (only the name of the photo's vault copy), and the follow-up
/// request carries the image again, prepared from the vault copy into the very same block
/// as the first request's (so the cached prefix matches), accepted by the strict fake.
#[tokio::test(flavor = "multi_thread")]
async fn a_clarification_after_a_photo_keeps_the_session_small() {
    let world = World::new(fake::one_turn_question(
        "Which project is this for?",
        capture(),
    ))
    .await;
    let bridge = world.start().await;
    let jpeg = photo(2000, 1500);
    let msg = Msg::new(ME_CHAT, ME).text("\u{FFFC}");
    send_with_photo(&world, &msg, "IMG_1.JPG", &jpeg);
    world
        .wait_status("the question asked", |s| s["asked"] == 1)
        .await;
    let sessions = std::fs::read(world.data_dir().join("sessions.json")).unwrap();
    assert!(
        sessions.len() < 16 * 1024,
        "sessions.json is {} bytes",
        sessions.len()
    );
    assert!(
        !String::from_utf8_lossy(&sessions).contains("\"image\""),
        "no image block kept"
    );
    world.db.incoming(ME_CHAT, ME, "Project Apollo");
    world
        .wait_status("the answer captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let requests = world.api.requests();
    let blocks = |body: &serde_json::Value| -> Vec<serde_json::Value> {
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .filter(|b| b["type"] == "image")
            .collect()
    };
    let first = blocks(&requests[0].body);
    assert_eq!(first.len(), 1);
    let last = &requests.last().unwrap().body;
    assert_eq!(
        serde_json::to_string(&blocks(last)).unwrap(),
        serde_json::to_string(&first).unwrap(),
        "the follow-up carries the same image block, byte for byte"
    );
    assert!(
        last.to_string().contains("IMG_1.JPG"),
        "the follow-up still names the photo"
    );
    let sessions = std::fs::read(world.data_dir().join("sessions.json")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&sessions).contains("\"image\""));
}

/// Writes a text with one photo whose file is not there yet (`row` as Messages first writes
/// it), waits until the status says the text waits for it, lets `arrive` bring the file as
/// Messages would, and checks the text was then handled once, the photo shown and copied
/// whole.
async fn a_late_photo_is_waited_for(
    row: FileRow,
    arrive: impl FnOnce(&World, &AttachedFile, &[u8]),
) {
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    let jpeg = photo(800, 600);
    let msg = Msg::new(ME_CHAT, ME).text("\u{FFFC}parking spot");
    let (_, attached) = world.db.insert_with_files(
        &msg,
        &[FileRow {
            total_bytes: jpeg.len() as i64,
            ..row
        }],
        world.dir.path(),
    );
    world
        .wait_status("the text waiting for its file", |s| {
            s["awaiting_attachments"] == 1
        })
        .await;
    arrive(&world, &attached[0], &jpeg);
    world
        .wait_status("the photo captured", |s| {
            s["captured"] == 1 && s["awaiting_attachments"] == 0
        })
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let requests = world.api.requests();
    assert_eq!(requests.len(), 1, "handled once: one filing turn");
    assert_eq!(media::images(&requests[0].body).len(), 1);
    let copies = files(&world, "Attachments");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        std::fs::read(world.vault().join("Attachments").join(&copies[0])).unwrap(),
        jpeg
    );
    assert_eq!(world.notes("Reference").len(), 1);
}

/// Issue 10: a file still downloading when its rows are committed: the text waits (claimed)
/// until the file is whole — a partial file does not count — and is then handled once.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_completes_after_its_row_is_waited_for_and_handled_once() {
    let row = FileRow::new("IMG_5.JPG", "image/jpeg", 0).downloading();
    a_late_photo_is_waited_for(row, |_, file, jpeg| {
        // Half the download, then the rest: only the whole file ends the wait.
        write_file(&file.path, &jpeg[..jpeg.len() / 2]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file.path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &jpeg[jpeg.len() / 2..]))
            .unwrap();
    })
    .await;
}

/// Issue 10: a row written before its download starts has no `filename` yet; Messages names
/// the file in the row (updated in place) once it has come. The waiting text reads its row
/// again on chat.db's change and is handled once, with the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_that_names_its_file_later_is_read_again_and_handled_once() {
    let row = FileRow::new("IMG_6.JPG", "image/jpeg", 0).unnamed();
    a_late_photo_is_waited_for(row, |world, file, jpeg| {
        write_file(&file.path, jpeg);
        world.db.name_file(file, world.dir.path());
    })
    .await;
}

/// Issue 10: a file that never arrives: at the limit (set short here) the text is handled
/// without it, the model is told it could not be read, and the user is told its name.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_never_arrives_is_named_to_the_user_at_the_limit() {
    let world = World::new(capture()).await;
    let bridge = world.start_with(&[("ATTACHMENT_WAIT_MS", "1500")]).await;
    let msg = Msg::new(ME_CHAT, ME).text("\u{FFFC}the scan of the lease");
    world.db.insert_with_files(
        &msg,
        &[FileRow::new("Lease.pdf", "application/pdf", 90_000).downloading()],
        world.dir.path(),
    );
    world
        .wait_status("the text captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let request = world.api.requests()[0].body.to_string();
    assert!(request.contains("the scan of the lease"));
    assert!(
        request.contains("Lease.pdf") && request.contains("could not be read"),
        "{request}"
    );
    let replies = world.osascript.calls();
    assert!(
        replies
            .iter()
            .any(|c| c.text.contains("couldn't read Lease.pdf")),
        "{replies:#?}"
    );
    assert!(files(&world, "Attachments").is_empty());
}

/// Issue 10: a file whose download Messages recorded as failed (`transfer_state` 6) is not
/// waited for: with the default two-minute limit the text is handled at once, the photo
/// beside it shown, and the user told which file could not be read and why.
#[tokio::test(flavor = "multi_thread")]
async fn a_download_messages_gave_up_on_is_named_at_once_not_at_the_limit() {
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    let jpeg = photo(640, 480);
    let msg = Msg::new(ME_CHAT, ME).text("\u{FFFC}\u{FFFC}the garden");
    let (_, attached) = world.db.insert_with_files(
        &msg,
        &[
            FileRow::new("IMG_8.JPG", "image/jpeg", jpeg.len()),
            FileRow::new("IMG_9.MOV", "video/quicktime", 4_000_000).failed(),
        ],
        world.dir.path(),
    );
    write_file(&attached[0].path, &jpeg);
    world
        .wait_status("the text captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let requests = world.api.requests();
    let request = &requests[0].body;
    assert_eq!(media::images(request).len(), 1, "the photo is shown");
    assert!(
        request.to_string().contains("IMG_9.MOV"),
        "the model is told of the video"
    );
    let replies = world.osascript.calls();
    assert!(
        replies.iter().any(|c| c
            .text
            .contains("couldn't read IMG_9.MOV (Messages could not download it)")),
        "{replies:#?}"
    );
    assert_eq!(files(&world, "Attachments").len(), 1);
}

/// Issue 10: a PDF within the API's limits is shown as a `document` block; one over 100
/// pages is copied and embedded but not shown, and the model is told why.
#[tokio::test(flavor = "multi_thread")]
async fn a_pdf_is_shown_as_a_document_and_one_over_the_page_limit_is_only_attached() {
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    let (small, big) = (media::pdf(3), media::pdf(101));
    let msg = Msg::new(ME_CHAT, ME).text("\u{FFFC}\u{FFFC}contracts to read");
    let (_, attached) = world.db.insert_with_files(
        &msg,
        &[
            FileRow::new("Offer.pdf", "application/pdf", small.len()),
            FileRow::new("Handbook.pdf", "application/pdf", big.len()),
        ],
        world.dir.path(),
    );
    write_file(&attached[0].path, &small);
    write_file(&attached[1].path, &big);
    world
        .wait_status("the PDFs captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let request = &world.api.requests()[0].body;
    let documents = media::blocks_of(request, "document");
    assert_eq!(documents.len(), 1);
    assert_eq!(documents[0], ("application/pdf".to_string(), small.clone()));
    let text = request.to_string();
    assert!(
        text.contains("Handbook.pdf") && text.contains("101 pages"),
        "{text}"
    );
    let copies = files(&world, "Attachments");
    assert_eq!(copies.len(), 2, "{copies:?}");
    let note = &world.notes("Reference")[0].1;
    for copy in &copies {
        assert!(note.contains(&format!("![[{copy}]]")), "{note}");
    }
}

/// Issue 10: the real voice message blob: the words of its `IMAudioTranscription`
/// attribute reach the model, marked as a voice message, and the audio is kept in the vault
/// as it came off macOS, `.caf` byte for byte (on macOS afconvert would make a real one
/// `.m4a`; these fake frames it refuses, so there too the file is kept as it is).
#[tokio::test(flavor = "multi_thread")]
async fn a_voice_message_gives_the_model_its_transcript_and_the_vault_its_audio() {
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    let (_, audio) = send_voice(&world, crate::util::chatdb::blob("Transcription"));
    world
        .wait_status("the voice message captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let text = world.api.requests()[0].body.to_string();
    assert!(
        text.contains("Voice message") && text.contains("This is a test"),
        "{text}"
    );
    let copies = files(&world, "Attachments");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(copies[0].ends_with("_audio-message.caf"), "{copies:?}");
    assert_eq!(
        std::fs::read(world.vault().join("Attachments").join(&copies[0])).unwrap(),
        audio
    );
    assert!(
        world.notes("Reference")[0]
            .1
            .contains(&format!("![[{}]]", copies[0]))
    );
}

/// Issue 10: each real link preview: its title and summary reach the model with the link,
/// and the Reference note carries `url:` in its frontmatter.
#[tokio::test(flavor = "multi_thread")]
async fn each_link_preview_reaches_the_model_and_the_note_gets_its_url() {
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    let cases = [
        (
            "URL",
            "https://chrissardegna.com/",
            Some("Christopher Sardegna"),
            None,
        ),
        (
            "MetadataURL",
            "https://chrissardegna.com",
            Some("Christopher Sardegna"),
            Some("Sample page description"),
        ),
        (
            "Twitter",
            "https://twitter.com/rxcs/status/1175874352946077696",
            Some("Christopher Sardegna on Twitter"),
            Some("“Hello Twitter, meet Bella”"),
        ),
        (
            "Reminder",
            "https://www.icloud.com/reminders/ZmFrZXVybF9mb3JfcmVtaW5kZXI#TestList",
            None,
            None,
        ),
    ];
    for (i, (name, url, _, _)) in cases.iter().enumerate() {
        let payload = std::fs::read(data_dir().join(format!("link-preview/{name}.plist"))).unwrap();
        world
            .db
            .insert_link(&Msg::new(ME_CHAT, ME).text(url), &payload);
        world
            .wait_status("the link captured", |s| s["captured"] == i + 1)
            .await;
    }
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let requests = world.api.requests();
    let notes = world.notes("Reference");
    assert_eq!(requests.len(), cases.len());
    for (i, (name, url, title, summary)) in cases.iter().enumerate() {
        let (input, _) = crate::run_step(&requests[i].body);
        assert!(input.contains(&format!("URL: {url}")), "{name}: {input}");
        for field in [title, summary].into_iter().flatten() {
            assert!(
                input.contains(field),
                "{name}: {field} missing from {input}"
            );
        }
        assert!(
            notes
                .iter()
                .any(|(_, note)| note.contains(&format!("\nurl: {url}\n"))
                    || note.contains(&format!("\nurl: '{url}'\n"))),
            "{name}: no note with url: {url}\n{notes:#?}"
        );
    }
}

/// Issue 10: nineteen photos in one text (as the reference blob `MultiAttachment` holds):
/// every one is shown to the model, copied, and embedded in the note.
#[tokio::test(flavor = "multi_thread")]
async fn nineteen_attachments_in_one_text_are_all_shown_copied_and_embedded() {
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    let rows: Vec<FileRow> = (0..19)
        .map(|i| FileRow::new(&format!("IMG_{i:02}.JPG"), "image/jpeg", 0))
        .collect();
    let photos: Vec<Vec<u8>> = (0..19).map(|i| photo(40 + i, 30)).collect();
    let rows: Vec<FileRow> = rows
        .into_iter()
        .zip(&photos)
        .map(|(r, p)| FileRow {
            total_bytes: p.len() as i64,
            ..r
        })
        .collect();
    let msg = Msg::new(ME_CHAT, ME).body(crate::util::chatdb::blob("MultiAttachment"));
    let (_, attached) = world.db.insert_with_files(&msg, &rows, world.dir.path());
    for (file, bytes) in attached.iter().zip(&photos) {
        write_file(&file.path, bytes);
    }
    world
        .wait_status("the photos captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let images = media::images(&world.api.requests()[0].body);
    assert_eq!(images.len(), 19);
    let copies = files(&world, "Attachments");
    assert_eq!(copies.len(), 19);
    let note = &world.notes("Reference")[0].1;
    for copy in &copies {
        assert!(
            note.contains(&format!("![[{copy}]]")),
            "{copy} not embedded"
        );
    }
}

/// Waits (on file events) until the text `guid` is claimed in the state database: intake
/// has read its row and handed it on.
async fn claimed(world: &World, guid: &str) {
    let data = world.data_dir();
    let found = crate::util::wait::until(&[&data], crate::util::bridge::WITHIN, || {
        crate::util::state::read(&data).filter(|s| s.claimed.iter().any(|g| g == guid))
    })
    .await;
    assert!(found.is_some(), "the text {guid} was never claimed");
}

/// A voice message as Messages writes it, with `body` as its `attributedBody`: the row, the
/// audio's attachment rows, and the audio file whole. Returns the rows and the audio.
fn send_voice(world: &World, body: Vec<u8>) -> (crate::util::chatdb::Inserted, Vec<u8>) {
    let audio = b"caff\x00\x01\x00\x00 fake audio frames".to_vec();
    let (inserted, attached) = world.db.insert_voice(
        &Msg::new(ME_CHAT, ME).body(body),
        &FileRow {
            uti: Some("com.apple.coreaudio-format".into()),
            ..FileRow::new("Audio Message.caf", "audio/x-caf", audio.len())
        },
        world.dir.path(),
    );
    write_file(&attached.path, &audio);
    (inserted, audio)
}

/// A voice message as Messages first writes it: a body of only the placeholder, no
/// transcript yet.
fn voice_without_transcript(world: &World) -> (crate::util::chatdb::Inserted, Vec<u8>) {
    send_voice(world, crate::util::chatdb::typedstream("\u{FFFC}"))
}

/// Issue 10: Messages writes a voice message's transcript into its row after the row
/// (an UPDATE in place): the text, read without one, waits, and the words reach the model
/// once, in one request.
#[tokio::test(flavor = "multi_thread")]
async fn a_transcript_written_after_the_row_reaches_the_model_once() {
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    let (inserted, audio) = voice_without_transcript(&world);
    claimed(&world, &inserted.guid).await;
    world
        .db
        .conn()
        .execute(
            "UPDATE message SET attributedBody = ?1 WHERE ROWID = ?2",
            rusqlite::params![crate::util::chatdb::blob("Transcription"), inserted.rowid],
        )
        .unwrap();
    world
        .wait_status("the voice message captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let requests = world.api.requests();
    assert_eq!(requests.len(), 1, "one filing turn");
    let text = requests[0].body.to_string();
    assert_eq!(text.matches("This is a test").count(), 1, "{text}");
    assert!(text.contains("Voice message"), "{text}");
    let copies = files(&world, "Attachments");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        std::fs::read(world.vault().join("Attachments").join(&copies[0])).unwrap(),
        audio
    );
}

/// Issue 10: a voice message whose transcript never comes: at the limit (short here) its
/// audio is filed to Inbox as "voice message (no transcript)" — the note embeds the copy —
/// without a model request, and the user is told.
#[tokio::test(flavor = "multi_thread")]
async fn a_voice_message_without_a_transcript_goes_to_inbox_with_its_audio() {
    let world = World::new(capture()).await;
    let bridge = world.start_with(&[("ATTACHMENT_WAIT_MS", "1500")]).await;
    let (_, audio) = voice_without_transcript(&world);
    world
        .wait_status("the voice message filed", |s| s["failed"] == 1)
        .await;
    bridge.stop().await;
    assert!(
        world.api.requests().is_empty(),
        "the model gets no words to file"
    );
    let copies = files(&world, "Attachments");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        std::fs::read(world.vault().join("Attachments").join(&copies[0])).unwrap(),
        audio
    );
    let inbox = world.notes("Inbox");
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    let (name, note) = &inbox[0];
    assert!(name.contains("voice-message-no-transcript"), "{name}");
    assert!(note.contains("Voice message (no transcript)"), "{note}");
    assert!(note.contains(&format!("![[{}]]", copies[0])), "{note}");
    let replies = world.osascript.calls();
    assert!(
        replies.iter().any(|c| c.text.contains("no transcript")),
        "{replies:#?}"
    );
}

/// The `web_fetch` tools a request offers.
fn web_fetch_tools(body: &serde_json::Value) -> Vec<serde_json::Value> {
    body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|t| crate::util::web_fetch::is_web_fetch(t))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 10: "Read linked pages" is off by default: the request offers no `web_fetch`.
#[tokio::test(flavor = "multi_thread")]
async fn linked_pages_are_not_read_by_default() {
    let world = World::new(capture()).await;
    let bridge = world.start().await;
    world
        .db
        .incoming(ME_CHAT, ME, "read later https://example.com/article");
    world
        .wait_status("the link captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let requests = world.api.requests();
    assert!(web_fetch_tools(&requests[0].body).is_empty());
}

/// Issue 10: with "Read linked pages" on, the request offers Anthropic's server-side
/// `web_fetch` tool (checked by the strict fake as the API checks it); a reply carrying the
/// API's `server_tool_use` and `web_fetch_tool_result` blocks, paused (`pause_turn`), is
/// continued, and the next request carries those blocks exactly as they came.
#[tokio::test(flavor = "multi_thread")]
async fn with_read_linked_pages_on_the_fetched_page_is_kept_and_sent_back_unchanged() {
    let url = "https://example.com/article";
    let [call, result] = crate::util::web_fetch::fetched(
        "srvtoolu_01WebFetch",
        url,
        "An article",
        "The words of the page, as the API fetched them.",
    );
    let paused = vec![
        serde_json::json!({"type": "text", "text": "Reading the page first."}),
        call,
        result,
    ];
    let first = std::sync::Mutex::new(Some(paused.clone()));
    let filing = capture();
    let world = World::new(
        move |body: &serde_json::Value| match first.lock().unwrap().take() {
            Some(content) => fake::Reply::Message(fake::message(content, "pause_turn")),
            None => filing(body),
        },
    )
    .await;
    let bridge = world.start_with(&[("READ_LINKED_PAGES", "true")]).await;
    world.db.incoming(ME_CHAT, ME, &format!("read later {url}"));
    world
        .wait_status("the link captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    let requests = world.api.requests();
    assert_eq!(requests.len(), 2, "the paused turn is continued once");
    let offered = web_fetch_tools(&requests[0].body);
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0]["type"], bridge::anthropic::WEB_FETCH_TYPE);
    assert_eq!(offered[0]["name"], "web_fetch");
    let messages = requests[1].body["messages"].as_array().unwrap();
    let last = messages.last().unwrap();
    assert_eq!(
        last["role"], "assistant",
        "the paused turn is sent back to continue"
    );
    assert_eq!(
        serde_json::to_string(&last["content"]).unwrap(),
        serde_json::to_string(&paused).unwrap(),
        "the server blocks come back as they came"
    );
    assert_eq!(world.notes("Reference").len(), 1);
}
