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
use crate::efficientnet::{BlockKind, CommonOptions};
use crate::manifest::{self, Entry};
use crate::model::Model;
use crate::registry::{self, Arch, ModelSpec};
use crate::resample::{Filter, resize_planes};

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
        report: MismatchReport,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
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

/// Key naming convention of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Timm,
    Torchvision,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Timm => "timm",
            Layout::Torchvision => "torchvision",
        })
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

/// Which family and naming a checkpoint uses, from its keys.
pub fn detect(ckpt: &Checkpoint) -> Option<(&'static str, Layout)> {
    let has = |k: &str| ckpt.tensors.contains_key(k);
    let any = |pat: &str| ckpt.tensors.keys().any(|k| k.contains(pat));
    if has("conv_stem.weight") {
        let fam = if any("se.conv_reduce") {
            "efficientnet"
        } else {
            "mobilenetv2"
        };
        Some((fam, Layout::Timm))
    } else if has("features.0.0.weight") {
        if any(".block.") {
            Some(("efficientnet", Layout::Torchvision))
        } else {
            Some(("mobilenetv2", Layout::Torchvision))
        }
    } else if has("layer1.0.conv1.weight") {
        Some(("resnet", Layout::Timm))
    } else if has("cls_token") {
        Some(("vit", Layout::Timm))
    } else if has("class_token") {
        Some(("vit", Layout::Torchvision))
    } else {
        None
    }
}

/// torchvision -> timm renames inside one block, by block type: the one mapping table.
const TV_TABLE: &[(&str, &str, &str)] = &[
    // EfficientNet MBConv without expansion (stage 1) and with it.
    ("efficientnet-ds", "block.0.0.", "conv_dw."),
    ("efficientnet-ds", "block.0.1.", "bn1."),
    ("efficientnet-ds", "block.1.fc1.", "se.conv_reduce."),
    ("efficientnet-ds", "block.1.fc2.", "se.conv_expand."),
    ("efficientnet-ds", "block.2.0.", "conv_pw."),
    ("efficientnet-ds", "block.2.1.", "bn2."),
    ("efficientnet-ir", "block.0.0.", "conv_pw."),
    ("efficientnet-ir", "block.0.1.", "bn1."),
    ("efficientnet-ir", "block.1.0.", "conv_dw."),
    ("efficientnet-ir", "block.1.1.", "bn2."),
    ("efficientnet-ir", "block.2.fc1.", "se.conv_reduce."),
    ("efficientnet-ir", "block.2.fc2.", "se.conv_expand."),
    ("efficientnet-ir", "block.3.0.", "conv_pwl."),
    ("efficientnet-ir", "block.3.1.", "bn3."),
    // MobileNetV2 InvertedResidual with expand_ratio 1 and 6.
    ("mobilenetv2-ds", "conv.0.0.", "conv_dw."),
    ("mobilenetv2-ds", "conv.0.1.", "bn1."),
    ("mobilenetv2-ds", "conv.1.", "conv_pw."),
    ("mobilenetv2-ds", "conv.2.", "bn2."),
    ("mobilenetv2-ir", "conv.0.0.", "conv_pw."),
    ("mobilenetv2-ir", "conv.0.1.", "bn1."),
    ("mobilenetv2-ir", "conv.1.0.", "conv_dw."),
    ("mobilenetv2-ir", "conv.1.1.", "bn2."),
    ("mobilenetv2-ir", "conv.2.", "conv_pwl."),
    ("mobilenetv2-ir", "conv.3.", "bn3."),
    // Stems and heads (`features.0`, `features.{last}`, `classifier.1`).
    ("cnn-stem", "0.", "conv_stem."),
    ("cnn-stem", "1.", "bn1."),
    ("cnn-head", "0.", "conv_head."),
    ("cnn-head", "1.", "bn2."),
    ("cnn", "classifier.1.", "classifier."),
    // ViT.
    ("vit", "class_token", "cls_token"),
    ("vit", "encoder.pos_embedding", "pos_embed"),
    ("vit", "conv_proj.", "patch_embed.proj."),
    ("vit", "encoder.ln.", "norm."),
    ("vit", "heads.head.", "head."),
    ("vit-block", "ln_1.", "norm1."),
    (
        "vit-block",
        "self_attention.in_proj_weight",
        "attn.qkv.weight",
    ),
    ("vit-block", "self_attention.in_proj_bias", "attn.qkv.bias"),
    ("vit-block", "self_attention.out_proj.", "attn.proj."),
    ("vit-block", "ln_2.", "norm2."),
    ("vit-block", "mlp.0.", "mlp.fc1."),
    ("vit-block", "mlp.linear_1.", "mlp.fc1."),
    ("vit-block", "mlp.3.", "mlp.fc2."),
    ("vit-block", "mlp.linear_2.", "mlp.fc2."),
];

