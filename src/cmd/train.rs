//! `committee train`: train members from scratch on an image folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use committee_ops::backend::BackendKind;
use committee_ops::precision::Dtype;
use committee_train::augment::AugmentKind;
use committee_train::{Event, OptKind, Start, TrainConfig, TrainDtype};

use crate::cmd::devices;
use crate::cmd::progress::Progress;
use crate::util::device;

#[derive(clap::Args)]
pub struct Args {
    /// Registry model name (see `committee models`).
    #[arg(long)]
    model: Option<String>,
    /// Training image folder (one subfolder per class).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory: config.toml, metrics.csv, checkpoint, model.safetensors, best.safetensors.
    #[arg(long)]
    out: PathBuf,
    /// Validation image folder (same class names); enables best.safetensors.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Read the configuration from this TOML file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_parser = crate::cmd::args::positive)]
    epochs: Option<usize>,
    #[arg(long, value_parser = crate::cmd::args::positive)]
    batch: Option<usize>,
    /// Training resolution (default: the image size for small images, else the model's).
    #[arg(long, value_parser = crate::cmd::args::positive)]
    img_size: Option<usize>,
    /// Input channels (default: 1 for grayscale images, else 3).
    #[arg(long)]
    in_chans: Option<usize>,
    /// sgd (momentum, no dampening, as PyTorch), adamw or rmsprop.
    #[arg(long)]
    opt: Option<OptKind>,
    /// Peak learning rate (default: 0.1 for sgd, 1e-3 otherwise, times batch/128).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    momentum: Option<f64>,
    /// Not applied to norm layers and biases.
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    warmup_epochs: Option<f64>,
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Dropout before the classifier.
    #[arg(long)]
    drop_rate: Option<f64>,
    /// Stochastic depth rate (the last block's; earlier blocks scale linearly).
    #[arg(long)]
    drop_path: Option<f64>,
    /// imagenet (random-resized-crop + flip), small (pad-and-crop + flip) or none.
    #[arg(long)]
    augment: Option<AugmentKind>,
    /// Probability of random erasing per image (timm's RandomErasing, mode pixel; 0 = off).
    #[arg(long)]
    random_erasing: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Train one member per seed into RUN/seed-N, one after the other (or side by side, see
    /// --devices).
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    seeds: Vec<u64>,
    /// Train the members side by side, one per device: GPU indices for wgpu (`0,1,2,3`; the
    /// members are independent, so no gradients are exchanged), or on flex/ndarray one slot
    /// per entry, the threads split evenly between them. A member whose slot is busy waits
    /// for the next free one. One member failing does not stop the others.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<usize>,
    /// Set by `--devices` on each member's child: its lines carry this tag, no progress bar.
    #[arg(long, hide = true)]
    tag: Option<String>,
    /// Continue from RUN/checkpoint.safetensors (its saved configuration wins).
    #[arg(long)]
    resume: bool,
    /// Start a new run in a folder that already holds a model or a checkpoint, overwriting it.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Decoding threads.
    #[arg(long, value_parser = crate::cmd::args::positive)]
    workers: Option<usize>,
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Precision: f32; bf16 on flex (the convolutions' products with operands rounded to
    /// bf16, f32 accumulation; weights, gradients and optimiser state stay f32) where the CPU
    /// has AMX or AVX512-BF16 (f32 elsewhere, with a warning); f16 on GPU backends (mixed
    /// precision: the forward in f16 from f32 master weights, BatchNorm and LayerNorm in f32,
    /// dynamic loss scaling as PyTorch's GradScaler; the scale is saved with the checkpoint).
    #[arg(long)]
    dtype: Option<Dtype>,
    /// Print the final metrics as JSON.
    #[arg(long)]
    json: bool,
}

fn config(a: &Args) -> Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::from_toml(p)?,
        None => {
            let (Some(m), Some(d)) = (&a.model, &a.data) else {
                bail!("--model and --data are required (or give them in --config)");
            };
            TrainConfig::new(m, d)
        }
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$f = v; } )* };
    }
    macro_rules! set_opt {
        ($($f:ident),*) => { $( if a.$f.is_some() { c.$f = a.$f.clone(); } )* };
    }
    set!(
        model,
        data,
        epochs,
        batch,
        opt,
        momentum,
        warmup_epochs,
        label_smoothing,
        drop_rate,
        drop_path,
        random_erasing,
        seed
    );
    set_opt!(val, img_size, in_chans, lr, weight_decay, augment, workers);
    match a.dtype {
        None => {}
        Some(Dtype::F32) => c.dtype = TrainDtype::F32,
        Some(Dtype::Bf16) => c.dtype = TrainDtype::Bf16,
        Some(Dtype::F16) => c.dtype = TrainDtype::F16,
    }
    if committee_zoo::registry::get(&c.model).is_none() {
        bail!("unknown model '{}' (see `committee models`)", c.model);
    }
    c.validate().map_err(anyhow::Error::msg)?;
    Ok(c)
}

