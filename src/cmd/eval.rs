//! `committee eval`: accuracy of one model on an image folder, with an optional logits cache.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::tensor::{Tensor, TensorData};
use committee_core::cache::{CacheMeta, LogitsCache};
use committee_core::metrics::Accuracy;
use committee_data::folder::ImageFolder;
use committee_data::transform::EvalTransform;
use committee_data::{decode, loader};
use committee_zoo::backend::BackendKind;
use committee_zoo::registry::Interpolation;
use committee_zoo::weights::{LoadOptions, load};
use serde_json::json;

use crate::util::{device, sha256_file};

/// Preprocessing overrides shared by the commands that read images.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PreprocessArgs {
    /// Crop size (default: the model's eval size).
    #[arg(long)]
    pub img_size: Option<usize>,
    /// Resize the shorter side to floor(img_size / crop_pct).
    #[arg(long)]
    pub crop_pct: Option<f64>,
    /// bicubic or bilinear.
    #[arg(long)]
    pub interpolation: Option<Interpolation>,
    /// Three comma-separated values.
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub mean: Option<Vec<f64>>,
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub std: Option<Vec<f64>>,
    /// torchvision style: resize the shorter side to exactly this (then crop img_size).
    #[arg(long)]
    pub resize_size: Option<usize>,
}