fn tv_rename(group: &str, key: &str) -> Option<String> {
    TV_TABLE
        .iter()
        .filter(|(g, _, _)| *g == group)
        .find_map(|(_, from, to)| key.strip_prefix(from).map(|rest| format!("{to}{rest}")))
}

/// Maps one torchvision key to timm's name for `arch`; `None` leaves it unknown.
fn torchvision_key(key: &str, arch: &Arch) -> Option<String> {
    match arch {
        Arch::ResNet(_) => Some(key.to_string()),
        Arch::Vit(_) => {
            if let Some(rest) = key.strip_prefix("encoder.layers.encoder_layer_") {
                let (i, tail) = rest.split_once('.')?;
                return tv_rename("vit-block", tail).map(|t| format!("blocks.{i}.{t}"));
            }
            tv_rename("vit", key)
        }
        Arch::EfficientNet(a) => {
            if let Some(k) = tv_rename("cnn", key) {
                return Some(k);
            }
            let rest = key.strip_prefix("features.")?;
            let (idx, tail) = rest.split_once('.')?;
            let idx: usize = idx.parse().ok()?;
            let plan = a.plan();
            let mbv2 = a.se_ratio.is_none();
            // Flat list of (stage, index in stage, kind) in torchvision's `features` order.
            let blocks: Vec<(usize, usize, BlockKind)> = plan
                .iter()
                .enumerate()
                .flat_map(|(s, st)| st.iter().enumerate().map(move |(j, b)| (s, j, b.kind)))
                .collect();
            let head_idx = if mbv2 {
                blocks.len() + 1
            } else {
                plan.len() + 1
            };
            if idx == 0 {
                return tv_rename("cnn-stem", tail);
            }
            if idx == head_idx {
                return tv_rename("cnn-head", tail);
            }
            let (stage, j, tail) = if mbv2 {
                let (s, j, _) = *blocks.get(idx - 1)?;
                (s, j, tail)
            } else {
                let (j, tail) = tail.split_once('.')?;
                (idx - 1, j.parse().ok()?, tail)
            };
            let kind = plan.get(stage)?.get(j)?.kind;
            let group = match (mbv2, kind) {
                (false, BlockKind::Ds) => "efficientnet-ds",
                (false, BlockKind::Ir) => "efficientnet-ir",
                (true, BlockKind::Ds) => "mobilenetv2-ds",
                (true, BlockKind::Ir) => "mobilenetv2-ir",
            };
            tv_rename(group, tail).map(|t| format!("blocks.{stage}.{j}.{t}"))
        }
    }
}

/// Renames a torchvision checkpoint's keys to timm's; unknown keys are kept (and reported).
fn to_timm(ckpt: Checkpoint, arch: &Arch) -> Checkpoint {
    let tensors = ckpt
        .tensors
        .into_iter()
        .map(|(k, v)| (torchvision_key(&k, arch).unwrap_or(k), v))
        .collect();
    Checkpoint {
        tensors,
        ignored: ckpt.ignored,
    }
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
    pub pos_embed_resampled: Option<([usize; 2], [usize; 2])>,
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
    if let Some(eval) = crate::export::eval_config(path) {
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
    let (stem_key, head) = head_key(&spec.arch);
    let in_chans = ckpt.tensors.get(stem_key).map(|t| t.shape[1]).unwrap_or(3);
    let ckpt_classes = ckpt.tensors.get(head).map(|t| t.shape[0]).unwrap_or(0);
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
            report,
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
    let device = crate::backend::cpu_device();
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

/// Resamples the grid part of a ViT `pos_embed` to the model's grid, as timm does.
fn resample_pos_embed(
    ckpt: &mut Checkpoint,
    expected: &[Entry],
    grid: [usize; 2],
) -> Result<Option<([usize; 2], [usize; 2])>, String> {
    let Some(want) = expected.iter().find(|e| e.name == "pos_embed") else {
        return Ok(None);
    };
    let Some(pe) = ckpt.tensors.get_mut("pos_embed") else {
        return Ok(None);
    };
    if pe.shape == want.shape || pe.shape.len() != 3 || pe.shape[2] != want.shape[2] {
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
        &crate::backend::cpu_device(),
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
