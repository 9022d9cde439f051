//! `committee eval`: accuracy of one model on an image folder, with an optional logits cache.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use committee_core::cache::{CacheMeta, LogitsCache};
use committee_core::metrics::Accuracy;
use committee_core::partial::{Chunk, Partial};
use committee_data::folder::ImageFolder;
use committee_data::{decode, loader};
use committee_ops::backend::{BackendKind, Selected, is_cpu, select_index};
use serde_json::json;

use crate::cmd::args::PreprocessArgs;
use crate::cmd::devices;
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
    /// Precision: f32; bf16 on flex (the dense convolutions' and linear layers' products with
    /// bf16 operands and f32 accumulation, on AMX or AVX512-BF16; f32 where the CPU has
    /// neither); f16 on GPU backends (the whole model in half precision, logits f32).
    #[arg(long, default_value = "f32")]
    dtype: committee_ops::precision::Dtype,
    /// Write logits, labels and metadata to this safetensors file.
    #[arg(long)]
    save_logits: Option<PathBuf>,
    /// Continue an interrupted `--save-logits` run from its progress (`TARGET.partial/`);
    /// the final cache is the one an uninterrupted run writes.
    #[arg(long, requires = "save_logits")]
    resume: bool,
    /// With `--save-logits`: write progress every N images (rounded up to whole batches), so
    /// a killed run loses at most that much.
    #[arg(long, default_value_t = 1024, value_parser = crate::cmd::args::positive)]
    save_every: usize,
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
    /// Split the images over these devices, one shard each, in one command: GPU indices for
    /// wgpu (`0,1`), or on flex/ndarray slots with an equal share of the threads. Needs
    /// --save-logits: the shards are merged into that one cache, as `--shard` and
    /// `merge-logits` would.
    #[arg(long, value_delimiter = ',', conflicts_with = "limit")]
    devices: Vec<usize>,
    #[command(flatten)]
    pre: PreprocessArgs,
}

pub fn run(a: Args) -> Result<()> {
    if a.devices.len() > 1 {
        return on_devices(&a);
    }
    let folder = open_folder(&a)?;
    let sel = device(a.backend)?;
    let sel = match a.devices.first() {
        Some(&d) if !is_cpu(&sel.device) => select_index(sel.kind, d)?,
        _ => sel,
    };
    crate::util::precision(a.dtype, &sel, false)?;
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
    let saving = match &a.save_logits {
        Some(target) => Some(Saving::begin(&a, target, &folder, &member, &sel)?),
        None => None,
    };
    let (mut r, saving) = evaluate(&a, &folder, &member, &sel.device, saving)?;
    ensure_evaluated(r.accuracy.n, &a.data, r.failed.len(), folder.samples.len())?;
    warn_nonfinite(r.nonfinite, r.accuracy.n);
    if let (Some(path), Some(saving)) = (&a.save_logits, saving) {
        save_cache(
            &a,
            path,
            &folder,
            &member,
            &saving.sha256,
            std::mem::take(&mut r.cache),
        )?;
        saving.partial.finish()?;
    }
    report(&a, &folder, &member, &sel, &r)
}

