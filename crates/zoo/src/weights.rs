//! Loading timm and torchvision checkpoints (safetensors or PyTorch `.pth`) into zoo models.
//!
//! The file is read into named f32 tensors (f16/bf16/f64 converted), torchvision names are
//! mapped to timm's through one table, the result is checked against the model's own
//! manifest (every problem listed by name with both shapes), and only then applied.

use std::fmt;
use std::path::Path;

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, bridge};
use burn::tensor::{Device, TensorData};

pub use crate::checkpoint::{Checkpoint, RawTensor, parse_safetensors};
use crate::checkpoint::{FloatKind, fits, to_f32};
use crate::manifest::{self, Entry};
use crate::model::Model;
use crate::options::CommonOptions;
use crate::registry::{self, Arch, ModelSpec};
use crate::torchvision::to_timm;
pub use crate::torchvision::{Layout, detect};
use committee_data::resample::{Filter, resize_planes};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid checkpoint: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("unknown model '{0}' (see `committee models`)")]
    UnknownModel(String),
    #[error(
        "{path}: this checkpoint holds a {found} ({layout} layout), but the model '{model}' is a {expected}{hint}"
    )]
    WrongArchitecture {
        path: String,
        model: String,
        expected: String,
        found: String,
        layout: Layout,
        hint: String,
    },
    #[error("{path}: cannot tell which architecture this checkpoint is (no known stem/head keys)")]
    UnknownLayout { path: String },
    #[error("{path}: checkpoint does not fit '{model}':\n{report}")]
    Mismatch {
        path: String,
        model: String,
        /// Boxed: the report is large and errors are rare.
        report: Box<MismatchReport>,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: tensor '{tensor}' holds {value} at element {index}: the weights are broken")]
    NonFinite {
        path: String,
        tensor: String,
        index: usize,
        value: f32,
    },
}

/// Every difference between a checkpoint and a model, by tensor name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MismatchReport {
    pub missing: Vec<(String, Vec<usize>)>,
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// name, model shape, checkpoint shape
    pub shape: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// The registry name whose layout fits the checkpoint best, when it is not the model's.
    pub best_match: Option<String>,
}

impl MismatchReport {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shape.is_empty()
    }
}

impl fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 20;
        let list = |f: &mut fmt::Formatter<'_>, title: &str, items: Vec<String>| -> fmt::Result {
            if items.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {title} ({}):", items.len())?;
            for it in items.iter().take(SHOW) {
                writeln!(f, "    {it}")?;
            }
            if items.len() > SHOW {
                writeln!(f, "    ... and {} more", items.len() - SHOW)?;
            }
            Ok(())
        };
        list(
            f,
            "missing from the checkpoint",
            self.missing
                .iter()
                .map(|(n, s)| format!("{n} {s:?}"))
                .collect(),
        )?;
        list(
            f,
            "unexpected in the checkpoint",
            self.unexpected
                .iter()
                .map(|(n, s)| format!("{n} {s:?}"))
                .collect(),
        )?;
        list(
            f,
            "shape mismatch",
            self.shape
                .iter()
                .map(|(n, m, c)| format!("{n}: model {m:?}, checkpoint {c:?}"))
                .collect(),
        )?;
        if let Some(b) = &self.best_match {
            writeln!(
                f,
                "  the checkpoint matches '{b}' exactly; did you mean --model {b}?"
            )?;
        }
        Ok(())
    }
}

