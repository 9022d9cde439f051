//! timm's eval transform: resize the shorter side to `floor(img_size / crop_pct)` with PIL's
//! antialiased filter, center-crop, scale to [0, 1], normalise.
//!
//! PIL resamples 8-bit images in two separable passes and rounds to 8 bits after each; so
//! does this code, which is what keeps it within a level or two of PIL.

use std::path::Path;

use crate::eval_config::{EvalConfig, Interpolation};
use crate::resample::{Filter, coefficients, fixed_point, pil_sample, py_round};
use image::RgbImage;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DecodeError {
    pub path: String,
    pub reason: String,
}

/// Decodes any supported image file to 8-bit RGB as PIL's `Image.open(p).convert("RGB")` does:
/// JPEGs through libjpeg (bit-exact with PIL, grayscale and CMYK included), everything else
/// through the `image` crate (PNG incl. 16-bit, palette and alpha; WebP, BMP, GIF first frame).
pub fn decode(path: &Path) -> Result<RgbImage, DecodeError> {
    let err = |reason: String| DecodeError {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return crate::jpeg::decode_jpeg(&bytes).map_err(err);
    }
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(|e| err(e.to_string()))
    };
    // The header first: a few hundred bytes can declare gigapixels.
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| err(e.to_string()))?;
    crate::limits::check_pixels(w as u64, h as u64).map_err(err)?;
    let mut r = reader()?;
    r.limits(crate::limits::decoder_limits(w as u64 * h as u64));
    let img = r.decode().map_err(|e| err(e.to_string()))?;
    Ok(img.to_rgb8())
}

/// Resize (shorter side) + center crop + normalise, as timm's `transforms_imagenet_eval`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTransform {
    pub img_size: usize,
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    /// torchvision-style fixed resize of the shorter side (overrides `crop_pct`).
    pub resize: Option<usize>,
}

impl From<&EvalConfig> for EvalTransform {
    fn from(c: &EvalConfig) -> Self {
        Self {
            img_size: c.img_size,
            crop_pct: c.crop_pct,
            interpolation: c.interpolation,
            mean: c.mean,
            std: c.std,
            resize: None,
        }
    }
}

impl EvalTransform {
    /// Size the shorter side is resized to.
    pub fn scale_size(&self) -> usize {
        self.resize
            .unwrap_or_else(|| (self.img_size as f64 / self.crop_pct).floor() as usize)
    }

    /// Resized (w, h) for an input of (w, h): torchvision's `Resize(int)` rule.
    pub fn resized_dims(&self, w: usize, h: usize) -> (usize, usize) {
        let s = self.scale_size();
        if w <= h {
            (s, (s as f64 * h as f64 / w as f64) as usize)
        } else {
            ((s as f64 * w as f64 / h as f64) as usize, s)
        }
    }

    /// Resized and cropped 8-bit image (what PIL would hold before `ToTensor`).
    pub fn resize_crop(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (rw, rh) = self.resized_dims(w, h);
        let filter = match self.interpolation {
            Interpolation::Bilinear => Filter::Bilinear,
            Interpolation::Bicubic => Filter::Bicubic,
        };
        let resized = resize_rgb8(img, rw, rh, filter);
        let c = self.img_size;
        // torchvision's CenterCrop: offsets rounded half to even, as Python's round().
        let top = py_round((rh as f64 - c as f64) / 2.0);
        let left = py_round((rw as f64 - c as f64) / 2.0);
        let mut out = RgbImage::new(c as u32, c as u32);
        for y in 0..c {
            for x in 0..c {
                let (sx, sy) = (left + x as i64, top + y as i64);
                // A crop larger than the image pads with zeros, as torchvision does.
                if sx >= 0 && sy >= 0 && (sx as usize) < rw && (sy as usize) < rh {
                    out.put_pixel(x as u32, y as u32, *resized.get_pixel(sx as u32, sy as u32));
                }
            }
        }
        out
    }

