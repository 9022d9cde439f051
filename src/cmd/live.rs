//! Live cascades: images decoded once, each stage with its own preprocessing, and only the
//! samples still undecided after stage k sent to stage k+1 (gathered into a smaller batch).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use committee_core::cascade::{CascadeSpec, decide, outcome};
use committee_core::metrics::argmax;
use committee_data::folder::ImageFolder;
use committee_data::transform::EvalTransform;
use committee_data::{decode, loader};
use committee_zoo::Model;
use committee_zoo::weights::{LoadOptions, load};
use serde_json::json;

use crate::cmd::committee::{CascadeArgs, Timing, report};
use crate::util::device;

/// One loaded stage.
pub struct Stage {
    pub name: String,
    pub model: Model,
    pub transform: EvalTransform,
    pub chans: usize,
    pub classes: usize,
    pub gmacs: f64,
}

/// Parses `NAME:WEIGHTS[@RES]` and loads the model for that resolution.
pub fn load_stage(s: &str, dev: &Device) -> Result<Stage> {
    let (name, rest) = s
        .split_once(':')
        .with_context(|| format!("stage '{s}': expected NAME:WEIGHTS[@RES]"))?;
    let (weights, res) = match rest.rsplit_once('@') {
        Some((w, r)) if r.chars().all(|c| c.is_ascii_digit()) && !r.is_empty() => (
            w,
            Some(
                r.parse::<usize>()
                    .with_context(|| format!("stage '{s}': bad resolution"))?,
            ),
        ),
        _ => (rest, None),
    };
    let spec = committee_zoo::registry::get(name)
        .with_context(|| format!("stage '{s}': unknown model '{name}'"))?;
    let eval = committee_zoo::export::eval_config(Path::new(weights)).unwrap_or(spec.eval);
    let mut t = EvalTransform::from(&eval);
    if let Some(r) = res {
        t.img_size = r;
    }
    let opts = LoadOptions {
        img_size: Some([t.img_size; 2]),
        fold_bn: true,
        ..Default::default()
    };
    let l = load(name, Path::new(weights), &opts, dev)
        .with_context(|| format!("loading stage '{s}'"))?;
    let (chans, classes) = (l.options.in_chans, l.options.num_classes);
    Ok(Stage {
        name: match res {
            Some(r) => format!("{name}@{r}"),
            None => name.to_string(),
        },
        gmacs: l.spec.arch.macs([t.img_size; 2], chans, classes) as f64 / 1e9,
        model: l.model,
        transform: t,
        chans,
        classes,
    })
}

fn logits(stage: &Stage, inputs: &[&Vec<f32>], dev: &Device) -> Result<Vec<f32>> {
    let s = stage.transform.img_size;
    let data: Vec<f32> = inputs.iter().flat_map(|v| v.iter().copied()).collect();
    let x = Tensor::<4>::from_data(
        TensorData::new(data, [inputs.len(), stage.chans, s, s]),
        dev,
    );
    Ok(stage.model.forward(x).into_data().try_to_vec::<f32>()?)
}

/// Loaded members and the folder they run on, shared by live cascades and ensembles.
struct Live {
    sel: committee_zoo::backend::Selected,
    stages: Vec<Stage>,
    folder: ImageFolder,
    paths: Vec<PathBuf>,
}

impl Live {
    fn open(
        specs: &[String],
        data: &Path,
        backend: committee_zoo::backend::BackendKind,
    ) -> Result<Self> {
        let sel = device(backend)?;
        let stages: Vec<Stage> = specs
            .iter()
            .map(|s| load_stage(s, &sel.device))
            .collect::<Result<_>>()?;
        if stages.windows(2).any(|w| w[0].classes != w[1].classes) {
            bail!("the models have different class counts");
        }
        let folder = ImageFolder::scan(data, None)?;
        let paths = folder.samples.iter().map(|s| s.path.clone()).collect();
        Ok(Self {
            sel,
            stages,
            folder,
            paths,
        })
    }

    /// Batches of images decoded once, with one preprocessed input per stage; failures apart.
    #[allow(clippy::type_complexity)]
    fn batches(
        &self,
        batch: usize,
    ) -> impl Iterator<Item = (Vec<(usize, Vec<Vec<f32>>)>, Vec<serde_json::Value>)> {
        let prep: Vec<(EvalTransform, usize)> = self
            .stages
            .iter()
            .map(|s| (s.transform.clone(), s.chans))
            .collect();
        let paths = self.paths.clone();
        loader::load(self.paths.clone(), batch, num_workers(), 2, move |p| {
            let img = decode(p).map_err(|e| e.reason)?;
            Ok(prep
                .iter()
                .map(|(t, c)| t.apply_channels(&img, *c))
                .collect::<Vec<Vec<f32>>>())
        })
        .map(move |b| {
            let (mut items, mut failed) = (Vec::new(), Vec::new());
            for (i, r) in b.items {
                match r {
                    Ok(x) => items.push((i, x)),
                    Err(e) => {
                        failed.push(json!({"path": paths[i].display().to_string(), "error": e}))
                    }
                }
            }
            (items, failed)
        })
    }
}

