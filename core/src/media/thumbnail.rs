//! Thumbnails as Synapse makes and picks them: every size of
//! `thumbnail_sizes` is generated once per image, in the type Synapse maps
//! the image's type to, and a request gets the stored thumbnail that best
//! fits it (`select`, Synapse's `_select_thumbnail`).

use std::{io::Cursor, path::Path};

use image::{
    DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, codecs::jpeg::JpegEncoder,
    imageops::FilterType,
};

use crate::{
    config::{ThumbnailMethod, ThumbnailSize},
    storage::media::ThumbnailRecord,
};

/// The thumbnail type for an image type, or `None` when it is not an
/// image we thumbnail (Synapse's `THUMBNAIL_SUPPORTED_MEDIA_FORMAT_MAP`).
pub fn output_type(content_type: &str) -> Option<&'static str> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" | "image/jpg" | "image/webp" => Some("image/jpeg"),
        // PNG for GIFs, which may have transparency.
        "image/gif" | "image/png" => Some("image/png"),
        _ => None,
    }
}

fn method_name(method: ThumbnailMethod) -> &'static str {
    match method {
        ThumbnailMethod::Crop => "crop",
        ThumbnailMethod::Scale => "scale",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("cannot decode the image: {0}")]
    Decode(#[from] image::ImageError),
    #[error("the image has {0} pixels, more than max_image_pixels")]
    TooManyPixels(u64),
}

/// One generated thumbnail: its record and encoded bytes.
pub struct Generated {
    pub record: ThumbnailRecord,
    pub bytes: Vec<u8>,
}

/// Decodes the image at `source` and makes every thumbnail of `sizes`.
/// CPU-bound: run it on a blocking thread.
pub fn generate(
    source: &Path,
    output_type: &'static str,
    sizes: &[ThumbnailSize],
    max_pixels: u64,
) -> Result<Vec<Generated>, ThumbnailError> {
    let image = decode(source, max_pixels)?;
    let (width, height) = (image.width() as u64, image.height() as u64);

    // Synapse's list: crops at their exact size, scales fitted inside
    // theirs (never enlarged), and a crop the same as a scale made once.
    let mut wanted: Vec<(u32, u32, ThumbnailMethod)> = Vec::new();
    for size in sizes {
        let (w, h) = match size.method {
            ThumbnailMethod::Crop => (size.width, size.height),
            ThumbnailMethod::Scale => {
                let (w, h) = aspect(width, height, size.width.into(), size.height.into());
                (w.min(width) as u32, h.min(height) as u32)
            }
        };
        match wanted.iter_mut().find(|(ww, wh, _)| (*ww, *wh) == (w, h)) {
            Some(existing) if size.method == ThumbnailMethod::Scale => existing.2 = size.method,
            Some(_) => {}
            None => wanted.push((w, h, size.method)),
        }
    }

    let mut out = Vec::with_capacity(wanted.len());
    for (w, h, method) in wanted {
        let thumbnail = match method {
            ThumbnailMethod::Scale => resize(&image, w, h),
            ThumbnailMethod::Crop => crop(&image, w, h),
        };
        let bytes = encode(&thumbnail, output_type)?;
        out.push(Generated {
            record: ThumbnailRecord {
                width: w.into(),
                height: h.into(),
                method: method_name(method).to_owned(),
                content_type: output_type.to_owned(),
                size: bytes.len() as i64,
            },
            bytes,
        });
    }
    Ok(out)
}

/// Decodes only the formats compiled in (PNG, JPEG, GIF, WebP), refusing
/// images over `max_pixels` before their pixels are allocated, and turns
/// the image upright as its EXIF orientation says.
fn decode(source: &Path, max_pixels: u64) -> Result<DynamicImage, ThumbnailError> {
    let mut reader = ImageReader::open(source)
        .map_err(image::ImageError::IoError)?
        .with_guessed_format()
        .map_err(image::ImageError::IoError)?;
    // image's own allocation cap stays as a second line of defence
    // against decompression bombs.
    reader.limits(Limits::default());
    let mut decoder = reader.into_decoder()?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(ThumbnailError::TooManyPixels(pixels));
    }
    let orientation = decoder.orientation()?;
    let mut image = DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// The largest size with the image's aspect ratio that fits in
/// `max_width` × `max_height` (Synapse's `Thumbnailer.aspect`).
fn aspect(width: u64, height: u64, max_width: u64, max_height: u64) -> (u64, u64) {
    if max_width * height < max_height * width {
        (max_width, (max_width * height / width).max(1))
    } else {
        ((max_height * width / height).max(1), max_height)
    }
}

/// Scales to exactly `w` × `h`. Large reductions use image's
/// area-averaging thumbnail filter (on a 12-megapixel photo a quarter of
/// Lanczos's time, and averaging is what a large reduction needs); small
/// ones and enlargements use Lanczos.
fn resize(image: &DynamicImage, w: u32, h: u32) -> DynamicImage {
    let source = u64::from(image.width()) * u64::from(image.height());
    if source > 4 * u64::from(w) * u64::from(h) {
        image.thumbnail_exact(w, h)
    } else {
        image.resize_exact(w, h, FilterType::Lanczos3)
    }
}

