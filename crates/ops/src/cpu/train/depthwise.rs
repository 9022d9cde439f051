//! Depthwise convolution with its own backward, channels-last.

use super::*;

/// `conv(x)` for a depthwise `conv` on flex's autodiff device; `Err(x)` when it does not apply.
pub fn depthwise(conv: &Conv2d, x: Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [_, _, k, _] = conv.weight.lazy_shape().dims::<4>();
    let [n, c, h, w] = x.dims();
    if !(applies(&x) && conv.bias.is_none() && is_depthwise(conv, c)) {
        return Err(x);
    }
    let Some(win) = window(conv, [h, w]) else {
        return Err(x);
    };
    let geo = Geometry {
        h,
        w,
        ow: win.ow,
        k,
        s: conv.stride[0],
        pt: win.pt,
        pl: win.pl,
    };
    let shape = Shape {
        n,
        c,
        oh: win.oh,
        geo,
    };
    let (x, weight) = operands(conv, x)?;
    Ok(Tensor::from_primitive::<Ad>(node(x, weight, shape)))
}

/// Sizes of one depthwise convolution.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) oh: usize,
    pub(crate) geo: Geometry,
}

#[derive(Debug)]
pub(crate) struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    /// The padded channels-last input (the weight gradient reads it), the channels-last
    /// weight (the input gradient reads it).
    type State = (Vec<f32>, Vec<f32>, Shape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let (xp, wt, shape) = ops.state;
        let (dx, dw) = backward(slice(&dy), &xp, &wt, &shape, node_x.is_some());
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, dw);
        }
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, dx);
        }
    }
}

