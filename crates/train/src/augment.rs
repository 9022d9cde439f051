//! Training augmentation, as torchvision does it: `RandomResizedCrop` + horizontal flip for
//! ImageNet-like data, zero-pad + `RandomCrop` + flip for small images (CIFAR style), and
//! optionally timm's `RandomErasing` on the normalised image.

use committee_data::resample::Filter;
use committee_data::transform::{resize_rgb8, to_chw_channels};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AugmentKind {
    /// RandomResizedCrop(scale 0.08..1, ratio 3/4..4/3) + flip.
    Imagenet,
    /// Resize to the training size if needed, pad 4 with zeros, random crop, flip.
    Small,
    /// Resize to the training size only (for tests and ablations).
    None,
}

impl std::str::FromStr for AugmentKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "imagenet" => Ok(Self::Imagenet),
            "small" => Ok(Self::Small),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "unknown augmentation '{s}' (imagenet, small, none)"
            )),
        }
    }
}

/// Images at most this large (shorter side) get the small-image recipe by default.
pub const SMALL_MAX_SIDE: u32 = 64;

/// The training transform of one run.
#[derive(Debug, Clone)]
pub struct TrainTransform {
    pub kind: AugmentKind,
    pub img_size: usize,
    pub channels: usize,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    /// Probability of one random erasing per image (0 = off).
    pub erase: f64,
}

/// timm's `RandomErasing` (mode "pixel", one box): with probability `p`, a box of 2-33 % of
/// the image area with aspect ratio log-uniform in 0.3..3.3 (10 tries to fit) is filled with
/// standard-normal noise, per pixel and channel, in the normalised space. Zhong et al. (2017)
/// report it improving Fashion-MNIST models; a fit is required strictly inside the image.
pub fn random_erase(x: &mut [f32], chans: usize, h: usize, w: usize, p: f64, rng: &mut Rng) {
    if p <= 0.0 || rng.uniform() >= p {
        return;
    }
    let area = (h * w) as f64;
    let (lr0, lr1) = (0.3f64.ln(), (1.0f64 / 0.3).ln());
    for _ in 0..10 {
        let (bh, bw) = box_sides(area, (0.02, 1.0 / 3.0), (lr0, lr1), rng);
        if bw < w && bh < h {
            let top = rng.int_inclusive(h - bh);
            let left = rng.int_inclusive(w - bw);
            for c in 0..chans {
                for y in top..top + bh {
                    let row = (c * h + y) * w;
                    for v in &mut x[row + left..row + left + bw] {
                        *v = rng.normal() as f32;
                    }
                }
            }
            return;
        }
    }
}

/// One try at a random box, drawn as torchvision's `RandomResizedCrop` and timm's
/// `RandomErasing` both draw it: area uniform in `scale` of `area`, then the aspect ratio
/// log-uniform in `log_ratio`; the sides sqrt(target * aspect), sqrt(target / aspect), rounded.
fn box_sides(area: f64, scale: (f64, f64), log_ratio: (f64, f64), rng: &mut Rng) -> (usize, usize) {
    let target = area * rng.range(scale.0, scale.1);
    let aspect = rng.range(log_ratio.0, log_ratio.1).exp();
    (
        (target * aspect).sqrt().round() as usize,
        (target / aspect).sqrt().round() as usize,
    )
}

