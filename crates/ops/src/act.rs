//! Activation functions: committee's in-place CPU kernel where it applies, training forms
//! with PyTorch's gradients, else Burn's.

use burn::tensor::Tensor;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

use crate::cpu::{self, Epilogue};
use crate::profile;

/// Activation functions used by the zoo's families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Relu,
    Relu6,
    Silu,
    Gelu,
}

impl Act {
    /// The activation as its own profile span, by the fastest form for the device.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        profile::layer(self.profile_kind(), x, |x| self.forward(x))
    }

    fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        let x = match cpu::activation(x, self.epilogue()) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let x = match cpu::train::activation(x, self) {
            Ok(y) => return y,
            Err(x) => x,
        };
        match self {
            Act::Relu => activation::relu(x),
            Act::Relu6 if x.device().is_autodiff() && relu6_masked() => relu6_train(x),
            Act::Relu6 => activation::relu6(x),
            Act::Silu if x.device().is_autodiff() => silu_train(x),
            Act::Silu => activation::silu(x),
            Act::Gelu => activation::gelu(x),
        }
    }

    /// The CPU kernels' in-place form of this activation, fused into convolutions and
    /// linear layers.
    pub(crate) fn epilogue(self) -> Epilogue {
        match self {
            Act::Relu => Epilogue::Relu,
            Act::Relu6 => Epilogue::Relu6,
            Act::Silu => Epilogue::Silu,
            Act::Gelu => Epilogue::Gelu,
        }
    }

    pub(crate) fn profile_kind(self) -> &'static str {
        match self {
            Act::Relu => "act relu",
            Act::Relu6 => "act relu6",
            Act::Silu => "act silu",
            Act::Gelu => "act gelu",
        }
    }
}

/// A switch read once from the environment: on unless `var` is set to `off`.
pub(crate) fn env_switch(cell: &'static std::sync::OnceLock<bool>, var: &str, off: &str) -> bool {
    *cell.get_or_init(|| std::env::var(var).map_or(true, |v| v != off))
}

fn relu6_masked() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    env_switch(&ON, "COMMITTEE_RELU6", "clamp")
}

/// ReLU6 for training: `x * inside + six` with `inside = (0 < x < 6)` and `six = 6 * (x >= 6)`
/// computed outside autodiff. The values are exactly `clamp(x, 0, 6)`'s (`x * 1 + 0`, or
/// `x * 0 + 0|6`), the gradient is PyTorch's, `grad * (0 < x < 6)` (Burn's clamp lets it
/// through at 0 and 6 too), and the graph holds one multiplication and one addition. Burn's
/// clamp on an autodiff tensor is two comparisons and two single-threaded mask fills forward
/// and two more backward: 15 % of a MobileNetV2 training step on flex (docs/benchmarks.md).
/// `COMMITTEE_RELU6=clamp` for Burn's.
fn relu6_train<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let (inside, six) = relu6_parts(x.clone().inner());
    x * inside + six
}

/// SiLU for training on flex: `x * g + c` with `g` SiLU's derivative and `c = silu(x) - x g`
/// computed outside autodiff by one kernel pass (`cpu::silu_parts`): SiLU's values (to an
/// ulp of `x g`) and exact gradient, one multiplication and one addition in the graph.
fn silu_train<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match cpu::silu_parts(x.clone().inner()) {
        Ok((g, c)) => x * g + c,
        Err(_) => activation::silu(x),
    }
}

/// [`relu6_train`]'s two constants, by the flex kernel where it applies.
fn relu6_parts<const D: usize>(v: Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    let v = match cpu::relu6_parts(v) {
        Ok(parts) => return parts,
        Err(v) => v,
    };
    relu6_parts_burn(v)
}

fn relu6_parts_burn<const D: usize>(v: Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    // `float()` gives f32 whatever `v`'s type; in f16 training the product with an f16 `x`
    // must see f16 (Burn 0.22 on wgpu multiplied the mismatched buffers without complaint,
    // into garbage).
    let dtype = burn::tensor::FloatDType::from(v.dtype());
    let inside = v
        .clone()
        .greater_elem(0.0)
        .bool_and(v.clone().lower_elem(6.0))
        .float()
        .cast(dtype);
    let six = v
        .greater_equal_elem(6.0)
        .float()
        .cast(dtype)
        .mul_scalar(6.0);
    (inside, six)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    /// ReLU6 in training: clamp's values, PyTorch's gradient (hand-computed: 1 strictly
    /// inside (0, 6), 0 elsewhere, including at 0 and 6, as `torch.nn.ReLU6`).
    #[test]
    fn relu6_in_training_has_pytorchs_gradient() {
        use burn::tensor::TensorData;
        let dev = Device::flex().autodiff();
        let xs = [-1.0f32, 0.0, 3.0, 6.0, 7.5, 5.999, 1e8];
        let x =
            Tensor::<1>::from_data(TensorData::new(xs.to_vec(), [xs.len()]), &dev).require_grad();
        let y = Act::Relu6.forward(x.clone());
        let y_vals = y.clone().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(y_vals, vec![0.0, 0.0, 3.0, 6.0, 6.0, 5.999, 6.0]);
        let g = y.sum().backward();
        let gx = x.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(gx, vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    }

    /// SiLU in training: values and gradient as Burn's `x * sigmoid(x)` differentiated.
    #[test]
    fn silu_in_training_matches_burn() {
        use burn::tensor::Distribution;
        let dev = Device::flex().autodiff();
        let x = Tensor::<2>::random([37, 555], Distribution::Normal(0.0, 4.0), &dev).require_grad();
        let ours = Act::Silu.forward(x.clone());
        let burn = activation::silu(x.clone());
        let d = (ours.clone() - burn.clone())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(d < 1e-5, "values: {d}");
        let wts = Tensor::<2>::random([37, 555], Distribution::Normal(0.0, 1.0), &dev);
        let g_ours = x
            .grad(&(ours * wts.clone()).sum().backward())
            .expect("grad");
        let g_burn = x.grad(&(burn * wts).sum().backward()).expect("grad");
        let d = (g_ours - g_burn).abs().max().into_scalar::<f32>();
        assert!(d < 1e-5, "gradient: {d}");
    }

    /// The flex kernel's ReLU6 parts equal Burn's comparisons on a tensor of several chunks,
    /// with exact 0s and 6s among the values.
    #[test]
    fn relu6_parts_kernel_matches_burn() {
        use burn::tensor::{Distribution, TensorData};
        let dev = Device::flex();
        let x = Tensor::<4>::random([3, 40, 25, 23], Distribution::Uniform(-2.0, 8.0), &dev);
        let n = 3 * 40 * 25 * 23;
        let mut v = x.into_data().try_to_vec::<f32>().unwrap();
        for i in (0..n).step_by(97) {
            v[i] = if i % 2 == 0 { 0.0 } else { 6.0 };
        }
        let x = Tensor::<4>::from_data(TensorData::new(v, [3, 40, 25, 23]), &dev);
        let (mk, sk) = relu6_parts(x.clone());
        let (mb, sb) = relu6_parts_burn(x.clone());
        assert_eq!(
            mk.into_data().try_to_vec::<f32>().unwrap(),
            mb.into_data().try_to_vec::<f32>().unwrap()
        );
        assert_eq!(
            sk.into_data().try_to_vec::<f32>().unwrap(),
            sb.into_data().try_to_vec::<f32>().unwrap()
        );
        // And `x * inside + six` is Burn's clamp, bit for bit.
        let (m, s6) = relu6_parts(x.clone());
        let y = (x.clone() * m + s6)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let c = activation::relu6(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(y, c);
    }
}