/// `--devices`: one shard per device, each a child `eval --shard K/N --devices D
/// --save-logits TARGET.devices/shard-K-of-N.safetensors` (`cmd::devices`), merged into
/// TARGET as `merge-logits` would; the accuracy is the merged cache's. A failed shard leaves
/// the others' caches and its own progress: `--resume` keeps the shards already written and
/// resumes the rest.
fn on_devices(a: &Args) -> Result<()> {
    devices::distinct(&a.devices)?;
    // A child gets `--shard K/N --devices D`; several devices make the shards themselves.
    anyhow::ensure!(
        a.shard.is_none(),
        "--devices with several devices makes its own shards: drop --shard"
    );
    let Some(target) = &a.save_logits else {
        bail!("--devices writes one logits cache: give --save-logits");
    };
    let sel = device(a.backend)?;
    let n = a.devices.len();
    let dir = PathBuf::from(format!("{}.devices", target.display()));
    if !a.resume && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let shards: Vec<(usize, PathBuf)> = (0..n)
        .map(|k| (k, dir.join(format!("shard-{k}-of-{n}.safetensors"))))
        .collect();
    let todo: Vec<&(usize, PathBuf)> = shards
        .iter()
        .filter(|(_, p)| !(a.resume && p.exists()))
        .collect();
    let common = devices::args_without(&["--devices", "--save-logits"], &["--json"]);
    let outputs = devices::run(&a.devices, is_cpu(&sel.device), &todo, |(k, path), slot| {
        let mut args = common.clone();
        for x in [
            "--shard".to_string(),
            format!("{k}/{n}"),
            "--devices".into(),
            slot.device.to_string(),
            "--json".into(),
            "--save-logits".into(),
        ] {
            args.push(x.into());
        }
        args.push(path.into());
        args
    })?;
    let (mut failed, mut errors, mut wall, mut timed) = (Vec::new(), Vec::new(), 0f64, 0f64);
    for (&(k, _), out) in todo.iter().zip(outputs) {
        match devices::report(out, &format!("shard {k}/{n}")) {
            Ok(r) => {
                failed.extend(r["failed"].as_array().cloned().unwrap_or_default());
                let w = r["wall_s"].as_f64().unwrap_or(0.0);
                wall = wall.max(w);
                timed += r["img_per_s"].as_f64().unwrap_or(0.0) * w;
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{} of {n} shards failed; the others' caches are kept in {} (rerun with --resume):\n  {}",
            errors.len(),
            dir.display(),
            errors.join("\n  ")
        );
    }
    let mut caches = Vec::new();
    for (_, p) in &shards {
        caches.push((p.display().to_string(), LogitsCache::load(p)?));
    }
    let named: Vec<(&str, LogitsCache)> = caches
        .iter()
        .map(|(n, c)| (n.as_str(), c.clone()))
        .collect();
    let merged = committee_core::cache::merge(&named)?;
    merged.save(target)?;
    std::fs::remove_dir_all(&dir).ok();
    eprintln!(
        "wrote {} ({} rows, {n} shards)",
        target.display(),
        merged.len()
    );
    let mut acc = Accuracy::default();
    for i in 0..merged.len() {
        acc.add(merged.row(i), merged.labels[i] as usize);
    }
    let img_per_s = timed / wall.max(1e-9);
    if a.json {
        let report = json!({
            "model": a.model, "top1": acc.top1_pct(), "top5": acc.top5_pct(), "images": acc.n,
            "failed": failed, "img_per_s": img_per_s, "gmacs": merged.meta.gmacs,
            "wall_s": wall, "backend": sel.kind.to_string(), "devices": a.devices,
            "dtype": a.dtype.to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: top-1 {:.3}%  top-5 {:.3}%  on {} images  ({:.1} img/s on {n} devices, {:.3} GMACs/img)",
            a.model,
            acc.top1_pct(),
            acc.top5_pct(),
            acc.n,
            img_per_s,
            merged.meta.gmacs
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
#[derive(Default)]
struct Evaluated {
    accuracy: Accuracy,
    /// Images that could not be decoded: path and reason.
    failed: Vec<serde_json::Value>,
    /// Logits rows, labels and relative paths of the evaluated images (with `--save-logits`).
    cache: (Vec<f32>, Vec<i64>, Vec<String>),
    /// Images whose logits hold a NaN or an infinity.
    nonfinite: usize,
    /// Images evaluated by this process (not taken over from an interrupted run), in `wall_s`.
    timed: usize,
    wall_s: f64,
}

impl Evaluated {
    /// Counts one evaluated image (and keeps its row when saving).
    fn add(&mut self, folder: &ImageFolder, i: usize, row: &[f32], keep: bool) {
        let label = folder.samples[i].label;
        self.accuracy.add(row, label);
        self.nonfinite += row.iter().any(|v| !v.is_finite()) as usize;
        if keep {
            self.cache.0.extend_from_slice(row);
            self.cache.1.push(label as i64);
            self.cache.2.push(folder.relative(&folder.samples[i].path));
        }
    }

    fn fail(&mut self, folder: &ImageFolder, i: usize, reason: &str) {
        let path = folder.samples[i].path.display().to_string();
        self.failed.push(json!({"path": path, "error": reason}));
    }

    /// The images a chunk of an interrupted run covers, as if evaluated now.
    fn absorb(&mut self, folder: &ImageFolder, c: &Chunk, classes: usize) {
        let (mut r, mut f) = (0, 0);
        for i in c.start..c.end {
            if c.index.get(r) == Some(&i) {
                self.add(folder, i, &c.logits[r * classes..(r + 1) * classes], true);
                r += 1;
            } else if let Some((_, reason)) = c.failed.get(f).filter(|(j, _)| *j == i) {
                self.fail(folder, i, reason);
                f += 1;
            }
        }
    }
}

/// The progress of a `--save-logits` run, written in chunks (`committee_core::partial`).
struct Saving {
    partial: Partial,
    /// Chunks of an interrupted run, to take over.
    done: Vec<Chunk>,
    pending: Chunk,
    every: usize,
    sha256: String,
}

impl Saving {
    /// Opens (or, with `--resume`, reopens) the progress beside `target`. The run description
    /// holds everything the logits depend on, so a resume continues this run only.
    fn begin(
        a: &Args,
        target: &Path,
        folder: &ImageFolder,
        member: &Member,
        sel: &Selected,
    ) -> Result<Self> {
        let sha256 = sha256_file(&a.weights)?;
        let t = &member.transform;
        let run = json!({
            "model": a.model, "name": a.name, "weights": a.weights.display().to_string(),
            "weights_sha256": sha256, "backend": sel.kind.to_string(), "batch": a.batch,
            "dtype": committee_ops::precision::describe(),
            "data_root": folder.root.display().to_string(), "files": folder.fingerprint(),
            "shard": a.shard, "limit": a.limit, "classes": member.classes,
            "img_size": t.img_size, "crop_pct": t.crop_pct, "resize": t.resize,
            "interpolation": t.interpolation.to_string(), "mean": t.mean, "std": t.std,
        });
        let (partial, done) = Partial::begin(target, &run, member.classes, a.resume)?;
        let start = done.last().map_or(0, |c| c.end);
        if a.resume {
            eprintln!(
                "{}",
                if done.is_empty() {
                    format!("nothing to resume in {}: starting", partial.dir().display())
                } else {
                    format!(
                        "resuming after {start} of {} images ({})",
                        folder.samples.len(),
                        partial.dir().display()
                    )
                }
            );
        }
        Ok(Self {
            partial,
            done,
            pending: Chunk {
                start,
                end: start,
                ..Chunk::default()
            },
            every: a.save_every,
            sha256,
        })
    }

    /// Ends the pending chunk at sample `end` and writes it once it holds enough images.
    fn batch_done(&mut self, end: usize) -> Result<()> {
        self.pending.end = end;
        if end - self.pending.start >= self.every {
            self.partial.append(&self.pending)?;
            self.pending = Chunk {
                start: end,
                end,
                ..Chunk::default()
            };
        }
        Ok(())
    }
}

/// Every image through `member`, decoded in parallel, in batches; with `saving`, from where
/// an interrupted run stopped, writing progress as it goes.
fn evaluate(
    a: &Args,
    folder: &ImageFolder,
    member: &Member,
    dev: &Device,
    mut saving: Option<Saving>,
) -> Result<(Evaluated, Option<Saving>)> {
    let mut ev = Evaluated::default();
    let classes = member.classes;
    // Where the interrupted run's chunks end (its pending chunk starts there).
    let start = saving.as_ref().map_or(0, |s| s.pending.start);
    if let Some(s) = &mut saving {
        for c in std::mem::take(&mut s.done) {
            ev.absorb(folder, &c, classes);
        }
    }
    let workers = a.workers.unwrap_or_else(num_workers);
    let paths: Vec<PathBuf> = folder.samples[start..]
        .iter()
        .map(|s| s.path.clone())
        .collect();
    let (t, chans) = (member.transform.clone(), member.chans);
    let batches = loader::load(paths, a.batch, workers, 2, move |p| {
        decode(p)
            .map(|img| t.apply_channels(&img, chans))
            .map_err(|e| e.reason)
    });

    let progress = Progress::new(folder.samples.len() as u64);
    let begun = Instant::now();
    for batch in batches {
        let mut data = Vec::new();
        let mut idx = Vec::new();
        let mut end = start;
        for (i, r) in batch.items {
            let i = i + start;
            end = i + 1;
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
                    ev.fail(folder, i, &e);
                    if let Some(s) = &mut saving {
                        s.pending.failed.push((i, e));
                    }
                }
            }
        }
        if !idx.is_empty() {
            let inputs: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
            let logits = member.logits(&inputs, dev)?;
            ev.timed += idx.len();
            for (r, &i) in idx.iter().enumerate() {
                let row = &logits[r * classes..(r + 1) * classes];
                ev.add(folder, i, row, saving.is_some());
                if let Some(s) = &mut saving {
                    s.pending.index.push(i);
                    s.pending.labels.push(folder.samples[i].label as i64);
                    s.pending.logits.extend_from_slice(row);
                }
            }
        }
        if let Some(s) = &mut saving {
            s.batch_done(end)?;
        }
        let done = ev.accuracy.n as u64 + ev.failed.len() as u64;
        progress.update(done, &format!("top-1 {:.2}%", ev.accuracy.top1_pct()));
    }
    progress.finish();
    // Include GPU work still in flight (see bench's `timed`).
    let _ = dev.sync();
    ev.wall_s = begun.elapsed().as_secs_f64();
    Ok((ev, saving))
}

/// The logits cache of the evaluated images, with what a committee needs to know of them.
fn save_cache(
    a: &Args,
    path: &Path,
    folder: &ImageFolder,
    member: &Member,
    sha256: &str,
    (logits, labels, files): (Vec<f32>, Vec<i64>, Vec<String>),
) -> Result<()> {
    let cache = LogitsCache {
        meta: CacheMeta {
            model: a.model.clone(),
            name: a.name.clone(),
            // As given, so a spec written from this cache can run the member live.
            weights: a.weights.display().to_string(),
            weights_sha256: sha256.to_string(),
            img_size: member.transform.img_size,
            gmacs: member.gmacs,
            num_classes: member.classes,
            data_root: folder.root.display().to_string(),
            files,
            shard: a.shard,
        },
        logits: logits.into(),
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
    let img_per_s = r.timed as f64 / wall.max(1e-9);
    let gmacs = member.gmacs;
    let report = json!({
        "model": a.model, "top1": acc.top1_pct(), "top5": acc.top5_pct(), "images": acc.n,
        "failed": failed, "skipped": folder.skipped.len(), "img_per_s": img_per_s,
        "gmacs": gmacs, "wall_s": wall, "backend": sel.kind.to_string(),
        "dtype": committee_ops::precision::describe(),
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
