//! The list of tensors a model expects, named and shaped as in a timm/PyTorch state dict.
//!
//! Read without initialising lazy parameters, so even ViT-L costs no weight memory.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use crate::keys::{Key, KeyVisitor, walk};

/// One tensor of a state dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    /// BatchNorm running statistics: in the state dict, not counted as parameters.
    pub buffer: bool,
}

#[derive(Default)]
struct Entries(Vec<Entry>);

impl KeyVisitor for Entries {
    fn visit<const D: usize>(&mut self, key: Key, param: &Param<Tensor<D>>) {
        let mut shape = param.lazy_shape().dims::<D>().to_vec();
        if key.linear_weight && shape.len() == 2 {
            shape.swap(0, 1);
        }
        self.0.push(Entry {
            buffer: key.leaf == "running_mean" || key.leaf == "running_var",
            name: key.name,
            shape,
        });
    }
}

/// The state-dict entries of `module`, in module order.
pub fn entries<M: Module>(module: &M) -> Vec<Entry> {
    let mut e = Entries::default();
    walk(module, &mut e);
    e.0
}

/// Number of trainable parameters, counted as timm counts them (no BN buffers).
pub fn param_count(entries: &[Entry]) -> usize {
    entries
        .iter()
        .filter(|e| !e.buffer)
        .map(|e| e.shape.iter().product::<usize>())
        .sum()
}

/// `name<TAB>d0,d1,...` per line: the format of `tests/fixtures/manifests/*.txt`.
pub fn to_text(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| {
            let dims: Vec<String> = e.shape.iter().map(usize::to_string).collect();
            format!("{}\t{}\n", e.name, dims.join(","))
        })
        .collect()
}