pub fn cascade(
    stage_args: &[String],
    data: Option<&Path>,
    spec: CascadeSpec,
    temps: Vec<f64>,
    a: &CascadeArgs,
) -> Result<()> {
    let data = data.context("a live cascade needs --data")?;
    let live = Live::open(stage_args, data, a.backend)?;
    let (sel, stages, paths) = (&live.sel, &live.stages, live.paths.clone());
    let labels: Vec<i64> = live.folder.samples.iter().map(|s| s.label as i64).collect();
    let classes = stages[0].classes;
    let start = Instant::now();
    let (mut predictions, mut exits, mut kept_labels, mut failed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (items, bad) in live.batches(a.batch) {
        failed.extend(bad);
        let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); items.len()];
        let mut decided: Vec<Option<(usize, usize)>> = vec![None; items.len()];
        let mut active: Vec<usize> = (0..items.len()).collect();
        for (k, stage) in stages.iter().enumerate() {
            if active.is_empty() {
                break;
            }
            let inputs: Vec<&Vec<f32>> = active.iter().map(|&j| &items[j].1[k]).collect();
            let out = logits(stage, &inputs, &sel.device)?;
            for (r, &j) in active.iter().enumerate() {
                rows[j].push(out[r * classes..(r + 1) * classes].to_vec());
                let seen: Vec<&[f32]> = rows[j].iter().map(Vec::as_slice).collect();
                let (probs, exit) = decide(&spec, &seen, &temps, k);
                if exit {
                    decided[j] = Some((argmax(&probs), k));
                }
            }
            active.retain(|&j| decided[j].is_none());
        }
        for (j, (i, _)) in items.iter().enumerate() {
            let (p, e) = decided[j].context("a sample left the cascade undecided")?;
            predictions.push(p);
            exits.push(e);
            kept_labels.push(labels[*i]);
        }
    }
    // GPU work may still be in flight after the last read-back; the wall time includes it.
    let _ = sel.device.sync();
    let wall_s = start.elapsed().as_secs_f64();
    let gmacs: Vec<f64> = stages.iter().map(|s| s.gmacs).collect();
    let o = outcome(predictions, exits, &kept_labels, &gmacs);

    // The most expensive stage alone on the same images, in the same run.
    let baseline_wall_s = if a.no_baseline {
        None
    } else {
        let big = (0..stages.len())
            .max_by(|&x, &y| gmacs[x].total_cmp(&gmacs[y]))
            .unwrap_or(0);
        let (t, c) = (stages[big].transform.clone(), stages[big].chans);
        let start = Instant::now();
        for batch in loader::load(paths, a.batch, num_workers(), 2, move |p| {
            decode(p)
                .map(|img| t.apply_channels(&img, c))
                .map_err(|e| e.reason)
        }) {
            let ok: Vec<Vec<f32>> = batch
                .items
                .into_iter()
                .filter_map(|(_, r)| r.ok())
                .collect();
            if !ok.is_empty() {
                logits(&stages[big], &ok.iter().collect::<Vec<_>>(), &sel.device)?;
            }
        }
        let _ = sel.device.sync();
        Some(start.elapsed().as_secs_f64())
    };
    let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    report(
        a,
        &names,
        &gmacs,
        &o,
        Some(Timing {
            wall_s,
            baseline_wall_s,
            failed,
        }),
    )
}

/// Runs every member on every image (decoded once): names, GMACs, labels, per-image member
/// logits rows, and the images that could not be decoded.
#[allow(clippy::type_complexity)]
pub fn ensemble_logits(
    specs: &[String],
    data: &Path,
    backend: committee_zoo::backend::BackendKind,
    batch: usize,
) -> Result<(
    Vec<String>,
    Vec<f64>,
    Vec<i64>,
    Vec<Vec<Vec<f32>>>,
    Vec<serde_json::Value>,
)> {
    let live = Live::open(specs, data, backend)?;
    let classes = live.stages[0].classes;
    let (mut labels, mut rows, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for (items, bad) in live.batches(batch) {
        failed.extend(bad);
        if items.is_empty() {
            continue;
        }
        let mut per_member = Vec::new();
        for (k, stage) in live.stages.iter().enumerate() {
            let inputs: Vec<&Vec<f32>> = items.iter().map(|(_, x)| &x[k]).collect();
            per_member.push(logits(stage, &inputs, &live.sel.device)?);
        }
        for (j, (i, _)) in items.iter().enumerate() {
            labels.push(live.folder.samples[*i].label as i64);
            rows.push(
                per_member
                    .iter()
                    .map(|l| l[j * classes..(j + 1) * classes].to_vec())
                    .collect(),
            );
        }
    }
    let names = live.stages.iter().map(|s| s.name.clone()).collect();
    let gmacs = live.stages.iter().map(|s| s.gmacs).collect();
    Ok((names, gmacs, labels, rows, failed))
}

fn num_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
