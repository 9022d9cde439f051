//! SGD and AdamW for Burn's `ModuleOptimizer` through committee's one-pass updates
//! ([`committee_ops::optim`]).
//!
//! Why: Burn's `Sgd` runs momentum and weight decay as six tensor passes per parameter (2-7 %
//! of a training step on a CPU, twice what `torch.optim.SGD` takes), its `AdamW` a dozen.
//! These give Burn's bits, and record their state as Burn's do (`Sgd`: under the names
//! Burn's `SgdState` uses, `<prefix>.momentum.velocity`; `AdamW`: Burn's own `AdamWState`),
//! so a checkpoint written with either resumes with the other.

use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdamWState, AdaptiveMomentumState, LearningRate, Optimizer, RecordState, StateSink,
    StateSource, join_path,
};
use burn::tensor::{Device, Tensor};
use committee_ops::optim::{AdamWStep, Momentum, SgdStep};

/// SGD with optional momentum (PyTorch's semantics: the first step's velocity is the
/// gradient) and L2 weight decay.
#[derive(Debug, Clone, Copy)]
pub struct Sgd {
    momentum: Option<Momentum>,
    weight_decay: Option<f32>,
}

impl Sgd {
    /// `momentum` as Burn's `MomentumConfig` takes it; `weight_decay` the L2 penalty.
    pub fn new(momentum: Option<&MomentumConfig>, weight_decay: Option<f32>) -> Sgd {
        Sgd {
            momentum: momentum.map(|m| Momentum {
                momentum: m.momentum as f32,
                keep: (1.0 - m.dampening) as f32,
                nesterov: m.nesterov,
            }),
            weight_decay,
        }
    }
}

/// One parameter's velocity (none without momentum).
#[derive(Clone)]
pub struct SgdVelocity<const D: usize> {
    velocity: Option<Tensor<D>>,
}

/// Where Burn's `SgdState` keeps the velocity, under a parameter's prefix.
fn momentum_path(prefix: &str) -> String {
    join_path(prefix, "momentum")
}

impl<const D: usize> RecordState for SgdVelocity<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(v) = &self.velocity {
            out.push_tensor(&momentum_path(prefix), "velocity", v.clone().into_data());
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let path = momentum_path(prefix);
        let velocity = match src.has_under(&path) {
            true => Some(Tensor::from_data(
                src.take_tensor(&path, "velocity")?,
                device,
            )),
            false => None,
        };
        Some(SgdVelocity { velocity })
    }
}

