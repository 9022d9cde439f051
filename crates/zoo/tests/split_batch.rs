//! A batch split over the threads (`kernels::split_batch`, on by default on flex) gives the
//! logits of the images run one by one. ResNets and a ViT with random weights: random
//! MobileNetV2 / EfficientNet weights make every image's logits equal (their activations
//! vanish), so those are checked on timm checkpoints against PyTorch instead
//! (tests/parity.rs, `parity_flex_batchnorm_folded`).

use burn::tensor::{Device, Distribution, Tensor};
use committee_ops::cpu::split_batch;
use committee_zoo::weights::random_model;
use committee_zoo::{CommonOptions, registry};

#[test]
fn split_batch_gives_each_images_own_logits() {
    let device = Device::flex();
    // Two threads whatever the machine has: the split needs at least two.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a 2-thread pool");
    pool.install(|| {
        for name in ["resnet18", "resnet50", "vit_tiny_patch16_224"] {
            let spec = registry::get(name).expect("in the registry");
            let model =
                random_model(&spec, &CommonOptions::default(), [64, 64], &device).fold_batchnorm();
            // 4 images: 2 per thread; 12: 6 per thread, each run as two pieces of 3; 3 and
            // 5: 1 and 2 per thread, then the last image whole.
            for n in [4, 12, 3, 5] {
                let x =
                    Tensor::<4>::random([n, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
                let one_by_one = Tensor::cat(
                    (0..n)
                        .map(|i| model.forward(x.clone().narrow(0, i, 1)))
                        .collect(),
                    0,
                );
                let split = split_batch(x.clone(), |part| model.forward(part))
                    .unwrap_or_else(|_| panic!("{name}: a batch of {n} on 2 threads not split"));
                let scale: f32 = one_by_one.clone().abs().max().into_scalar();
                // The images' logits differ, so a mix-up of images would show.
                let spread: f32 = (one_by_one.clone().narrow(0, 0, 1)
                    - one_by_one.clone().narrow(0, 1, 1))
                .abs()
                .max()
                .into_scalar();
                assert!(
                    spread > 1e-3 * scale,
                    "{name}: images' logits too alike ({spread})"
                );
                let diff: f32 = (split - one_by_one.clone()).abs().max().into_scalar();
                assert!(
                    diff <= 1e-5 * scale.max(1.0),
                    "{name} x{n}: {diff} (scale {scale})"
                );
                // Model::forward takes the split path itself.
                let diff: f32 = (model.forward(x) - one_by_one).abs().max().into_scalar();
                assert!(diff <= 1e-5 * scale.max(1.0), "{name} x{n} forward: {diff}");
            }
            // One image on 2 threads stays whole.
            let one = Tensor::<4>::zeros([1, 3, 64, 64], &device);
            assert!(split_batch(one, |part| model.forward(part)).is_err());
        }
    });
}
