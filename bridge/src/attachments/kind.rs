//! What an attachment is, from its MIME type, UTI or file extension, in that order.

use std::path::Path;

/// The kinds of attachment the bridge treats differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An image the `image` crate decodes itself.
    Image(image::ImageFormat),
    /// HEIC/HEIF: converted by `sips` (macOS) or `heif-convert` before decoding.
    Heif,
    /// A PDF document.
    Pdf,
    /// Anything else (video, audio, vCard, zip, …): copied and linked, described in words.
    Other,
}

impl Kind {
    /// The kind of a file with these facts.
    pub fn of(mime: Option<&str>, uti: Option<&str>, path: Option<&Path>) -> Kind {
        let ext = path
            .and_then(Path::extension)
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let mime = mime.map(str::to_ascii_lowercase);
        let by_mime = match mime.as_deref() {
            Some("image/heic" | "image/heif" | "image/heic-sequence" | "image/heif-sequence") => {
                Some(Kind::Heif)
            }
            Some("application/pdf") => Some(Kind::Pdf),
            Some(m) => image::ImageFormat::from_mime_type(m).and_then(Kind::image),
            None => None,
        };
        let by_uti = match uti {
            Some("public.heic" | "public.heif") => Some(Kind::Heif),
            Some("com.adobe.pdf") => Some(Kind::Pdf),
            _ => None,
        };
        let by_ext = match ext.as_deref() {
            Some("heic" | "heif") => Some(Kind::Heif),
            Some("pdf") => Some(Kind::Pdf),
            Some(e) => image::ImageFormat::from_extension(e).and_then(Kind::image),
            None => None,
        };
        by_mime.or(by_uti).or(by_ext).unwrap_or(Kind::Other)
    }

    /// The image formats shown to the model (after conversion where needed).
    fn image(format: image::ImageFormat) -> Option<Kind> {
        use image::ImageFormat as F;
        matches!(format, F::Jpeg | F::Png | F::Gif | F::WebP | F::Tiff)
            .then_some(Kind::Image(format))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat as F;

    #[test]
    fn kinds_from_mime_uti_and_extension() {
        let p = |s: &'static str| Some(Path::new(s));
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a Path>, Kind);
        let cases: &[Case] = &[
            (Some("image/jpeg"), None, None, Kind::Image(F::Jpeg)),
            (Some("IMAGE/PNG"), None, None, Kind::Image(F::Png)),
            (Some("image/webp"), None, None, Kind::Image(F::WebP)),
            (Some("image/tiff"), None, None, Kind::Image(F::Tiff)),
            (Some("image/gif"), None, None, Kind::Image(F::Gif)),
            (Some("image/heic"), None, None, Kind::Heif),
            (None, Some("public.heic"), p("x.bin"), Kind::Heif),
            (None, None, p("IMG_0001.HEIC"), Kind::Heif),
            (Some("application/pdf"), None, None, Kind::Pdf),
            (None, None, p("scan.PDF"), Kind::Pdf),
            (None, None, p("photo.JPG"), Kind::Image(F::Jpeg)),
            (
                Some("audio/x-caf"),
                None,
                p("Audio Message.caf"),
                Kind::Other,
            ),
            (Some("text/vcard"), None, p("Sam.vcf"), Kind::Other),
            (None, None, p("bmp.bmp"), Kind::Other),
            (None, None, None, Kind::Other),
        ];
        for (mime, uti, path, want) in cases {
            assert_eq!(
                Kind::of(*mime, *uti, *path),
                *want,
                "{mime:?} {uti:?} {path:?}"
            );
        }
    }
}
