//! `committee search`: the best single model, ensemble or cascade of a pool of logits caches,
//! with thresholds fitted on one part of the data and reported on the other.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use committee_core::LogitsCache;
use committee_core::cascade::Member;
use committee_core::combine::{Combine, Confidence, fit_temperature};
use committee_core::costs::{CostTable, RunOn};
use committee_core::search::{
    self, Found, Fronts, Kind, Objective, Options, Pool, Score, Strategy, evaluate, short_names,
};
use committee_core::spec::{CommitteeSpec, MemberSpec};
use serde_json::{Value, json};

use crate::cmd::committee::{load_caches, members};
use crate::util::write_atomic;

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["logits", "fit"]))]
#[command(group = clap::ArgGroup::new("objective").args(["target_accuracy", "match_model", "budget_gmacs", "budget_ms"]))]
pub struct Args {
    /// The pool: one logits cache per model (from `eval --save-logits`), all on the same
    /// images. Split into a fit part and a report part by --holdout-fraction.
    #[arg(long, num_args = 1..)]
    logits: Vec<PathBuf>,
    /// Instead of splitting: caches to fit thresholds on (e.g. a holdout folder) ...
    #[arg(long, num_args = 1.., requires = "eval", conflicts_with = "logits")]
    fit: Vec<PathBuf>,
    /// ... and caches of the same models, in the same order, to report on (e.g. the test set).
    #[arg(long, num_args = 1.., requires = "fit")]
    eval: Vec<PathBuf>,
    /// Largest committee (ensemble members or cascade stages).
    #[arg(long, default_value_t = 4, value_parser = crate::cmd::args::positive)]
    max_models: usize,
    /// Least average GMACs with at least this top-1 (percent) on the fit part.
    #[arg(long, value_parser = crate::cmd::args::percent)]
    target_accuracy: Option<f64>,
    /// Least average GMACs with at least the top-1 of this pool model (as named in the
    /// caches, e.g. efficientnet_b4 or efficientnet_b0@256). Default: the most accurate model.
    #[arg(long = "match", value_name = "NAME")]
    match_model: Option<String>,
    /// Best top-1 with at most this many average GMACs per image.
    #[arg(long, value_parser = crate::cmd::args::positive_f64)]
    budget_gmacs: Option<f64>,
    /// Only committees whose worst case (every stage runs) costs at most this.
    #[arg(long, value_parser = crate::cmd::args::positive_f64, conflicts_with = "costs")]
    worst_case_gmacs: Option<f64>,
    /// Search on measured time instead of GMACs: cost tables from `committee bench --json`
    /// (several merge), matched to each cache by model and img_size.
    #[arg(long, num_args = 1.., conflicts_with = "budget_gmacs")]
    costs: Vec<PathBuf>,
    /// With --costs: the batch size the committee will run at (a cascade's later stages see
    /// the part of it their earlier stages did not decide).
    #[arg(long, default_value_t = 32, value_parser = crate::cmd::args::positive, requires = "costs")]
    batch: usize,
    /// With --costs: use the rows of this backend (flex, wgpu, ...).
    #[arg(long, requires = "costs")]
    cost_backend: Option<String>,
    /// With --costs: use the rows measured with this many threads.
    #[arg(long, value_parser = crate::cmd::args::positive, requires = "costs")]
    cost_threads: Option<usize>,
    /// With --costs: use the rows measured in this precision (f32, bf16; a row without one is
    /// f32).
    #[arg(long, requires = "costs")]
    cost_dtype: Option<committee_ops::precision::Dtype>,
    /// With --costs: best top-1 with at most this many milliseconds per image on average.
    #[arg(long, value_parser = crate::cmd::args::positive_f64, requires = "costs")]
    budget_ms: Option<f64>,
    /// With --costs: only committees whose worst case (every stage runs) takes at most this
    /// many milliseconds per image.
    #[arg(long, value_parser = crate::cmd::args::positive_f64, requires = "costs")]
    worst_case_ms: Option<f64>,
    #[arg(long, default_value = "max-prob")]
    confidence: Confidence,
    #[arg(long, default_value = "mean-prob")]
    combine: Combine,
    /// Cascades predict with stage k alone instead of the combination of stages 1..k.
    #[arg(long)]
    no_accumulate: bool,
    /// Fit a softmax temperature per model on the fit part (NLL) before combining.
    #[arg(long)]
    calibrate: bool,
    /// Fraction of the images (stratified by class) that fits thresholds; the rest reports.
    /// 0 fits and reports on everything (in-sample).
    #[arg(long, default_value_t = 0.5)]
    holdout_fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// brute (every ordered cascade: the exact front; at most 16 models, 4 stages), exact
    /// (branch and bound for the objective, at most 4 stages), beam (any pool, up to 6
    /// stages), greedy (the earlier insertion heuristic), or auto (brute force up to 10
    /// models, exact up to 16, beam above).
    #[arg(long, default_value = "auto")]
    strategy: Strategy,
    /// Cascades the beam keeps per level.
    #[arg(long, default_value_t = 16, value_parser = crate::cmd::args::positive)]
    beam_width: usize,
    /// On pools of more than 16 models, the beam ranks cascades on about this many rows (every
    /// n/N-th, when there are more than 2N; more where a target leaves fewer than 50 errors on
    /// them) and fits its finalists on all; 0: every row.
    #[arg(long, default_value_t = search::SCREEN_ROWS)]
    screen_rows: usize,
    /// The exact search stops after this many seconds and reports the bound it proved.
    #[arg(long, default_value_t = 600.0, value_parser = crate::cmd::args::positive_f64)]
    time_limit: f64,
    /// Also run the greedy search and report how close it gets to brute force.
    #[arg(long)]
    compare_greedy: bool,
    /// Pareto plot (SVG): singles as dots, ensembles as squares, cascades as stars.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write the chosen committee as a spec for `committee cascade/ensemble --spec`.
    #[arg(long)]
    spec_out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// A front point with its numbers on the fit part and on the report part.
struct Scored {
    found: Found,
    fit: Score,
    eval: Score,
}

pub fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    validate(&a)?;
    let split = Split::load(&a)?;
    let mut fit_members = members(&split.fit)?;
    let mut eval_members = match &split.eval {
        Some(e) => members(e)?,
        None => fit_members.clone(),
    };
    if a.calibrate {
        calibrate(&mut fit_members, &mut eval_members, &split);
    }
    let names: Vec<String> = fit_members.iter().map(|m| m.name.clone()).collect();
    let costs = time_costs(&a, &split.fit)?;
    let opts = Options {
        max_models: a.max_models,
        combine: a.combine,
        confidence: a.confidence,
        accumulate: !a.no_accumulate,
        worst_case: a.worst_case_gmacs.or(a.worst_case_ms),
        strategy: a.strategy,
        time: costs.as_ref().map(|c| c.0.clone()),
        screen_rows: a.screen_rows,
    };
    let unit = if costs.is_some() { "ms" } else { "GMACs" };
    let method = resolve(a.strategy, names.len(), a.max_models);
    eprintln!(
        "search: {} models, {} images to fit on, {} to report on (loaded in {:.2} s); {} search",
        names.len(),
        split.fit_rows.len(),
        split.eval_rows.len(),
        start.elapsed().as_secs_f64(),
        method.name()
    );