    /// CHW f32 tensor data, normalised.
    pub fn apply(&self, img: &RgbImage) -> Vec<f32> {
        let crop = self.resize_crop(img);
        to_chw(&crop, self.mean, self.std)
    }

    /// Like [`apply`](Self::apply), for a model taking `channels` (1: PIL's "L" conversion).
    pub fn apply_channels(&self, img: &RgbImage, channels: usize) -> Vec<f32> {
        if channels != 1 {
            return self.apply(img);
        }
        let crop = self.resize_crop(img);
        to_chw_channels(&crop, channels, self.mean, self.std)
    }
}

/// `[0, 255]` RGB to normalised CHW floats with `channels` channels (1: PIL's "L"
/// conversion, normalised with the first mean/std).
pub fn to_chw_channels(img: &RgbImage, channels: usize, mean: [f64; 3], std: [f64; 3]) -> Vec<f32> {
    if channels != 1 {
        return to_chw(img, mean, std);
    }
    img.pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            // PIL: L = R * 299/1000 + G * 587/1000 + B * 114/1000, rounded.
            let l = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as f32 / 255.0;
            (l - mean[0] as f32) / std[0] as f32
        })
        .collect()
}

/// `[0, 255]` RGB to normalised CHW floats.
pub fn to_chw(img: &RgbImage, mean: [f64; 3], std: [f64; 3]) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            let v = p.0[c] as f32 / 255.0;
            out[c * w * h + i] = (v - mean[c] as f32) / std[c] as f32;
        }
    }
    out
}

/// PIL-exact separable resize of an 8-bit RGB image: horizontal pass, then vertical, each in
/// PIL's 22-bit fixed point and rounded to 8 bits.
pub fn resize_rgb8(img: &RgbImage, ow: usize, oh: usize, filter: Filter) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if (w, h) == (ow, oh) {
        return img.clone();
    }
    let src = img.as_raw();
    let horiz: Vec<u8> = if ow == w {
        src.clone()
    } else {
        let cx = fixed_point(&coefficients(w, ow, filter, 0.0, w as f64));
        let mut out = vec![0u8; h * ow * 3];
        for y in 0..h {
            for (x, t) in cx.iter().enumerate() {
                for c in 0..3 {
                    out[(y * ow + x) * 3 + c] = pil_sample(t, |i| src[(y * w + i) * 3 + c]);
                }
            }
        }
        out
    };
    let vert: Vec<u8> = if oh == h {
        horiz
    } else {
        let cy = fixed_point(&coefficients(h, oh, filter, 0.0, h as f64));
        let mut out = vec![0u8; oh * ow * 3];
        for (y, t) in cy.iter().enumerate() {
            for x in 0..ow {
                for c in 0..3 {
                    out[(y * ow + x) * 3 + c] = pil_sample(t, |i| horiz[(i * ow + x) * 3 + c]);
                }
            }
        }
        out
    };
    RgbImage::from_raw(ow as u32, oh as u32, vert).expect("buffer size matches dimensions")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(img: usize, crop: f64) -> EvalTransform {
        EvalTransform {
            img_size: img,
            crop_pct: crop,
            interpolation: Interpolation::Bicubic,
            mean: [0.5; 3],
            std: [0.5; 3],
            resize: None,
        }
    }

    #[test]
    fn scale_and_resize_dims_follow_timm() {
        assert_eq!(t(224, 0.875).scale_size(), 256);
        assert_eq!(t(224, 0.95).scale_size(), 235);
        assert_eq!(t(224, 0.9).scale_size(), 248);
        // 500x375 landscape -> shorter side 256, longer int(256*500/375) = 341.
        assert_eq!(t(224, 0.875).resized_dims(500, 375), (341, 256));
        assert_eq!(t(224, 0.875).resized_dims(375, 500), (256, 341));
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(300, 200, image::Rgb([10, 128, 250]));
        let out = t(64, 0.875).resize_crop(&img);
        assert_eq!(out.dimensions(), (64, 64));
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
        let x = t(64, 0.875).apply(&img);
        assert!((x[0] - (10.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    }
}
