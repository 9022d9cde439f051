//! The training loop: one member, one run directory, resumable at every epoch boundary.
//!
//! Every random stream (init, shuffling, augmentation, dropout/drop-path) is derived from
//! `(seed, epoch, sample)`, so the checkpoint's "RNG state" is just the seed and the epoch,
//! and a run resumed after `kill -9` replays exactly what the uninterrupted run computes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::ParamGroup;
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, RmsPropConfig};
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use committee_core::metrics::in_top_k;
use committee_data::folder::ImageFolder;
use committee_data::loader;
use committee_data::transform::{EvalTransform, decode};
use committee_zoo::export;
use committee_zoo::keys::{Key, KeyVisitor, walk};
use committee_zoo::registry::{self, EvalConfig, Interpolation, ModelSpec};
use committee_zoo::{CommonOptions, Model};
use serde::{Deserialize, Serialize};

use crate::augment::{AugmentKind, SMALL_MAX_SIDE, TrainTransform};
use crate::config::{OptKind, TrainConfig, TrainDtype};
use crate::loss::cross_entropy;
use crate::mixed::{self, LossScale};
use crate::optim::{AdamW, Sgd};
use crate::rng::Rng;
use crate::schedule::Schedule;
use crate::{Start, TrainError, write_atomic};

/// File names inside a run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const MODEL: &str = "model.safetensors";
pub const BEST: &str = "best.safetensors";
pub const METRICS: &str = "metrics.csv";
pub const CONFIG: &str = "config.toml";
const STATE_KEY: &str = "committee.train_state";
const OPTIM_TENSOR: &str = "__optimizer__";

/// One line of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_top1: f64,
    pub val_loss: Option<f64>,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    pub lr: f64,
    pub img_per_s: f64,
    pub wall_s: f64,
}

/// What the checkpoint stores besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// Epochs completed.
    epochs_done: usize,
    /// Optimiser steps taken (the schedule's position).
    iteration: usize,
    config: TrainConfig,
    history: Vec<EpochRow>,
    best: Option<(usize, f64)>,
    /// The training folder when the run began ([`ImageFolder::fingerprint`]); absent in
    /// checkpoints written before it was recorded.
    #[serde(default)]
    data_fingerprint: Option<String>,
    /// The loss scale of an f16 run (`mixed`); absent in f32 and bf16 runs.
    #[serde(default)]
    loss_scale: Option<LossScale>,
}

/// Progress reports for the caller's display.
#[derive(Debug)]
pub enum Event<'a> {
    Info(String),
    Warning(String),
    Batch {
        epoch: usize,
        epochs: usize,
        done: usize,
        total: usize,
        loss: f64,
        top1: f64,
        lr: f64,
        img_per_s: f64,
    },
    Epoch(&'a EpochRow),
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    pub config: TrainConfig,
    pub history: Vec<EpochRow>,
    pub best: Option<(usize, f64)>,
}

/// Fills the options left unset with data- and model-dependent defaults.
pub fn resolve(
    mut cfg: TrainConfig,
    spec: &ModelSpec,
    train: &ImageFolder,
) -> Result<TrainConfig, TrainError> {
    let first = train
        .samples
        .first()
        .ok_or_else(|| TrainError::Data(format!("{}: no images", train.root.display())))?;
    let probe = image::ImageReader::open(&first.path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| TrainError::Data(format!("{}: {e}", first.path.display())))?
        .decode()
        .map_err(|e| TrainError::Data(format!("{}: {e}", first.path.display())))?;
    let (w, h) = (probe.width(), probe.height());
    let small = w.min(h) <= SMALL_MAX_SIDE;
    cfg.augment.get_or_insert(if small {
        AugmentKind::Small
    } else {
        AugmentKind::Imagenet
    });
    cfg.img_size.get_or_insert(if small {
        w.max(h) as usize
    } else {
        spec.eval.img_size
    });
    cfg.in_chans
        .get_or_insert(if probe.color().channel_count() <= 2 {
            1
        } else {
            3
        });
    cfg.lr = Some(cfg.lr());
    cfg.weight_decay = Some(cfg.weight_decay());
    cfg.validate().map_err(TrainError::Invalid)?;
    Ok(cfg)
}