fn corrupt(path: &Path, reason: impl ToString) -> LoadError {
    LoadError::Corrupt {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads a `.safetensors` or PyTorch (`.pth`, `.pt`, `.bin`) checkpoint, by content.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    // safetensors: 8-byte header length, then the JSON header. Anything else is tried as a
    // PyTorch file (zip archive or legacy pickle). The length's first byte can be anything,
    // so sniff the '{' rather than the first byte.
    let safetensors = bytes.len() > 8 && bytes[8] == b'{';
    let ckpt = if !safetensors && (bytes.starts_with(b"PK") || bytes.first() == Some(&0x80)) {
        drop(bytes);
        read_pth(path)?
    } else {
        parse_safetensors(&bytes).map_err(|e| corrupt(path, e))?
    };
    Ok(strip_wrappers(ckpt))
}

fn read_pth(path: &Path) -> Result<Checkpoint, LoadError> {
    use burn::store::pytorch_reader::{DType, PytorchReader};
    let mut reader = PytorchReader::new(path).map_err(|e| corrupt(path, e))?;
    // Training checkpoints nest the weights under a key.
    for key in ["state_dict", "model", "state_dict_ema"] {
        if reader
            .keys()
            .iter()
            .all(|k| k.starts_with(&format!("{key}.")))
            && !reader.is_empty()
        {
            reader = PytorchReader::with_top_level_key(path, key).map_err(|e| corrupt(path, e))?;
            break;
        }
    }
    let mut ckpt = Checkpoint::default();
    for (name, t) in reader.into_tensors() {
        let shape = t.shape().to_vec();
        let kind = match t.dtype() {
            DType::F32 => FloatKind::F32,
            DType::F16 => FloatKind::F16,
            DType::BF16 => FloatKind::BF16,
            DType::F64 => FloatKind::F64,
            _ => {
                ckpt.ignored.push(name);
                continue;
            }
        };
        let data = to_f32(kind, &t.read().map_err(|e| corrupt(path, e))?);
        if !fits(&shape, &data) {
            return Err(corrupt(path, format!("tensor '{name}' is truncated")));
        }
        ckpt.tensors.insert(name, RawTensor { shape, data });
    }
    Ok(ckpt)
}

/// Drops a `module.` prefix (DataParallel) shared by every key.
fn strip_wrappers(mut ckpt: Checkpoint) -> Checkpoint {
    for prefix in ["module.", "_orig_mod."] {
        if !ckpt.tensors.is_empty() && ckpt.tensors.keys().all(|k| k.starts_with(prefix)) {
            ckpt.tensors = std::mem::take(&mut ckpt.tensors)
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                .collect();
        }
    }
    ckpt
}

/// What a caller may fix before loading; the rest comes from the checkpoint.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Head size; by default the checkpoint's.
    pub num_classes: Option<usize>,
    /// Input resolution the model is built for (ViT resamples `pos_embed` to it).
    pub img_size: Option<[usize; 2]>,
    pub drop_rate: f64,
    pub drop_path_rate: f64,
    /// Fold BatchNorm into the convolutions (inference only; same outputs, less work).
    pub fold_bn: bool,
}

/// A loaded model and what loading decided.
#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    pub spec: ModelSpec,
    pub options: CommonOptions,
    pub img_size: [usize; 2],
    pub layout: Layout,
    /// ViT position-embedding grid resampled from (checkpoint) to (model).
    pub pos_embed_resampled: Option<GridChange>,
    pub ignored: Vec<String>,
}

/// Loads the checkpoint at `path` into the registry model `name`.
pub fn load(
    name: &str,
    path: &Path,
    opts: &LoadOptions,
    device: &Device,
) -> Result<Loaded, LoadError> {
    let spec = registry::get(name).ok_or_else(|| LoadError::UnknownModel(name.to_string()))?;
    load_spec(spec, path, opts, device)
}

/// Loads into any spec, including ones built outside the registry (reduced test models).
pub fn load_spec(
    spec: ModelSpec,
    path: &Path,
    opts: &LoadOptions,
    device: &Device,
) -> Result<Loaded, LoadError> {
    let mut spec = spec;
    // Trained members carry their own preprocessing (resolution, normalisation).
    let stored = crate::export::eval_config(path).map_err(|message| LoadError::Invalid {
        path: path.display().to_string(),
        message,
    })?;
    if let Some(eval) = stored {
        spec.eval = eval;
    }
    let ckpt = read_checkpoint(path)?;
    load_checkpoint(spec, ckpt, path, opts, device)
}

fn head_key(arch: &Arch) -> (&'static str, &'static str) {
    match arch {
        Arch::EfficientNet(_) => ("conv_stem.weight", "classifier.weight"),
        Arch::ResNet(_) => ("conv1.weight", "fc.weight"),
        Arch::Vit(_) => ("patch_embed.proj.weight", "head.weight"),
    }
}

