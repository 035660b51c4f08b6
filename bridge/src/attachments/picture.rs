//! Makes an image ready for the model: decoded (EXIF orientation applied), shrunk so its
//! long edge is at most [`MAX_EDGE`] px, and encoded as JPEG — or PNG when the source is a
//! PNG or GIF with transparency, which JPEG would lose.
//!
//! Anthropic's vision guide (platform.claude.com/docs/en/build-with-claude/vision) takes
//! JPEG, PNG, GIF and WebP up to 5 MB each and advises a long edge of at most 1568 px (larger
//! images are scaled down by the API anyway, costing time to first token).

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// Longest edge of an image shown to the model, in pixels.
pub const MAX_EDGE: u32 = 1568;
/// Largest decoded image accepted (pixels), so a hostile file cannot take all memory.
const MAX_PIXELS: u64 = 100_000_000;
/// JPEG quality of the shrunk copy.
const JPEG_QUALITY: u8 = 85;

/// An image as the model is shown it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    /// `image/jpeg` or `image/png`.
    pub media_type: &'static str,
    /// The encoded bytes.
    pub bytes: Vec<u8>,
    /// Width and height after shrinking.
    pub size: (u32, u32),
}

/// Why an image could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not an image this build decodes, or are damaged.
    #[error("cannot decode the image: {0}")]
    Decode(#[from] image::ImageError),
    /// The image is too large to decode safely.
    #[error("the image is too large ({0}×{1} px)")]
    TooLarge(u32, u32),
}

/// Prepares `bytes` (`format` when known, else guessed from the bytes).
pub fn prepare(bytes: &[u8], format: Option<ImageFormat>) -> Result<Picture, Error> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    match format {
        Some(f) => reader.set_format(f),
        None => {
            reader = reader
                .with_guessed_format()
                .map_err(image::ImageError::IoError)?
        }
    }
    let source = reader.format();
    let mut decoder = reader.into_decoder()?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(Error::TooLarge(w, h));
    }
    let orientation = decoder.orientation()?;
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    if img.width().max(img.height()) > MAX_EDGE {
        img = img.thumbnail(MAX_EDGE, MAX_EDGE);
    }
    let keep_alpha = matches!(source, Some(ImageFormat::Png | ImageFormat::Gif))
        && img.color().has_alpha()
        && has_transparency(&img);
    let size = (img.width(), img.height());
    let mut out = Vec::new();
    if keep_alpha {
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)?;
        return Ok(Picture {
            media_type: "image/png",
            bytes: out,
            size,
        });
    }
    let rgb = DynamicImage::ImageRgb8(img.into_rgb8());
    rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY))?;
    Ok(Picture {
        media_type: "image/jpeg",
        bytes: out,
        size,
    })
}

/// Whether any pixel is not fully opaque.
fn has_transparency(img: &DynamicImage) -> bool {
    img.to_rgba8().pixels().any(|p| p.0[3] != u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn encoded(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), format).unwrap();
        out
    }

    #[test]
    fn a_large_photo_is_shrunk_to_a_jpeg_with_a_1568_px_long_edge() {
        let photo = RgbImage::from_fn(4032, 3024, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, 9])
        });
        let bytes = encoded(DynamicImage::ImageRgb8(photo), ImageFormat::Jpeg);
        let picture = prepare(&bytes, None).unwrap();
        assert_eq!(picture.media_type, "image/jpeg");
        assert_eq!(picture.size, (1568, 1176));
        let back = image::load_from_memory_with_format(&picture.bytes, ImageFormat::Jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (1568, 1176));
    }

    #[test]
    fn a_transparent_png_stays_png_and_an_opaque_one_becomes_jpeg() {
        let clear = RgbaImage::from_fn(20, 10, |x, _| Rgba([1, 2, 3, if x < 5 { 0 } else { 255 }]));
        let picture = prepare(
            &encoded(DynamicImage::ImageRgba8(clear), ImageFormat::Png),
            None,
        )
        .unwrap();
        assert_eq!(picture.media_type, "image/png");
        assert_eq!(picture.size, (20, 10));
        let opaque = RgbaImage::from_pixel(20, 10, Rgba([1, 2, 3, 255]));
        let picture = prepare(
            &encoded(DynamicImage::ImageRgba8(opaque), ImageFormat::Png),
            None,
        )
        .unwrap();
        assert_eq!(picture.media_type, "image/jpeg");
    }

    #[test]
    fn webp_tiff_and_gif_become_jpeg() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(30, 40, Rgb([200, 10, 10])));
        for format in [ImageFormat::WebP, ImageFormat::Tiff, ImageFormat::Gif] {
            let picture = prepare(&encoded(img.clone(), format), Some(format)).unwrap();
            assert_eq!(picture.media_type, "image/jpeg", "{format:?}");
            assert_eq!(picture.size, (30, 40), "{format:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\xff\xd8\xff\xe0garbage",
            b"\x89PNG\r\n\x1a\n\0\0",
        ] {
            assert!(prepare(bytes, None).is_err());
            assert!(prepare(bytes, Some(ImageFormat::Jpeg)).is_err());
        }
    }
}
