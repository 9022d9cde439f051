//! The optimiser step alone, committee's one-pass update against Burn's, alternated step by
//! step in one process on a model's real gradients (one forward and backward at 64 px, batch
//! 2, before each timed step): SGD with momentum 0.9 and weight decay 5e-4
//! (`committee_train::optim::Sgd` against Burn's `Sgd`), or with `adamw` AdamW with weight
//! decay 0.05 (`optim::AdamW` against Burn's `AdamW`):
//! `cargo run --release -p committee-train --example optim_rate -- MODEL [ROUNDS] [adamw]`.
//! Prints the fastest step of each and the median of the per-round ratios; PyTorch's
//! `torch.optim` step on the same model: `scripts/torch_optim_rate.py`.

use std::time::Instant;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use committee_train::mixed;
use committee_train::optim::{AdamW, Sgd};
use committee_zoo::weights::random_model;
use committee_zoo::{CommonOptions, registry};

fn main() {
    committee_ops::heap::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("resnet50", String::as_str);
    let rounds: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(6);
    let Some(spec) = registry::get(name) else {
        eprintln!("unknown model {name}");
        std::process::exit(2);
    };
    let ad = Device::flex().autodiff();
    let start = random_model(&spec, &CommonOptions::default(), [64; 2], &ad);
    let m = MomentumConfig {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
    };
    let adamw = args.get(3).is_some_and(|a| a == "adamw");
    let mut optims = match adamw {
        false => [
            SgdConfig::new()
                .with_momentum(Some(m.clone()))
                .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
                .init(),
            ModuleOptimizer::from(Sgd::new(Some(&m), Some(5e-4))),
        ],
        true => [
            AdamWConfig::new()
                .with_weight_decay(0.05)
                .with_epsilon(1e-8)
                .init(),
            ModuleOptimizer::from(AdamW::new(1e-8, 0.05)),
        ],
    };
    let what = if adamw { "AdamW" } else { "Sgd" };
    let mut models = [Some(start.clone()), Some(start)];
    let x = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &ad);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1], [2]), &ad);
    let (mut best, mut ratios) = ([f64::MAX; 2], Vec::new());
    // Round 0 creates both optimisers' velocities; then Burn's step, ours, Burn's, ...
    for round in 0..=rounds {
        let mut t = [0.0; 2];
        for (side, (model, optim)) in models.iter_mut().zip(&mut optims).enumerate() {
            let current = model.take().expect("a model between steps");
            let logits = mixed::forward(&current, x.clone(), None);
            let loss = committee_train::loss::cross_entropy(logits, y.clone(), 0.0);
            let grads = mixed::grads(loss, &current, None).expect("f32 gradients");
            // The step takes the only copy of the model, as the trainer's does.
            let s = Instant::now();
            *model = Some(optim.step(0.01, current, grads));
            t[side] = s.elapsed().as_secs_f64() * 1e3;
        }
        if round > 0 {
            best = [best[0].min(t[0]), best[1].min(t[1])];
            ratios.push(t[0] / t[1]);
        }
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "{name}: Burn's {what} {:.1} ms, committee's {:.1} ms (fastest); Burn's / ours per round median {:.2}x ({:.2}-{:.2})",
        best[0],
        best[1],
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
