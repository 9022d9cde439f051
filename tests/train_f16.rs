//! Mixed-precision f16 training (`--dtype f16` on GPU backends, `committee_train::mixed`) on
//! wgpu (lavapipe in CI): one step from the same initialisation in f32 and in mixed f16 must
//! move every weight and BatchNorm running statistic the same way within f16's precision;
//! the master weights and running statistics stay f32; a step whose scaled gradients
//! overflow leaves the model untouched and halves the scale; and each training op on its own
//! gives in f16 what it gives in f32, forward and backward. The precision (and the device's
//! random generator) is process-wide, so this file holds a single test.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::Conv2dConfig;
use burn::nn::{BatchNormConfig, LayerNormConfig, PaddingConfig2d};
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use committee_ops::Act;
use committee_ops::backend::{BackendKind, select};
use committee_ops::precision::{self, Dtype};
use committee_train::mixed::{self, LossScale};
use committee_train::{TrainConfig, trainer};
use committee_zoo::{CommonOptions, Model, export, registry};

type Weights = BTreeMap<String, Vec<f32>>;

fn weights(model: &Model) -> Weights {
    let (tensors, _) = export::state_dict(&model.valid());
    tensors.into_iter().map(|t| (t.name, t.data)).collect()
}

/// Float tensors (parameters and running statistics) that are not f32.
fn not_f32(model: &Model) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 += usize::from(param.val().dtype() != DType::F32);
        }
    }
    let mut c = Count(0);
    model.visit(&mut c);
    c.0
}

/// A fresh model of seed 7 (the same initialisation on every call).
fn fresh(name: &str, dev: &Device) -> Model {
    let spec = registry::get(name).expect("registry model");
    let opts = CommonOptions {
        num_classes: 10,
        in_chans: 3,
        ..Default::default()
    };
    dev.seed(7);
    Model::new(&spec.arch, [64, 64], &opts, dev)
}

/// One SGD step (lr 0.1, label smoothing 0.1) from [`fresh`]: the loss and the model after it.
fn one_step(
    name: &str,
    dev: &Device,
    x: &Tensor<4>,
    labels: &[i64],
    scale: Option<&mut LossScale>,
) -> (f64, Model) {
    let cfg = TrainConfig::new("m", Path::new("."));
    let (model, mut optim) = trainer::prepare(fresh(name, dev), &cfg);
    let (model, loss, _) =
        trainer::step_scaled(model, &mut optim, x.clone(), labels, 0.1, 0.1, scale);
    (loss, model)
}

/// `|a - b| / |b|` over whole tensors (Euclidean norms).
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut n) = (0f64, 0f64);
    for (p, q) in a.iter().zip(b) {
        d += (f64::from(*p) - f64::from(*q)).powi(2);
        n += f64::from(*q).powi(2);
    }
    (d / n.max(1e-30)).sqrt()
}

#[test]
fn mixed_f16_steps_match_f32_steps_within_half_precision() {
    let Ok(sel) = select(BackendKind::Wgpu) else {
        panic!("no wgpu adapter (CI installs lavapipe: scripts/setup.sh)");
    };
    let dev = sel.device.clone().autodiff();
    // From the working directory (the repository's root, under cargo and on a lent GPU
    // machine, where `scripts/gpu_session.sh` runs this binary), else where it was built.
    let fixture = "tests/fixtures/train/f16_pytorch.json";
    let text = std::fs::read_to_string(fixture)
        .or_else(|_| std::fs::read_to_string(format!("{}/{fixture}", env!("CARGO_MANIFEST_DIR"))))
        .expect("fixture");
    let reference: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(dev.supports_dtype(DType::F16), "lavapipe has f16 shaders");
    training_ops_in_f16_match_f32(&dev);
    // MobileNetV2 (BatchNorm, depthwise, ReLU6) and ViT-Ti (LayerNorm, attention, GELU).
    for name in ["vit_tiny_patch16_224", "mobilenetv2_035"] {
        dev.seed(11);
        let x = Tensor::<4>::random([8, 3, 64, 64], Distribution::Normal(0.0, 1.0), &dev);
        let labels = [0, 3, 5, 7, 9, 1, 2, 2];

        precision::set(Dtype::F32).expect("f32");
        let init = weights(&fresh(name, &dev));
        assert!(
            init == weights(&fresh(name, &dev)),
            "{name}: seeded initialisation"
        );
        let (loss32, m32) = one_step(name, &dev, &x, &labels, None);
        let w32 = weights(&m32);

        precision::set(Dtype::F16).expect("f16");
        // 2^10: the first steps of these models overflow f16 at GradScaler's initial 2^16
        // and 2^14 (activation gradients of 4-16 at 64 px); a run would skip two steps.
        let mut scale = LossScale {
            scale: 1024.0,
            ..LossScale::default()
        };
        let (loss16, m16) = one_step(name, &dev, &x, &labels, Some(&mut scale));
        assert_eq!(
            not_f32(&m16),
            0,
            "{name}: master weights and statistics stay f32"
        );
        assert_eq!(scale.skipped, 0, "{name}: 2^10 overflowed");
        let w16 = weights(&m16);
        assert!(
            (loss16 - loss32).abs() < 1e-2 * loss32,
            "{name}: loss {loss16} in f16, {loss32} in f32"
        );
        // Each tensor's change (the update, or the running statistic's step) against f32's,
        // summarised as PyTorch's own f16 step is (scripts/f16_train_reference.py).
        let mut rels: Vec<f64> = init
            .iter()
            .filter_map(|(k, w0)| {
                let delta =
                    |w: &Weights| -> Vec<f32> { w[k].iter().zip(w0).map(|(a, b)| a - b).collect() };
                let (d16, d32) = (delta(&w16), delta(&w32));
                d32.iter().any(|v| *v != 0.0).then(|| rel(&d16, &d32))
            })
            .collect();
        rels.sort_by(f64::total_cmp);
        let (median, max) = (rels[rels.len() / 2], rels[rels.len() - 1]);
        let torch = &reference["models"][name];
        let (t_median, t_max) = (
            torch["update_rel_median"].as_f64().expect("median"),
            torch["update_rel_max"].as_f64().expect("max"),
        );
        eprintln!(
            "{name}: loss {loss16} vs {loss32}; update distance median {median:.3e} (PyTorch \
             {t_median:.3e}), largest {max:.3e} (PyTorch {t_max:.3e})"
        );
        assert!(
            median <= BOUND * t_median,
            "{name}: median update distance {median:.3e}, PyTorch's {t_median:.3e}"
        );
        // MobileNetV2's largest distances are tensors that f32 hardly moves (a BatchNorm bias
        // before a residual sum: updates of 1e-9), PyTorch's too (2e3): only ViT's bounds it.
        if name.starts_with("vit") {
            assert!(
                max <= BOUND * t_max,
                "{name}: largest update distance {max:.3e}, PyTorch's {t_max:.3e}"
            );
        }

        // A scale whose gradients overflow f16: the step is skipped, the scale halved.
        let mut huge = LossScale {
            scale: 1e30,
            ..LossScale::default()
        };
        let (_, skipped) = one_step(name, &dev, &x, &labels, Some(&mut huge));
        assert_eq!(
            (huge.skipped, huge.scale, huge.good_steps),
            (1, 5e29, 0),
            "{name}"
        );
        // (The forward still updated BatchNorm's running statistics, as PyTorch's does.)
        for (k, w) in weights(&skipped) {
            if !k.contains("running") {
                assert_eq!(w, init[&k], "{name}: {k} changed by a skipped step");
            }
        }
    }
    precision::set(Dtype::F32).expect("f32");
}

