//! The one walk over a model's parameters under their timm/PyTorch state-dict names, shared
//! by the manifest, the exporter, the trainer's weight-decay groups and timm's initialisation.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Called once per float parameter, with its state-dict key.
pub trait KeyVisitor {
    fn visit<const D: usize>(&mut self, key: Key, param: &Param<Tensor<D>>);
}

/// Visits every float parameter of `module` in module order.
pub fn walk<M: Module, V: KeyVisitor>(module: &M, visitor: &mut V) {
    let mut w = Walker {
        stack: Vec::new(),
        inner: visitor,
    };
    module.visit(&mut w);
}

/// Rewrites float parameters by their state-dict key.
pub trait KeyMapper {
    fn map<const D: usize>(&mut self, key: Key, tensor: Tensor<D>) -> Tensor<D>;
}

/// Maps every float parameter of `module` in module order (ids kept).
pub fn map<M: Module, F: KeyMapper>(module: M, mapper: &mut F) -> M {
    let mut w = Walker {
        stack: Vec::new(),
        inner: mapper,
    };
    module.map(&mut w)
}

impl<F: KeyMapper> ModuleMapper for Walker<'_, F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match Key::of(&self.stack) {
            Some(key) => {
                let inner = &mut *self.inner;
                param.map(|t| inner.map(key, t))
            }
            None => param,
        }
    }
}

struct Walker<'a, V> {
    /// `(field name, container type)` from the root to the current module.
    stack: Vec<(String, String)>,
    inner: &'a mut V,
}

impl<V: KeyVisitor> ModuleVisitor for Walker<'_, V> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(key) = Key::of(&self.stack) {
            self.inner.visit(key, param);
        }
    }
}

/// Where a visited parameter lands in a timm/PyTorch state dict.
pub struct Key {
    /// Full dotted name (`blocks.0.0.bn1.weight`).
    pub name: String,
    /// The owning module's dotted path (`blocks.0.0.bn1`).
    pub module: String,
    /// Last name component, after BN/LN renaming (`gamma` -> `weight`, `beta` -> `bias`).
    pub leaf: String,
    /// A Linear weight: Burn stores `[in, out]`, PyTorch `[out, in]`.
    pub linear_weight: bool,
    /// A parameter of a Linear layer (weight or bias).
    pub linear: bool,
    /// A parameter of a Conv2d layer (weight or bias).
    pub conv: bool,
    pub batch_norm: bool,
    /// A BatchNorm or LayerNorm parameter.
    pub norm: bool,
}

impl Key {
    /// The key of the parameter at the top of a visitor's `(name, container type)` stack.
    /// Enum variants are not part of the path; Burn's norm parameter names are mapped.
    fn of(stack: &[(String, String)]) -> Option<Key> {
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
            linear: container == "Struct:Linear",
            conv: container == "Struct:Conv2d",
            batch_norm,
            norm,
        })
    }
}