    let mut pool = Pool::new(
        &fit_members,
        &split.labels_fit,
        &split.fit_rows,
        opts.clone(),
    )?;
    let singles = search::singles(&mut pool);
    eprintln!(
        "search: members' top classes and single-model states in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let objective = objective(&a, &names, &singles)?;
    let fronts: Fronts = match method {
        Strategy::Brute => search::brute_force(&mut pool)?,
        Strategy::Greedy => search::greedy_fronts(&mut pool),
        Strategy::Streeter => search::streeter_fronts(&mut pool),
        _ => {
            let mut targets = front_targets(&singles);
            if let Objective::TargetAccuracy(t) = objective
                && !targets.contains(&t)
            {
                targets.push(t);
            }
            search::beam_fronts(&mut pool, &targets, a.beam_width)
        }
    };
    let mut candidates = fronts.all.clone();
    let mut proof: Option<search::Exact> = None;
    match method {
        Strategy::Greedy => candidates.extend(search::greedy(&mut pool, objective)),
        Strategy::Beam | Strategy::Exact => {
            // A target's beam ran for the fronts; a budget's runs here.
            if let Objective::Budget(_) = objective {
                let start: Vec<Found> = candidates.clone();
                candidates.extend(search::beam(&mut pool, objective, &start, a.beam_width));
            }
            if method == Strategy::Exact {
                let deadline = Instant::now() + std::time::Duration::from_secs_f64(a.time_limit);
                let e = search::exact(&mut pool, objective, &candidates, Some(deadline))?;
                candidates.extend(e.best.clone());
                proof = Some(e);
            }
        }
        _ => {}
    }
    let chosen = search::choose_in(&candidates, objective, unit).context("search")?;
    let search_s = start.elapsed().as_secs_f64();
    let brute = method == Strategy::Brute;
    let greedy_cmp = (a.compare_greedy && brute)
        .then(|| greedy_comparison(&mut pool, objective, &chosen, &names, unit))
        .flatten();
    let optimal = match method {
        Strategy::Brute => true,
        Strategy::Exact => proof.as_ref().is_some_and(|e| e.complete),
        _ => false,
    };

    eprintln!("search: {search_s:.2} s; scoring the front on the report rows");
    // The chosen committee is scored by simulation (the definition); front points from the
    // stage states of a pool over the report rows (the same decisions, tested, far faster).
    let fit_score: Score = (&evaluate(
        &fit_members,
        &chosen,
        &split.fit_rows,
        &split.labels_fit,
        &opts,
    ))
        .into();
    // In sample the report rows are the fit rows: simulated once.
    let eval_score: Score = if split.in_sample {
        fit_score.clone()
    } else {
        (&evaluate(
            &eval_members,
            &chosen,
            &split.eval_rows,
            &split.labels_eval,
            &opts,
        ))
            .into()
    };
    let mut chosen_s = Scored {
        fit: fit_score,
        eval: eval_score,
        found: chosen.clone(),
    };
    let mut eval_pool = if split.in_sample {
        None
    } else {
        Some(Pool::new(
            &eval_members,
            &split.labels_eval,
            &split.eval_rows,
            opts.clone(),
        )?)
    };
    if costs.is_some() {
        // The simulation knows no times: the pools' scores (the same decisions) predict them.
        let fit = pool.score(&chosen);
        let eval = match eval_pool.as_mut() {
            Some(p) => p.score(&chosen),
            None => fit.clone(),
        };
        (chosen_s.fit.avg_ms, chosen_s.fit.worst_ms) = (fit.avg_ms, fit.worst_ms);
        (chosen_s.eval.avg_ms, chosen_s.eval.worst_ms) = (eval.avg_ms, eval.worst_ms);
    }
    let mut score_all = |fs: &[Found]| -> Vec<Scored> {
        let fit = pool.score_all(fs);
        let eval = match eval_pool.as_mut() {
            Some(p) => p.score_all(fs),
            None => fit.clone(),
        };
        fs.iter()
            .zip(fit.into_iter().zip(eval))
            .map(|(f, (fit, eval))| Scored {
                found: f.clone(),
                fit,
                eval,
            })
            .collect()
    };
    let front: Vec<Scored> = score_all(&fronts.all);
    let by_kind = [
        score_all(&fronts.singles),
        score_all(&fronts.ensembles),
        score_all(&fronts.cascades),
    ];
    let wall_s = start.elapsed().as_secs_f64();

    if let Some(p) = &a.spec_out {
        let caches = split.eval.as_ref().unwrap_or(&split.fit);
        let mut spec = spec_of(&chosen, caches, &fit_members, &opts);
        if let Some((t, device)) = &costs {
            spec.cost = Some("ms".into());
            spec.cost_device = Some(device.clone());
            spec.cost_batch = Some(t.batch);
        }
        write_atomic(p, spec.to_toml().as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let short = short_names(&names);
    if let Some(p) = &a.plot {
        plot(
            p,
            &split,
            &short,
            &front,
            &by_kind,
            &chosen_s,
            costs.is_some(),
        )?;
    }

    let obj = match objective {
        Objective::TargetAccuracy(t) => json!({"target_accuracy": t}),
        Objective::Budget(g) if costs.is_some() => json!({"budget_ms": g}),
        Objective::Budget(g) => json!({"budget_gmacs": g}),
    };
    let r = json!({
        "chosen": entry(&chosen_s, &names),
        "front": front.iter().map(|s| entry(s, &names)).collect::<Vec<_>>(),
        "objective": obj,
        "strategy": method.name(),
        "screen": pool.screened().map(|s| json!({"rows": s.rows, "trusted": s.trusted})),
        "proven_optimal": optimal,
        "bound": proof.as_ref().and_then(|e| e.bound),
        "exact_searched": proof.as_ref().map(|e| e.searched),
        "exact_pruned": proof.as_ref().map(|e| e.pruned),
        "candidates": fronts.candidates,
        "in_sample": split.in_sample,
        "fit_images": split.fit_rows.len(),
        "eval_images": split.eval_rows.len(),
        "holdout_fraction": if split.eval.is_some() { Value::Null } else { json!(a.holdout_fraction) },
        "seed": a.seed,
        "temperatures": fit_members.iter().map(|m| m.temperature).collect::<Vec<_>>(),
        "search_s": search_s,
        "wall_s": wall_s,
        "greedy_comparison": greedy_cmp,
        "cost": if costs.is_some() { "ms" } else { "gmacs" },
        "cost_device": costs.as_ref().map(|c| c.1.clone()),
        "cost_batch": costs.as_ref().map(|c| c.0.batch),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let how = match (&proof, method) {
        (_, Strategy::Brute) => "brute force: every ordered cascade".to_string(),
        (Some(e), _) if e.complete => format!(
            "exact: optimal, {} ordered cascades searched, {} cut by bounds",
            e.searched, e.pruned
        ),
        (Some(e), _) => format!(
            "exact, cut short after {} s: no committee left unexplored does better than {:.4} {}",
            a.time_limit,
            e.bound.unwrap_or(f64::NAN),
            match objective {
                Objective::TargetAccuracy(_) => unit,
                Objective::Budget(_) => "% top-1",
            }
        ),
        (None, Strategy::Beam) => match pool.screened() {
            Some(s) if s.trusted => format!(
                "beam: ranked on {} of {} rows, finalists fitted on all; not proven optimal",
                s.rows,
                pool.n()
            ),
            Some(s) => format!(
                "beam: on all {} rows (ranking on {} misled: its answer misses the target on all); \
                 not proven optimal",
                pool.n(),
                s.rows
            ),
            None => "beam: not proven optimal".to_string(),
        },
        (None, m) => format!("{}: not proven optimal", m.name()),
    };
    print_table(
        &split,
        &short,
        &how,
        fronts.candidates,
        search_s,
        &front,
        &obj,
        &chosen_s,
        costs.is_some(),
    );
    if let Some(g) = &r["greedy_comparison"].as_object() {
        println!(
            "greedy: {} at {:.4} {unit} ({:.3}x brute force's)",
            g["greedy"]["label"], g["greedy"]["avg_cost"], g["greedy_over_brute"]
        );
    }
    Ok(())
}

/// The flags' ranges, before anything is read.
fn validate(a: &Args) -> Result<()> {
    if !(0.0..1.0).contains(&a.holdout_fraction) {
        bail!(
            "--holdout-fraction must be in [0, 1) (got {}): the rest of the data reports",
            a.holdout_fraction
        );
    }
    if a.max_models == 0 || a.max_models > search::MAX_MODELS {
        bail!(
            "--max-models must be in 1..={} (got {})",
            search::MAX_MODELS,
            a.max_models
        );
    }
    Ok(())
}

/// The pool's caches, and which rows fit thresholds and which report.
struct Split {
    fit: Vec<(String, LogitsCache)>,
    /// Separate report caches (`--eval`); `None` when one set is split.
    eval: Option<Vec<(String, LogitsCache)>>,
    labels_fit: Vec<i64>,
    labels_eval: Vec<i64>,
    fit_rows: Vec<usize>,
    eval_rows: Vec<usize>,
    in_sample: bool,
}

impl Split {
    fn load(a: &Args) -> Result<Self> {
        // Fit and eval caches: the same list when splitting one set.
        let (fit, eval) = if a.logits.is_empty() {
            let f = load_caches(&a.fit)?;
            let e = load_caches(&a.eval)?;
            check_same_models(&f, &e)?;
            (f, Some(e))
        } else {
            (load_caches(&a.logits)?, None)
        };
        if fit.len() >= u16::MAX as usize {
            bail!("at most {} models in a pool", u16::MAX - 1);
        }
        let labels_fit = fit[0].1.labels.clone();
        let labels_eval = eval
            .as_ref()
            .map_or(labels_fit.clone(), |e| e[0].1.labels.clone());
        let (fit_rows, eval_rows, in_sample) = match &eval {
            Some(e) => (
                (0..labels_fit.len()).collect::<Vec<_>>(),
                (0..e[0].1.len()).collect::<Vec<_>>(),
                false,
            ),
            None if a.holdout_fraction == 0.0 => {
                let all: Vec<usize> = (0..labels_fit.len()).collect();
                (all.clone(), all, true)
            }
            None => {
                let (f, e) =
                    committee_core::split::stratified(&labels_fit, a.holdout_fraction, a.seed);
                (f, e, false)
            }
        };
        if fit_rows.is_empty() || eval_rows.is_empty() {
            bail!(
                "the split leaves {} images to fit on and {} to report on: use more data or another --holdout-fraction",
                fit_rows.len(),
                eval_rows.len()
            );
        }
        Ok(Self {
            fit,
            eval,
            labels_fit,
            labels_eval,
            fit_rows,
            eval_rows,
            in_sample,
        })
    }
}

/// `--fit` and `--eval` hold the same models in the same order.
fn check_same_models(f: &[(String, LogitsCache)], e: &[(String, LogitsCache)]) -> Result<()> {
    if f.len() != e.len() {
        bail!(
            "--fit has {} caches but --eval has {}: one per model in each",
            f.len(),
            e.len()
        );
    }
    for ((pf, cf), (pe, ce)) in f.iter().zip(e) {
        if (&cf.meta.model, cf.meta.img_size) != (&ce.meta.model, ce.meta.img_size) {
            bail!(
                "{pf} holds {}@{} but {pe} holds {}@{}: give --eval in the order of --fit",
                cf.meta.model,
                cf.meta.img_size,
                ce.meta.model,
                ce.meta.img_size
            );
        }
        if cf.meta.num_classes != ce.meta.num_classes {
            bail!("{pf} and {pe} have different class counts");
        }
    }
    Ok(())
}

/// A softmax temperature per member, fitted (NLL) on the fit rows, used on both parts.
fn calibrate(fit: &mut [Member], eval: &mut [Member], split: &Split) {
    for (fm, em) in fit.iter_mut().zip(eval.iter_mut()) {
        let logits: Vec<f32> = split
            .fit_rows
            .iter()
            .flat_map(|&r| fm.row(r).iter().copied())
            .collect();
        let labels: Vec<i64> = split
            .fit_rows
            .iter()
            .map(|&r| split.labels_fit[r])
            .collect();
        let t = fit_temperature(&logits, &labels, fm.classes);
        fm.temperature = t;
        em.temperature = t;
    }
}

/// What `--strategy` runs for a pool of `m` models and committees of up to `k`.
fn resolve(s: Strategy, m: usize, k: usize) -> Strategy {
    match s {
        Strategy::Auto if m <= 10 && k <= 4 => Strategy::Brute,
        Strategy::Auto if m <= 16 && k <= 4 => Strategy::Exact,
        Strategy::Auto => Strategy::Beam,
        s => s,
    }
}

/// Accuracies the fronts of large pools are searched at: those of the single models on the
/// single-model front (the most accurate first; 4 of them, or 1 above 32 models), and the
/// objective's.
fn front_targets(singles: &[Found]) -> Vec<f64> {
    let mut t: Vec<f64> = search::front(singles.to_vec())
        .iter()
        .map(Found::top1)
        .collect();
    t.reverse();
    // A beam over a large pool takes seconds: its front is the objective's point and the most
    // accurate model's.
    t.truncate(if singles.len() <= 32 { 4 } else { 1 });
    t
}

/// The flags' objective; by default, the most accurate single model's top-1.
fn objective(a: &Args, names: &[String], singles: &[Found]) -> Result<Objective> {
    Ok(
        match (
            a.target_accuracy,
            &a.match_model,
            a.budget_gmacs.or(a.budget_ms),
        ) {
            (Some(t), _, _) => Objective::TargetAccuracy(t),
            (_, _, Some(g)) => Objective::Budget(g),
            (_, Some(name), _) => {
                let i = names.iter().position(|n| n == name).with_context(|| {
                    format!(
                        "--match {name}: no such model in the pool ({})",
                        names.join(", ")
                    )
                })?;
                Objective::TargetAccuracy(singles[i].top1())
            }
            _ => Objective::TargetAccuracy(singles.iter().map(Found::top1).fold(0.0, f64::max)),
        },
    )
}

/// The greedy search's choice next to brute force's, for `--compare-greedy`.
fn greedy_comparison(
    pool: &mut Pool,
    objective: Objective,
    chosen: &Found,
    names: &[String],
    unit: &str,
) -> Option<Value> {
    let t = Instant::now();
    let g = search::greedy(pool, objective)?;
    let greedy_s = t.elapsed().as_secs_f64();
    let ratio = g.avg_cost() / chosen.avg_cost().max(1e-12);
    let mut v = json!({"greedy": describe(&g, names), "brute_force": describe(chosen, names),
               "greedy_over_brute": ratio, "unit": unit, "greedy_s": greedy_s});
    if unit == "GMACs" {
        v["greedy_over_brute_gmacs"] = json!(ratio);
    }
    Some(v)
}

/// With `--costs`: one time curve per pool member (by model and img_size, on the backend and
/// threads asked for), the batch, and the devices the table's rows were measured on.
fn time_costs(
    a: &Args,
    caches: &[(String, LogitsCache)],
) -> Result<Option<(search::TimeCosts, String)>> {
    if a.costs.is_empty() {
        return Ok(None);
    }
    let table = CostTable::read(&a.costs)?;
    let on = RunOn {
        backend: a.cost_backend.clone(),
        threads: a.cost_threads,
        dtype: a.cost_dtype.map(|d| d.to_string()),
    };
    let mut devices: Vec<String> = Vec::new();
    let mut curves = Vec::new();
    for (path, c) in caches {
        let curve = table
            .curve(&c.meta.model, c.meta.img_size, &on)
            .with_context(|| format!("{path}: no time for its model"))?;
        curves.push(curve);
        for r in table.rows.iter().filter(|r| r.model == c.meta.model) {
            if !devices.contains(&r.device) {
                devices.push(r.device.clone());
            }
        }
    }
    Ok(Some((
        search::TimeCosts {
            curves,
            batch: a.batch,
        },
        devices.join(", "),
    )))
}

/// The Pareto plot on the report part: every kind, the front, the choice.
fn plot(
    path: &std::path::Path,
    split: &Split,
    short: &[String],
    front: &[Scored],
    by_kind: &[Vec<Scored>; 3],
    chosen: &Scored,
    timed: bool,
) -> Result<()> {
    let pts = |v: &[Scored]| -> Vec<crate::cmd::plot::Point> {
        v.iter()
            .map(|s| crate::cmd::plot::Point {
                x: if timed {
                    s.eval.avg_ms.unwrap_or(f64::NAN)
                } else {
                    s.eval.avg_gmacs
                },
                y: s.eval.top1,
                label: label(&s.found, short),
            })
            .collect()
    };
    let title = format!(
        "top-1 on {} images{} vs average {}",
        split.eval_rows.len(),
        if split.in_sample {
            " (in-sample)"
        } else {
            " (held out)"
        },
        if timed { "ms per image" } else { "GMACs" }
    );
    crate::cmd::plot::pareto(
        path,
        &title,
        &pts(&by_kind[0]),
        &pts(&by_kind[1]),
        &pts(&by_kind[2]),
        &pts(front),
        &pts(std::slice::from_ref(chosen)),
    )
}

/// A committee's members by their short names, `a+b+c`.
fn label(f: &Found, short: &[String]) -> String {
    f.members
        .iter()
        .map(|&m| short[m].clone())
        .collect::<Vec<_>>()
        .join("+")
}

/// The front as a table, then the chosen committee.
#[allow(clippy::too_many_arguments)]
fn print_table(
    split: &Split,
    short: &[String],
    how: &str,
    candidates: usize,
    search_s: f64,
    front: &[Scored],
    obj: &Value,
    chosen: &Scored,
    timed: bool,
) {
    let where_ = if split.in_sample {
        "in-sample (fit = report)".to_string()
    } else {
        format!(
            "fit on {} images, reported on {} others",
            split.fit_rows.len(),
            split.eval_rows.len()
        )
    };
    println!("searched {candidates} candidates ({how}) in {search_s:.2} s; {where_}");
    println!(
        "{:<9} {:<28} {:<18} {:>9} {:>9} {:>10} {:>10}{}",
        "kind",
        "members",
        "thresholds",
        "top1",
        "top1 fit",
        "avg GMACs",
        "worst",
        if timed {
            format!(" {:>10} {:>10}", "avg ms", "worst ms")
        } else {
            String::new()
        }
    );
    let line = |s: &Scored| {
        let f = &s.found;
        let ms = match (s.eval.avg_ms, s.eval.worst_ms) {
            (Some(a), Some(w)) if timed => format!(" {a:>10.3} {w:>10.3}"),
            _ => String::new(),
        };
        println!(
            "{:<9} {:<28} {:<18} {:>9.3} {:>9.3} {:>10.4} {:>10.4}{ms}",
            format!("{:?}", f.kind).to_lowercase(),
            label(f, short),
            f.thresholds
                .iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>()
                .join(","),
            s.eval.top1,
            s.fit.top1,
            s.eval.avg_gmacs,
            s.eval.worst_gmacs
        );
    };
    for s in front {
        line(s);
    }
    println!("chosen for {obj}:");
    line(chosen);
}

fn describe(f: &Found, names: &[String]) -> Value {
    json!({"kind": f.kind, "members": f.members.iter().map(|&m| names[m].clone()).collect::<Vec<_>>(),
           "label": f.members.iter().map(|&m| names[m].clone()).collect::<Vec<_>>().join("+"),
           "thresholds": f.thresholds, "top1": f.top1(), "avg_cost": f.avg_cost()})
}

fn entry(s: &Scored, names: &[String]) -> Value {
    let f = &s.found;
    json!({
        "kind": f.kind,
        "members": f.members.iter().map(|&m| names[m].clone()).collect::<Vec<_>>(),
        "thresholds": f.thresholds,
        "top1": s.eval.top1,
        "avg_gmacs": s.eval.avg_gmacs,
        "worst_gmacs": s.eval.worst_gmacs,
        "avg_ms": s.eval.avg_ms,
        "worst_ms": s.eval.worst_ms,
        "exit_fractions": s.eval.exit_fractions,
        "in_sample": {"top1": s.fit.top1, "avg_gmacs": s.fit.avg_gmacs, "avg_ms": s.fit.avg_ms,
                      "exit_fractions": s.fit.exit_fractions},
    })
}

fn spec_of(
    f: &Found,
    caches: &[(String, LogitsCache)],
    members: &[Member],
    opts: &Options,
) -> CommitteeSpec {
    CommitteeSpec {
        kind: f.kind,
        thresholds: if f.kind == Kind::Cascade {
            f.thresholds.clone()
        } else {
            vec![]
        },
        accumulate: opts.accumulate,
        combine: opts.combine,
        confidence: opts.confidence,
        cost: None,
        cost_device: None,
        cost_batch: None,
        members: f
            .members
            .iter()
            .map(|&m| {
                let meta = &caches[m].1.meta;
                MemberSpec {
                    model: meta.model.clone(),
                    name: meta.name.clone(),
                    weights: (!meta.weights.is_empty()).then(|| meta.weights.clone()),
                    weights_sha256: (!meta.weights_sha256.is_empty())
                        .then(|| meta.weights_sha256.clone()),
                    img_size: Some(meta.img_size),
                    temperature: members[m].temperature,
                }
            })
            .collect(),
    }
}