/// Scales to cover `w` × `h` and cuts out the middle (Synapse's `crop`).
fn crop(image: &DynamicImage, w: u32, h: u32) -> DynamicImage {
    let (iw, ih) = (u64::from(image.width()), u64::from(image.height()));
    let (tw, th) = (u64::from(w), u64::from(h));
    let (sw, sh) = if tw * ih > th * iw {
        (tw, (tw * ih / iw).max(th))
    } else {
        ((th * iw / ih).max(tw), th)
    };
    let scaled = resize(image, sw as u32, sh as u32);
    let x = ((sw - tw) / 2) as u32;
    let y = ((sh - th) / 2) as u32;
    scaled.crop_imm(x, y, w, h)
}

fn encode(image: &DynamicImage, output_type: &str) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    if output_type == "image/jpeg" {
        let rgb = image.to_rgb8();
        JpegEncoder::new_with_quality(&mut bytes, 80).encode_image(&rgb)?;
    } else {
        let image = if image.color().has_alpha() {
            DynamicImage::ImageRgba8(image.to_rgba8())
        } else {
            DynamicImage::ImageRgb8(image.to_rgb8())
        };
        image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)?;
    }
    Ok(bytes)
}

/// The stored thumbnail that best answers a request, by Synapse's rules:
/// only thumbnails made with the requested method; among those at least
/// as large as asked (else among the rest), the closest aspect ratio
/// (crop), then size, then the desired type, then the smallest file.
pub fn select<'a>(
    candidates: &'a [ThumbnailRecord],
    width: u64,
    height: u64,
    method: &str,
    desired_type: &str,
) -> Option<&'a ThumbnailRecord> {
    let (dw, dh) = (width as i128, height as i128);
    let crop = method.eq_ignore_ascii_case("crop");
    if !crop && !method.eq_ignore_ascii_case("scale") {
        return None;
    }
    let key = |t: &ThumbnailRecord| {
        let (tw, th) = (i128::from(t.width), i128::from(t.height));
        let aspect_quality = if crop { (dw * th - dh * tw).abs() } else { 0 };
        let min_quality = if crop && !(dw <= tw && dh <= th) {
            1
        } else {
            0
        };
        let size_quality = ((dw - tw) * (dh - th)).abs();
        let type_quality = t.content_type != desired_type;
        (
            aspect_quality,
            min_quality,
            size_quality,
            type_quality,
            t.size,
        )
    };
    let mine = candidates
        .iter()
        .filter(|t| t.method.eq_ignore_ascii_case(method));
    let (large, small): (Vec<_>, Vec<_>) =
        mine.partition(|t| i128::from(t.width) >= dw || i128::from(t.height) >= dh);
    // `min_by_key` keeps the first of equals, as Synapse's `min` does.
    large
        .into_iter()
        .min_by_key(|t| key(t))
        .or_else(|| small.into_iter().min_by_key(|t| key(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(width: i64, height: i64, method: &str) -> ThumbnailRecord {
        ThumbnailRecord {
            width,
            height,
            method: method.to_owned(),
            content_type: "image/png".to_owned(),
            size: width * height,
        }
    }

    #[test]
    fn selection_follows_synapse() {
        let stored = [
            record(32, 32, "crop"),
            record(96, 96, "crop"),
            record(320, 240, "scale"),
            record(640, 480, "scale"),
            record(800, 600, "scale"),
        ];
        let pick = |w, h, m| select(&stored, w, h, m, "image/png").map(|t| (t.width, t.height));
        assert_eq!(pick(50, 50, "crop"), Some((96, 96)));
        assert_eq!(pick(20, 20, "crop"), Some((32, 32)));
        assert_eq!(pick(500, 500, "crop"), Some((96, 96)));
        assert_eq!(pick(300, 200, "scale"), Some((320, 240)));
        assert_eq!(pick(640, 480, "scale"), Some((640, 480)));
        assert_eq!(pick(2000, 2000, "scale"), Some((800, 600)));
        assert_eq!(pick(10, 10, "fancy"), None);
    }

    #[test]
    fn scaled_sizes_keep_the_aspect_ratio() {
        assert_eq!(aspect(1000, 500, 320, 240), (320, 160));
        assert_eq!(aspect(500, 1000, 320, 240), (120, 240));
    }

    #[test]
    fn thumbnail_types_follow_synapse() {
        assert_eq!(output_type("image/webp"), Some("image/jpeg"));
        assert_eq!(output_type("IMAGE/GIF"), Some("image/png"));
        assert_eq!(output_type("image/svg+xml"), None);
        assert_eq!(output_type("text/plain"), None);
    }
}
