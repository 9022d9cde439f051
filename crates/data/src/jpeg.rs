//! JPEG decoding through libjpeg (mozjpeg, a libjpeg-turbo fork), as PIL decodes: ISLOW IDCT,
//! fancy chroma upsampling, and PIL's own CMYK handling.

use std::os::raw::c_int;

use image::RgbImage;
use mozjpeg::{ColorSpace, Decompress, Marker};

/// What libjpeg's "Premature end of JPEG file" warning unwinds with.
const TRUNCATED: &str = "truncated JPEG: the file ends before the image does (libjpeg would fill the rest with gray; PIL refuses it: \"image file is truncated\")";

/// libjpeg's error manager as PIL uses it, with errors unwinding instead of `exit()`: a fatal
/// error unwinds with its message; the warning "Premature end of JPEG file" (the data ran out
/// and libjpeg completes the image with filler) unwinds too, because PIL refuses such a file;
/// every other warning (e.g. "extraneous bytes before marker") is ignored, as PIL ignores it.
fn error_mgr() -> mozjpeg_sys::jpeg_error_mgr {
    // SAFETY: `jpeg_std_error` fills every field of the zeroed struct it is given.
    let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(fatal);
    err.emit_message = Some(warning);
    err
}

extern "C-unwind" fn fatal(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    std::panic::resume_unwind(Box::new(message(cinfo)));
}

extern "C-unwind" fn warning(cinfo: &mut mozjpeg_sys::jpeg_common_struct, level: c_int) {
    // SAFETY: libjpeg passes the struct whose `err` points at our manager.
    let code = unsafe { cinfo.err.as_ref() }.map_or(-1, |e| e.msg_code);
    if level < 0 && code == mozjpeg_sys::JWRN_JPEG_EOF as c_int {
        std::panic::resume_unwind(Box::new(TRUNCATED.to_string()));
    }
}

/// The text of libjpeg's current message.
fn message(cinfo: &mut mozjpeg_sys::jpeg_common_struct) -> String {
    // SAFETY: as above; libjpeg's `format_message` writes at most 80 bytes (JMSG_LENGTH_MAX)
    // into the buffer, which its C prototype declares mutable (the binding's `&` is wrong).
    let Some(format) = (unsafe { cinfo.err.as_ref() }).and_then(|e| e.format_message) else {
        return "corrupt data".into();
    };
    type Format = unsafe extern "C-unwind" fn(&mut mozjpeg_sys::jpeg_common_struct, &mut [u8; 80]);
    let format: Format = unsafe { std::mem::transmute(format) };
    let mut buf = [0u8; 80];
    unsafe { format(cinfo, &mut buf) };
    let text = buf.split(|&c| c == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    // libjpeg reports fatal errors (and truncation) by unwinding through the wrapper.
    let result = std::panic::catch_unwind(|| decode_inner(bytes));
    match result {
        Ok(r) => r.map_err(|e| format!("JPEG: {e}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "corrupt data".into());
            Err(if msg == TRUNCATED {
                msg
            } else {
                format!("JPEG: {msg}")
            })
        }
    }
}

fn decode_inner(bytes: &[u8]) -> std::io::Result<RgbImage> {
    let d = Decompress::with_err(error_mgr())
        .with_markers(&[Marker::APP(14)])
        .from_mem(bytes)?;
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
