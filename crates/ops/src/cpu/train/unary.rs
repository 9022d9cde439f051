//! Elementwise activations with their own backward: one pass forward, one back.

use super::*;
use crate::act::Act;

/// `act(x)` on flex's autodiff device as one node; `Err(x)` when it does not apply.
/// Why: Burn composes GELU as `x / 2 * (1 + erf(x / sqrt 2))` and SiLU as `x sigmoid(x)`,
/// several elementwise ops each differentiated apart, ReLU and ReLU6 as masked fills
/// (at ViT-B/16, batch 8: 4.8 M elements per layer, per op). Here the forward writes `act(x)`
/// and keeps `act'(x)` in one pass ([`Isa::affine_act`]), the backward is one multiplication.
pub fn activation<const D: usize>(x: Tensor<D>, act: Act) -> Result<Tensor<D>, Tensor<D>> {
    if !applies(&x) {
        return Err(x);
    }
    let x = primitive(x);
    let xc = contiguous(x.primitive().clone());
    let shape = xc.layout().shape().clone();
    let src = slice(&xc);
    let isa = Isa::get();
    let (y, slope) = preloaded_pair(src.len(), CHUNK, |i, y, s| {
        isa.affine_act(&src[i * CHUNK..][..y.len()], [1.0, 0.0], act, y, s)
    });
    let y = FlexTensor::from_data(TensorData::new(y, shape));
    let out = match UnaryBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(slope, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok(Tensor::from_primitive::<Ad>(out))
}

#[derive(Debug)]
struct UnaryBackward;

impl Backward<Flex, 1> for UnaryBackward {
    /// The derivative at each input element.
    type State = Vec<f32>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        crate::profile::host("activation backward", move || {
            let [node] = ops.parents;
            let dy = contiguous(grads.consume::<Flex>(&ops.node));
            let Some(node) = node else { return };
            let shape = dy.layout().shape().clone();
            let mut dx = ops.state;
            dx.par_chunks_mut(CHUNK)
                .zip(slice(&dy).par_chunks(CHUNK))
                .for_each(|(g, dy)| {
                    for (g, &dy) in g.iter_mut().zip(dy) {
                        *g *= dy;
                    }
                });
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
        })
    }
}
