//! Live committees: images decoded once, each member with its own preprocessing; in a
//! cascade only the samples still undecided after stage k go on to stage k+1 (gathered into a
//! smaller batch). The runner returns outcomes and timings; the command reports them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use committee_core::cascade::{CascadeSpec, Outcome, decide, outcome};
use committee_core::metrics::argmax;
use committee_data::folder::ImageFolder;
use committee_data::transform::EvalTransform;
use committee_data::{decode, loader};
use committee_ops::backend::{BackendKind, Selected};
use serde_json::json;

use crate::cmd::members::{
    Member, MemberArg, ensure_evaluated, load_member, num_workers, warn_nonfinite,
};
use crate::util::device;

/// How a live run goes.
pub struct LiveOptions {
    pub backend: BackendKind,
    pub dtype: committee_ops::precision::Dtype,
    pub batch: usize,
    /// Decoding threads (`None`: all cores).
    pub workers: Option<usize>,
    /// Also time the most expensive member alone on the same images.
    pub baseline: bool,
}

/// Live runs add wall time, throughput and the measured speed-up.
pub struct Timing {
    pub wall_s: f64,
    /// Of `wall_s`, the time spent in the models' forward passes (with the read-back): what a
    /// cost table from `bench` predicts.
    pub model_s: f64,
    pub baseline_wall_s: Option<f64>,
    pub failed: Vec<serde_json::Value>,
}

/// What a live cascade did.
pub struct LiveCascade {
    pub names: Vec<String>,
    /// Registry model and input size of each stage (to look them up in a cost table).
    pub keys: Vec<(String, usize)>,
    /// The backend it ran on and, on a CPU, the threads (cost-table rows are matched by them).
    pub on: committee_core::costs::RunOn,
    pub gmacs: Vec<f64>,
    pub outcome: Outcome,
    pub timing: Timing,
}

/// Every member's logits rows on every image: names, GMACs, labels, per-image member logits,
/// and the images that could not be decoded.
pub struct LiveEnsemble {
    pub names: Vec<String>,
    pub gmacs: Vec<f64>,
    pub labels: Vec<i64>,
    pub rows: Vec<Vec<Vec<f32>>>,
    pub failed: Vec<serde_json::Value>,
}

/// Loaded members and the folder they run on, shared by live cascades and ensembles.
struct Live {
    sel: Selected,
    stages: Vec<Member>,
    folder: ImageFolder,
    paths: Vec<PathBuf>,
    workers: usize,
}