pub fn run(a: Args) -> Result<()> {
    let base = config(&a)?;
    let sel = device(a.backend)?;
    crate::util::precision(base.dtype.into(), &sel, true)?;
    let runs: Vec<(TrainConfig, PathBuf)> = if a.seeds.is_empty() {
        vec![(base, a.out.clone())]
    } else {
        a.seeds
            .iter()
            .map(|&s| {
                let mut c = base.clone();
                c.seed = s;
                (c, a.out.join(format!("seed-{s}")))
            })
            .collect()
    };
    let start = match (a.resume, a.force) {
        (true, _) => Start::Resume,
        (false, true) => Start::Overwrite,
        (false, false) => Start::New,
    };
    let cpu = committee_ops::backend::is_cpu(&sel.device);
    let reports = if a.devices.len() > 1 || (!a.devices.is_empty() && runs.len() > 1) {
        side_by_side(&a, runs, cpu)?
    } else {
        // One device named: this process is a member's child (or was asked for that device).
        let device = match a.devices.first() {
            Some(&d) if !cpu => committee_ops::backend::select_index(sel.kind, d)?.device,
            _ => sel.device.clone(),
        };
        let mut reports = Vec::new();
        for (cfg, out) in runs {
            let mut display = Display::new(a.tag.clone());
            let outcome =
                committee_train::train(cfg, &out, &device, start, &mut |e| display.event(e))
                    .with_context(|| format!("training into {}", out.display()))?;
            display.finish();
            reports.push(report(&out, &outcome));
        }
        reports
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

/// Says a member is done and returns its line of the `--json` report.
fn report(out: &Path, outcome: &committee_train::Outcome) -> serde_json::Value {
    eprintln!(
        "done: {} ({} epochs){}",
        out.join(committee_train::trainer::MODEL).display(),
        outcome.history.len(),
        outcome
            .best
            .map(|(e, t)| format!(", best val top-1 {t:.2}% at epoch {e}"))
            .unwrap_or_default()
    );
    serde_json::json!({
        "out": out.display().to_string(),
        "model": outcome.config.model,
        "seed": outcome.config.seed,
        "epochs": outcome.history.len(),
        "last": outcome.history.last(),
        "best_epoch": outcome.best.map(|b| b.0),
        "best_val_top1": outcome.best.map(|b| b.1),
    })
}

/// Trains `runs` side by side, one member per `--devices` entry at a time, each in a child
/// process of its own (see `cmd::devices` for why): this command again for one seed and one
/// device (`--devices D --seed S --out RUN/seed-S`). Every member runs to its end even when
/// another fails; the failures are reported together.
fn side_by_side(
    a: &Args,
    runs: Vec<(TrainConfig, PathBuf)>,
    cpu: bool,
) -> Result<Vec<serde_json::Value>> {
    devices::distinct(&a.devices)?;
    let common = devices::args_without(
        &["--seeds", "--seed", "--devices", "--out", "--tag"],
        &["--json"],
    );
    let tag = |cfg: &TrainConfig, slot: devices::Slot| format!("[seed {} on {slot}]", cfg.seed);
    let outputs = devices::run(&a.devices, cpu, &runs, |(cfg, out), slot| {
        let mut args = common.clone();
        for x in [
            "--seed".to_string(),
            cfg.seed.to_string(),
            "--devices".into(),
            slot.device.to_string(),
            "--json".into(),
            "--tag".into(),
            tag(cfg, slot),
            "--out".into(),
        ] {
            args.push(x.into());
        }
        args.push(out.into());
        args
    })?;
    let total = runs.len();
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for ((cfg, out), output) in runs.iter().zip(outputs) {
        let what = format!("seed {} (training into {})", cfg.seed, out.display());
        match devices::report(output, &what) {
            Ok(serde_json::Value::Array(mut rows)) if rows.len() == 1 => reports.extend(rows.pop()),
            Ok(_) => failed.push(format!("{what} printed an unexpected report")),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {total} members failed (the others finished):\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(reports)
}

/// A side-by-side member's events as whole lines with its tag (progress bars of several
/// members would overwrite each other).
fn member_event(tag: &str, e: Event) {
    match e {
        Event::Info(s) => eprintln!("{tag} {s}"),
        Event::Warning(s) => eprintln!("{tag} warning: {s}"),
        Event::Batch { .. } => {}
        Event::Epoch(r) => eprintln!(
            "{tag} epoch {}: train loss {:.4} top-1 {:.2}%{}, {:.0} img/s, {:.1} s",
            r.epoch,
            r.train_loss,
            r.train_top1,
            r.val_top1
                .map(|t| format!(", val top-1 {t:.2}%"))
                .unwrap_or_default(),
            r.img_per_s,
            r.wall_s
        ),
    }
}

/// Training events as they come: the epoch's progress, then its summary line.
struct Display {
    bar: Option<Progress>,
    /// A side-by-side member's tag: whole lines with it, no progress bar.
    tag: Option<String>,
}

impl Display {
    fn new(tag: Option<String>) -> Self {
        Self { bar: None, tag }
    }

    fn event(&mut self, e: Event) {
        if let Some(tag) = &self.tag {
            return member_event(tag, e);
        }
        match e {
            Event::Info(s) => self.println(&s),
            Event::Warning(s) => self.println(&format!("warning: {s}")),
            Event::Batch {
                epoch,
                epochs,
                done,
                total,
                loss,
                top1,
                lr,
                img_per_s,
            } => {
                let msg = format!(
                    "epoch {epoch}/{epochs} loss {loss:.4} top-1 {top1:.2}% lr {lr:.2e} {img_per_s:.0} img/s"
                );
                let bar = self.bar.get_or_insert_with(|| Progress::new(total as u64));
                bar.set_total(total as u64);
                bar.update(done as u64, &msg);
            }
            Event::Epoch(r) => {
                self.finish();
                let val = match (r.val_loss, r.val_top1, r.val_top5) {
                    (Some(l), Some(t1), Some(t5)) => {
                        format!(", val loss {l:.4} top-1 {t1:.2}% top-5 {t5:.2}%")
                    }
                    _ => String::new(),
                };
                eprintln!(
                    "epoch {}: train loss {:.4} top-1 {:.2}%{val}, {:.0} img/s, {:.1} s",
                    r.epoch, r.train_loss, r.train_top1, r.img_per_s, r.wall_s
                );
            }
        }
    }

    fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
    }
}
