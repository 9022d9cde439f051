//! `committee eval`: accuracy of one model on an image folder, with an optional logits cache.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::Device;
use committee_core::cache::{CacheMeta, LogitsCache};
use committee_core::metrics::Accuracy;
use committee_data::folder::ImageFolder;
use committee_data::{decode, loader};
use committee_ops::backend::{BackendKind, Selected};
use serde_json::json;

use crate::cmd::args::PreprocessArgs;
use crate::cmd::members::{
    Member, MemberArg, ensure_evaluated, load_member, num_workers, warn_nonfinite,
};
use crate::cmd::progress::Progress;
use crate::util::{device, sha256_file};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    #[arg(long)]
    weights: PathBuf,
    /// Image folder: root/<class>/<image>.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 32, value_parser = crate::cmd::args::positive)]
    batch: usize,
    /// Decoding threads (default: all cores).
    #[arg(long, value_parser = crate::cmd::args::positive)]
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
    /// Evaluate a deterministic shard K/N of the files (0 <= K < N).
    #[arg(long, value_parser = crate::cmd::args::shard)]
    shard: Option<[usize; 2]>,
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
    let folder = open_folder(&a)?;
    let sel = device(a.backend)?;
    let arg = MemberArg {
        model: a.model.clone(),
        weights: a.weights.clone(),
        res: None,
        sha256: None,
    };
    let member = load_member(&arg, |t| a.pre.apply(t), &sel.device)?;
    if folder.classes.len() > member.classes {
        bail!(
            "{} has {} classes but the model's head has {}",
            a.data.display(),
            folder.classes.len(),
            member.classes
        );
    }
    let t = &member.transform;
    eprintln!(
        "eval {} on {} images ({} classes, {} px, crop {:.3}, {}), {} non-image files skipped",
        a.model,
        folder.samples.len(),
        folder.classes.len(),
        t.img_size,
        t.crop_pct,
        t.interpolation,
        folder.skipped.len()
    );
    let mut r = evaluate(&a, &folder, &member, &sel.device)?;
    ensure_evaluated(r.accuracy.n, &a.data, r.failed.len(), folder.samples.len())?;
    warn_nonfinite(r.nonfinite, r.accuracy.n);
    if let Some(path) = &a.save_logits {
        save_cache(&a, path, &folder, &member, std::mem::take(&mut r.cache))?;
    }
    report(&a, &folder, &member, &sel, &r)
}

/// The folder, sharded and limited as asked.
fn open_folder(a: &Args) -> Result<ImageFolder> {
    let mut folder = ImageFolder::scan(&a.data, a.class_map.as_deref())?;
    if let Some([k, n]) = a.shard {
        folder.keep_shard(k, n);
    }
    if let Some(n) = a.limit {
        folder.samples.truncate(n);
    }
    Ok(folder)
}

/// What a pass over the folder gave.
struct Evaluated {
    accuracy: Accuracy,
    /// Images that could not be decoded: path and reason.
    failed: Vec<serde_json::Value>,
    /// Logits rows, labels and relative paths of the evaluated images (with `--save-logits`).
    cache: (Vec<f32>, Vec<i64>, Vec<String>),
    /// Images whose logits hold a NaN or an infinity.
    nonfinite: usize,
    wall_s: f64,
}

/// Every image through `member`, decoded in parallel, in batches.
fn evaluate(a: &Args, folder: &ImageFolder, member: &Member, dev: &Device) -> Result<Evaluated> {
    let workers = a.workers.unwrap_or_else(num_workers);
    let paths: Vec<PathBuf> = folder.samples.iter().map(|s| s.path.clone()).collect();
    let (t, chans, classes) = (member.transform.clone(), member.chans, member.classes);
    let batches = loader::load(paths, a.batch, workers, 2, move |p| {
        decode(p)
            .map(|img| t.apply_channels(&img, chans))
            .map_err(|e| e.reason)
    });

    let progress = Progress::new(folder.samples.len() as u64);
    let start = Instant::now();
    let mut acc = Accuracy::default();
    let mut failed = Vec::new();
    let mut nonfinite = 0;
    let (mut rows, mut labels, mut files) = (Vec::new(), Vec::new(), Vec::new());
    for batch in batches {
        let mut data = Vec::new();
        let mut idx = Vec::new();
        for (i, r) in batch.items {
            match r {
                Ok(x) => {
                    data.push(x);
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
            let inputs: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
            let logits = member.logits(&inputs, dev)?;
            for (r, &i) in idx.iter().enumerate() {
                let row = &logits[r * classes..(r + 1) * classes];
                let label = folder.samples[i].label;
                acc.add(row, label);
                nonfinite += row.iter().any(|v| !v.is_finite()) as usize;
                if a.save_logits.is_some() {
                    rows.extend_from_slice(row);
                    labels.push(label as i64);
                    files.push(folder.relative(&folder.samples[i].path));
                }
            }
        }
        let done = acc.n as u64 + failed.len() as u64;
        progress.update(done, &format!("top-1 {:.2}%", acc.top1_pct()));
    }
    progress.finish();
    // Include GPU work still in flight (see bench's `timed`).
    let _ = dev.sync();
    Ok(Evaluated {
        accuracy: acc,
        failed,
        cache: (rows, labels, files),
        nonfinite,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// The logits cache of the evaluated images, with what a committee needs to know of them.
fn save_cache(
    a: &Args,
    path: &Path,
    folder: &ImageFolder,
    member: &Member,
    (logits, labels, files): (Vec<f32>, Vec<i64>, Vec<String>),
) -> Result<()> {
    let cache = LogitsCache {
        meta: CacheMeta {
            model: a.model.clone(),
            name: a.name.clone(),
            // As given, so a spec written from this cache can run the member live.
            weights: a.weights.display().to_string(),
            weights_sha256: sha256_file(&a.weights)?,
            img_size: member.transform.img_size,
            gmacs: member.gmacs,
            num_classes: member.classes,
            data_root: folder.root.display().to_string(),
            files,
            shard: a.shard,
        },
        logits,
        labels,
    };
    cache.save(path)?;
    eprintln!("wrote {} ({} rows)", path.display(), cache.len());
    Ok(())
}

fn report(
    a: &Args,
    folder: &ImageFolder,
    member: &Member,
    sel: &Selected,
    r: &Evaluated,
) -> Result<()> {
    let (acc, failed, wall) = (&r.accuracy, &r.failed, r.wall_s);
    let img_per_s = acc.n as f64 / wall.max(1e-9);
    let gmacs = member.gmacs;
    let report = json!({
        "model": a.model, "top1": acc.top1_pct(), "top5": acc.top5_pct(), "images": acc.n,
        "failed": failed, "skipped": folder.skipped.len(), "img_per_s": img_per_s,
        "gmacs": gmacs, "wall_s": wall, "backend": sel.kind.to_string(),
        "nonfinite_logits": r.nonfinite,
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