/// How much farther from f32's step than PyTorch's own f16 step ours may be (ViT-Ti: 1.5x
/// the median, 1.65x the largest; docs/training.md).
const BOUND: f64 = 2.0;

/// `m`, or its f16 view when `half` (`mixed::half_view`, as a training step casts a model).
fn maybe_half<M: Module>(m: &M, half: bool) -> M {
    match half {
        true => mixed::half_view(m),
        false => m.clone(),
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.cast(FloatDType::F32)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32")
}

/// Largest `|a - b|` over the largest `|b|`.
fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let d = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    d / b.iter().fold(0f32, |m, q| m.max(q.abs()))
}

/// Each op a training step runs on GPUs, on an f16 input (and f16 parameters) against the
/// f32 one: output and input gradient within a few f16 roundings (2^-11 = 4.9e-4). Why: Burn
/// 0.22 on wgpu multiplies an f16 tensor by an f32 one without complaint, into garbage; the
/// ReLU6 gradient mask (built in f32) did that (relative error 1.7 before the fix).
fn training_ops_in_f16_match_f32(dev: &Device) {
    dev.seed(3);
    let x0 = Tensor::<4>::random([8, 16, 12, 12], Distribution::Normal(0.0, 2.0), dev);
    let dy = Tensor::<4>::random([8, 16, 12, 12], Distribution::Normal(0.0, 1.0), dev);
    let check = |name: &str, f: &dyn Fn(Tensor<4>, bool) -> Tensor<4>| {
        let mut out = Vec::new();
        for half in [false, true] {
            let x = x0.clone().detach().require_grad();
            let xi = if half {
                x.clone().cast(FloatDType::F16)
            } else {
                x.clone()
            };
            let y = f(xi, half).cast(FloatDType::F32);
            let grads = (y.clone() * dy.clone()).sum().backward();
            let dx = values(x.grad(&grads).expect("input gradient"));
            out.push((values(y), dx));
        }
        let (ey, edx) = (max_rel(&out[1].0, &out[0].0), max_rel(&out[1].1, &out[0].1));
        assert!(
            ey < 4e-3 && edx < 4e-3,
            "{name}: output {ey:.2e}, input gradient {edx:.2e}"
        );
    };
    for (k, groups) in [(3, 1), (3, 16), (1, 1)] {
        let conv = Conv2dConfig::new([16, 16], [k, k])
            .with_groups(groups)
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
            .init(dev);
        check(&format!("conv {k}x{k} groups {groups}"), &|x, half| {
            committee_ops::conv2d(&maybe_half(&conv, half), x)
        });
    }
    let bn = BatchNormConfig::new(16).init(dev);
    check("batchnorm", &|x, half| {
        committee_ops::batch_norm(&maybe_half(&bn, half), x)
    });
    let ln = LayerNormConfig::new(12).init(dev);
    check("layernorm", &|x, half| {
        committee_ops::layer_norm(&maybe_half(&ln, half), 1e-5, x)
    });
    for act in [Act::Relu, Act::Relu6, Act::Silu, Act::Gelu] {
        check(&format!("{act:?}"), &|x, _| act.apply(x));
    }
}