impl PreprocessArgs {
    pub fn apply(&self, mut t: EvalTransform) -> EvalTransform {
        if let Some(s) = self.img_size {
            t.img_size = s;
        }
        if let Some(c) = self.crop_pct {
            t.crop_pct = c;
        }
        if let Some(i) = self.interpolation {
            t.interpolation = i;
        }
        if let Some(m) = &self.mean {
            t.mean = [m[0], m[1], m[2]];
        }
        if let Some(s) = &self.std {
            t.std = [s[0], s[1], s[2]];
        }
        if self.resize_size.is_some() {
            t.resize = self.resize_size;
        }
        t
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    #[arg(long)]
    weights: PathBuf,
    /// Image folder: root/<class>/<image>.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Decoding threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Evaluate only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Write logits, labels and metadata to this safetensors file.
    #[arg(long)]
    save_logits: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Exit with an error on the first image that cannot be decoded.
    #[arg(long)]
    strict: bool,
    /// Evaluate a deterministic shard K/N of the files.
    #[arg(long)]
    shard: Option<String>,
    /// Label stored in the logits cache, telling apart members of one architecture
    /// (committees then name the member by it).
    #[arg(long)]
    name: Option<String>,
    /// Class order: one class folder name per line.
    #[arg(long)]
    class_map: Option<PathBuf>,
    #[command(flatten)]
    pre: PreprocessArgs,
}

pub fn run(a: Args) -> Result<()> {
    let mut folder = ImageFolder::scan(&a.data, a.class_map.as_deref())?;
    if let Some(s) = &a.shard {
        folder.shard(s)?;
    }
    if let Some(n) = a.limit {
        folder.samples.truncate(n);
    }
    let sel = device(a.backend)?;
    let base = committee_zoo::registry::get(&a.model)
        .with_context(|| format!("unknown model '{}'", a.model))?;
    let base_eval = committee_zoo::export::eval_config(&a.weights).unwrap_or(base.eval);
    let t = a.pre.apply(EvalTransform::from(&base_eval));
    let opts = LoadOptions {
        img_size: Some([t.img_size; 2]),
        fold_bn: true,
        ..Default::default()
    };
    let loaded = load(&a.model, &a.weights, &opts, &sel.device)
        .with_context(|| format!("loading {} into {}", a.weights.display(), a.model))?;
    let classes = loaded.options.num_classes;
    if folder.classes.len() > classes {
        bail!(
            "{} has {} classes but the model's head has {classes}",
            a.data.display(),
            folder.classes.len()
        );
    }
    let chans = loaded.options.in_chans;
    let gmacs = loaded.spec.arch.macs([t.img_size; 2], chans, classes) as f64 / 1e9;
    let n = folder.samples.len();
    eprintln!(
        "eval {} on {} images ({} classes, {} px, crop {:.3}, {}), {} non-image files skipped",
        a.model,
        n,
        folder.classes.len(),
        t.img_size,
        t.crop_pct,
        t.interpolation,
        folder.skipped.len()
    );

    let workers = a.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let paths: Vec<PathBuf> = folder.samples.iter().map(|s| s.path.clone()).collect();
    let tc = t.clone();
    let batches = loader::load(paths, a.batch, workers, 2, move |p| {
        decode(p)
            .map(|img| tc.apply_channels(&img, chans))
            .map_err(|e| e.reason)
    });

    let progress = Progress::new(n as u64);
    let start = Instant::now();
    let mut acc = Accuracy::default();
    let mut failed = Vec::new();
    let mut rows: Vec<f32> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let mut files: Vec<String> = Vec::new();
    let s = t.img_size;
    for batch in batches {
        let mut data = Vec::new();
        let mut idx = Vec::new();
        for (i, r) in batch.items {
            match r {
                Ok(x) => {
                    data.extend(x);
                    idx.push(i);
                }
                Err(e) => {
                    let path = folder.samples[i].path.display().to_string();
                    if a.strict {
                        bail!("{path}: {e}");
                    }
                    progress.warn(&format!("skipping {path}: {e}"));
                    failed.push(json!({"path": path, "error": e}));
                }
            }
        }
        if !idx.is_empty() {
            let x = Tensor::<4>::from_data(
                TensorData::new(data, [idx.len(), chans, s, s]),
                &sel.device,
            );
            let logits = loaded.model.forward(x).into_data().try_to_vec::<f32>()?;
            for (r, &i) in idx.iter().enumerate() {
                let row = &logits[r * classes..(r + 1) * classes];
                let label = folder.samples[i].label;
                acc.add(row, label);
                if a.save_logits.is_some() {
                    rows.extend_from_slice(row);
                    labels.push(label as i64);
                    files.push(folder.relative(&folder.samples[i].path));
                }
            }
        }
        progress.update(acc.n as u64 + failed.len() as u64, acc.top1_pct());
    }
    progress.finish();
    // Include GPU work still in flight (see bench's `timed`).
    let _ = sel.device.sync();
    let wall = start.elapsed().as_secs_f64();
    let img_per_s = acc.n as f64 / wall.max(1e-9);

    if let Some(path) = &a.save_logits {
        let cache = LogitsCache {
            meta: CacheMeta {
                model: a.model.clone(),
                name: a.name.clone(),
                // As given, so a spec written from this cache can run the member live.
                weights: a.weights.display().to_string(),
                weights_sha256: sha256_file(&a.weights)?,
                img_size: s,
                gmacs,
                num_classes: classes,
                data_root: folder.root.display().to_string(),
                files,
            },
            logits: rows,
            labels,
        };
        cache.save(path)?;
        eprintln!("wrote {} ({} rows)", path.display(), cache.len());
    }

    let report = json!({
        "model": a.model, "top1": acc.top1_pct(), "top5": acc.top5_pct(), "images": acc.n,
        "failed": failed, "skipped": folder.skipped.len(), "img_per_s": img_per_s,
        "gmacs": gmacs, "wall_s": wall, "backend": sel.kind.to_string(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: top-1 {:.3}%  top-5 {:.3}%  on {} images  ({:.1} img/s, {:.3} GMACs/img)",
            a.model,
            acc.top1_pct(),
            acc.top5_pct(),
            acc.n,
            img_per_s,
            gmacs
        );
        if !failed.is_empty() {
            println!(
                "{} images could not be decoded and are excluded from the accuracy",
                failed.len()
            );
        }
    }
    Ok(())
}

/// indicatif on a terminal, periodic plain lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    start: Instant,
    last: std::cell::Cell<Instant>,
}

impl Progress {
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let now = Instant::now();
        Self {
            bar,
            total,
            start: now,
            last: std::cell::Cell::new(now),
        }
    }

    pub fn update(&self, done: u64, top1: f64) {
        match &self.bar {
            Some(b) => {
                b.set_position(done);
                b.set_message(format!("top-1 {top1:.2}%"));
            }
            None => {
                if self.last.get().elapsed() >= Duration::from_secs(10) || done == self.total {
                    self.last.set(Instant::now());
                    let el = self.start.elapsed().as_secs_f64();
                    let rate = done as f64 / el.max(1e-9);
                    let eta = (self.total - done.min(self.total)) as f64 / rate.max(1e-9);
                    eprintln!(
                        "{done}/{} images  {rate:.1} img/s  ETA {eta:.0}s  top-1 {top1:.2}%",
                        self.total
                    );
                }
            }
        }
    }

    pub fn warn(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("warning: {msg}")),
            None => eprintln!("warning: {msg}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
