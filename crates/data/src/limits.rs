//! How large an image may be, checked from its header before decoding, as PIL does.
//!
//! PIL's `Image.open` raises `DecompressionBombError` above 2 x `Image.MAX_IMAGE_PIXELS`
//! (2 x 89,478,485 = 178,956,970 pixels); committee uses the same default and, like PIL's
//! module-level setting, one process-wide value (`--max-image-pixels`).

use std::sync::atomic::{AtomicU64, Ordering};

/// PIL's limit: 2 x `Image.MAX_IMAGE_PIXELS`.
pub const PIL_MAX_PIXELS: u64 = 2 * 89_478_485;

static MAX_PIXELS: AtomicU64 = AtomicU64::new(PIL_MAX_PIXELS);

/// Sets the largest image (in pixels) any decode accepts, process-wide.
pub fn set_max_pixels(n: u64) {
    MAX_PIXELS.store(n, Ordering::Relaxed);
}

/// The limit in force (PIL's unless set).
pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(Ordering::Relaxed)
}

/// `Err` when a `w` x `h` image is above the limit.
pub fn check_pixels(w: u64, h: u64) -> Result<(), String> {
    let (n, max) = (w.saturating_mul(h), max_pixels());
    if n > max {
        return Err(format!(
            "{w}x{h} = {n} pixels is above the limit of {max} (a decompression bomb, as PIL calls it; raise it with --max-image-pixels)"
        ));
    }
    Ok(())
}

/// The `image` crate's allocation limit for an image of `pixels`: its largest decoded form
/// (16-bit RGBA, 8 bytes a pixel) and some slack, so no decoder allocates beyond what the
/// header promised.
pub fn decoder_limits(pixels: u64) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pil_limit_by_hand() {
        assert_eq!(PIL_MAX_PIXELS, 178_956_970);
        assert!(check_pixels(13_377, 13_377).is_ok()); // 178,944,129
        assert!(check_pixels(60_000, 60_000).is_err());
        assert!(check_pixels(u64::MAX, 2).is_err());
    }
}
