//! `committee ensemble` and `committee cascade` over logits caches (offline: no model runs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use committee_core::cache::{LogitsCache, check_aligned};
use committee_core::cascade::{CascadeSpec, Member, simulate};
use committee_core::combine::{Combine, Confidence, combine, fit_temperature};
use committee_core::metrics::Accuracy;
use committee_core::search::Kind;
use committee_core::spec::CommitteeSpec;
use serde_json::json;

use crate::cmd::live::{self, LiveOptions, Timing};
use crate::cmd::members::MemberArg;

/// The caches, aligned (same images, order and labels) and each a member of its own name
/// ([`member_names`]).
pub fn load_caches(paths: &[PathBuf]) -> Result<Vec<(String, LogitsCache)>> {
    let mut v = Vec::new();
    for p in paths {
        v.push((p.display().to_string(), LogitsCache::load(p)?));
    }
    let named: Vec<(&str, &LogitsCache)> = v.iter().map(|(n, c)| (n.as_str(), c)).collect();
    check_aligned(&named)?;
    member_names(&v)?;
    Ok(v)
}

/// One name per cache, unique: the cache's `--name`; else the model; else, where a model
/// appears more than once, `model@img_size` (a self-cascade at several resolutions); else,
/// where that still repeats, `model@img_size#` and the weights' SHA-256 prefix (two members of
/// one architecture trained apart). Caches that still collide are the same member twice.
pub fn member_names(caches: &[(String, LogitsCache)]) -> Result<Vec<String>> {
    let base = |c: &LogitsCache| {
        let repeated = caches
            .iter()
            .filter(|(_, o)| o.meta.model == c.meta.model)
            .count()
            > 1;
        if repeated {
            format!("{}@{}", c.meta.model, c.meta.img_size)
        } else {
            c.meta.model.clone()
        }
    };
    let bases: Vec<String> = caches.iter().map(|(_, c)| base(c)).collect();
    let names: Vec<String> = caches
        .iter()
        .zip(&bases)
        .map(|((_, c), b)| match &c.meta.name {
            Some(n) => n.clone(),
            None if bases.iter().filter(|o| *o == b).count() > 1 => {
                let sha = &c.meta.weights_sha256;
                format!("{b}#{}", &sha[..sha.len().min(8)])
            }
            None => b.clone(),
        })
        .collect();
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = (0..i).find(|&j| names[j] == *n) {
            bail!(
                "{} and {} are the same member ({n}: same model, resolution and weights): give each cache once, or tell them apart with `eval --name`",
                caches[j].0,
                caches[i].0
            );
        }
    }
    Ok(names)
}

pub fn members(caches: &[(String, LogitsCache)]) -> Result<Vec<Member<'_>>> {
    let names = member_names(caches)?;
    Ok(caches
        .iter()
        .zip(names)
        .map(|((_, c), name)| Member {
            name,
            logits: &c.logits,
            classes: c.meta.num_classes,
            gmacs: c.meta.gmacs,
            temperature: 1.0,
        })
        .collect())
}

