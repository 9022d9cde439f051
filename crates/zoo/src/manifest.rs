//! The list of tensors a model expects, named and shaped as in a timm/PyTorch state dict.
//!
//! Read without initialising lazy parameters, so even ViT-L costs no weight memory.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// One tensor of a state dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    /// BatchNorm running statistics: in the state dict, not counted as parameters.
    pub buffer: bool,
}

#[derive(Default)]
struct Walker {
    stack: Vec<(String, String)>,
    out: Vec<Entry>,
}

impl ModuleVisitor for Walker {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some((leaf, container)) = self.stack.last() else {
            return;
        };
        let norm = container == "Struct:BatchNorm" || container == "Struct:LayerNorm";
        let leaf = match leaf.as_str() {
            "gamma" if norm => "weight",
            "beta" if norm => "bias",
            other => other,
        };
        let mut path: Vec<&str> = self
            .stack
            .iter()
            .take(self.stack.len() - 1)
            .filter(|(_, ty)| !ty.starts_with("Enum:"))
            .map(|(n, _)| n.as_str())
            .collect();
        path.push(leaf);
        let mut shape = param.lazy_shape().dims::<D>().to_vec();
        if container == "Struct:Linear" && leaf == "weight" && shape.len() == 2 {
            shape.swap(0, 1);
        }
        self.out.push(Entry {
            name: path.join("."),
            shape,
            buffer: leaf == "running_mean" || leaf == "running_var",
        });
    }
}

/// The state-dict entries of `module`, in module order.
pub fn entries<M: Module>(module: &M) -> Vec<Entry> {
    let mut w = Walker::default();
    module.visit(&mut w);
    w.out
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