/// torchvision's `RandomResizedCrop.get_params`: (top, left, height, width).
pub fn rrc_params(w: usize, h: usize, rng: &mut Rng) -> (usize, usize, usize, usize) {
    let area = (w * h) as f64;
    let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let (cw, ch) = box_sides(area, (0.08, 1.0), (lr0, lr1), rng);
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let top = rng.int_inclusive(h - ch);
            let left = rng.int_inclusive(w - cw);
            return (top, left, ch, cw);
        }
    }
    let ratio = w as f64 / h as f64;
    let (cw, ch) = if ratio < 0.75 {
        (w, ((w as f64 / 0.75).round() as usize).min(h))
    } else if ratio > 4.0 / 3.0 {
        (((h as f64 * 4.0 / 3.0).round() as usize).min(w), h)
    } else {
        (w, h)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// A `cw` x `ch` window at (left, top); pixels outside the image are zero.
fn crop(img: &RgbImage, top: i64, left: i64, ch: usize, cw: usize) -> RgbImage {
    let mut out = RgbImage::new(cw as u32, ch as u32);
    let (w, h) = (img.width() as i64, img.height() as i64);
    for y in 0..ch as i64 {
        for x in 0..cw as i64 {
            let (sx, sy) = (left + x, top + y);
            if sx >= 0 && sy >= 0 && sx < w && sy < h {
                out.put_pixel(x as u32, y as u32, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}

fn flip(img: &mut RgbImage) {
    image::imageops::flip_horizontal_in_place(img);
}

impl TrainTransform {
    /// The augmented image, before normalisation.
    pub fn augment(&self, img: &RgbImage, rng: &mut Rng) -> RgbImage {
        let s = self.img_size;
        let resized = |img: &RgbImage| {
            if (img.width() as usize, img.height() as usize) == (s, s) {
                img.clone()
            } else {
                resize_rgb8(img, s, s, Filter::Bilinear)
            }
        };
        let mut out = match self.kind {
            AugmentKind::Imagenet => {
                let (top, left, ch, cw) =
                    rrc_params(img.width() as usize, img.height() as usize, rng);
                resized(&crop(img, top as i64, left as i64, ch, cw))
            }
            AugmentKind::Small => {
                let base = resized(img);
                const PAD: usize = 4;
                let top = rng.int_inclusive(2 * PAD) as i64 - PAD as i64;
                let left = rng.int_inclusive(2 * PAD) as i64 - PAD as i64;
                crop(&base, top, left, s, s)
            }
            AugmentKind::None => return resized(img),
        };
        if rng.uniform() < 0.5 {
            flip(&mut out);
        }
        out
    }

    /// Augmented, normalised CHW floats.
    pub fn apply(&self, img: &RgbImage, rng: &mut Rng) -> Vec<f32> {
        let mut x = to_chw_channels(&self.augment(img, rng), self.channels, self.mean, self.std);
        let s = self.img_size;
        random_erase(&mut x, self.channels, s, s, self.erase, rng);
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: AugmentKind, s: usize) -> TrainTransform {
        TrainTransform {
            kind,
            img_size: s,
            channels: 3,
            mean: [0.0; 3],
            std: [1.0; 3],
            erase: 0.0,
        }
    }

    #[test]
    fn random_erasing_fills_one_box_within_timms_limits() {
        let (c, h, w) = (2, 28, 28);
        let mut rng = Rng::keyed(&[9]);
        let (mut erased, trials) = (0, 4000);
        for _ in 0..trials {
            // Every pixel starts at 7; erased ones become noise (never exactly 7).
            let mut x = vec![7.0f32; c * h * w];
            random_erase(&mut x, c, h, w, 0.5, &mut rng);
            let hit: Vec<usize> = (0..h * w).filter(|&i| x[i] != 7.0).collect();
            if hit.is_empty() {
                continue;
            }
            erased += 1;
            let (ys, xs): (Vec<usize>, Vec<usize>) = hit.iter().map(|i| (i / w, i % w)).unzip();
            let (y0, y1) = (*ys.iter().min().unwrap(), *ys.iter().max().unwrap());
            let (x0, x1) = (*xs.iter().min().unwrap(), *xs.iter().max().unwrap());
            let (bh, bw) = (y1 - y0 + 1, x1 - x0 + 1);
            // One solid rectangle, the same in every channel, strictly smaller than the image.
            assert_eq!(hit.len(), bh * bw);
            assert!(bh < h && bw < w);
            for ch in 1..c {
                for &i in &hit {
                    assert_ne!(x[ch * h * w + i], 7.0);
                }
            }
            // Area 2-33 % of 784 (rounding of each side moves it a little).
            let frac = (bh * bw) as f64 / (h * w) as f64;
            assert!((0.01..0.40).contains(&frac), "{frac}");
            let r = bh as f64 / bw as f64;
            assert!((0.2..=4.5).contains(&r), "{r}");
        }
        // p = 0.5 (the 10 tries nearly always fit at this size).
        let rate = erased as f64 / trials as f64;
        assert!((rate - 0.5).abs() < 0.04, "{rate}");
        // p = 0 never touches the image and draws nothing.
        let mut x = vec![7.0f32; c * h * w];
        let mut a = Rng::keyed(&[1]);
        random_erase(&mut x, c, h, w, 0.0, &mut a);
        assert!(x.iter().all(|&v| v == 7.0));
        assert_eq!(a.next_u64(), Rng::keyed(&[1]).next_u64());
    }

    #[test]
    fn rrc_crops_fit_and_follow_the_scale_and_ratio_limits() {
        let mut rng = Rng::keyed(&[3]);
        for _ in 0..2000 {
            let (top, left, ch, cw) = rrc_params(500, 375, &mut rng);
            assert!(top + ch <= 375 && left + cw <= 500);
            let area = (ch * cw) as f64 / (500.0 * 375.0);
            // Rounding can move a crop a little outside the nominal limits.
            assert!((0.07..=1.0).contains(&area), "{area}");
            let r = cw as f64 / ch as f64;
            assert!((0.70..=1.40).contains(&r), "{r}");
        }
        // A 10:1 strip never fits the ratio range: the fallback keeps the height, width 4/3 h.
        let mut rng = Rng::keyed(&[4]);
        assert_eq!(rrc_params(1000, 30, &mut rng), (0, 480, 30, 40));
    }

    #[test]
    fn small_recipe_shifts_by_at_most_four_and_flips() {
        // A single white pixel at (10, 12) in a 28x28 black image.
        let mut img = RgbImage::new(28, 28);
        img.put_pixel(10, 12, image::Rgb([255, 255, 255]));
        let tr = t(AugmentKind::Small, 28);
        let mut seen_flip = false;
        let mut rng = Rng::keyed(&[5]);
        for _ in 0..200 {
            let out = tr.augment(&img, &mut rng);
            assert_eq!(out.dimensions(), (28, 28));
            let lit: Vec<(u32, u32)> = out
                .enumerate_pixels()
                .filter(|(_, _, p)| p.0[0] == 255)
                .map(|(x, y, _)| (x, y))
                .collect();
            // The pixel moved by at most 4 rows (it may be cropped away only if it left the frame).
            for &(x, y) in &lit {
                assert!((y as i64 - 12).abs() <= 4);
                let plain = (x as i64 - 10).abs() <= 4;
                let flipped = (x as i64 - 17).abs() <= 4;
                assert!(plain || flipped);
                seen_flip |= !plain;
            }
            assert!(lit.len() <= 1);
        }
        assert!(seen_flip);
    }

    #[test]
    fn none_only_resizes_and_channels_follow_pil_l() {
        let img = RgbImage::from_pixel(20, 20, image::Rgb([255, 0, 0]));
        let mut tr = t(AugmentKind::None, 8);
        tr.channels = 1;
        let x = tr.apply(&img, &mut Rng::keyed(&[0]));
        assert_eq!(x.len(), 64);
        // PIL: L = round(255 * 299/1000) = 76.
        assert!(x.iter().all(|v| (v - 76.0 / 255.0).abs() < 1e-6));
    }
}