impl Optimizer for Sgd {
    type State<const D: usize> = SgdVelocity<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let h = SgdStep {
            lr: lr as f32,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
        };
        let velocity = state.and_then(|s| s.velocity);
        let (tensor, velocity) = match h.momentum {
            Some(_) => committee_ops::optim::sgd(tensor, grad, velocity, &h),
            // A recorded velocity stays as it was (as Burn's `Sgd` keeps it).
            None => (
                committee_ops::optim::sgd(tensor, grad, None, &h).0,
                velocity,
            ),
        };
        (tensor, Some(SgdVelocity { velocity }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        SgdVelocity {
            velocity: state.velocity.map(|v| v.to_device(device)),
        }
    }
}

/// AdamW (decoupled weight decay) through committee's one-pass update
/// ([`committee_ops::optim::adamw`]), with Burn's `AdamW`'s state (`AdamWState`): records
/// are Burn's own.
#[derive(Debug, Clone, Copy)]
pub struct AdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl AdamW {
    /// Burn's `AdamWConfig` defaults for the betas (0.9, 0.999).
    pub fn new(epsilon: f32, weight_decay: f32) -> AdamW {
        AdamW {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon,
            weight_decay,
        }
    }
}

impl Optimizer for AdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // AMSGrad (an option of Burn's, off by default and in the trainer) has no maximum here.
        let (time, moments) = match state {
            Some(s) => (
                s.momentum.time + 1,
                Some([s.momentum.moment_1, s.momentum.moment_2]),
            ),
            None => (1, None),
        };
        let h = AdamWStep {
            lr: lr as f32,
            decay_rate: lr * self.weight_decay as f64,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            time,
        };
        let [tensor, m1, m2] = committee_ops::optim::adamw(tensor, grad, moments, &h);
        let momentum = AdaptiveMomentumState::new(time, m1, m2);
        (tensor, Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        let m = state.momentum;
        let momentum = AdaptiveMomentumState::new(
            m.time,
            m.moment_1.to_device(device),
            m.moment_2.to_device(device),
        );
        AdamWState::new(momentum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::conv::{Conv2d, Conv2dConfig};
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
    use burn::tensor::Distribution;

    /// Parameters of ranks 1, 2 and 4.
    #[derive(Module, Debug)]
    struct Net {
        lin: Linear,
        conv: Conv2d,
    }

    fn net(device: &Device) -> Net {
        Net {
            lin: LinearConfig::new(7, 5).init(device),
            conv: Conv2dConfig::new([3, 4], [3, 3]).init(device),
        }
    }

    /// One step's inputs (the same for both optimisers compared).
    struct Batch {
        x: Tensor<2>,
        img: Tensor<4>,
    }

    fn batch(device: &Device) -> Batch {
        let normal = Distribution::Normal(0.0, 1.0);
        Batch {
            x: Tensor::random([3, 7], normal, device),
            img: Tensor::random([2, 3, 6, 6], normal, device),
        }
    }

    /// A loss's gradients for `net` on `b`.
    fn grads(net: &Net, b: &Batch) -> GradientsParams {
        let loss = net.lin.forward(b.x.clone()).powf_scalar(2.0).sum()
            + net.conv.forward(b.img.clone()).sum();
        GradientsParams::from_grads(loss.backward(), net)
    }

    /// Every parameter's bits.
    fn bits(net: &Net) -> Vec<u32> {
        let tensors = [
            net.lin.weight.val().into_data(),
            net.lin.bias.as_ref().expect("bias").val().into_data(),
            net.conv.weight.val().into_data(),
            net.conv.bias.as_ref().expect("bias").val().into_data(),
        ];
        tensors
            .iter()
            .flat_map(|d| d.iter::<f32>().map(f32::to_bits).collect::<Vec<_>>())
            .collect()
    }

    /// The variants the trainer and `bench` use, and the rest of PyTorch's options.
    fn variants() -> Vec<(Option<MomentumConfig>, Option<f32>)> {
        let m = |momentum, dampening, nesterov| {
            Some(MomentumConfig {
                momentum,
                dampening,
                nesterov,
            })
        };
        vec![
            (None, None),
            (None, Some(5e-4)),
            (m(0.9, 0.0, false), None),
            (m(0.9, 0.0, false), Some(5e-4)),
            (m(0.9, 0.0, true), Some(1e-2)),
            (m(0.8, 0.1, false), None),
        ]
    }

    fn burns(momentum: &Option<MomentumConfig>, wd: Option<f32>) -> ModuleOptimizer {
        SgdConfig::new()
            .with_momentum(momentum.clone())
            .with_weight_decay(wd.map(WeightDecayConfig::new))
            .init()
    }

    /// Four steps (the first creates the velocity) give the same bits as Burn's `Sgd`, on
    /// committee's kernel (flex) and on Burn's tensor ops (`--flex-kernels` without `train`
    /// reaches those: here called directly), for every variant.
    #[test]
    fn sgd_steps_match_burns_bit_for_bit() {
        let device = Device::flex().autodiff();
        for (momentum, wd) in variants() {
            let ours = ModuleOptimizer::from(Sgd::new(momentum.as_ref(), wd));
            let theirs = burns(&momentum, wd);
            let start = net(&device);
            let (mut a, mut b) = (start.clone(), start.clone());
            let (mut oa, mut ob) = (ours, theirs);
            for step in 0..4 {
                let input = batch(&device);
                let (ga, gb) = (grads(&a, &input), grads(&b, &input));
                a = oa.step(0.05, a, ga);
                b = ob.step(0.05, b, gb);
                assert_eq!(bits(&a), bits(&b), "{momentum:?} wd {wd:?} step {step}");
            }
            assert_ne!(
                bits(&a),
                bits(&start),
                "{momentum:?} wd {wd:?}: nothing moved"
            );
        }
        // The tensor-ops path alone, one tensor, against the kernel: same bits.
        let dev = Device::flex();
        let t = |seed: f32| {
            Tensor::<2>::random([9, 33], Distribution::Normal(0.0, 1.0), &dev).mul_scalar(seed)
        };
        for (momentum, wd) in variants() {
            let Sgd {
                momentum,
                weight_decay,
            } = Sgd::new(momentum.as_ref(), wd);
            let h = SgdStep {
                lr: 0.05,
                weight_decay,
                momentum,
            };
            let (p, g, v) = (t(1.0), t(2.0), momentum.map(|_| t(3.0)));
            let want = committee_ops::optim::sgd_tensor_ops(p.clone(), g.clone(), v.clone(), &h);
            let got = committee_ops::optim::sgd(p, g, v, &h);
            let flat = |(p, v): (Tensor<2>, Option<Tensor<2>>)| {
                let mut d = p.into_data().try_into_vec::<f32>().expect("f32");
                d.extend(v.map_or(Vec::new(), |v| {
                    v.into_data().try_into_vec::<f32>().expect("f32")
                }));
                d.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(flat(got), flat(want), "{h:?}");
        }
    }

    /// The update writes in place only what no one else holds: a clone of the model taken
    /// before a step (as the trainer keeps its best weights) keeps its values.
    #[test]
    fn a_step_leaves_a_shared_parameter_as_it_was() {
        let device = Device::flex().autodiff();
        let m = MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        };
        let mut optim = ModuleOptimizer::from(Sgd::new(Some(&m), Some(1e-3)));
        let mut net = net(&device);
        for step in 0..3 {
            let kept = net.clone();
            let before = bits(&kept);
            let g = grads(&net, &batch(&device));
            net = optim.step(0.1, net, g);
            assert_eq!(bits(&kept), before, "step {step}: the kept copy changed");
            assert_ne!(bits(&net), before, "step {step}: nothing moved");
        }
    }

    /// A record written with Burn's `Sgd` resumes with this one and the reverse: two more
    /// steps after the round trip give the bits the first optimiser gives.
    #[test]
    fn records_load_across_burns_sgd_and_this_one() {
        let device = Device::flex().autodiff();
        let m = Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
        });
        let wd = Some(5e-4);
        let ours = || ModuleOptimizer::from(Sgd::new(m.as_ref(), wd));
        for burn_first in [true, false] {
            let (mut first, second) = match burn_first {
                true => (burns(&m, wd), ours()),
                false => (ours(), burns(&m, wd)),
            };
            let mut a = net(&device);
            for _ in 0..2 {
                let g = grads(&a, &batch(&device));
                a = first.step(0.05, a, g);
            }
            let mut resumed = second.load_record(first.to_record());
            let mut b = a.clone();
            for step in 2..4 {
                let input = batch(&device);
                let (ga, gb) = (grads(&a, &input), grads(&b, &input));
                a = first.step(0.05, a, ga);
                b = resumed.step(0.05, b, gb);
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "Burn's first: {burn_first}, step {step}"
                );
            }
        }
    }

    fn burns_adamw(wd: f32) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_weight_decay(wd)
            .with_epsilon(1e-8)
            .init()
    }

    /// Four AdamW steps (the first creates the moments) give the bits of Burn's `AdamW`, with
    /// and without decay, on the kernel and on the tensor-ops path; a record written by
    /// either resumes with the other, two more steps giving the first one's bits.
    #[test]
    fn adamw_steps_and_records_match_burns() {
        let device = Device::flex().autodiff();
        for wd in [0.0, 0.05] {
            let start = net(&device);
            let (mut a, mut b) = (start.clone(), start.clone());
            let (mut oa, mut ob) = (ModuleOptimizer::from(AdamW::new(1e-8, wd)), burns_adamw(wd));
            for step in 0..4 {
                let input = batch(&device);
                let (ga, gb) = (grads(&a, &input), grads(&b, &input));
                a = oa.step(1e-3, a, ga);
                b = ob.step(1e-3, b, gb);
                assert_eq!(bits(&a), bits(&b), "wd {wd} step {step}");
            }
            assert_ne!(bits(&a), bits(&start), "wd {wd}: nothing moved");
            // Across: ours resumed by Burn's and Burn's by ours.
            let (mut ra, mut rb) = (
                burns_adamw(wd).load_record(oa.to_record()),
                ModuleOptimizer::from(AdamW::new(1e-8, wd)).load_record(ob.to_record()),
            );
            let (mut a2, mut b2) = (a.clone(), b.clone());
            for step in 4..6 {
                let input = batch(&device);
                let g = |m: &Net| grads(m, &input);
                let (g1, g2, g3, g4) = (g(&a), g(&a2), g(&b), g(&b2));
                a = oa.step(1e-3, a, g1);
                a2 = ra.step(1e-3, a2, g2);
                b = ob.step(1e-3, b, g3);
                b2 = rb.step(1e-3, b2, g4);
                assert_eq!(
                    bits(&a2),
                    bits(&a),
                    "ours resumed by Burn's, wd {wd} step {step}"
                );
                assert_eq!(
                    bits(&b2),
                    bits(&b),
                    "Burn's resumed by ours, wd {wd} step {step}"
                );
            }
        }
        // The tensor-ops path alone against the kernel, first and later steps.
        let dev = Device::flex();
        let t = |s: f32| {
            Tensor::<2>::random([9, 33], Distribution::Normal(0.0, 1.0), &dev).mul_scalar(s)
        };
        for (time, decay_rate) in [(1, 0.0), (1, 5e-5), (3, 5e-5)] {
            let h = AdamWStep {
                lr: 1e-3,
                decay_rate,
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-8,
                time,
            };
            let (p, g) = (t(1.0), t(0.1));
            let moments = (time > 1).then(|| [t(0.01), t(0.001).abs()]);
            let flat = |r: [Tensor<2>; 3]| -> Vec<u32> {
                r.into_iter()
                    .flat_map(|x| {
                        x.into_data()
                            .iter::<f32>()
                            .map(f32::to_bits)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            let want =
                committee_ops::optim::adamw_tensor_ops(p.clone(), g.clone(), moments.clone(), &h);
            let got = committee_ops::optim::adamw(p, g, moments, &h);
            assert_eq!(flat(got), flat(want), "{h:?}");
        }
    }
}
