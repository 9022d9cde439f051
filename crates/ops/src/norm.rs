//! BatchNorm, with PyTorch's running-statistics update in training, and LayerNorm.

use burn::nn::{BatchNorm, LayerNorm};
use burn::tensor::{DType, Device, FloatDType, Tensor};

use crate::{Act, cpu, profile};

/// BatchNorm as PyTorch computes it, as one profile span. In training (an autodiff device,
/// layer not frozen) it normalises with the batch statistics like Burn, but updates
/// `running_var` with the *unbiased* batch variance (`n / (n - 1)` times the population one,
/// `n` = values per channel), as `torch.nn.BatchNorm2d` does; Burn's own update uses the
/// population variance, so its running statistics drift from what timm would learn (tested
/// against PyTorch in crates/train/tests/step_parity.rs). On flex the training form is
/// committee's op with its own backward (`cpu::train`), on GPU devices one with reductions
/// shaped for the GPU (`gpu::norm`). Otherwise Burn's inference forward.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    profile::layer("batchnorm", x, |x| match forward(bn, x, None) {
        Ok(y) | Err(y) => y,
    })
}

/// [`batch_norm`] then `act`: in training on flex one op with its own backward (the
/// activation fused into BatchNorm's passes), else the two apart.
pub fn batch_norm_act(bn: &BatchNorm, x: Tensor<4>, act: Act) -> Tensor<4> {
    profile::layer("batchnorm", x, |x| match forward(bn, x, Some(act)) {
        Ok(y) => y,
        Err(y) => act.apply(y),
    })
}

/// `act(bn(x) + residual)` (a residual block's end; `act` ReLU, ReLU6 or none), as one profile
/// span: in training on flex one op with its own backward (the sum and the activation fused
/// into BatchNorm's passes, `cpu::train::batch_norm_add`), else BatchNorm, the sum and the
/// activation apart.
pub fn batch_norm_add_act(
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Tensor<4>,
    act: Option<Act>,
) -> Tensor<4> {
    profile::layer("batchnorm residual", x, |x| {
        let device = x.device();
        let (x, residual) = match training(bn, &device) {
            true => match cpu::train::batch_norm_add(bn, x, residual, act) {
                Ok((y, mean, var)) => {
                    let [b, _, h, w] = y.dims();
                    update_running(bn, &device, (b * h * w) as f64, mean, var);
                    return y;
                }
                Err(back) => back,
            },
            false => (x, residual),
        };
        let y = crate::residual_add(batch_norm(bn, x), residual);
        match act {
            Some(a) => a.apply(y),
            None => y,
        }
    })
}

/// Whether `bn` normalises with batch statistics on `device` (training).
fn training(bn: &BatchNorm, device: &Device) -> bool {
    device.is_autodiff() && bn.training.is_enabled()
}

/// `Ok` when `act` was applied too, `Err` with BatchNorm's output alone otherwise.
fn forward(bn: &BatchNorm, x: Tensor<4>, act: Option<Act>) -> Result<Tensor<4>, Tensor<4>> {
    let device = x.device();
    if !training(bn, &device) {
        return Err(bn.forward(x));
    }
    if x.dtype() == DType::F16 {
        // Mixed-precision training (f16 on GPUs): statistics, normalisation and running
        // statistics in f32, as PyTorch's autocast runs BatchNorm; the output back in f16.
        // Why: a batch mean over up to B*H*W values and its square in f16 lose digits that
        // the running statistics then keep. The clone shares the running statistics.
        let mut b = bn.clone();
        b.gamma = b.gamma.map(|t| t.cast(FloatDType::F32));
        b.beta = b.beta.map(|t| t.cast(FloatDType::F32));
        let half = |y: Tensor<4>| y.cast(FloatDType::F16);
        return forward(&b, x.cast(FloatDType::F32), act)
            .map(half)
            .map_err(half);
    }
    let [b, _, h, w] = x.dims();
    let n = (b * h * w) as f64;
    let x = match cpu::train::batch_norm(bn, x, act) {
        Ok((y, mean, var)) => {
            update_running(bn, &device, n, mean, var);
            return Ok(y);
        }
        Err(x) => x,
    };
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let x = match crate::gpu::batch_norm(bn, x) {
        Ok((y, mean, var)) => {
            update_running(bn, &device, n, mean, var);
            return Err(y);
        }
        Err(x) => x,
    };
    let r = burn::tensor::module::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
    update_running(bn, &device, n, r.mean, r.variance);
    Err(r.output)
}

/// The running statistics' update from a batch's mean and population variance, PyTorch's way.
fn update_running(bn: &BatchNorm, device: &Device, n: f64, mean: Tensor<1>, var: Tensor<1>) {
    let m = bn.momentum;
    let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
    let rm = bn.running_mean.value_sync().to_device(device);
    let rv = bn.running_var.value_sync().to_device(device);
    bn.running_mean
        .update((rm * (1.0 - m) + mean.detach() * m).detach());
    bn.running_var
        .update((rv * (1.0 - m) + var.detach() * (m * unbiased)).detach());
}

/// `ln(x)` over the last dimension, as one profile span: committee's op with its own backward
/// in training on flex, else Burn's. `eps` must be `ln`'s own (Burn keeps it private).
pub fn layer_norm<const D: usize>(ln: &LayerNorm, eps: f64, x: Tensor<D>) -> Tensor<D> {
    profile::layer("layernorm", x, |x| {
        if x.dtype() == DType::F16 && x.device().is_autodiff() {
            // Mixed-precision training: in f32, as PyTorch's autocast runs it (see
            // `forward` above for BatchNorm's reason).
            let mut l = ln.clone();
            l.gamma = l.gamma.map(|t| t.cast(FloatDType::F32));
            l.beta = l.beta.map(|b| b.map(|t| t.cast(FloatDType::F32)));
            return l.forward(x.cast(FloatDType::F32)).cast(FloatDType::F16);
        }
        match cpu::train::layer_norm(ln, eps, x) {
            Ok(y) => y,
            Err(x) => ln.forward(x),
        }
    })
}