/// The eval preprocessing a trained member is exported with.
pub fn eval_config(cfg: &TrainConfig, spec: &ModelSpec) -> EvalConfig {
    let small = cfg.augment != Some(AugmentKind::Imagenet);
    EvalConfig {
        img_size: cfg.img_size.unwrap_or(spec.eval.img_size),
        crop_pct: if small { 1.0 } else { spec.eval.crop_pct },
        interpolation: if small {
            Interpolation::Bilinear
        } else {
            spec.eval.interpolation
        },
        mean: spec.eval.mean,
        std: spec.eval.std,
    }
}

/// Gives every float parameter a fixed id (its position), so optimiser state saved by one
/// process finds its parameters in the next.
struct FixIds(u64);

impl ModuleMapper for FixIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.0 += 1;
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(ParamId::from(self.0), value, mapper)
    }
}

/// Ids of the parameters that get no weight decay: norm layers, biases, ViT tokens.
#[derive(Default)]
struct NoDecay {
    ids: Vec<ParamId>,
}

impl KeyVisitor for NoDecay {
    fn visit<const D: usize>(&mut self, key: Key, param: &Param<Tensor<D>>) {
        if key.norm || D == 1 || matches!(key.leaf.as_str(), "bias" | "cls_token" | "pos_embed") {
            self.ids.push(param.id);
        }
    }
}

/// Plain SGD with momentum 0.9 (no dampening, Nesterov or weight decay): the update a timed
/// training step runs (`committee bench --train`, `examples/ab_train.rs`), as
/// `scripts/bench_pytorch.py --train` runs PyTorch's.
pub fn timing_sgd() -> ModuleOptimizer {
    let m = MomentumConfig {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
    };
    ModuleOptimizer::from(Sgd::new(Some(&m), None))
}

/// A model made ready to train: fixed parameter ids (so a saved optimiser state finds its
/// parameters) and the run's optimiser, without weight decay on norms and biases.
pub fn prepare(model: Model, cfg: &TrainConfig) -> (Model, ModuleOptimizer) {
    let model = model.map(&mut FixIds(0));
    let mut nd = NoDecay::default();
    walk(&model, &mut nd);
    (model, optimizer(cfg, nd.ids))
}

/// One optimiser step on a batch (`x` on an autodiff device): the updated model, the batch's
/// mean loss (label-smoothed, before the update; not finite when training diverged) and the
/// predicted classes.
pub fn step(
    model: Model,
    optim: &mut ModuleOptimizer,
    x: Tensor<4>,
    labels: &[i64],
    lr: f64,
    label_smoothing: f64,
) -> (Model, f64, Vec<i64>) {
    step_scaled(model, optim, x, labels, lr, label_smoothing, None)
}

/// [`step`], in mixed precision when `scale` is given (f16 training on GPUs, see [`mixed`]):
/// the forward on the model's f16 view, the gradients computed at the loss scale; a step
/// whose gradients are not finite is skipped (the model comes back unchanged, the scale
/// halved), as `GradScaler` skips it. Needs `precision::set(Dtype::F16)` for the forward's
/// casts.
#[allow(clippy::too_many_arguments)]
pub fn step_scaled(
    model: Model,
    optim: &mut ModuleOptimizer,
    x: Tensor<4>,
    labels: &[i64],
    lr: f64,
    label_smoothing: f64,
    scale: Option<&mut LossScale>,
) -> (Model, f64, Vec<i64>) {
    let y = Tensor::<1, Int>::from_data(
        TensorData::new(labels.to_vec(), [labels.len()]),
        &x.device(),
    );
    let logits = mixed::forward(&model, x, scale.as_deref());
    let pred: Vec<i64> = logits
        .clone()
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap_or_default();
    let loss = cross_entropy(logits, y, label_smoothing);
    let lv: f32 = loss.clone().into_scalar();
    if !lv.is_finite() {
        return (model, lv as f64, pred);
    }
    match mixed::grads(loss, &model, scale) {
        Some(grads) => (optim.step(lr, model, grads), lv as f64, pred),
        None => (model, lv as f64, pred),
    }
}

