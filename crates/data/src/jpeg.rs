//! JPEG decoding through libjpeg (mozjpeg, a libjpeg-turbo fork), as PIL decodes: ISLOW IDCT,
//! fancy chroma upsampling, and PIL's own CMYK handling.

use image::RgbImage;
use mozjpeg::{ColorSpace, Decompress, Marker};

/// PIL refuses a truncated JPEG ("image file is truncated"); libjpeg would only warn and pad it
/// with gray. A complete file ends with an EOI marker (possibly followed by a little padding).
fn has_eoi(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    if !has_eoi(bytes) {
        return Err("truncated JPEG (no end-of-image marker)".into());
    }
    // libjpeg reports fatal errors by unwinding through the wrapper.
    let result = std::panic::catch_unwind(|| decode_inner(bytes));
    match result {
        Ok(r) => r.map_err(|e| format!("JPEG: {e}")),
        Err(p) => Err(format!(
            "JPEG: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "corrupt data".into())
        )),
    }
}

fn decode_inner(bytes: &[u8]) -> std::io::Result<RgbImage> {
    let d = Decompress::with_markers(&[Marker::APP(14)]).from_mem(bytes)?;
    let (w, h) = d.size();
    // Before any pixel is decoded: the header alone can declare gigapixels.
    crate::limits::check_pixels(w as u64, h as u64).map_err(std::io::Error::other)?;
    let cmyk = matches!(d.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
    let rgb: Vec<u8> = if cmyk {
        // Photoshop (Adobe marker) stores CMYK inverted; PIL reads it as "CMYK;I".
        let adobe = d.markers().any(|m| m.data.starts_with(b"Adobe"));
        let mut s = d.to_colorspace(ColorSpace::JCS_CMYK)?;
        let raw: Vec<[u8; 4]> = s.read_scanlines()?;
        s.finish()?;
        raw.iter()
            .flat_map(|p| {
                let [c, m, y, k] = if adobe { p.map(|v| 255 - v) } else { *p };
                // PIL's cmyk2rgb: nk - nk * c / 255 (with its MULDIV255 rounding).
                let nk = 255 - k as i32;
                let muldiv = |a: i32| {
                    let t = a * nk + 128;
                    ((t >> 8) + t) >> 8
                };
                [c, m, y].map(|v| (nk - muldiv(v as i32)).clamp(0, 255) as u8)
            })
            .collect()
    } else {
        let mut s = d.rgb()?;
        let raw: Vec<[u8; 3]> = s.read_scanlines()?;
        s.finish()?;
        raw.into_iter().flatten().collect()
    };
    RgbImage::from_raw(w as u32, h as u32, rgb)
        .ok_or_else(|| std::io::Error::other("decoded size does not match the header"))
}
