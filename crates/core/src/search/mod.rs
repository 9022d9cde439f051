//! Searching the best single model, ensemble or cascade of a pool, from cached logits.
//!
//! Every candidate is scored on a set of rows (the part of the data that fits thresholds).
//! Thresholds lie on a grid of step `1/GRID` (0.01): a sample exits at a threshold `t` when its
//! confidence is `>= t`, exactly as [`crate::cascade::decide`] tests it, so the grid index of a
//! confidence ("bin") decides every threshold at once.
//!
//! Brute force: every ordered cascade of 2..=K distinct members (K <= 4). For a cascade of k
//! stages, one pass over the samples fills histograms over the bins of stages 1..k-1; prefix
//! sums turn them into, for every threshold vector, how many samples exit at each stage and how
//! many of those are right. All `101^(k-1)` threshold vectors are then scored in O(1) each, and
//! the cheapest vector for every number of correct samples gives the cascade's exact Pareto
//! front on the grid. Fronts of all candidates merge into one.
//!
//! Greedy (for pools too large to enumerate): see [`greedy()`].
//!
//! Files: `pool.rs` (the members' cached confidences and shared stage states), `brute.rs`
//! (exhaustive fronts), `greedy.rs`; this file holds the types, the choice of a point and
//! the final evaluation.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::cascade::{CascadeSpec, Member, Outcome, outcome, simulate};
use crate::combine::{Combine, Confidence, combine};
use crate::costs::TimeCurve;
use crate::metrics::{NO_CLASS, argmax};
pub use crate::spec::Kind;

mod beam;
mod brute;
mod exact;
mod greedy;
mod pool;
mod streeter;
#[cfg(test)]
mod tests;

pub use beam::{SCREEN_MEMBERS, beam, beam_fronts, ensemble_beam, screen_step};
pub(crate) use brute::*;
pub use brute::{brute_force, singles};
pub use exact::{Exact, exact};
pub use greedy::{greedy, greedy_fronts};
pub(crate) use pool::{Key, key};
pub use pool::{Pool, Score, Screened, State};
pub use streeter::{streeter_cascades, streeter_fronts};

/// Threshold grid: `b / GRID` for `b` in `0..=GRID`.
pub const GRID: usize = 100;
pub(crate) const G: usize = GRID + 1;
/// Classes kept per member to find the argmax of a mean of probabilities without a full scan.
pub(crate) const TOP: usize = 5;
/// Logits kept per member and row for the classes a combination can still rank first.
pub(crate) const EXT: usize = 8;

pub fn threshold(b: usize) -> f64 {
    b as f64 / GRID as f64
}

/// Whether a cost is within a bound (a budget, a worst case), up to rounding.
pub(crate) fn within(cost: f64, bound: f64) -> bool {
    cost <= bound * (1.0 + 1e-12)
}

/// The grid index of a threshold on the grid.
pub(crate) fn tau_of(t: f64) -> u8 {
    (t * GRID as f64).round() as u8
}

/// The largest grid index `b` with `threshold(b) <= conf` (0 for confidences below 0.01).
pub fn bin(conf: f64) -> u8 {
    let mut b = (conf * GRID as f64).floor().clamp(0.0, GRID as f64) as usize;
    while b < GRID && threshold(b + 1) <= conf {
        b += 1;
    }
    while b > 0 && threshold(b) > conf {
        b -= 1;
    }
    b as u8
}

/// A committee of pool members (indices) and its numbers on the rows it was scored on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    pub kind: Kind,
    pub members: Vec<usize>,
    /// One per stage except the last (cascades only).
    pub thresholds: Vec<f64>,
    pub correct: usize,
    pub n: usize,
    /// Sum over the rows of the GMACs spent on each.
    pub total_cost: f64,
    /// Cost when every stage runs.
    pub worst_cost: f64,
}

impl Found {
    pub fn top1(&self) -> f64 {
        100.0 * self.correct as f64 / self.n.max(1) as f64
    }
    /// Average cost per image, in the search's unit.
    pub fn avg_cost(&self) -> f64 {
        self.total_cost / self.n.max(1) as f64
    }
}