fn optimizer(cfg: &TrainConfig, no_decay: Vec<ParamId>) -> ModuleOptimizer {
    let wd = cfg.weight_decay() as f32;
    let group = ParamGroup::from_ids(no_decay);
    match cfg.opt {
        OptKind::Sgd => {
            // PyTorch semantics: no dampening.
            let m = MomentumConfig {
                momentum: cfg.momentum,
                dampening: 0.0,
                nesterov: false,
            };
            let decay = Sgd::new(Some(&m), Some(wd));
            let plain = Sgd::new(Some(&m), None);
            ModuleOptimizer::from(decay).with_group(group, plain, None)
        }
        OptKind::Adamw => {
            let (decay, plain) = (AdamW::new(1e-8, wd), AdamW::new(1e-8, 0.0));
            ModuleOptimizer::from(decay).with_group(group, plain, None)
        }
        OptKind::Rmsprop => {
            let base = RmsPropConfig::new()
                .with_alpha(0.9)
                .with_momentum(cfg.momentum as f32)
                .with_epsilon(1e-3);
            let decay = base
                .clone()
                .with_weight_decay(Some(WeightDecayConfig::new(wd)))
                .build();
            ModuleOptimizer::from(decay).with_group(group, base.build(), None)
        }
    }
}

/// Everything that reads images for one run.
struct Data {
    train: ImageFolder,
    val: Option<(ImageFolder, Vec<usize>)>,
    tf: TrainTransform,
    /// What the export records; `eval` is built from it.
    eval_config: EvalConfig,
    eval: EvalTransform,
    workers: usize,
}

fn scan(dir: &Path) -> Result<ImageFolder, TrainError> {
    ImageFolder::scan(dir, None).map_err(|e| TrainError::Data(e.to_string()))
}