impl Live {
    fn open(members: &[MemberArg], data: &Path, o: &LiveOptions) -> Result<Self> {
        let sel = device(o.backend)?;
        crate::util::precision(o.dtype, &sel, false)?;
        let stages: Vec<Member> = members
            .iter()
            .map(|m| load_member(m, |t| t, &sel.device).with_context(|| format!("member {m}")))
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
            workers: o.workers.unwrap_or_else(num_workers),
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
        loader::load(self.paths.clone(), batch, self.workers, 2, move |p| {
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

/// Runs a cascade live: each image goes on only while no stage is confident enough.
pub fn cascade(
    members: &[MemberArg],
    data: &Path,
    spec: CascadeSpec,
    temps: Vec<f64>,
    o: &LiveOptions,
) -> Result<LiveCascade> {
    let live = Live::open(members, data, o)?;
    let (sel, stages, paths) = (&live.sel, &live.stages, live.paths.clone());
    let labels: Vec<i64> = live.folder.samples.iter().map(|s| s.label as i64).collect();
    let classes = stages[0].classes;
    let start = Instant::now();
    let (mut predictions, mut exits, mut kept_labels, mut failed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut nonfinite = 0;
    let mut model_s = 0.0;
    for (items, bad) in live.batches(o.batch) {
        failed.extend(bad);
        let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); items.len()];
        let mut decided: Vec<Option<(usize, usize)>> = vec![None; items.len()];
        let mut active: Vec<usize> = (0..items.len()).collect();
        let mut broken = vec![false; items.len()];
        for (k, stage) in stages.iter().enumerate() {
            if active.is_empty() {
                break;
            }
            let inputs: Vec<&[f32]> = active.iter().map(|&j| items[j].1[k].as_slice()).collect();
            let forward = Instant::now();
            let out = stage.logits(&inputs, &sel.device)?;
            model_s += forward.elapsed().as_secs_f64();
            for (r, &j) in active.iter().enumerate() {
                let row = &out[r * classes..(r + 1) * classes];
                broken[j] |= row.iter().any(|v| !v.is_finite());
                rows[j].push(row.to_vec());
                let seen: Vec<&[f32]> = rows[j].iter().map(Vec::as_slice).collect();
                let (probs, exit) = decide(&spec, &seen, &temps, k);
                if exit {
                    decided[j] = Some((argmax(&probs), k));
                }
            }
            active.retain(|&j| decided[j].is_none());
        }
        nonfinite += broken.iter().filter(|&&b| b).count();
        for (j, (i, _)) in items.iter().enumerate() {
            let (p, e) = decided[j].context("a sample left the cascade undecided")?;
            predictions.push(p);
            exits.push(e);
            kept_labels.push(labels[*i]);
        }
    }
    warn_nonfinite(nonfinite, predictions.len());
    ensure_evaluated(predictions.len(), data, failed.len(), live.paths.len())?;
    // GPU work may still be in flight after the last read-back; the wall time includes it.
    let _ = sel.device.sync();
    let wall_s = start.elapsed().as_secs_f64();
    let gmacs: Vec<f64> = stages.iter().map(|s| s.gmacs).collect();
    let result = outcome(predictions, exits, &kept_labels, &gmacs);

    // The most expensive stage alone on the same images, in the same run.
    let baseline_wall_s = if !o.baseline {
        None
    } else {
        let big = (0..stages.len())
            .max_by(|&x, &y| gmacs[x].total_cmp(&gmacs[y]))
            .unwrap_or(0);
        let (t, c) = (stages[big].transform.clone(), stages[big].chans);
        let start = Instant::now();
        for batch in loader::load(paths, o.batch, live.workers, 2, move |p| {
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
                let inputs: Vec<&[f32]> = ok.iter().map(Vec::as_slice).collect();
                stages[big].logits(&inputs, &sel.device)?;
            }
        }
        let _ = sel.device.sync();
        Some(start.elapsed().as_secs_f64())
    };
    Ok(LiveCascade {
        names: stages.iter().map(|s| s.name.clone()).collect(),
        keys: members
            .iter()
            .zip(stages.iter())
            .map(|(m, s)| (m.model.clone(), s.transform.img_size))
            .collect(),
        on: committee_core::costs::RunOn {
            backend: Some(sel.kind.to_string()),
            threads: committee_ops::backend::is_cpu(&sel.device).then(rayon::current_num_threads),
            dtype: Some(o.dtype.to_string()),
        },
        gmacs,
        outcome: result,
        timing: Timing {
            wall_s,
            model_s,
            baseline_wall_s,
            failed,
        },
    })
}

/// Runs every member on every image (decoded once).
pub fn ensemble_logits(
    members: &[MemberArg],
    data: &Path,
    o: &LiveOptions,
) -> Result<LiveEnsemble> {
    let live = Live::open(members, data, o)?;
    let classes = live.stages[0].classes;
    let (mut labels, mut rows, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for (items, bad) in live.batches(o.batch) {
        failed.extend(bad);
        if items.is_empty() {
            continue;
        }
        let mut per_member = Vec::new();
        for (k, stage) in live.stages.iter().enumerate() {
            let inputs: Vec<&[f32]> = items.iter().map(|(_, x)| x[k].as_slice()).collect();
            per_member.push(stage.logits(&inputs, &live.sel.device)?);
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
    let nonfinite = rows
        .iter()
        .filter(|r: &&Vec<Vec<f32>>| r.iter().flatten().any(|v| !v.is_finite()))
        .count();
    warn_nonfinite(nonfinite, rows.len());
    ensure_evaluated(labels.len(), data, failed.len(), live.paths.len())?;
    Ok(LiveEnsemble {
        names: live.stages.iter().map(|s| s.name.clone()).collect(),
        gmacs: live.stages.iter().map(|s| s.gmacs).collect(),
        labels,
        rows,
        failed,
    })
}