pub(crate) fn node(x: FloatTensor<Ad>, w: FloatTensor<Ad>, shape: Shape) -> FloatTensor<Ad> {
    let xc = contiguous(x.primitive().clone());
    let wc = contiguous(w.primitive().clone());
    let (xp, wt, y) = forward(slice(&xc), slice(&wc), &shape);
    match DepthwiseBackward
        .prepare::<NoCheckpointing>([x.node(), w.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((xp, wt, shape), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

// Layout: the kernels work channels-last (one image's pixels in rows of `c` channels), so every
// inner loop is a contiguous multiply-add over the channels, whatever the map size (MobileNetV2
// at 28 px has 1x1 to 14x14 maps, too small for per-plane loops to vectorise).

impl Shape {
    /// Padded rows and columns the taps reach.
    pub(crate) fn padded(&self) -> (usize, usize) {
        let g = &self.geo;
        ((self.oh - 1) * g.s + g.k, (g.ow - 1) * g.s + g.k)
    }
}

/// Returns the padded channels-last input, the channels-last weight and the output.
pub(crate) fn forward(x: &[f32], w: &[f32], s: &Shape) -> (Vec<f32>, Vec<f32>, FlexTensor) {
    let g = &s.geo;
    let (c, k) = (s.c, g.k);
    let (hp, wp) = s.padded();
    let (plane_in, plane_out) = (g.h * g.w, s.oh * g.ow);
    // w[c][tap] -> wt[tap][c]
    let mut wt = vec![0f32; k * k * c];
    for ch in 0..c {
        for t in 0..k * k {
            wt[t * c + ch] = w[ch * k * k + t];
        }
    }
    let mut xp = vec![0f32; s.n * hp * wp * c];
    let mut out = vec![0f32; s.n * c * plane_out];
    let isa = Isa::get();
    xp.par_chunks_mut(hp * wp * c)
        .zip(out.par_chunks_mut(c * plane_out))
        .enumerate()
        .for_each_init(Vec::new, |acc, (img, (xp, out))| {
            let x = &x[img * c * plane_in..(img + 1) * c * plane_in];
            to_padded_nhwc(x, xp, s);
            acc.clear();
            acc.resize(plane_out * c, 0.0);
            for oy in 0..s.oh {
                for ox in 0..g.ow {
                    let o = &mut acc[(oy * g.ow + ox) * c..][..c];
                    for ky in 0..k {
                        for kx in 0..k {
                            let (t, at) = (ky * k + kx, ((oy * g.s + ky) * wp + ox * g.s + kx) * c);
                            isa.fma(o, &wt[t * c..][..c], &xp[at..at + c]);
                        }
                    }
                }
            }
            from_nhwc(acc, out, c, plane_out);
        });
    let y = FlexTensor::from_data(TensorData::new(out, [s.n, s.c, s.oh, g.ow]));
    (xp, wt, y)
}

/// The input gradient (when asked for) and the weight gradient.
pub(crate) fn backward(
    dy: &[f32],
    xp: &[f32],
    wt: &[f32],
    s: &Shape,
    want_dx: bool,
) -> (Option<FlexTensor>, FlexTensor) {
    let g = &s.geo;
    let (c, k) = (s.c, g.k);
    let (hp, wp) = s.padded();
    let (plane_in, plane_out) = (g.h * g.w, s.oh * g.ow);
    let isa = Isa::get();
    let mut dx = vec![0f32; if want_dx { s.n * c * plane_in } else { 0 }];
    let per_image = |img: usize, dx: Option<&mut [f32]>, dw: &mut [f32], buf: &mut Buffers| {
        let xp = &xp[img * hp * wp * c..(img + 1) * hp * wp * c];
        buf.dyt.clear();
        buf.dyt.resize(plane_out * c, 0.0);
        to_nhwc(
            &dy[img * c * plane_out..(img + 1) * c * plane_out],
            &mut buf.dyt,
            c,
            plane_out,
        );
        if dx.is_some() {
            buf.dxp.clear();
            buf.dxp.resize(hp * wp * c, 0.0);
        }
        for oy in 0..s.oh {
            for ox in 0..g.ow {
                let d = &buf.dyt[(oy * g.ow + ox) * c..][..c];
                for ky in 0..k {
                    for kx in 0..k {
                        let (t, at) = (ky * k + kx, ((oy * g.s + ky) * wp + ox * g.s + kx) * c);
                        isa.fma(&mut dw[t * c..][..c], d, &xp[at..at + c]);
                        if dx.is_some() {
                            isa.fma(&mut buf.dxp[at..at + c], d, &wt[t * c..][..c]);
                        }
                    }
                }
            }
        }
        if let Some(dx) = dx {
            from_padded_nhwc(&buf.dxp, dx, s);
        }
    };
    // Each image's share of the weight gradient apart, then summed in image order: the same
    // bits whatever the thread count or scheduling (training runs are reproducible).
    let kkc = k * k * c;
    let mut shares = vec![0f32; s.n * kkc];
    if want_dx {
        dx.par_chunks_mut(c * plane_in)
            .zip(shares.par_chunks_mut(kkc))
            .enumerate()
            .for_each_init(Buffers::default, |buf, (img, (dx, dw))| {
                per_image(img, Some(dx), dw, buf)
            });
    } else {
        shares
            .par_chunks_mut(kkc)
            .enumerate()
            .for_each_init(Buffers::default, |buf, (img, dw)| {
                per_image(img, None, dw, buf)
            });
    }
    let mut dw_t = vec![0f32; kkc];
    dw_t.par_chunks_mut(c).enumerate().for_each(|(t, row)| {
        for img in 0..s.n {
            for (a, &b) in row.iter_mut().zip(&shares[img * kkc + t * c..][..c]) {
                *a += b;
            }
        }
    });
    // dw_t[tap][c] -> dw[c][1][k][k]
    let mut dw = vec![0f32; c * k * k];
    for ch in 0..c {
        for t in 0..k * k {
            dw[ch * k * k + t] = dw_t[t * c + ch];
        }
    }
    let dw = FlexTensor::from_data(TensorData::new(dw, [c, 1, k, k]));
    let dx = want_dx.then(|| FlexTensor::from_data(TensorData::new(dx, [s.n, c, g.h, g.w])));
    (dx, dw)
}

/// Per-thread scratch of the backward pass.
#[derive(Default)]
pub(crate) struct Buffers {
    pub(crate) dyt: Vec<f32>,
    pub(crate) dxp: Vec<f32>,
}

/// One image `x[c][h][w]` into the zeroed padded channels-last buffer `xp[hp][wp][c]`.
pub(crate) fn to_padded_nhwc(x: &[f32], xp: &mut [f32], s: &Shape) {
    let g = &s.geo;
    let (hp, wp) = s.padded();
    for ch in 0..s.c {
        for iy in 0..g.h.min(hp.saturating_sub(g.pt)) {
            let row = &x[(ch * g.h + iy) * g.w..][..g.w];
            for (ix, &v) in row.iter().enumerate().take(wp.saturating_sub(g.pl)) {
                xp[((iy + g.pt) * wp + ix + g.pl) * s.c + ch] = v;
            }
        }
    }
}

/// The inverse of [`to_padded_nhwc`] for a gradient: the padding's share is dropped.
pub(crate) fn from_padded_nhwc(xp: &[f32], x: &mut [f32], s: &Shape) {
    let g = &s.geo;
    let (hp, wp) = s.padded();
    for ch in 0..s.c {
        for iy in 0..g.h.min(hp.saturating_sub(g.pt)) {
            let row = &mut x[(ch * g.h + iy) * g.w..][..g.w];
            for (ix, v) in row.iter_mut().enumerate().take(wp.saturating_sub(g.pl)) {
                *v = xp[((iy + g.pt) * wp + ix + g.pl) * s.c + ch];
            }
        }
    }
}

/// `a[c][p]` into `t[p][c]`.
pub(crate) fn to_nhwc(a: &[f32], t: &mut [f32], c: usize, plane: usize) {
    for ch in 0..c {
        for (p, &v) in a[ch * plane..(ch + 1) * plane].iter().enumerate() {
            t[p * c + ch] = v;
        }
    }
}

/// `t[p][c]` into `a[c][p]`.
pub(crate) fn from_nhwc(t: &[f32], a: &mut [f32], c: usize, plane: usize) {
    for ch in 0..c {
        for (p, v) in a[ch * plane..(ch + 1) * plane].iter_mut().enumerate() {
            *v = t[p * c + ch];
        }
    }
}
