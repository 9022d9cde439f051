//! Options every family takes, whatever its architecture.

use serde::{Deserialize, Serialize};

/// Options every family takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommonOptions {
    pub num_classes: usize,
    pub in_chans: usize,
    pub drop_rate: f64,
    pub drop_path_rate: f64,
    /// Overrides the architecture's BN eps (torchvision's b5..b7 use 1e-3).
    pub bn_eps: Option<f64>,
}

impl Default for CommonOptions {
    fn default() -> Self {
        Self {
            num_classes: 1000,
            in_chans: 3,
            drop_rate: 0.0,
            drop_path_rate: 0.0,
            bn_eps: None,
        }
    }
}
