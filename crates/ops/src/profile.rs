//! Where a forward pass spends its time, per kind of layer (`committee bench --profile`).
//!
//! Off by default, and then a layer pays one relaxed atomic load. When on, every span waits
//! for the device before it starts and before it ends, so asynchronous backends (wgpu) are
//! attributed to the right layer too; that waiting makes a profiled pass slower than a plain
//! one, so profiles give shares, `bench` gives speed. Spans nest: a span's time excludes its
//! children's (squeeze-excite's convolutions count as squeeze-excite, not as convolutions,
//! because they run inside its span without spans of their own).
//!
//! A leaf: the ops and the zoo's layers call it, it calls nothing of theirs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

static ON: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<BTreeMap<&'static str, Stat>> = Mutex::new(BTreeMap::new());

thread_local! {
    /// Time spent in the children of each open span, innermost last.
    static OPEN: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Accumulated time of one kind of layer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stat {
    /// Seconds, excluding nested spans.
    pub secs: f64,
    pub calls: u64,
    /// Multiply-accumulates, where the kind has a meaningful count (convolutions, linears).
    pub macs: u64,
}

/// Turns recording on or off (process-wide).
pub fn set_enabled(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether spans are being recorded (the batch split stays off while they are).
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Clears the totals.
pub fn reset() {
    if let Ok(mut t) = TOTALS.lock() {
        t.clear();
    }
}

/// The totals so far, by kind.
pub fn totals() -> BTreeMap<&'static str, Stat> {
    TOTALS.lock().map(|t| t.clone()).unwrap_or_default()
}

fn wait(device: &Device) {
    // A failed sync means the device is gone; the forward pass itself will report it.
    let _ = device.sync();
}

/// Runs `f` as one span of `kind`, adding `macs` to the kind's count.
pub fn span<T>(kind: &'static str, macs: u64, device: &Device, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    counted(kind, device, || (f(), macs))
}

/// A span of CPU work that returns when it is done (nothing to wait for): the backward
/// passes of committee's training ops, which run inside the autodiff graph's backward
/// (`committee bench --train --profile`).
pub fn host<T>(kind: &'static str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    timed(kind, None, || (f(), 0))
}

/// The profile name of a dense convolution's backward pass, from its kernel.
pub fn conv_backward_kind([kh, kw]: [usize; 2]) -> &'static str {
    match (kh, kw) {
        (1, 1) => "conv 1x1 backward",
        (3, 3) => "conv 3x3 backward",
        (7, 7) => "conv 7x7 backward",
        _ => "conv other backward",
    }
}

/// A span whose multiply-accumulates are known only once `f` has run (it returns them).
fn counted<T>(kind: &'static str, device: &Device, f: impl FnOnce() -> (T, u64)) -> T {
    timed(kind, Some(device), f)
}

/// [`counted`], waiting for `device` (if any) before and after `f`.
fn timed<T>(kind: &'static str, device: Option<&Device>, f: impl FnOnce() -> (T, u64)) -> T {
    if let Some(d) = device {
        wait(d);
    }
    OPEN.with(|o| o.borrow_mut().push(0.0));
    let t0 = Instant::now();
    let (out, macs) = f();
    if let Some(d) = device {
        wait(d);
    }
    let total = t0.elapsed().as_secs_f64();
    let children = OPEN.with(|o| o.borrow_mut().pop().unwrap_or(0.0));
    OPEN.with(|o| {
        if let Some(parent) = o.borrow_mut().last_mut() {
            *parent += total;
        }
    });
    if let Ok(mut t) = TOTALS.lock() {
        let s = t.entry(kind).or_default();
        s.secs += (total - children).max(0.0);
        s.calls += 1;
        s.macs += macs;
    }
    out
}

/// A span over a tensor-to-tensor layer (the device is the input's).
pub fn layer<const D: usize, const E: usize>(
    kind: &'static str,
    x: Tensor<D>,
    f: impl FnOnce(Tensor<D>) -> Tensor<E>,
) -> Tensor<E> {
    if !enabled() {
        return f(x);
    }
    let device = x.device();
    span(kind, 0, &device, || f(x))
}

/// The profile name of a convolution, from its kernel and groups.
pub fn conv_kind(conv: &Conv2d) -> &'static str {
    let [cout, cin_g, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    let depthwise = conv.groups > 1 && cin_g == 1 && conv.groups == cout;
    match (depthwise, kh, kw) {
        (true, 3, 3) => "conv depthwise 3x3",
        (true, 5, 5) => "conv depthwise 5x5",
        (true, _, _) => "conv depthwise other",
        (false, 1, 1) => "conv 1x1",
        (false, 3, 3) => "conv 3x3",
        (false, 7, 7) => "conv 7x7",
        (false, k, _) if conv.stride[0] == k && k > 1 => "conv patchify",
        (false, _, _) => "conv other",
    }
}

/// A convolution's forward `f` as a span, with the layer's multiply-accumulates.
pub fn conv_with(conv: &Conv2d, x: Tensor<4>, f: impl FnOnce(Tensor<4>) -> Tensor<4>) -> Tensor<4> {
    if !enabled() {
        return f(x);
    }
    let device = x.device();
    let [_, cin_g, kh, kw] = conv.weight.lazy_shape().dims::<4>();
    counted(conv_kind(conv), &device, || {
        let y = f(x);
        let [n, c, h, w] = y.dims();
        (y, (n * c * h * w * cin_g * kh * kw) as u64)
    })
}

/// The forward `f` of linear layers applied one after another (one, or an MLP's two) as a
/// span, with their multiply-accumulates.
pub fn linear<const D: usize>(
    kind: &'static str,
    lins: &[&burn::nn::Linear],
    x: Tensor<D>,
    f: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    if !enabled() {
        return f(x);
    }
    let device = x.device();
    let rows: usize = x.dims()[..D - 1].iter().product();
    let macs: usize = lins
        .iter()
        .map(|lin| {
            lin.weight
                .lazy_shape()
                .dims::<2>()
                .iter()
                .product::<usize>()
        })
        .sum();
    span(kind, (rows * macs) as u64, &device, || f(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test touches the process-wide switch, so the assertions cannot race each other.
    #[test]
    fn spans_exclude_children_and_count_calls() {
        let device = Device::flex();
        set_enabled(true);
        reset();
        span("outer", 0, &device, || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            span("inner", 5, &device, || {
                std::thread::sleep(std::time::Duration::from_millis(60))
            });
        });
        span("inner", 7, &device, || ());
        let conv = burn::nn::conv::Conv2dConfig::new([4, 4], [3, 3])
            .with_groups(4)
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let x = Tensor::<4>::zeros([2, 4, 5, 5], &device);
        let _ = conv_with(&conv, x, |x| conv.forward(x));
        set_enabled(false);
        let t = totals();
        let (outer, inner) = (t["outer"], t["inner"]);
        assert_eq!((outer.calls, inner.calls), (1, 2));
        assert_eq!(inner.macs, 12);
        // outer ran 30 ms itself and 60 ms in inner.
        assert!(outer.secs >= 0.029 && outer.secs < 0.085, "{outer:?}");
        assert!(inner.secs >= 0.059, "{inner:?}");
        // 2 images x 4 channels x 5 x 5 outputs x 9 taps, one input channel per group.
        let dw = t["conv depthwise 3x3"];
        assert_eq!((dw.calls, dw.macs), (1, 2 * 4 * 25 * 9));
        // Off: nothing is recorded.
        reset();
        span("outer", 0, &device, || ());
        assert!(totals().is_empty());
    }
}
