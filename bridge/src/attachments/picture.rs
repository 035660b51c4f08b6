//! Makes an image ready for the model: decoded (EXIF orientation applied), shrunk so its
//! long edge is at most [`MAX_EDGE`] px, and encoded as JPEG — or PNG when the source is a
//! PNG or GIF with transparency, which JPEG would lose.
//!
//! Anthropic's vision guide (platform.claude.com/docs/en/build-with-claude/vision) takes
//! JPEG, PNG, GIF and WebP up to 5 MB each and advises a long edge of at most 1568 px (larger
//! images are scaled down by the API anyway, costing time to first token).
//!
//! Shrinking is `fast_image_resize`'s SIMD convolution with a bilinear filter (its kernel
//! widened by the scale, so every source pixel counts: no aliasing of fine text); the
//! `image` crate's own `thumbnail` took 90 ms of the 176 ms a 4032×3024 photo needed
//! (bench `attachments`, release, this 2-core machine at load 4); with this the whole image
//! work is 81–118 ms (load 2.8–3.3).

use std::io::Cursor;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Rgb, RgbImage, RgbaImage};

/// Longest edge of an image shown to the model, in pixels.
pub const MAX_EDGE: u32 = 1568;
/// Largest decoded image accepted (pixels), so a hostile file cannot take all memory.
const MAX_PIXELS: u64 = 100_000_000;
/// JPEG quality of the shrunk copy.
const JPEG_QUALITY: u8 = 85;
/// Largest image the API takes, decoded, in bytes (the vision guide's "Maximum image size:
/// 5 MB" through the API; the strict fake's check in `tests/util/media.rs`).
pub const MAX_BYTES: usize = 5 * 1024 * 1024;

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
    /// Shrinking failed.
    #[error("cannot shrink the image: {0}")]
    Shrink(String),
    /// Even as a JPEG it is over the API's size limit.
    #[error("the image is {0} bytes even as a JPEG, over the API's 5 MB")]
    TooManyBytes(usize),
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
        img = shrink(img).map_err(Error::Shrink)?;
    }
    let keep_alpha = matches!(source, Some(ImageFormat::Png | ImageFormat::Gif))
        && img.color().has_alpha()
        && has_transparency(&img);
    let size = (img.width(), img.height());
    let mut out = Vec::new();
    if keep_alpha {
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)?;
        if out.len() <= MAX_BYTES {
            return Ok(Picture {
                media_type: "image/png",
                bytes: out,
                size,
            });
        }
        // Too many bytes as a PNG (fine detail everywhere): shown as a JPEG on white, its
        // transparency lost rather than the whole image.
        out.clear();
    }
    let rgb = DynamicImage::ImageRgb8(on_white(img));
    rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY))?;
    if out.len() > MAX_BYTES {
        return Err(Error::TooManyBytes(out.len()));
    }
    Ok(Picture {
        media_type: "image/jpeg",
        bytes: out,
        size,
    })
}

/// `img` as 8-bit RGB; where it is transparent, blended over white as a viewer shows it
/// (dropping the alpha channel alone would turn clear pixels into whatever color they hide,
/// often black).
fn on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over = |c: u8| {
            let (c, a) = (u16::from(c), u16::from(a));
            // (c·a + 255·(255 − a)) / 255, rounded; at most 255.
            u8::try_from((c * a + 255 * (255 - a) + 127) / 255).unwrap_or(u8::MAX)
        };
        Rgb([over(r), over(g), over(b)])
    })
}

/// `img` with its long edge brought down to [`MAX_EDGE`], its proportions kept: as 8-bit
/// RGB, or RGBA when it has an alpha channel.
fn shrink(img: DynamicImage) -> Result<DynamicImage, String> {
    let (w, h) = (img.width(), img.height());
    let long = w.max(h);
    let scaled = |side: u32| {
        let side = (u64::from(side) * u64::from(MAX_EDGE) + u64::from(long) / 2) / u64::from(long);
        u32::try_from(side).unwrap_or(MAX_EDGE).max(1)
    };
    let (nw, nh) = (scaled(w), scaled(h));
    let alpha = img.color().has_alpha();
    let (buffer, pixel) = if alpha {
        (img.into_rgba8().into_raw(), PixelType::U8x4)
    } else {
        (img.into_rgb8().into_raw(), PixelType::U8x3)
    };
    let src = Image::from_vec_u8(w, h, buffer, pixel).map_err(|e| e.to_string())?;
    let mut dst = Image::new(nw, nh, pixel);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| e.to_string())?;
    let out = dst.into_vec();
    let shrunk = if alpha {
        RgbaImage::from_raw(nw, nh, out).map(DynamicImage::ImageRgba8)
    } else {
        RgbImage::from_raw(nw, nh, out).map(DynamicImage::ImageRgb8)
    };
    shrunk.ok_or_else(|| "the shrunk image has the wrong size".to_string())
}

/// Whether any pixel is not fully opaque.
fn has_transparency(img: &DynamicImage) -> bool {
    img.to_rgba8().pixels().any(|p| p.0[3] != u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

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
    fn a_large_transparent_png_is_shrunk_keeping_its_alpha() {
        let clear = RgbaImage::from_fn(3000, 100, |x, _| {
            Rgba([200, 10, 10, if x < 1500 { 0 } else { 255 }])
        });
        let picture = prepare(
            &encoded(DynamicImage::ImageRgba8(clear), ImageFormat::Png),
            None,
        )
        .unwrap();
        assert_eq!(picture.media_type, "image/png");
        assert_eq!(picture.size, (1568, 52));
        let back = image::load_from_memory_with_format(&picture.bytes, ImageFormat::Png)
            .unwrap()
            .to_rgba8();
        assert_eq!(back.get_pixel(10, 20).0[3], 0, "clear stays clear");
        assert_eq!(
            back.get_pixel(1500, 20).0,
            [200, 10, 10, 255],
            "opaque stays opaque"
        );
    }

    /// A transparent PNG with fine detail everywhere is over the API's 5 MB even at 1568 px:
    /// it is shown as a JPEG within the limit, its clear pixels white.
    #[test]
    fn a_transparent_png_too_big_for_the_api_becomes_a_jpeg_on_white() {
        let mut seed = 0x2545_f491_u32;
        let mut noise = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed.to_le_bytes()
        };
        let detailed = RgbaImage::from_fn(1568, 1568, |x, _| {
            let [r, g, b, _] = noise();
            Rgba([r, g, b, if x < 8 { 0 } else { 255 }])
        });
        let png = encoded(DynamicImage::ImageRgba8(detailed), ImageFormat::Png);
        assert!(
            png.len() > MAX_BYTES,
            "the source is over 5 MB: {}",
            png.len()
        );
        let picture = prepare(&png, None).unwrap();
        assert_eq!(picture.media_type, "image/jpeg");
        assert!(picture.bytes.len() <= MAX_BYTES, "{}", picture.bytes.len());
        assert_eq!(picture.size, (1568, 1568));
        let back = image::load_from_memory_with_format(&picture.bytes, ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8();
        assert!(
            back.get_pixel(2, 700).0.iter().all(|&c| c > 240),
            "clear is white: {:?}",
            back.get_pixel(2, 700)
        );
    }

    #[test]
    fn on_white_blends_by_alpha() {
        let img = RgbaImage::from_fn(3, 1, |x, _| Rgba([0, 100, 200, [0, 128, 255][x as usize]]));
        let rgb = on_white(DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [127, 177, 227]);
        assert_eq!(rgb.get_pixel(2, 0).0, [0, 100, 200]);
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