/// What to optimise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Least average cost with top-1 (percent) at least this.
    TargetAccuracy(f64),
    /// Best top-1 with average cost (GMACs, or ms with time costs) at most this.
    Budget(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Brute force up to 10 members (fronts and choice), the exact search up to 16, the beam
    /// above.
    #[default]
    Auto,
    /// Every ordered cascade: the exact front (at most 16 members, 4 stages).
    Brute,
    /// Branch and bound for the objective (at most 4 stages), seeded by the beam.
    Exact,
    /// Beam search over ordered cascades (any pool, up to 6 stages).
    Beam,
    /// The earlier greedy insertion (kept for comparison).
    Greedy,
    /// Streeter's (2018) greedy as published: per round the stage deciding the most images
    /// per unit of cost at a given exit accuracy, swept over that accuracy (for comparison).
    Streeter,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Brute => "brute",
            Self::Exact => "exact",
            Self::Beam => "beam",
            Self::Greedy => "greedy",
            Self::Streeter => "streeter",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "brute" | "brute-force" => Ok(Self::Brute),
            "exact" => Ok(Self::Exact),
            "beam" => Ok(Self::Beam),
            "greedy" => Ok(Self::Greedy),
            "streeter" => Ok(Self::Streeter),
            _ => Err(format!(
                "unknown strategy '{s}' (auto, brute, exact, beam, greedy, streeter)"
            )),
        }
    }
}

/// The most stages or ensemble members any search takes.
pub const MAX_MODELS: usize = 6;

#[derive(Debug, Clone)]
pub struct Options {
    pub max_models: usize,
    pub combine: Combine,
    pub confidence: Confidence,
    pub accumulate: bool,
    /// Bound on the cost per image when every stage runs (the search's unit).
    pub worst_case: Option<f64>,
    pub strategy: Strategy,
    /// Measured time instead of GMACs as the cost.
    pub time: Option<TimeCosts>,
    /// The beam over a pool of more than 16 members ranks cascades on about this many of the
    /// rows (when there are more than twice as many; see [`screen_step`]) and fits its
    /// finalists on all; 0: all.
    pub screen_rows: usize,
}

/// [`Options::screen_rows`]' default: on 100 models x 50,000 images it chose what the beam
/// on all rows chose, 4x faster (docs/committees.md).
pub const SCREEN_ROWS: usize = 2_500;

/// Measured time as the cost: one curve per pool member (in pool order) and the batch size the
/// committee will run at. A cascade stage reached by `r` of `n` images costs
/// [`TimeCurve::stage_ms`]`(batch, r, n)`; an ensemble member or a single model runs every
/// image at the full batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeCosts {
    pub curves: Vec<TimeCurve>,
    pub batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_models: 4,
            combine: Combine::MeanProb,
            confidence: Confidence::MaxProb,
            accumulate: true,
            worst_case: None,
            strategy: Strategy::Auto,
            screen_rows: SCREEN_ROWS,
            time: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SearchError {
    #[error("the pool is empty")]
    EmptyPool,
    #[error("no rows to fit on")]
    NoRows,
    #[error(
        "brute force and the exact search cover cascades of at most 4 models (asked for {0}); use the beam strategy"
    )]
    TooDeep(usize),
    #[error(
        "a pool of {0} models is too large for brute force (at most 16); use the exact or beam strategy"
    )]
    TooWide(usize),
    #[error(
        "no committee within the limits reaches {target:.3}% top-1 on the fit rows (best: {best:.3}%)"
    )]
    Unreachable { target: f64, best: f64 },
    #[error(
        "no committee within the limits costs at most {budget} {unit} per image (cheapest: {cheapest:.4})"
    )]
    OverBudget {
        budget: f64,
        cheapest: f64,
        unit: &'static str,
    },
    #[error(
        "the exact search keeps one state per member set: {sets} sets for {models} models is too many (at most 100,000); use the beam strategy"
    )]
    TooManySets { sets: usize, models: usize },
    #[error("{0} time curves for {1} pool members: one per member")]
    Curves(usize, usize),
}

/// The Pareto front (fewer GMACs, more correct) of `points`: ascending cost, strictly rising
/// accuracy. On ties the earlier point (singles before ensembles before cascades) stays.
pub fn front(mut points: Vec<Found>) -> Vec<Found> {
    points.sort_by(|a, b| {
        a.total_cost
            .total_cmp(&b.total_cost)
            .then(b.correct.cmp(&a.correct))
            .then(a.kind.cmp(&b.kind))
            .then(a.members.len().cmp(&b.members.len()))
    });
    let mut out: Vec<Found> = Vec::new();
    for p in points {
        if out.last().is_none_or(|l| p.correct > l.correct) {
            out.push(p);
        }
    }
    out
}