pub fn load_checkpoint(
    mut spec: ModelSpec,
    ckpt: Checkpoint,
    path: &Path,
    opts: &LoadOptions,
    device: &Device,
) -> Result<Loaded, LoadError> {
    let paths = path.display().to_string();
    let (family, layout) = detect(&ckpt).ok_or_else(|| LoadError::UnknownLayout {
        path: paths.clone(),
    })?;
    if family != spec.family() {
        let hint = best_match(&ckpt_in_timm(ckpt, family, layout))
            .map(|b| format!("; it matches '{b}'"))
            .unwrap_or_default();
        return Err(LoadError::WrongArchitecture {
            path: paths,
            model: spec.name.clone(),
            expected: spec.family().to_string(),
            found: family.to_string(),
            layout,
            hint,
        });
    }
    let mut ckpt = match layout {
        Layout::Timm => ckpt,
        Layout::Torchvision => to_timm(ckpt, &spec.arch),
    };
    check_finite(&ckpt, &paths)?;
    let (stem_key, head) = head_key(&spec.arch);
    let invalid = |message: String| LoadError::Invalid {
        path: paths.clone(),
        message,
    };
    // Their ranks and sizes are read before any shape is compared: check them first.
    let in_chans = match ckpt.tensors.get(stem_key) {
        Some(t) if t.shape.len() == 4 && t.shape.iter().all(|&d| d > 0) => t.shape[1],
        Some(t) => {
            return Err(invalid(format!(
                "'{stem_key}' has shape {:?}, not [out, in, kh, kw]",
                t.shape
            )));
        }
        None => 3,
    };
    let ckpt_classes = match ckpt.tensors.get(head) {
        Some(t) if t.shape.len() == 2 && t.shape.iter().all(|&d| d > 0) => t.shape[0],
        Some(t) => {
            return Err(invalid(format!(
                "'{head}' has shape {:?}, not [classes, features]",
                t.shape
            )));
        }
        None => 0,
    };
    let mut options = CommonOptions {
        num_classes: opts.num_classes.unwrap_or(ckpt_classes),
        in_chans,
        drop_rate: opts.drop_rate,
        drop_path_rate: opts.drop_path_rate,
        bn_eps: None,
    };
    if let (Layout::Torchvision, Arch::EfficientNet(a)) = (layout, &mut spec.arch) {
        // torchvision's b5..b7 were ported with TF's BN eps.
        options.bn_eps = Some(a.tv_bn_eps);
    }
    let img = opts.img_size.unwrap_or([spec.eval.img_size; 2]);
    let model = Model::new(&spec.arch, img, &options, device);
    let expected = manifest::entries(&model);

    let mut pos_embed_resampled = None;
    if let Arch::Vit(v) = &spec.arch {
        pos_embed_resampled =
            resample_pos_embed(&mut ckpt, &expected, v.grid(img)).map_err(|message| {
                LoadError::Invalid {
                    path: paths.clone(),
                    message,
                }
            })?;
    }

    let report = compare(&expected, &ckpt);
    if !report.is_empty() {
        let mut report = report;
        report.best_match = best_match(&ckpt).filter(|b| *b != spec.name);
        return Err(LoadError::Mismatch {
            path: paths,
            model: spec.name.clone(),
            report: Box::new(report),
        });
    }
    let ignored = ckpt.ignored.clone();
    let model = apply(model, ckpt).map_err(|message| LoadError::Invalid {
        path: paths,
        message,
    })?;
    let model = if opts.fold_bn {
        model.fold_batchnorm()
    } else {
        model
    };
    let model = model.in_precision(device);
    Ok(Loaded {
        model,
        spec,
        options,
        img_size: img,
        layout,
        pos_embed_resampled,
        ignored,
    })
}

fn ckpt_in_timm(ckpt: Checkpoint, family: &str, layout: Layout) -> Checkpoint {
    if layout == Layout::Timm {
        return ckpt;
    }
    match registry::all().into_iter().find(|s| s.family() == family) {
        Some(s) => to_timm(ckpt, &s.arch),
        None => ckpt,
    }
}

/// Lists missing, unexpected and mis-shaped tensors.
pub fn compare(expected: &[Entry], ckpt: &Checkpoint) -> MismatchReport {
    let mut r = MismatchReport::default();
    for e in expected {
        match ckpt.tensors.get(&e.name) {
            None => r.missing.push((e.name.clone(), e.shape.clone())),
            Some(t) if t.shape != e.shape => {
                r.shape
                    .push((e.name.clone(), e.shape.clone(), t.shape.clone()))
            }
            Some(_) => {}
        }
    }
    let names: std::collections::HashSet<&str> = expected.iter().map(|e| e.name.as_str()).collect();
    for (k, t) in &ckpt.tensors {
        if !names.contains(k.as_str()) {
            r.unexpected.push((k.clone(), t.shape.clone()));
        }
    }
    r
}

/// The registry model whose layout the checkpoint fits exactly (head size aside).
fn best_match(ckpt: &Checkpoint) -> Option<String> {
    let device = committee_ops::backend::cpu_device();
    registry::all().into_iter().find_map(|spec| {
        let (stem, head) = head_key(&spec.arch);
        let opts = CommonOptions {
            num_classes: ckpt.tensors.get(head)?.shape[0],
            in_chans: ckpt.tensors.get(stem)?.shape[1],
            ..Default::default()
        };
        let img = match &spec.arch {
            Arch::Vit(v) => {
                let n = ckpt.tensors.get("pos_embed")?.shape[1] - 1;
                let g = (n as f64).sqrt() as usize;
                [g * v.patch; 2]
            }
            _ => [spec.eval.img_size; 2],
        };
        let model = Model::new(&spec.arch, img, &opts, &device);
        compare(&manifest::entries(&model), ckpt)
            .is_empty()
            .then(|| spec.name.clone())
    })
}

