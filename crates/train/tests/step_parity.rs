//! `committee train`'s optimiser step against PyTorch's (fixtures: `python
//! scripts/make_fixtures.py --only training`): a reduced timm ResNet from timm's own init,
//! three steps on one batch with train-mode BatchNorm, label smoothing 0.1, weight decay only
//! on conv/linear weights and a different learning rate per step; SGD with momentum (no
//! dampening), AdamW and RMSProp. Losses, every weight and every BN running statistic must
//! agree with PyTorch's f32 result.
//!
//! The tolerance comes from the reference itself: the fixture records, per tensor, how far
//! PyTorch's f32 result is from its f64 result. A tensor may differ from PyTorch by a few times
//! that noise plus 2e-5 of its scale, which keeps well-conditioned tensors tight and lets the
//! few ill-conditioned ones (a bias whose true gradient is zero, which Adam turns into full
//! steps of rounding noise) differ as much as PyTorch differs from itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use committee_train::{OptKind, TrainConfig, trainer};
use committee_zoo::checkpoint::{Checkpoint, RawTensor, parse_safetensors};
use committee_zoo::registry::Arch;
use committee_zoo::resnet::{ResBlockKind, ResNetArch};
use committee_zoo::{CommonOptions, Model, export, weights};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/train")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn take(ck: &mut Checkpoint, name: &str) -> RawTensor {
    ck.tensors
        .remove(name)
        .unwrap_or_else(|| panic!("fixture lacks {name}"))
}

fn labels(bytes: &[u8]) -> Vec<i64> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor("__labels__").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::I64);
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn check(opt: OptKind, name: &str) {
    let init_bytes = fixture("resnet_basic.init.safetensors");
    let mut init = parse_safetensors(&init_bytes).unwrap();
    let x = take(&mut init, "__input__");
    let y = labels(&init_bytes);
    let mut want =
        parse_safetensors(&fixture(&format!("resnet_basic.{name}.safetensors"))).unwrap();
    let losses = take(&mut want, "__losses__").data;
    let lrs = take(&mut want, "__lrs__").data;
    let wd = take(&mut want, "__weight_decay__").data[0];
    let noise: BTreeMap<String, f32> = want
        .tensors
        .iter()
        .filter_map(|(k, t)| k.strip_prefix("noise.").map(|k| (k.to_string(), t.data[0])))
        .collect();
    want.tensors.retain(|k, _| !k.starts_with("noise."));

    let dev = committee_ops::backend::cpu_device().autodiff();
    let arch = Arch::ResNet(ResNetArch {
        block: ResBlockKind::Basic,
        layers: [1, 1, 1, 1],
        channels: [8, 16, 32, 64],
    });
    let opts = CommonOptions {
        num_classes: 10,
        in_chans: 1,
        ..Default::default()
    };
    let model = weights::apply(Model::new(&arch, [32, 32], &opts, &dev), init).unwrap();
    let mut cfg = TrainConfig::new("resnet_basic", Path::new("."));
    cfg.opt = opt;
    cfg.momentum = 0.9;
    cfg.weight_decay = Some(wd as f64);
    let (mut model, mut optim) = trainer::prepare(model, &cfg);
    let xt = Tensor::<4>::from_data(TensorData::new(x.data, x.shape), &dev);
    for (i, (&lr, &want_loss)) in lrs.iter().zip(&losses).enumerate() {
        let (next, loss, _) = trainer::step(model, &mut optim, xt.clone(), &y, lr as f64, 0.1);
        model = next;
        let rel = (loss - want_loss as f64).abs() / want_loss as f64;
        assert!(
            rel < 1e-5,
            "{name} step {i}: loss {loss} vs PyTorch {want_loss}"
        );
    }

    let (got, _) = export::state_dict(&model.valid());
    let got: BTreeMap<String, export::NamedTensor> =
        got.into_iter().map(|t| (t.name.clone(), t)).collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.tensors.keys().collect::<Vec<_>>(),
        "{name}: tensor names"
    );
    let mut worst = (0.0f32, String::new());
    for (k, w) in &want.tensors {
        let g = &got[k];
        assert_eq!(g.shape, w.shape, "{k}");
        let scale = w.data.iter().fold(0f32, |a, v| a.max(v.abs()));
        let tol = 4.0 * noise[k] + 2e-5 * scale.max(1e-3);
        let diff = g
            .data
            .iter()
            .zip(&w.data)
            .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(
            diff <= tol,
            "{name}: {k} differs from PyTorch by {diff:e} (tolerance {tol:e}, PyTorch f32-vs-f64 noise {:e}, scale {scale})",
            noise[k]
        );
        if diff / tol > worst.0 {
            worst = (diff / tol, k.clone());
        }
    }
    eprintln!(
        "{name}: {} tensors agree; closest to its tolerance: {} at {:.2} of it",
        want.tensors.len(),
        worst.1,
        worst.0
    );
}

#[test]
fn sgd_momentum_steps_match_pytorch() {
    check(OptKind::Sgd, "sgd");
}

#[test]
fn adamw_steps_match_pytorch() {
    check(OptKind::Adamw, "adamw");
}

#[test]
fn rmsprop_steps_match_pytorch() {
    check(OptKind::Rmsprop, "rmsprop");
}