/// Caches for a spec's members, in the spec's order, picked from `paths` by model name (and
/// resolution, when the spec gives one).
fn caches_for_spec(
    spec: &CommitteeSpec,
    spec_path: &Path,
    paths: &[PathBuf],
) -> Result<Vec<(String, LogitsCache)>> {
    let all = load_caches(paths)?;
    spec.members
        .iter()
        .map(|m| {
            all.iter()
                .find(|(_, c)| {
                    c.meta.model == m.model
                        && m.img_size.is_none_or(|s| s == c.meta.img_size)
                        && (m.name.is_none() || c.meta.name == m.name)
                        // Two members of one architecture are told apart by their weights.
                        && m
                            .weights_sha256
                            .as_ref()
                            .is_none_or(|h| c.meta.weights_sha256.is_empty() || *h == c.meta.weights_sha256)
                })
                .cloned()
                .with_context(|| {
                    format!(
                        "{}: member {}{} is in none of the caches given ({})",
                        spec_path.display(),
                        m.model,
                        m.img_size
                            .map(|s| format!(" at {s} px"))
                            .unwrap_or_default(),
                        all.iter()
                            .map(|(_, c)| format!("{}@{}", c.meta.model, c.meta.img_size))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect()
}

/// The members of a spec, to run it live.
fn live_members(spec: &CommitteeSpec, spec_path: &Path) -> Result<Vec<MemberArg>> {
    spec.members
        .iter()
        .map(|m| {
            let w = m.weights.as_ref().with_context(|| {
                format!(
                    "{}: member {} has no `weights`; a live run needs them",
                    spec_path.display(),
                    m.model
                )
            })?;
            Ok(MemberArg {
                model: m.model.clone(),
                weights: PathBuf::from(w),
                res: m.img_size,
                sha256: m.weights_sha256.clone(),
            })
        })
        .collect()
}

/// Per-member temperatures fitted (NLL) on held-out caches, one per member in order.
fn calibrate(paths: &[PathBuf], names: &[String]) -> Result<Vec<f64>> {
    let caches = load_caches(paths)?;
    if caches.len() != names.len() {
        bail!(
            "--calibrate-on has {} caches for {} members: one per member, in order",
            caches.len(),
            names.len()
        );
    }
    for ((p, c), n) in caches.iter().zip(names) {
        let base = n.split('@').next().unwrap_or(n);
        if c.meta.model != base && c.meta.name.as_deref() != Some(n.as_str()) {
            bail!(
                "{p} holds {} but the member in its place is {n}",
                c.meta.model
            );
        }
    }
    Ok(caches
        .iter()
        .map(|(_, c)| fit_temperature(&c.logits, &c.labels, c.meta.num_classes))
        .collect())
}

fn load_spec(path: &Option<PathBuf>) -> Result<Option<CommitteeSpec>> {
    Ok(path.as_deref().map(CommitteeSpec::load).transpose()?)
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(true).args(["logits", "member", "spec"]))]
pub struct EnsembleArgs {
    /// Offline: logits caches from `committee eval --save-logits`, one per member.
    #[arg(long, num_args = 1.., conflicts_with = "member")]
    logits: Vec<PathBuf>,
    /// Live: a member as NAME:WEIGHTS or NAME:WEIGHTS@RES; repeat per member. Needs --data.
    #[arg(long, requires = "data")]
    member: Vec<MemberArg>,
    /// Image folder for a live ensemble.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A spec from `committee search --spec-out` (kind ensemble or single): live with --data
    /// (its members' weights), offline with --logits (caches picked by model name).
    #[arg(long, conflicts_with = "member")]
    spec: Option<PathBuf>,
    /// Fit a temperature per member (NLL) on these held-out caches, one per member in order.
    #[arg(long, num_args = 1..)]
    calibrate_on: Vec<PathBuf>,
    /// mean-prob (average of probabilities) or mean-logits (renormalised geometric mean).
    #[arg(long, default_value = "mean-prob")]
    pub combine: Combine,
    #[arg(long, default_value = "auto")]
    pub backend: committee_ops::backend::BackendKind,
    /// Live: precision (f32; bf16 on flex; f16 on GPU backends: see `committee eval --help`).
    #[arg(long, default_value = "f32")]
    pub dtype: committee_ops::precision::Dtype,
    #[arg(long, default_value_t = 32, value_parser = crate::cmd::args::positive)]
    pub batch: usize,
    /// Live: decoding threads (default: all cores). They run beside the models' threads; on a
    /// host with few cores fewer of them leave the models more of the CPU.
    #[arg(long, value_parser = crate::cmd::args::positive)]
    pub workers: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn ensemble(mut a: EnsembleArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let spec = load_spec(&a.spec)?;
    let mut spec_temps = None;
    if let (Some(s), Some(p)) = (&spec, &a.spec) {
        if s.kind == Kind::Cascade {
            bail!(
                "{}: a cascade spec; run it with `committee cascade --spec`",
                p.display()
            );
        }
        a.combine = s.combine;
        spec_temps = Some(s.members.iter().map(|m| m.temperature).collect::<Vec<_>>());
        if a.logits.is_empty() {
            a.member = live_members(s, p)?;
        }
    }
    let (names, gmacs, labels, rows, failed) = if a.member.is_empty() {
        let caches = match (&spec, &a.spec) {
            (Some(s), Some(p)) => caches_for_spec(s, p, &a.logits)?,
            _ => load_caches(&a.logits)?,
        };
        let m = members(&caches)?;
        let n = caches[0].1.len();
        let rows: Vec<Vec<Vec<f32>>> = (0..n)
            .map(|i| caches.iter().map(|(_, c)| c.row(i).to_vec()).collect())
            .collect();
        let names: Vec<String> = m.iter().map(|x| x.name.clone()).collect();
        let gmacs: Vec<f64> = m.iter().map(|x| x.gmacs).collect();
        (names, gmacs, caches[0].1.labels.clone(), rows, Vec::new())
    } else {
        let data = a.data.as_deref().context("a live ensemble needs --data")?;
        let opts = LiveOptions {
            backend: a.backend,
            dtype: a.dtype,
            batch: a.batch,
            workers: a.workers,
            baseline: false,
        };
        let e = live::ensemble_logits(&a.member, data, &opts)?;
        (e.names, e.gmacs, e.labels, e.rows, e.failed)
    };
    let temps = match spec_temps {
        Some(t) => t,
        None if !a.calibrate_on.is_empty() => calibrate(&a.calibrate_on, &names)?,
        None => vec![1.0; names.len()],
    };
    let mut acc = Accuracy::default();
    for (r, &y) in rows.iter().zip(&labels) {
        let refs: Vec<&[f32]> = r.iter().map(Vec::as_slice).collect();
        let p = combine(&refs, &temps, a.combine);
        acc.add(&p.iter().map(|&v| v as f32).collect::<Vec<_>>(), y as usize);
    }
    let wall_s = start.elapsed().as_secs_f64();
    let total: f64 = gmacs.iter().sum();
    if a.json {
        let r = json!({"members": names, "combine": a.combine, "temperatures": temps, "top1": acc.top1_pct(), "top5": acc.top5_pct(),
                       "gmacs": total, "images": acc.n, "wall_s": wall_s,
                       "img_per_s": acc.n as f64 / wall_s.max(1e-12), "failed": failed});
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "ensemble {} ({:?}): top-1 {:.3}%  top-5 {:.3}%  {:.3} GMACs/img  on {} images in {:.2} s",
            names.join("+"),
            a.combine,
            acc.top1_pct(),
            acc.top5_pct(),
            total,
            acc.n,
            wall_s
        );
    }
    Ok(())
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(true).args(["logits", "stage", "spec"]))]
pub struct CascadeArgs {
    /// Offline: logits caches in stage order (cheapest first, usually).
    #[arg(long, num_args = 1.., conflicts_with = "stage")]
    logits: Vec<PathBuf>,
    /// Live: a stage as NAME:WEIGHTS or NAME:WEIGHTS@RES (a self-cascade repeats a model at
    /// growing resolutions); repeat in stage order. Needs --data.
    #[arg(long, requires = "data")]
    stage: Vec<MemberArg>,
    /// Image folder for a live cascade.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A spec from `committee search --spec-out`: stages, thresholds and rules. Live with
    /// --data (its members' weights), offline with --logits (caches picked by model name).
    #[arg(long, conflicts_with_all = ["stage", "thresholds"])]
    spec: Option<PathBuf>,
    /// One threshold per stage except the last, in [0, 1].
    #[arg(long, value_delimiter = ',', value_parser = crate::cmd::args::unit)]
    thresholds: Vec<f64>,
    /// Fit a temperature per stage (NLL) on these held-out caches, one per stage in order.
    #[arg(long, num_args = 1..)]
    calibrate_on: Vec<PathBuf>,
    /// Predict with stage k alone instead of the combination of stages 1..k.
    #[arg(long)]
    no_accumulate: bool,
    #[arg(long, default_value = "max-prob")]
    confidence: Confidence,
    #[arg(long, default_value = "mean-prob")]
    combine: Combine,
    #[arg(long, default_value = "auto")]
    pub backend: committee_ops::backend::BackendKind,
    /// Live: precision (f32; bf16 on flex; f16 on GPU backends: see `committee eval --help`).
    #[arg(long, default_value = "f32")]
    pub dtype: committee_ops::precision::Dtype,
    #[arg(long, default_value_t = 32, value_parser = crate::cmd::args::positive)]
    pub batch: usize,
    /// Live: decoding threads (default: all cores). They run beside the models' threads; on a
    /// host with few cores fewer of them leave the models more of the CPU.
    #[arg(long, value_parser = crate::cmd::args::positive)]
    pub workers: Option<usize>,
    /// Live: skip timing the most expensive stage alone (no `speedup_vs_largest`).
    #[arg(long)]
    pub no_baseline: bool,
    /// Live: cost tables from `committee bench --json`; the report then gives the time per
    /// image the table predicts for the exits this run saw, next to the measured one.
    #[arg(long, num_args = 1.., conflicts_with = "logits")]
    costs: Vec<PathBuf>,
    /// With --costs: the rows of this backend (default: the one the cascade runs on).
    #[arg(long, requires = "costs")]
    cost_backend: Option<String>,
    /// With --costs: the rows of this many threads (default: the run's, on a CPU).
    #[arg(long, value_parser = crate::cmd::args::positive, requires = "costs")]
    cost_threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

/// The time per image a cost table predicts for a live cascade's exits, as measured
/// `model_ms_per_img` would be: the sum of the stages' forward passes.
fn predicted_ms(a: &CascadeArgs, r: &live::LiveCascade) -> Result<Option<f64>> {
    if a.costs.is_empty() {
        return Ok(None);
    }
    let table = committee_core::costs::CostTable::read(&a.costs)?;
    let on = committee_core::costs::RunOn {
        backend: a.cost_backend.clone().or(r.on.backend.clone()),
        threads: a.cost_threads.or(r.on.threads),
        dtype: r.on.dtype.clone(),
    };
    let curves = r
        .keys
        .iter()
        .map(|(model, size)| table.curve(model, *size, &on))
        .collect::<Result<Vec<_>, _>>()?;
    let mut exits = vec![0usize; curves.len()];
    for &e in &r.outcome.exit_stage {
        exits[e] += 1;
    }
    Ok(Some(committee_core::costs::cascade_ms_per_img(
        &curves, a.batch, &exits,
    )))
}

fn spec_of(a: &CascadeArgs, stages: usize) -> Result<CascadeSpec> {
    let spec = CascadeSpec {
        stages: (0..stages).collect(),
        thresholds: a.thresholds.clone(),
        accumulate: !a.no_accumulate,
        combine: a.combine,
        confidence: a.confidence,
    };
    spec.validate(stages).context("invalid cascade")?;
    Ok(spec)
}

pub fn cascade(mut a: CascadeArgs) -> Result<()> {
    let file = load_spec(&a.spec)?;
    if let (Some(s), Some(p)) = (&file, &a.spec) {
        if s.kind == Kind::Ensemble {
            bail!(
                "{}: an ensemble spec; run it with `committee ensemble --spec`",
                p.display()
            );
        }
        a.thresholds = s.thresholds.clone();
        a.no_accumulate = !s.accumulate;
        a.combine = s.combine;
        a.confidence = s.confidence;
        if a.logits.is_empty() {
            a.stage = live_members(s, p)?;
        }
    }
    let spec_temps = file.as_ref().map(|s| {
        s.members
            .iter()
            .map(|m| m.temperature)
            .collect::<Vec<f64>>()
    });
    if !a.stage.is_empty() {
        let temps = match spec_temps {
            Some(t) => t,
            None if !a.calibrate_on.is_empty() => calibrate(
                &a.calibrate_on,
                &a.stage.iter().map(|s| s.model.clone()).collect::<Vec<_>>(),
            )?,
            None => vec![1.0; a.stage.len()],
        };
        let data = a.data.as_deref().context("a live cascade needs --data")?;
        let opts = LiveOptions {
            backend: a.backend,
            dtype: a.dtype,
            batch: a.batch,
            workers: a.workers,
            baseline: !a.no_baseline,
        };
        let r = live::cascade(&a.stage, data, spec_of(&a, a.stage.len())?, temps, &opts)?;
        let predicted = predicted_ms(&a, &r)?;
        return report(
            &a,
            &r.names,
            &r.gmacs,
            &r.outcome,
            Some((r.timing, predicted)),
        );
    }
    let caches = match (&file, &a.spec) {
        (Some(s), Some(p)) => caches_for_spec(s, p, &a.logits)?,
        _ => load_caches(&a.logits)?,
    };
    let mut m = members(&caches)?;
    let spec = spec_of(&a, m.len())?;
    let names: Vec<String> = m.iter().map(|x| x.name.clone()).collect();
    let temps = match spec_temps {
        Some(t) => t,
        None if !a.calibrate_on.is_empty() => calibrate(&a.calibrate_on, &names)?,
        None => vec![1.0; m.len()],
    };
    for (x, t) in m.iter_mut().zip(temps) {
        x.temperature = t;
    }
    let labels = &caches[0].1.labels;
    if labels.is_empty() {
        bail!("the caches hold no images");
    }
    let rows: Vec<usize> = (0..labels.len()).collect();
    let o = simulate(&m, &spec, &rows, labels);
    let gmacs: Vec<f64> = m.iter().map(|x| x.gmacs).collect();
    report(&a, &names, &gmacs, &o, None)
}

fn report(
    a: &CascadeArgs,
    names: &[String],
    gmacs: &[f64],
    o: &committee_core::cascade::Outcome,
    timing: Option<(Timing, Option<f64>)>,
) -> Result<()> {
    let largest = gmacs.iter().cloned().fold(0.0, f64::max);
    let predicted = largest / o.avg_gmacs.max(1e-12);
    let n = o.predictions.len();
    let mut r = json!({"stages": names, "thresholds": a.thresholds, "top1": o.top1, "avg_gmacs": o.avg_gmacs,
                       "worst_gmacs": o.worst_gmacs, "exit_fractions": o.exit_fractions,
                       "predicted_speedup": predicted, "images": n});
    if let Some((t, predicted)) = &timing {
        let model_ms = 1e3 * t.model_s / n.max(1) as f64;
        r["wall_s"] = json!(t.wall_s);
        r["img_per_s"] = json!(n as f64 / t.wall_s.max(1e-12));
        r["ms_per_img"] = json!(1e3 * t.wall_s / n.max(1) as f64);
        r["model_ms_per_img"] = json!(model_ms);
        if let Some(p) = predicted {
            r["predicted_ms_per_img"] = json!(p);
            r["measured_over_predicted"] = json!(model_ms / p.max(1e-12));
        }
        r["speedup_vs_largest"] = json!(t.baseline_wall_s.map(|b| b / t.wall_s.max(1e-12)));
        r["failed"] = json!(t.failed);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "cascade {}: top-1 {:.3}%  avg {:.3} GMACs  worst {:.3} GMACs  exits {:?}  predicted speed-up {:.2}x",
            names.join(" -> "),
            o.top1,
            o.avg_gmacs,
            o.worst_gmacs,
            o.exit_fractions
                .iter()
                .map(|f| format!("{:.3}", f))
                .collect::<Vec<_>>(),
            predicted
        );
        if let Some((t, predicted)) = timing {
            if let Some(p) = predicted {
                let model_ms = 1e3 * t.model_s / n.max(1) as f64;
                println!(
                    "  models {model_ms:.3} ms/img measured, {p:.3} predicted by the cost table ({:.3}x)",
                    model_ms / p.max(1e-12)
                );
            }
            print!(
                "  wall {:.2} s, {:.1} img/s",
                t.wall_s,
                n as f64 / t.wall_s.max(1e-12)
            );
            match t.baseline_wall_s {
                Some(b) => println!(
                    ", measured speed-up vs the largest stage alone {:.2}x",
                    b / t.wall_s.max(1e-12)
                ),
                None => println!(),
            }
        }
    }
    Ok(())
}