/// Fronts per kind and over all kinds, on the fit rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fronts {
    pub singles: Vec<Found>,
    pub ensembles: Vec<Found>,
    pub cascades: Vec<Found>,
    /// Over everything above.
    pub all: Vec<Found>,
    /// How many candidates (ordered cascades, ensembles, singles) were scored.
    pub candidates: usize,
}

/// Whether `a` serves `objective` better than `b` (feasible first, then the objective, then
/// the other axis).
pub(crate) fn better(a: &Found, b: &Found, objective: Objective) -> bool {
    match objective {
        Objective::TargetAccuracy(t) => {
            let (fa, fb) = (a.top1() >= t - 1e-9, b.top1() >= t - 1e-9);
            match (fa, fb) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => {
                    a.total_cost < b.total_cost
                        || (a.total_cost == b.total_cost && a.correct > b.correct)
                }
                (false, false) => a.correct > b.correct,
            }
        }
        Objective::Budget(g) => {
            let (fa, fb) = (within(a.avg_cost(), g), within(b.avg_cost(), g));
            match (fa, fb) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => {
                    a.correct > b.correct || (a.correct == b.correct && a.total_cost < b.total_cost)
                }
                (false, false) => a.total_cost < b.total_cost,
            }
        }
    }
}

/// The best point of a front for the objective, or why there is none.
pub fn choose(front: &[Found], objective: Objective) -> Result<Found, SearchError> {
    choose_in(front, objective, "GMACs")
}

/// [`choose`], naming the cost's unit in its error (`"ms"` with time costs).
pub fn choose_in(
    front: &[Found],
    objective: Objective,
    unit: &'static str,
) -> Result<Found, SearchError> {
    let best = front
        .iter()
        .fold(None::<&Found>, |acc, f| match acc {
            Some(a) if !better(f, a, objective) => Some(a),
            _ => Some(f),
        })
        .ok_or(SearchError::EmptyPool)?;
    match objective {
        Objective::TargetAccuracy(t) if best.top1() < t - 1e-9 => Err(SearchError::Unreachable {
            target: t,
            best: best.top1(),
        }),
        Objective::Budget(g) if !within(best.avg_cost(), g) => Err(SearchError::OverBudget {
            budget: g,
            cheapest: best.avg_cost(),
            unit,
        }),
        _ => Ok(best.clone()),
    }
}

/// A committee's exact numbers on `rows`, computed the way a live run decides (for cascades,
/// [`crate::cascade::simulate`]).
pub fn evaluate(
    members: &[Member],
    f: &Found,
    rows: &[usize],
    labels: &[i64],
    opts: &Options,
) -> Outcome {
    match f.kind {
        Kind::Ensemble => {
            let temps: Vec<f64> = f.members.iter().map(|&m| members[m].temperature).collect();
            let preds = rows
                .iter()
                .map(|&r| {
                    let rs: Vec<&[f32]> = f.members.iter().map(|&m| members[m].row(r)).collect();
                    argmax(&combine(&rs, &temps, opts.combine))
                })
                .collect();
            let lab: Vec<i64> = rows.iter().map(|&r| labels[r]).collect();
            let g: f64 = f.members.iter().map(|&m| members[m].gmacs).sum();
            outcome(preds, vec![0; rows.len()], &lab, &[g])
        }
        _ => simulate(
            members,
            &CascadeSpec {
                stages: f.members.clone(),
                thresholds: f.thresholds.clone(),
                accumulate: opts.accumulate,
                combine: opts.combine,
                confidence: opts.confidence,
            },
            rows,
            labels,
        ),
    }
}

/// Short labels for plots and tables: the members' names without the prefix they all share
/// up to an underscore (`efficientnet_b0` -> `b0`), joined by `+`.
pub fn short_names(names: &[String]) -> Vec<String> {
    if names.len() < 2 {
        return names.to_vec();
    }
    let first = &names[0];
    let mut cut = 0;
    for (i, ch) in first.char_indices() {
        if names
            .iter()
            .all(|n| n.as_bytes().get(i) == Some(&(ch as u8)))
        {
            if ch == '_' {
                cut = i + 1;
            }
        } else {
            break;
        }
    }
    names
        .iter()
        .map(|n| {
            let s = &n[cut.min(n.len())..];
            if s.is_empty() {
                n.clone()
            } else {
                s.to_string()
            }
        })
        .collect()
}