fn open_data(cfg: &TrainConfig, spec: &ModelSpec, train: ImageFolder) -> Result<Data, TrainError> {
    let val = match &cfg.val {
        None => None,
        Some(dir) => {
            let v = scan(dir)?;
            // Val labels follow the training folder's class order, by name.
            let map = v
                .classes
                .iter()
                .map(|c| {
                    train.classes.iter().position(|t| t == c).ok_or_else(|| {
                        TrainError::Data(format!(
                            "{}: class '{c}' is not among the training classes",
                            dir.display()
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some((v, map))
        }
    };
    let ev = eval_config(cfg, spec);
    Ok(Data {
        tf: TrainTransform {
            kind: cfg.augment.unwrap_or(AugmentKind::Small),
            img_size: ev.img_size,
            channels: cfg.in_chans.unwrap_or(3),
            mean: spec.eval.mean,
            std: spec.eval.std,
            erase: cfg.random_erasing,
        },
        eval: EvalTransform::from(&ev),
        eval_config: ev,
        train,
        val,
        workers: cfg.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
    })
}

fn read_checkpoint(
    path: &Path,
) -> Result<(State, committee_zoo::weights::Checkpoint, Vec<u8>), TrainError> {
    let corrupt = |reason: String| TrainError::Checkpoint {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| corrupt(e.to_string()))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let state: State = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .ok_or_else(|| corrupt("no training state in the metadata".into()))
        .and_then(|s| serde_json::from_str(s).map_err(|e| corrupt(e.to_string())))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let optim = st
        .tensor(OPTIM_TENSOR)
        .map_err(|e| corrupt(format!("optimiser state: {e}")))?
        .data()
        .to_vec();
    let ckpt = committee_zoo::weights::parse_safetensors(&bytes).map_err(corrupt)?;
    Ok((state, ckpt, optim))
}

fn checkpoint_bytes(
    model: &Model,
    optim: &ModuleOptimizer,
    state: &State,
) -> Result<Vec<u8>, TrainError> {
    let err = |reason: String| TrainError::Checkpoint {
        path: CHECKPOINT.into(),
        reason,
    };
    let (tensors, _) = export::state_dict(model);
    let optim = optim
        .into_bytes()
        .map_err(|e| err(format!("optimiser state: {e:?}")))?;
    let mut entries: Vec<export::Entry> = tensors.into_iter().map(export::Entry::from).collect();
    entries.push(export::Entry {
        name: OPTIM_TENSOR.into(),
        dtype: "U8",
        shape: vec![optim.len()],
        bytes: optim.to_vec(),
    });
    let mut meta = BTreeMap::new();
    meta.insert(
        STATE_KEY.to_string(),
        serde_json::to_string(state).map_err(|e| err(e.to_string()))?,
    );
    export::serialize(entries, &meta).map_err(err)
}

fn metrics_csv(history: &[EpochRow]) -> String {
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let mut s = String::from(
        "epoch,train_loss,train_top1,val_loss,val_top1,val_top5,lr,img_per_s,wall_s\n",
    );
    for r in history {
        s.push_str(&format!(
            "{},{:.6},{:.4},{},{},{},{:.6e},{:.2},{:.2}\n",
            r.epoch,
            r.train_loss,
            r.train_top1,
            opt(r.val_loss),
            opt(r.val_top1),
            opt(r.val_top5),
            r.lr,
            r.img_per_s,
            r.wall_s
        ));
    }
    s
}

/// Trains one member into `out`. With `resume`, continues from `out/checkpoint.safetensors`
/// (using the configuration saved there); without it, an existing checkpoint is an error.
pub fn train(
    cfg: TrainConfig,
    out: &Path,
    device: &Device,
    start: Start,
    on: &mut dyn FnMut(Event),
) -> Result<Outcome, TrainError> {
    let ckpt_path = out.join(CHECKPOINT);
    let (cfg, mut state, train, saved) = begin(cfg, out, start, on)?;
    if cfg.dtype == TrainDtype::F16 {
        half_precision(device)?;
        // A new run's scale, or the one its checkpoint saved.
        state.loss_scale.get_or_insert_default();
    }
    let spec = model_spec(&cfg.model)?;
    let data = open_data(&cfg, &spec, train)?;
    let ad = device.clone().autodiff();
    ad.seed(Rng::keyed(&[cfg.seed, u64::MAX]).next_u64());
    let (mut model, mut optim) = build(&cfg, &spec, &data, &ad, saved, &ckpt_path)?;
    let n = data.train.samples.len();
    let batch = cfg.batch.min(n);
    let steps = (n / batch).max(1);
    let run = Run {
        cfg: &cfg,
        data: &data,
        ad: &ad,
        batch,
        steps,
        sched: Schedule {
            base_lr: cfg.lr(),
            min_lr: cfg.min_lr,
            warmup_iters: (cfg.warmup_epochs * steps as f64).round() as usize,
            total_iters: steps * cfg.epochs,
        },
    };
    let meta = export::metadata(&cfg.model, &data.eval_config);
    let (s, chans, classes) = (data.tf.img_size, data.tf.channels, data.train.classes.len());
    on(Event::Info(format!(
        "train {} ({} px, {} channel{}, {} classes) on {} images, {} steps/epoch, {:?} lr {} wd {}",
        cfg.model,
        s,
        chans,
        if chans == 1 { "" } else { "s" },
        classes,
        n,
        steps,
        cfg.opt,
        cfg.lr(),
        cfg.weight_decay()
    )));
    let mut bad: BTreeSet<PathBuf> = BTreeSet::new();

    for epoch in state.epochs_done..cfg.epochs {
        let start = Instant::now();
        let (next, e) = run.epoch(model, &mut optim, epoch, &mut state, &mut bad, on)?;
        model = next;
        // Include GPU work still in flight, so img/s is the device's rate, not the submission's.
        let _ = ad.sync();
        let train_wall = start.elapsed().as_secs_f64();
        let (val_loss, val_top1, val_top5) = match &data.val {
            Some((v, map)) => {
                // In the run's precision (f16 weights under `--dtype f16`).
                let m = model.valid().in_precision(device);
                let (l, t1, t5) = evaluate(&m, v, map, &data, device, &mut bad, on)?;
                (Some(l), Some(t1), Some(t5))
            }
            None => (None, None, None),
        };
        let row = EpochRow {
            epoch: epoch + 1,
            train_loss: e.loss_sum / e.seen as f64,
            train_top1: 100.0 * e.correct as f64 / e.seen as f64,
            val_loss,
            val_top1,
            val_top5,
            lr: e.lr,
            img_per_s: e.seen as f64 / train_wall.max(1e-9),
            wall_s: start.elapsed().as_secs_f64(),
        };
        on(Event::Epoch(&row));
        if let Some(s) = &state.loss_scale {
            on(Event::Info(format!(
                "f16 loss scale {} ({} step{} skipped for non-finite gradients so far)",
                s.scale,
                s.skipped,
                if s.skipped == 1 { "" } else { "s" }
            )));
        }
        // A NaN or infinite weight never reaches a file: the last good checkpoint stays.
        if let Some(tensor) = first_nonfinite(&model) {
            return Err(TrainError::NonFiniteWeights {
                epoch: epoch + 1,
                step: state.iteration,
                tensor,
            });
        }
        save_epoch(out, &model, &optim, &mut state, row, &meta)?;
    }
    Ok(Outcome {
        config: cfg,
        history: state.history,
        best: state.best,
    })
}

/// Mixed-precision f16 training needs a GPU device with f16 shaders; the forward's casts
/// follow the process's precision, set here (a resumed f16 run may be started without
/// `--dtype`).
fn half_precision(device: &Device) -> Result<(), TrainError> {
    let refuse = |why: &str| Err(TrainError::Invalid(format!("--dtype f16: {why}")));
    if committee_ops::backend::is_cpu(device) {
        return refuse(
            "mixed-precision training runs on GPU backends (wgpu) only; use --dtype bf16 on CPUs",
        );
    }
    if !device.supports_dtype(burn::tensor::DType::F16) {
        return refuse("this GPU adapter has no f16 shaders");
    }
    committee_ops::precision::set(committee_ops::precision::Dtype::F16)
        .map(|_| ())
        .map_err(|e| TrainError::Invalid(e.to_string()))
}

fn model_spec(name: &str) -> Result<ModelSpec, TrainError> {
    registry::get(name).ok_or_else(|| TrainError::UnknownModel(name.to_string()))
}

/// What a checkpoint holds: the training state, the weights, the optimiser's bytes.
type Saved = (State, committee_zoo::weights::Checkpoint, Vec<u8>);

/// A new run (config resolved and written) or the saved one to resume: the config, the
/// state, the training folder and the checkpoint.
fn begin(
    cfg: TrainConfig,
    out: &Path,
    start: Start,
    on: &mut dyn FnMut(Event),
) -> Result<(TrainConfig, State, ImageFolder, Option<Saved>), TrainError> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::Io {
        path: out.display().to_string(),
        reason: e.to_string(),
    })?;
    let ckpt_path = out.join(CHECKPOINT);
    let holds_model = out.join(MODEL).exists() || out.join(BEST).exists();
    if start == Start::Overwrite && ckpt_path.exists() {
        // A stale checkpoint must not be resumed into the new run later.
        std::fs::remove_file(&ckpt_path).map_err(|e| TrainError::Io {
            path: ckpt_path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    if ckpt_path.exists() {
        if start != Start::Resume {
            return Err(TrainError::Exists(out.display().to_string()));
        }
        let saved = read_checkpoint(&ckpt_path)?;
        let s = &saved.0;
        on(Event::Info(format!(
            "resuming {} after epoch {} of {}",
            out.display(),
            s.epochs_done,
            s.config.epochs
        )));
        s.config
            .validate()
            .map_err(|reason| TrainError::Checkpoint {
                path: ckpt_path.display().to_string(),
                reason: format!("its stored configuration is invalid: {reason}"),
            })?;
        let train = scan(&s.config.data)?;
        let now = train.fingerprint();
        if let Some(then) = &s.data_fingerprint
            && *then != now
        {
            return Err(TrainError::Data(format!(
                "{}: the training folder changed since the run began ({then} then, {now} now); a resume needs the same files",
                s.config.data.display()
            )));
        }
        return Ok((s.config.clone(), s.clone(), train, Some(saved)));
    }
    if holds_model && start == Start::New {
        return Err(TrainError::HoldsModel(out.display().to_string()));
    }
    let train = scan(&cfg.data)?;
    let spec = model_spec(&cfg.model)?;
    let cfg = resolve(cfg, &spec, &train)?;
    write_atomic(&out.join(CONFIG), cfg.to_toml().as_bytes())?;
    let state = State {
        epochs_done: 0,
        iteration: 0,
        config: cfg.clone(),
        history: Vec::new(),
        best: None,
        data_fingerprint: Some(train.fingerprint()),
        // Set by `train` for f16 runs.
        loss_scale: None,
    };
    Ok((cfg, state, train, None))
}

/// The model on the autodiff device and its optimiser, restored from `saved` when resuming.
fn build(
    cfg: &TrainConfig,
    spec: &ModelSpec,
    data: &Data,
    ad: &Device,
    saved: Option<Saved>,
    ckpt_path: &Path,
) -> Result<(Model, ModuleOptimizer), TrainError> {
    let s = data.tf.img_size;
    let opts = CommonOptions {
        num_classes: data.train.classes.len(),
        in_chans: data.tf.channels,
        drop_rate: cfg.drop_rate,
        drop_path_rate: cfg.drop_path,
        bn_eps: None,
    };
    let corrupt = |reason: String| TrainError::Checkpoint {
        path: ckpt_path.display().to_string(),
        reason,
    };
    let mut model = Model::new(&spec.arch, [s, s], &opts, ad);
    if let Some((_, ckpt, _)) = &saved {
        model = committee_zoo::weights::apply(model, ckpt.clone()).map_err(corrupt)?;
    }
    let (model, mut optim) = prepare(model, cfg);
    if let Some((_, _, bytes)) = saved {
        optim = optim
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| corrupt(format!("optimiser state: {e:?}")))?;
    }
    Ok((model, optim))
}

/// The state-dict name of the first parameter holding a NaN or an infinity, if any.
fn first_nonfinite(model: &Model) -> Option<String> {
    #[derive(Default)]
    struct Find(Option<String>);
    impl KeyVisitor for Find {
        fn visit<const D: usize>(&mut self, key: Key, param: &Param<Tensor<D>>) {
            if self.0.is_some() {
                return;
            }
            let v = param.val().into_data().convert::<f32>();
            if v.try_to_vec::<f32>()
                .is_ok_and(|v| v.iter().any(|x| !x.is_finite()))
            {
                self.0 = Some(key.name);
            }
        }
    }
    let mut f = Find::default();
    walk(model, &mut f);
    f.0
}

/// What one run's epochs share.
struct Run<'a> {
    cfg: &'a TrainConfig,
    data: &'a Data,
    ad: &'a Device,
    batch: usize,
    steps: usize,
    sched: Schedule,
}

/// One epoch's sums.
struct EpochSums {
    loss_sum: f64,
    correct: usize,
    seen: usize,
    /// The last step's learning rate.
    lr: f64,
}

impl Run<'_> {
    /// One pass over a seeded permutation of the training images (the same one after a
    /// resume): decode and augment in parallel, one optimiser step per batch.
    fn epoch(
        &self,
        mut model: Model,
        optim: &mut ModuleOptimizer,
        epoch: usize,
        state: &mut State,
        bad: &mut BTreeSet<PathBuf>,
        on: &mut dyn FnMut(Event),
    ) -> Result<(Model, EpochSums), TrainError> {
        let (cfg, data) = (self.cfg, self.data);
        let (n, s, chans) = (data.train.samples.len(), data.tf.img_size, data.tf.channels);
        let start = Instant::now();
        self.ad
            .seed(Rng::keyed(&[cfg.seed, epoch as u64, 1]).next_u64());
        let order = Rng::keyed(&[cfg.seed, epoch as u64, 0]).permutation(n);
        let items: Vec<(usize, PathBuf)> = order[..self.steps * self.batch]
            .iter()
            .map(|&i| (i, data.train.samples[i].path.clone()))
            .collect();
        let tf = data.tf.clone();
        let seed = cfg.seed;
        let batches = loader::load_items(
            items,
            self.batch,
            data.workers,
            2,
            move |(i, p): &(usize, PathBuf)| {
                let mut rng = Rng::keyed(&[seed, epoch as u64, *i as u64, 2]);
                decode(p)
                    .map(|img| tf.apply(&img, &mut rng))
                    .map_err(|e| e.reason)
            },
        );
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = self.sched.lr(state.iteration);
        for (k, b) in batches.enumerate() {
            let mut x = Vec::new();
            let mut y = Vec::new();
            for (pos, r) in b.items {
                let sample = &data.train.samples[order[pos]];
                match r {
                    Ok(v) => {
                        x.extend(v);
                        y.push(sample.label as i64);
                    }
                    Err(e) => {
                        if bad.insert(sample.path.clone()) {
                            on(Event::Warning(format!(
                                "skipping {}: {e}",
                                sample.path.display()
                            )));
                        }
                    }
                }
            }
            let m = y.len();
            if m == 0 {
                continue;
            }
            lr = self.sched.lr(state.iteration);
            let xt = Tensor::<4>::from_data(TensorData::new(x, [m, chans, s, s]), self.ad);
            let scale = state.loss_scale.as_mut();
            let (next, lv, pred) =
                step_scaled(model, optim, xt, &y, lr, cfg.label_smoothing, scale);
            model = next;
            if !lv.is_finite() {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    step: state.iteration + 1,
                    lr,
                });
            }
            state.iteration += 1;
            loss_sum += lv * m as f64;
            correct += pred.iter().zip(&y).filter(|(p, t)| p == t).count();
            seen += m;
            on(Event::Batch {
                epoch: epoch + 1,
                epochs: cfg.epochs,
                done: k + 1,
                total: self.steps,
                loss: loss_sum / seen as f64,
                top1: 100.0 * correct as f64 / seen as f64,
                lr,
                img_per_s: seen as f64 / start.elapsed().as_secs_f64().max(1e-9),
            });
        }
        if seen == 0 {
            return Err(TrainError::Data(format!(
                "{}: no image of the epoch could be read",
                cfg.data.display()
            )));
        }
        Ok((
            model,
            EpochSums {
                loss_sum,
                correct,
                seen,
                lr,
            },
        ))
    }
}

/// An epoch's files: exports first, checkpoint last, so a crash in between redoes the epoch
/// and rewrites all.
fn save_epoch(
    out: &Path,
    model: &Model,
    optim: &ModuleOptimizer,
    state: &mut State,
    row: EpochRow,
    meta: &std::collections::BTreeMap<String, String>,
) -> Result<(), TrainError> {
    let epoch = row.epoch;
    let inference = model.valid();
    let bytes = export::to_safetensors(&inference, meta.clone()).map_err(|reason| {
        TrainError::Checkpoint {
            path: out.join(MODEL).display().to_string(),
            reason,
        }
    })?;
    write_atomic(&out.join(MODEL), &bytes)?;
    if let Some(t1) = row.val_top1
        && state.best.is_none_or(|(_, b)| t1 > b)
    {
        state.best = Some((epoch, t1));
        write_atomic(&out.join(BEST), &bytes)?;
    }
    state.history.push(row);
    state.epochs_done = epoch;
    write_atomic(&out.join(METRICS), metrics_csv(&state.history).as_bytes())?;
    let ck = checkpoint_bytes(model, optim, state)?;
    write_atomic(&out.join(CHECKPOINT), &ck)
}

fn evaluate(
    model: &Model,
    folder: &ImageFolder,
    map: &[usize],
    data: &Data,
    device: &Device,
    bad: &mut BTreeSet<PathBuf>,
    on: &mut dyn FnMut(Event),
) -> Result<(f64, f64, f64), TrainError> {
    // The weights changed since the last pass, possibly in place (same storage address):
    // packed bf16 copies of them must not be found.
    committee_ops::precision::forget_packed_weights();
    let ev = data.eval.clone();
    let chans = data.tf.channels;
    let s = ev.img_size;
    let paths: Vec<PathBuf> = folder.samples.iter().map(|x| x.path.clone()).collect();
    let batches = loader::load(paths, 256, data.workers, 2, move |p| {
        decode(p)
            .map(|img| ev.apply_channels(&img, chans))
            .map_err(|e| e.reason)
    });
    let (mut loss, mut top1, mut top5, mut n) = (0.0f64, 0usize, 0usize, 0usize);
    for b in batches {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (i, r) in b.items {
            match r {
                Ok(v) => {
                    x.extend(v);
                    y.push(map[folder.samples[i].label]);
                }
                Err(e) => {
                    let p = &folder.samples[i].path;
                    if bad.insert(p.clone()) {
                        on(Event::Warning(format!("skipping {}: {e}", p.display())));
                    }
                }
            }
        }
        if y.is_empty() {
            continue;
        }
        let m = y.len();
        let xt = Tensor::<4>::from_data(TensorData::new(x, [m, chans, s, s]), device);
        let logits: Vec<f32> = model
            .forward(xt)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let c = logits.len() / m;
        for (r, &label) in y.iter().enumerate() {
            let row = &logits[r * c..(r + 1) * c];
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            loss += lse - row[label] as f64;
            // Strict rank, NaN wrong: a diverged model cannot look accurate (and be kept
            // as best.safetensors).
            top1 += in_top_k(row, label, 1) as usize;
            top5 += in_top_k(row, label, 5) as usize;
        }
        n += m;
    }
    if n == 0 {
        return Err(TrainError::Data(format!(
            "{}: no validation image could be read",
            folder.root.display()
        )));
    }
    let pct = |k: usize| 100.0 * k as f64 / n as f64;
    Ok((loss / n as f64, pct(top1), pct(top5)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ModuleMapper;

    /// Replaces element 3 of the parameter numbered `target` (visit order) by `value`.
    struct Poison {
        seen: usize,
        target: usize,
        value: f32,
    }

    impl ModuleMapper for Poison {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            self.seen += 1;
            if self.seen != self.target {
                return param;
            }
            let (id, t, mapper) = param.consume();
            let shape = t.shape();
            let mut v = t.clone().into_data().try_to_vec::<f32>().unwrap();
            v[3] = self.value;
            let t = Tensor::<D>::from_data(TensorData::new(v, shape), &t.device());
            Param::from_mapped_value(id, t, mapper)
        }
    }

    /// An f16 run's loss scale survives the checkpoint's JSON, and a checkpoint written
    /// before f16 training existed reads as a run without one.
    #[test]
    fn the_loss_scale_travels_with_the_checkpoint_state() {
        let mut state = State {
            epochs_done: 1,
            iteration: 40,
            config: TrainConfig::new("mobilenetv2_035", Path::new("data")),
            history: Vec::new(),
            best: None,
            data_fingerprint: None,
            loss_scale: Some(LossScale {
                scale: 8192.0,
                good_steps: 37,
                skipped: 3,
            }),
        };
        let json = serde_json::to_string(&state).unwrap();
        let back: State = serde_json::from_str(&json).unwrap();
        assert_eq!(back.loss_scale, state.loss_scale);
        state.loss_scale = None;
        let mut old: serde_json::Value = serde_json::to_value(&state).unwrap();
        old.as_object_mut().unwrap().remove("loss_scale");
        let back: State = serde_json::from_value(old).unwrap();
        assert_eq!(back.loss_scale, None);
    }

    /// The weight check names the first non-finite parameter by its state-dict key, and
    /// passes a finite model.
    #[test]
    fn nonfinite_weights_are_found_by_name() {
        let spec = registry::get("resnet18").unwrap();
        let dev = committee_ops::backend::cpu_device();
        let model =
            committee_zoo::weights::random_model(&spec, &CommonOptions::default(), [32, 32], &dev);
        assert_eq!(first_nonfinite(&model), None);
        let names: Vec<String> = committee_zoo::manifest::entries(&model)
            .into_iter()
            .map(|e| e.name)
            .collect();
        for (target, value) in [(1, f32::NAN), (5, f32::INFINITY)] {
            let m = model.clone().map(&mut Poison {
                seen: 0,
                target,
                value,
            });
            assert_eq!(
                first_nonfinite(&m).as_deref(),
                Some(names[target - 1].as_str())
            );
        }
    }
}