/// The first NaN or infinity of any tensor (in name order), as an error naming it. Why: one
/// NaN weight makes every logit NaN, which no metric may count as correct.
fn check_finite(ckpt: &Checkpoint, path: &str) -> Result<(), LoadError> {
    for (name, t) in &ckpt.tensors {
        if let Some((index, &value)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(LoadError::NonFinite {
                path: path.to_string(),
                tensor: name.clone(),
                index,
                value,
            });
        }
    }
    Ok(())
}

/// A position-embedding grid resampled from (checkpoint) to (model).
pub type GridChange = ([usize; 2], [usize; 2]);

/// Resamples the grid part of a ViT `pos_embed` to the model's grid, as timm does.
fn resample_pos_embed(
    ckpt: &mut Checkpoint,
    expected: &[Entry],
    grid: [usize; 2],
) -> Result<Option<GridChange>, String> {
    let Some(want) = expected.iter().find(|e| e.name == "pos_embed") else {
        return Ok(None);
    };
    let Some(pe) = ckpt.tensors.get_mut("pos_embed") else {
        return Ok(None);
    };
    // Anything but a [1, N, d] grid of the model's width is not resampled: the shape
    // comparison then reports it with both shapes.
    if pe.shape == want.shape
        || pe.shape.len() != 3
        || pe.shape[0] != 1
        || pe.shape[2] != want.shape[2]
    {
        return Ok(None);
    }
    let (n, d) = (pe.shape[1], pe.shape[2]);
    let old = n.checked_sub(1).ok_or("pos_embed has no rows")?;
    let g = (old as f64).sqrt().round() as usize;
    if g * g != old {
        return Err(format!(
            "pos_embed has {old} grid positions, which is not a square grid"
        ));
    }
    // [1 + g*g, d] -> channel-major planes [d, g, g], resample, back.
    let mut planes = vec![0f32; d * old];
    for p in 0..old {
        for c in 0..d {
            planes[c * old + p] = pe.data[(1 + p) * d + c];
        }
    }
    let out = resize_planes(&planes, d, [g, g], grid, Filter::Bicubic);
    let new = grid[0] * grid[1];
    let mut data = Vec::with_capacity((1 + new) * d);
    data.extend_from_slice(&pe.data[..d]);
    for p in 0..new {
        for c in 0..d {
            data.push(out[c * new + p]);
        }
    }
    *pe = RawTensor {
        shape: vec![1, 1 + new, d],
        data,
    };
    Ok(Some(([g, g], grid)))
}

/// Copies timm-named tensors into `model` (which must have the same layout; see [`compare`]).
pub fn apply(mut model: Model, ckpt: Checkpoint) -> Result<Model, String> {
    let tensors = ckpt
        .tensors
        .into_iter()
        .map(|(name, t)| bridge::from_data(TensorData::new(t.data, t.shape), name, None))
        .collect();
    let result = model.apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if !result.errors.is_empty() || !result.missing.is_empty() {
        let mut msg = String::from("applying weights failed:");
        for e in &result.errors {
            msg.push_str(&format!("\n  {e}"));
        }
        for (m, _) in &result.missing {
            msg.push_str(&format!("\n  missing {m}"));
        }
        return Err(msg);
    }
    Ok(model)
}

/// The manifest of a registry model, for `num_classes` outputs.
pub fn registry_manifest(spec: &ModelSpec, num_classes: usize) -> Vec<Entry> {
    let opts = CommonOptions {
        num_classes,
        ..Default::default()
    };
    let model = Model::new(
        &spec.arch,
        [spec.eval.img_size; 2],
        &opts,
        &committee_ops::backend::cpu_device(),
    );
    manifest::entries(&model)
}

/// Builds a model with random (initialiser) weights, for speed tests and training.
pub fn random_model(
    spec: &ModelSpec,
    opts: &CommonOptions,
    img: [usize; 2],
    device: &Device,
) -> Model {
    Model::new(&spec.arch, img, opts, device)
}

/// Trainable parameters of a model, counted as timm counts them.
pub fn num_params(model: &Model) -> usize {
    manifest::param_count(&manifest::entries(model))
}
