//! Switches for committee's own kernels, each of which can be turned off to measure what it
//! changes (`committee bench --flex-kernels`).

use std::sync::atomic::{AtomicU8, Ordering};

/// The kernels, each of which can be switched off to measure what it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// In-place SiLU / ReLU / ReLU6 / GELU, and squeeze-excite's channel means and gate.
    Activations,
    /// Depthwise convolution with the activation fused.
    Depthwise,
    /// Dense convolution as one matrix product per image, activation fused.
    ConvGemm,
    /// Linear layer as one matrix product over all rows, bias and activation fused.
    Linear,
    /// ViT's multi-head attention read straight from the qkv projection.
    Attention,
    /// Max pooling (ResNet's stem).
    MaxPool,
    /// Training ops with their own backward (`cpu::train`): depthwise, 1x1 and other
    /// dense convolutions, BatchNorm with the activation after it fused in, activations,
    /// LayerNorm, attention.
    Train,
    /// A model's batch split over the threads, each part through the whole network on one
    /// thread ([`crate::cpu::split_batch`]).
    Batch,
}

impl Kernel {
    /// Every kernel, in the order `--flex-kernels` lists them.
    pub const ALL: [Kernel; 8] = [
        Kernel::Activations,
        Kernel::Depthwise,
        Kernel::ConvGemm,
        Kernel::Linear,
        Kernel::Attention,
        Kernel::MaxPool,
        Kernel::Train,
        Kernel::Batch,
    ];

    /// The name `--flex-kernels` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Activations => "act",
            Kernel::Depthwise => "depthwise",
            Kernel::ConvGemm => "gemm",
            Kernel::Linear => "linear",
            Kernel::Attention => "attention",
            Kernel::MaxPool => "maxpool",
            Kernel::Train => "train",
            Kernel::Batch => "batch",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

static ON: AtomicU8 = AtomicU8::new(0b1111_1111);

/// Chooses which kernels run (all by default), process-wide.
pub fn set_enabled(kernels: &[Kernel]) {
    ON.store(
        kernels.iter().map(|k| k.bit()).fold(0, |a, b| a | b),
        Ordering::Relaxed,
    );
}

/// Whether `kernel` may run (every kernel checks before it applies).
pub fn on(kernel: Kernel) -> bool {
    ON.load(Ordering::Relaxed) & kernel.bit() != 0
}

/// One process-wide choice between two paths of a kernel, kept so that the two can be timed
/// against each other in one process (`examples/ab_f32_taps.rs` in committee-zoo): its
/// default, overridden by an environment variable where it names one (read at the first
/// use; `0` turns it off, anything else on) and by [`Switch::set`].
pub struct Switch {
    /// 0: not read yet, 1: off, 2: on.
    state: AtomicU8,
    default: bool,
    env: Option<&'static str>,
}

impl Switch {
    pub const fn new(default: bool, env: Option<&'static str>) -> Switch {
        Switch {
            state: AtomicU8::new(0),
            default,
            env,
        }
    }

    pub fn on(&self) -> bool {
        match self.state.load(Ordering::Relaxed) {
            0 => {
                let on = self.env.and_then(|e| std::env::var(e).ok());
                let on = on.map_or(self.default, |v| v != "0");
                // A `set` meanwhile wins.
                let _ = self.state.compare_exchange(
                    0,
                    Self::code(on),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.state.load(Ordering::Relaxed) == 2
            }
            v => v == 2,
        }
    }

    pub fn set(&self, on: bool) {
        self.state.store(Self::code(on), Ordering::Relaxed);
    }

    const fn code(on: bool) -> u8 {
        if on { 2 } else { 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::Switch;

    #[test]
    fn a_switch_keeps_its_default_until_set() {
        static ON: Switch = Switch::new(true, Some("COMMITTEE_TEST_SWITCH_NEVER_SET"));
        static OFF: Switch = Switch::new(false, None);
        assert!(ON.on() && !OFF.on());
        ON.set(false);
        OFF.set(true);
        assert!(!ON.on() && OFF.on());
        ON.set(true);
        assert!(ON.on());
    }
}
