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
        let Some(key) = Key::of(&self.stack) else {
            return;
        };
        let mut shape = param.lazy_shape().dims::<D>().to_vec();
        if key.linear_weight && shape.len() == 2 {
            shape.swap(0, 1);
        }
        self.out.push(Entry {
            buffer: key.leaf == "running_mean" || key.leaf == "running_var",
            name: key.name,
            shape,
        });
    }
}

/// Where a visited parameter lands in a timm/PyTorch state dict.
pub(crate) struct Key {
    /// Full dotted name (`blocks.0.0.bn1.weight`).
    pub name: String,
    /// The owning module's dotted path (`blocks.0.0.bn1`).
    pub module: String,
    /// Last name component, after BN/LN renaming (`gamma` -> `weight`, `beta` -> `bias`).
    pub leaf: String,
    /// A Linear weight: Burn stores `[in, out]`, PyTorch `[out, in]`.
    pub linear_weight: bool,
    pub batch_norm: bool,
}

impl Key {
    /// The key of the parameter at the top of a visitor's `(name, container type)` stack.
    /// Enum variants are not part of the path; Burn's norm parameter names are mapped.
    pub(crate) fn of(stack: &[(String, String)]) -> Option<Key> {
        let ((leaf, container), parents) = stack.split_last()?;
        let batch_norm = container == "Struct:BatchNorm";
        let norm = batch_norm || container == "Struct:LayerNorm";
        let leaf = match leaf.as_str() {
            "gamma" if norm => "weight",
            "beta" if norm => "bias",
            other => other,
        };
        let module: Vec<&str> = parents
            .iter()
            .filter(|(_, ty)| !ty.starts_with("Enum:"))
            .map(|(n, _)| n.as_str())
            .collect();
        let module = module.join(".");
        let name = if module.is_empty() {
            leaf.to_string()
        } else {
            format!("{module}.{leaf}")
        };
        Some(Key {
            name,
            module,
            leaf: leaf.to_string(),
            linear_weight: container == "Struct:Linear" && leaf == "weight",
            batch_norm,
        })
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
