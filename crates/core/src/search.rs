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
//! Greedy (for pools too large to enumerate): see [`greedy`].

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cascade::{CascadeSpec, Member, Outcome, outcome, simulate};
use crate::combine::{Combine, Confidence, combine};
use crate::metrics::argmax;

/// Threshold grid: `b / GRID` for `b` in `0..=GRID`.
pub const GRID: usize = 100;
const G: usize = GRID + 1;
/// Classes kept per member to find the argmax of a mean of probabilities without a full scan.
const TOP: usize = 5;

pub fn threshold(b: usize) -> f64 {
    b as f64 / GRID as f64
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Single,
    Ensemble,
    Cascade,
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
    pub total_gmacs: f64,
    /// Cost when every stage runs.
    pub worst_gmacs: f64,
}

impl Found {
    pub fn top1(&self) -> f64 {
        100.0 * self.correct as f64 / self.n.max(1) as f64
    }
    pub fn avg_gmacs(&self) -> f64 {
        self.total_gmacs / self.n.max(1) as f64
    }
}

/// What to optimise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Least average GMACs with top-1 (percent) at least this.
    TargetAccuracy(f64),
    /// Best top-1 with average GMACs at most this.
    Budget(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Brute force when the pool has at most 10 members, greedy above.
    #[default]
    Auto,
    Brute,
    Greedy,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "brute" | "brute-force" => Ok(Self::Brute),
            "greedy" => Ok(Self::Greedy),
            _ => Err(format!("unknown strategy '{s}' (auto, brute, greedy)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub max_models: usize,
    pub combine: Combine,
    pub confidence: Confidence,
    pub accumulate: bool,
    pub worst_case_gmacs: Option<f64>,
    pub strategy: Strategy,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_models: 4,
            combine: Combine::MeanProb,
            confidence: Confidence::MaxProb,
            accumulate: true,
            worst_case_gmacs: None,
            strategy: Strategy::Auto,
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
        "brute force covers cascades of at most 4 models (asked for {0}); use the greedy strategy"
    )]
    TooDeep(usize),
    #[error(
        "a pool of {0} models is too large for brute force (at most 16); use the greedy strategy"
    )]
    TooWide(usize),
    #[error(
        "no committee within the limits reaches {target:.3}% top-1 on the fit rows (best: {best:.3}%)"
    )]
    Unreachable { target: f64, best: f64 },
    #[error(
        "no committee within the limits costs at most {budget} GMACs per image (cheapest: {cheapest:.4})"
    )]
    OverBudget { budget: f64, cheapest: f64 },
}

/// Indices of the `TOP` largest values, descending, earlier indices first on ties.
fn top_of(p: &[f64]) -> [u32; TOP] {
    let mut top = [0u32; TOP];
    let mut n = 0;
    for (j, &v) in p.iter().enumerate() {
        if n < TOP || v > p[top[n - 1] as usize] {
            let mut q = n.min(TOP - 1);
            while q > 0 && p[top[q - 1] as usize] < v {
                top[q] = top[q - 1];
                q -= 1;
            }
            top[q] = j as u32;
            n = (n + 1).min(TOP);
        }
    }
    top
}

/// One stage state (a set of members combined) over the fit rows: confidence bin and whether
/// the combined prediction is right, per row.
pub struct State {
    pub bins: Vec<u8>,
    pub correct: Vec<bool>,
}

impl State {
    fn hits(&self) -> usize {
        self.correct.iter().filter(|&&c| c).count()
    }
}

/// The pool over the fit rows, with states computed on demand and kept.
pub struct Pool<'a> {
    pub members: &'a [Member<'a>],
    labels: Vec<i64>,
    rows: Vec<usize>,
    opts: Options,
    index: HashMap<u64, usize>,
    states: Vec<State>,
}

impl<'a> Pool<'a> {
    pub fn new(
        members: &'a [Member<'a>],
        labels: &[i64],
        rows: &[usize],
        opts: Options,
    ) -> Result<Self, SearchError> {
        if members.is_empty() {
            return Err(SearchError::EmptyPool);
        }
        if rows.is_empty() {
            return Err(SearchError::NoRows);
        }
        Ok(Self {
            members,
            labels: rows.iter().map(|&r| labels[r]).collect(),
            rows: rows.to_vec(),
            opts,
            index: HashMap::new(),
            states: Vec::new(),
        })
    }

    pub fn n(&self) -> usize {
        self.rows.len()
    }

    fn gmacs(&self, m: usize) -> f64 {
        self.members[m].gmacs
    }

    /// Computes the states of all `masks` not computed yet. Sample-major and parallel over
    /// chunks of rows: each row's member softmaxes are computed once and shared by every state.
    fn ensure(&mut self, masks: &[u64]) {
        let mut todo: Vec<u64> = masks
            .iter()
            .copied()
            .filter(|m| !self.index.contains_key(m))
            .collect();
        todo.sort_unstable();
        todo.dedup();
        if todo.is_empty() {
            return;
        }
        let sets: Vec<Vec<usize>> = todo
            .iter()
            .map(|&mask| {
                (0..self.members.len())
                    .filter(|&m| mask >> m & 1 == 1)
                    .collect()
            })
            .collect();
        let used: Vec<usize> = (0..self.members.len())
            .filter(|&m| todo.iter().any(|&mask| mask >> m & 1 == 1))
            .collect();
        const CHUNK: usize = 256;
        let this = &*self;
        let chunks: Vec<Vec<(Vec<u8>, Vec<bool>)>> = (0..self.n().div_ceil(CHUNK))
            .into_par_iter()
            .map(|ch| {
                let lo = ch * CHUNK;
                let hi = (lo + CHUNK).min(this.n());
                let mut out: Vec<(Vec<u8>, Vec<bool>)> = sets
                    .iter()
                    .map(|_| (Vec::with_capacity(hi - lo), Vec::with_capacity(hi - lo)))
                    .collect();
                let mut probs: Vec<Vec<f64>> = vec![Vec::new(); this.members.len()];
                let mut tops: Vec<[u32; TOP]> = vec![[0; TOP]; this.members.len()];
                let mut cands: Vec<u32> = Vec::new();
                for i in lo..hi {
                    let r = this.rows[i];
                    for &m in &used {
                        let mb = &this.members[m];
                        probs[m] = crate::combine::softmax(mb.row(r), mb.temperature);
                        tops[m] = top_of(&probs[m]);
                    }
                    for (set, o) in sets.iter().zip(out.iter_mut()) {
                        let (conf, pred) = this.decide_row(set, r, &probs, &tops, &mut cands);
                        o.0.push(bin(conf));
                        o.1.push(pred as i64 == this.labels[i]);
                    }
                }
                out
            })
            .collect();
        for (k, mask) in todo.into_iter().enumerate() {
            let mut st = State {
                bins: Vec::with_capacity(self.n()),
                correct: Vec::with_capacity(self.n()),
            };
            for c in &chunks {
                st.bins.extend_from_slice(&c[k].0);
                st.correct.extend_from_slice(&c[k].1);
            }
            self.index.insert(mask, self.states.len());
            self.states.push(st);
        }
    }

    fn state(&self, mask: u64) -> &State {
        &self.states[self.index[&mask]]
    }

    /// Confidence and prediction of the members `set` combined on row `r`, computed exactly as
    /// [`combine`] + [`Confidence::of`] + [`argmax`] do, from each member's softmax `probs`.
    /// For mean-prob with max-prob or margin, only the union of the members' top classes is
    /// summed when a bound proves no other class can rank first (or second).
    fn decide_row(
        &self,
        set: &[usize],
        r: usize,
        probs: &[Vec<f64>],
        tops: &[[u32; TOP]],
        cands: &mut Vec<u32>,
    ) -> (f64, usize) {
        let k = set.len() as f64;
        let c = probs[set[0]].len();
        if self.opts.combine == Combine::MeanLogits {
            let rows: Vec<&[f32]> = set.iter().map(|&m| self.members[m].row(r)).collect();
            let temps: Vec<f64> = set.iter().map(|&m| self.members[m].temperature).collect();
            let p = combine(&rows, &temps, Combine::MeanLogits);
            return (self.opts.confidence.of(&p), argmax(&p));
        }
        if c > TOP
            && matches!(
                self.opts.confidence,
                Confidence::MaxProb | Confidence::Margin
            )
        {
            cands.clear();
            for &m in set {
                cands.extend_from_slice(&tops[m]);
            }
            cands.sort_unstable();
            cands.dedup();
            // Same arithmetic, in the same member order, as `combine`.
            let (mut best, mut best_j, mut second) = (f64::NEG_INFINITY, 0, f64::NEG_INFINITY);
            for &j in cands.iter() {
                let mut v = 0.0;
                for &m in set {
                    v += probs[m][j as usize] / k;
                }
                if v > best {
                    second = best;
                    best = v;
                    best_j = j as usize;
                } else if v > second {
                    second = v;
                }
            }
            // Any other class is below every member's TOP-th probability.
            let mut bound = 0.0;
            for &m in set {
                bound += probs[m][tops[m][TOP - 1] as usize] / k;
            }
            let bound = bound * (1.0 + 1e-9) + 1e-300;
            match self.opts.confidence {
                Confidence::MaxProb if best > bound => return (best, best_j),
                Confidence::Margin if second > bound => return (best - second, best_j),
                _ => {}
            }
        }
        let mut p = vec![0.0; c];
        for &m in set {
            for (acc, &v) in p.iter_mut().zip(&probs[m]) {
                *acc += v / k;
            }
        }
        (self.opts.confidence.of(&p), argmax(&p))
    }

    #[cfg(test)]
    fn compute(&mut self, mask: u64) -> &State {
        self.ensure(&[mask]);
        self.state(mask)
    }

    /// The state a cascade is in after stage `j` of `stages`.
    fn stage_mask(&self, stages: &[usize], j: usize) -> u64 {
        if self.opts.accumulate {
            stages[..=j].iter().fold(0, |a, &m| a | 1 << m)
        } else {
            1 << stages[j]
        }
    }

    fn single(&self, m: usize) -> Found {
        let n = self.n();
        Found {
            kind: Kind::Single,
            members: vec![m],
            thresholds: vec![],
            correct: self.state(1 << m).hits(),
            n,
            total_gmacs: n as f64 * self.gmacs(m),
            worst_gmacs: self.gmacs(m),
        }
    }

    fn ensemble(&self, set: &[usize]) -> Found {
        let mask = set.iter().fold(0, |a, &m| a | 1 << m);
        let g: f64 = set.iter().map(|&m| self.gmacs(m)).sum();
        Found {
            kind: Kind::Ensemble,
            members: set.to_vec(),
            thresholds: vec![],
            correct: self.state(mask).hits(),
            n: self.n(),
            total_gmacs: self.n() as f64 * g,
            worst_gmacs: g,
        }
    }

    fn within_worst(&self, f: &Found) -> bool {
        self.opts
            .worst_case_gmacs
            .is_none_or(|w| f.worst_gmacs <= w * (1.0 + 1e-12))
    }
}

/// A committee's numbers on some rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub top1: f64,
    pub avg_gmacs: f64,
    pub worst_gmacs: f64,
    pub exit_fractions: Vec<f64>,
}

impl From<&Outcome> for Score {
    fn from(o: &Outcome) -> Self {
        Self {
            top1: o.top1,
            avg_gmacs: o.avg_gmacs,
            worst_gmacs: o.worst_gmacs,
            exit_fractions: o.exit_fractions.clone(),
        }
    }
}

impl Pool<'_> {
    /// Scores many committees, computing the states they need in one pass over the rows.
    pub fn score_all(&mut self, fs: &[Found]) -> Vec<Score> {
        let masks: Vec<u64> = fs
            .iter()
            .flat_map(|f| match f.kind {
                Kind::Cascade => (0..f.members.len())
                    .map(|j| self.stage_mask(&f.members, j))
                    .collect::<Vec<_>>(),
                _ => vec![mask(&f.members)],
            })
            .collect();
        self.ensure(&masks);
        fs.iter().map(|f| self.score(f)).collect()
    }

    /// Scores a committee (found on any rows) on this pool's rows from the stage states: one
    /// pass of O(N * stages), the same decisions as [`evaluate`] (thresholds must lie on the
    /// grid, as the search's do).
    pub fn score(&mut self, f: &Found) -> Score {
        let n = self.n();
        let g: Vec<f64> = f.members.iter().map(|&m| self.gmacs(m)).collect();
        let worst: f64 = g.iter().sum();
        if f.kind != Kind::Cascade {
            let mask = mask(&f.members);
            self.ensure(&[mask]);
            return Score {
                top1: 100.0 * self.state(mask).hits() as f64 / n as f64,
                avg_gmacs: worst,
                worst_gmacs: worst,
                exit_fractions: vec![1.0],
            };
        }
        let k = f.members.len();
        let masks: Vec<u64> = (0..k).map(|j| self.stage_mask(&f.members, j)).collect();
        self.ensure(&masks);
        let st: Vec<&State> = masks.iter().map(|&m| self.state(m)).collect();
        let taus: Vec<u8> = f
            .thresholds
            .iter()
            .map(|t| (t * GRID as f64).round() as u8)
            .collect();
        let mut exits = vec![0usize; k];
        let (mut correct, mut total) = (0usize, 0.0f64);
        for i in 0..n {
            let j = (0..k - 1)
                .find(|&j| st[j].bins[i] >= taus[j])
                .unwrap_or(k - 1);
            exits[j] += 1;
            correct += st[j].correct[i] as usize;
            total += g[..=j].iter().sum::<f64>();
        }
        Score {
            top1: 100.0 * correct as f64 / n as f64,
            avg_gmacs: total / n as f64,
            worst_gmacs: worst,
            exit_fractions: exits.iter().map(|&e| e as f64 / n as f64).collect(),
        }
    }
}

/// The Pareto front (fewer GMACs, more correct) of `points`: ascending cost, strictly rising
/// accuracy. On ties the earlier point (singles before ensembles before cascades) stays.
pub fn front(mut points: Vec<Found>) -> Vec<Found> {
    points.sort_by(|a, b| {
        a.total_gmacs
            .total_cmp(&b.total_gmacs)
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

/// Reusable buffers for scoring one cascade.
struct Scratch {
    exits: Vec<Vec<[u32; 2]>>,
    last: Vec<[u32; 3]>,
    best_cost: Vec<f64>,
    best_tau: Vec<u32>,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Self {
            exits: Vec::new(),
            last: Vec::new(),
            best_cost: vec![f64::INFINITY; n + 1],
            best_tau: vec![0; n + 1],
        }
    }
}

/// Along axis `d` of a `G^dims` array: exclusive prefix sums ("bin < t") or, with `suffix`,
/// inclusive suffix sums ("bin >= t"). Runs over contiguous blocks, so it vectorises.
fn scan_axis<const F: usize>(a: &mut [[u32; F]], dims: usize, d: usize, suffix: bool) {
    let stride = G.pow((dims - 1 - d) as u32);
    let outer = G.pow(d as u32);
    let mut run = vec![[0u32; F]; stride];
    for o in 0..outer {
        run.iter_mut().for_each(|r| *r = [0; F]);
        for step in 0..G {
            let t = if suffix { G - 1 - step } else { step };
            let base = (o * G + t) * stride;
            for (x, r) in a[base..base + stride].iter_mut().zip(run.iter_mut()) {
                let v = *x;
                for f in 0..F {
                    r[f] += v[f];
                }
                if !suffix {
                    for f in 0..F {
                        x[f] = r[f] - v[f];
                    }
                } else {
                    *x = *r;
                }
            }
        }
    }
}

/// The exact Pareto front of one ordered cascade of `k` stages over all threshold vectors on
/// the grid. Stages before the last two use small arrays `exits[j]` over (b_0..b_j): samples
/// with b_i < t_i for i < j and b_j >= t_j, and how many of those stage j gets right. The last
/// two stages share one array over (b_0..b_{k-2}) holding, per cell, the samples, those stage
/// k-2 gets right and those stage k-1 gets right; it is prefix-summed over all axes but the
/// last, and the last threshold is swept in the innermost loop with running suffix sums.
fn cascade_front(pool: &Pool, stages: &[usize], s: &mut Scratch) -> Vec<Found> {
    let k = stages.len();
    let n = pool.n();
    let st: Vec<&State> = (0..k)
        .map(|j| pool.state(pool.stage_mask(stages, j)))
        .collect();
    let g: Vec<f64> = stages.iter().map(|&m| pool.gmacs(m)).collect();
    let d = k - 1;
    s.exits.resize_with(d.saturating_sub(1), Vec::new);
    for j in 0..d - 1 {
        s.exits[j].clear();
        s.exits[j].resize(G.pow(j as u32 + 1), [0, 0]);
    }
    s.last.clear();
    s.last.resize(G.pow(d as u32), [0, 0, 0]);
    for i in 0..n {
        let mut cell = 0usize;
        for j in 0..d - 1 {
            cell = cell * G + st[j].bins[i] as usize;
            let x = &mut s.exits[j][cell];
            x[0] += 1;
            x[1] += st[j].correct[i] as u32;
        }
        cell = cell * G + st[d - 1].bins[i] as usize;
        let x = &mut s.last[cell];
        x[0] += 1;
        x[1] += st[d - 1].correct[i] as u32;
        x[2] += st[d].correct[i] as u32;
    }
    for j in 0..d - 1 {
        for axis in 0..=j {
            scan_axis(&mut s.exits[j], j + 1, axis, axis == j);
        }
    }
    for axis in 0..d - 1 {
        scan_axis(&mut s.last, d, axis, false);
    }

    let Scratch {
        exits,
        last,
        best_cost,
        best_tau,
    } = s;
    best_cost.iter_mut().for_each(|c| *c = f64::INFINITY);
    struct Ctx<'a> {
        d: usize,
        g: &'a [f64],
        exits: &'a [Vec<[u32; 2]>],
        last: &'a [[u32; 3]],
    }
    fn walk(
        c: &Ctx,
        j: usize,
        idx: usize,
        reach: u32,
        correct: u32,
        cost: f64,
        best_cost: &mut [f64],
        best_tau: &mut [u32],
    ) {
        if j == c.d - 1 {
            // Innermost: threshold of stage d-1 (the one before the last), swept downwards.
            let row = &c.last[idx * G..idx * G + G];
            let total_last: u32 = row.iter().map(|x| x[2]).sum();
            let cost = cost + reach as f64 * c.g[j];
            let (gl, mut ex_n, mut ex_c, mut ex_l) = (c.g[c.d], 0u32, 0u32, 0u32);
            for t in (0..G).rev() {
                let x = row[t];
                ex_n += x[0];
                ex_c += x[1];
                ex_l += x[2];
                let right = (correct + ex_c + total_last - ex_l) as usize;
                let total = cost + (reach - ex_n) as f64 * gl;
                if total < best_cost[right] {
                    best_cost[right] = total;
                    best_tau[right] = (idx * G + t) as u32;
                }
            }
            return;
        }
        let cost = cost + reach as f64 * c.g[j];
        for t in 0..G {
            let i = idx * G + t;
            let e = c.exits[j][i];
            walk(
                c,
                j + 1,
                i,
                reach - e[0],
                correct + e[1],
                cost,
                best_cost,
                best_tau,
            );
        }
    }
    let ctx = Ctx {
        d,
        g: &g,
        exits,
        last,
    };
    walk(&ctx, 0, 0, n as u32, 0, 0.0, best_cost, best_tau);
    let worst: f64 = g.iter().sum();
    let mut out = Vec::new();
    let mut cheapest = f64::INFINITY;
    for c in (0..=n).rev() {
        if best_cost[c] < cheapest {
            cheapest = best_cost[c];
            let mut idx = best_tau[c] as usize;
            let mut th = vec![0.0; d];
            for j in (0..d).rev() {
                th[j] = threshold(idx % G);
                idx /= G;
            }
            out.push(Found {
                kind: Kind::Cascade,
                members: stages.to_vec(),
                thresholds: th,
                correct: c,
                n,
                total_gmacs: best_cost[c],
                worst_gmacs: worst,
            });
        }
    }
    out.reverse();
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

fn subsets(m: usize, max: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn rec(start: usize, m: usize, max: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        for i in start..m {
            cur.push(i);
            out.push(cur.clone());
            if cur.len() < max {
                rec(i + 1, m, max, cur, out);
            }
            cur.pop();
        }
    }
    rec(0, m, max, &mut cur, &mut out);
    out
}

fn permutations(m: usize, len: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    fn rec(m: usize, len: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == len {
            out.push(cur.clone());
            return;
        }
        for i in 0..m {
            if !cur.contains(&i) {
                cur.push(i);
                rec(m, len, cur, out);
                cur.pop();
            }
        }
    }
    rec(m, len, &mut Vec::new(), &mut out);
    out
}

fn mask(set: &[usize]) -> u64 {
    set.iter().fold(0, |a, &m| a | 1 << m)
}

/// Singles and all ensembles of 2..=K members (shared by both strategies).
fn singles_and_ensembles(pool: &mut Pool) -> (Vec<Found>, Vec<Found>) {
    let m = pool.members.len();
    let sets = subsets(m, pool.opts.max_models.max(1));
    pool.ensure(&sets.iter().map(|s| mask(s)).collect::<Vec<_>>());
    let singles: Vec<Found> = (0..m).map(|i| pool.single(i)).collect();
    let ensembles: Vec<Found> = sets
        .iter()
        .filter(|s| s.len() > 1)
        .map(|s| pool.ensemble(s))
        .filter(|f| pool.within_worst(f))
        .collect();
    (singles, ensembles)
}

/// The front over all kinds (singles over the worst-case bound left out).
fn overall(pool: &Pool, singles: &[Found], ensembles: &[Found], cascades: &[Found]) -> Vec<Found> {
    let ok = singles.iter().filter(|f| pool.within_worst(f));
    front(ok.chain(ensembles).chain(cascades).cloned().collect())
}

/// Scores every single model, every ensemble and every ordered cascade of up to K members.
pub fn brute_force(pool: &mut Pool) -> Result<Fronts, SearchError> {
    let m = pool.members.len();
    let k = pool.opts.max_models.max(1);
    if k > 4 {
        return Err(SearchError::TooDeep(k));
    }
    if m > 16 {
        return Err(SearchError::TooWide(m));
    }
    let (singles, ensembles) = singles_and_ensembles(pool);
    if !pool.opts.accumulate {
        pool.ensure(&(0..m).map(|i| 1u64 << i).collect::<Vec<_>>());
    }
    let cascades: Vec<Vec<usize>> = (2..=k.min(m))
        .flat_map(|len| permutations(m, len))
        .filter(|c| {
            let worst: f64 = c.iter().map(|&i| pool.gmacs(i)).sum();
            pool.opts
                .worst_case_gmacs
                .is_none_or(|w| worst <= w * (1.0 + 1e-12))
        })
        .collect();
    let n = pool.n();
    let p = &*pool;
    let cascade_front_all = cascades
        .par_iter()
        .map_init(|| Scratch::new(n), |s, c| cascade_front(p, c, s))
        .reduce(Vec::new, |a, b| {
            let mut v = a;
            v.extend(b);
            front(v)
        });
    let all = overall(pool, &singles, &ensembles, &cascade_front_all);
    Ok(Fronts {
        candidates: singles.len() + ensembles.len() + cascades.len(),
        ensembles: front(ensembles),
        cascades: cascade_front_all,
        singles,
        all,
    })
}

/// Whether `a` serves `objective` better than `b` (feasible first, then the objective, then
/// the other axis).
fn better(a: &Found, b: &Found, objective: Objective) -> bool {
    match objective {
        Objective::TargetAccuracy(t) => {
            let (fa, fb) = (a.top1() >= t - 1e-9, b.top1() >= t - 1e-9);
            match (fa, fb) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => {
                    a.total_gmacs < b.total_gmacs
                        || (a.total_gmacs == b.total_gmacs && a.correct > b.correct)
                }
                (false, false) => a.correct > b.correct,
            }
        }
        Objective::Budget(g) => {
            let (fa, fb) = (
                a.avg_gmacs() <= g * (1.0 + 1e-12),
                b.avg_gmacs() <= g * (1.0 + 1e-12),
            );
            match (fa, fb) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => {
                    a.correct > b.correct
                        || (a.correct == b.correct && a.total_gmacs < b.total_gmacs)
                }
                (false, false) => a.total_gmacs < b.total_gmacs,
            }
        }
    }
}

/// The best point of a front for the objective, or why there is none.
pub fn choose(front: &[Found], objective: Objective) -> Result<Found, SearchError> {
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
        Objective::Budget(g) if best.avg_gmacs() > g * (1.0 + 1e-12) => {
            Err(SearchError::OverBudget {
                budget: g,
                cheapest: best.avg_gmacs(),
            })
        }
        _ => Ok(best.clone()),
    }
}

/// Greedy cascade construction for large pools, in the spirit of Streeter (2018): for each
/// choice of the final stage F, start from F alone and repeatedly insert before F the
/// (model, threshold) stage that most improves the objective of the whole cascade (each
/// candidate scored exactly on the fit rows with one histogram pass over the samples still
/// undecided); stop when no stage improves it or the cascade has K stages. The best cascade
/// over all F is returned. Cost: O(K * M^2 * N) instead of O(M^K * N + M^K * 101^(K-1)).
pub fn greedy(pool: &mut Pool, objective: Objective) -> Option<Found> {
    let m = pool.members.len();
    let k = pool.opts.max_models.max(1);
    let n = pool.n();
    pool.ensure(&(0..m).map(|i| 1u64 << i).collect::<Vec<_>>());
    let mut best: Option<Found> = None;
    for f in 0..m {
        // Prefix stages and what they have decided so far.
        let mut prefix: Vec<usize> = Vec::new();
        let mut thresholds: Vec<f64> = Vec::new();
        let mut undecided: Vec<bool> = vec![true; n];
        let (mut reach, mut base_correct, mut base_cost) = (n as u32, 0usize, 0.0f64);
        let mut current = pool.single(f);
        if !pool.within_worst(&current) {
            continue;
        }
        while prefix.len() + 1 < k {
            let cands: Vec<usize> = (0..m).filter(|&c| c != f && !prefix.contains(&c)).collect();
            let masks: Vec<u64> = cands
                .iter()
                .flat_map(|&c| {
                    let mut s = prefix.clone();
                    s.push(c);
                    let a = pool.stage_mask(&s, s.len() - 1);
                    s.push(f);
                    let b = pool.stage_mask(&s, s.len() - 1);
                    [a, b]
                })
                .collect();
            pool.ensure(&masks);
            let mut step: Option<(Found, usize, u8)> = None;
            for &c in &cands {
                let mut s = prefix.clone();
                s.push(c);
                let here = pool.state(pool.stage_mask(&s, s.len() - 1));
                s.push(f);
                let fin = pool.state(pool.stage_mask(&s, s.len() - 1));
                let worst: f64 = s.iter().map(|&i| pool.gmacs(i)).sum();
                if pool
                    .opts
                    .worst_case_gmacs
                    .is_some_and(|w| worst > w * (1.0 + 1e-12))
                {
                    continue;
                }
                let mut hist = [[0u32; 3]; G];
                for i in 0..n {
                    if undecided[i] {
                        let h = &mut hist[here.bins[i] as usize];
                        h[0] += 1;
                        h[1] += here.correct[i] as u32;
                        h[2] += fin.correct[i] as u32;
                    }
                }
                // Exits at threshold t: bins >= t; the rest go on to F.
                let total_fin: u32 = hist.iter().map(|h| h[2]).sum();
                let (mut ex, mut ex_c, mut ex_f) = (0u32, 0u32, 0u32);
                for t in (0..G).rev() {
                    ex += hist[t][0];
                    ex_c += hist[t][1];
                    ex_f += hist[t][2];
                    let correct = base_correct + (ex_c + total_fin - ex_f) as usize;
                    let total = base_cost
                        + reach as f64 * pool.gmacs(c)
                        + (reach - ex) as f64 * pool.gmacs(f);
                    let mut th = thresholds.clone();
                    th.push(threshold(t));
                    let cand = Found {
                        kind: Kind::Cascade,
                        members: s.clone(),
                        thresholds: th,
                        correct,
                        n,
                        total_gmacs: total,
                        worst_gmacs: worst,
                    };
                    if step
                        .as_ref()
                        .is_none_or(|(b, _, _)| better(&cand, b, objective))
                    {
                        step = Some((cand, c, t as u8));
                    }
                }
            }
            match step {
                Some((cand, c, t)) if better(&cand, &current, objective) => {
                    let mut s = prefix.clone();
                    s.push(c);
                    let here = pool.state(pool.stage_mask(&s, s.len() - 1));
                    base_cost += reach as f64 * pool.gmacs(c);
                    for i in 0..n {
                        if undecided[i] && here.bins[i] >= t {
                            undecided[i] = false;
                            reach -= 1;
                            base_correct += here.correct[i] as usize;
                        }
                    }
                    prefix.push(c);
                    thresholds.push(threshold(t as usize));
                    current = cand;
                }
                _ => break,
            }
        }
        if best.as_ref().is_none_or(|b| better(&current, b, objective)) {
            best = Some(current);
        }
    }
    best
}

/// Greedy fronts: singles and ensembles as in brute force (ensembles only while there are at
/// most 20,000 sets), cascades from greedy runs at a sweep of target accuracies.
pub fn greedy_fronts(pool: &mut Pool) -> Fronts {
    let m = pool.members.len();
    let k = pool.opts.max_models.max(1);
    let sets: usize = (1..=k.min(m)).map(|j| binom(m, j)).sum();
    let (singles, ensembles) = if sets <= 20_000 {
        singles_and_ensembles(pool)
    } else {
        pool.ensure(&(0..m).map(|i| 1u64 << i).collect::<Vec<_>>());
        ((0..m).map(|i| pool.single(i)).collect(), Vec::new())
    };
    let (lo, hi) = singles.iter().fold((f64::MAX, f64::MIN), |(lo, hi), s| {
        (lo.min(s.top1()), hi.max(s.top1()))
    });
    let mut targets: Vec<f64> = singles.iter().map(Found::top1).collect();
    for i in 0..=40 {
        targets.push(lo + (hi + 2.0 - lo) * i as f64 / 40.0);
    }
    let cascades: Vec<Found> = targets
        .iter()
        .filter_map(|&t| greedy(pool, Objective::TargetAccuracy(t)))
        .filter(|f| f.kind == Kind::Cascade)
        .collect();
    let all = overall(pool, &singles, &ensembles, &cascades);
    Fronts {
        candidates: singles.len() + ensembles.len() + targets.len(),
        ensembles: front(ensembles),
        cascades: front(cascades),
        singles,
        all,
    }
}

fn binom(n: usize, k: usize) -> usize {
    (0..k).fold(1usize, |acc, i| acc.saturating_mul(n - i) / (i + 1))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_match_the_threshold_test() {
        for &c in &[
            0.0, 0.004, 0.01, 0.29, 0.3, 0.5699999, 0.57, 0.99, 1.0, 1.0000001,
        ] {
            let b = bin(c) as usize;
            assert!(c >= threshold(b), "{c} {b}");
            if b < GRID {
                assert!(c < threshold(b + 1), "{c} {b}");
            }
        }
        assert_eq!(bin(0.57), 57);
        assert_eq!(bin(0.3), 30);
    }

    #[test]
    fn short_names_strip_the_shared_family() {
        let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            short_names(&n(&["efficientnet_b0", "efficientnet_b2"])),
            n(&["b0", "b2"])
        );
        assert_eq!(
            short_names(&n(&["resnet18", "resnet50"])),
            n(&["resnet18", "resnet50"])
        );
        assert_eq!(
            short_names(&n(&["mobilenetv2_050", "resnet18"])),
            n(&["mobilenetv2_050", "resnet18"])
        );
    }

    /// Deterministic pseudo-random logits for `models` members, correlated with the labels
    /// with member-specific strength.
    fn synthetic(models: usize, n: usize, c: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<i64>) {
        let mut rng = crate::split::SplitMix(seed);
        let mut u = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let labels: Vec<i64> = (0..n).map(|_| (u() * c as f64) as i64).collect();
        let logits = (0..models)
            .map(|m| {
                let strength = 0.5 + m as f64;
                let mut v = Vec::with_capacity(n * c);
                for &y in &labels {
                    for j in 0..c {
                        let base = if j as i64 == y { strength } else { 0.0 };
                        v.push((base + 2.0 * u()) as f32);
                    }
                }
                v
            })
            .collect();
        (logits, labels)
    }

    fn members<'a>(logits: &'a [Vec<f32>], c: usize, gmacs: &[f64]) -> Vec<Member<'a>> {
        logits
            .iter()
            .zip(gmacs)
            .enumerate()
            .map(|(i, (l, &g))| Member {
                name: format!("m{i}"),
                logits: l,
                classes: c,
                gmacs: g,
                temperature: 1.0,
            })
            .collect()
    }

    /// The histogram search agrees with running `simulate` on every threshold vector of the
    /// grid (a reference that shares none of its code): same best cost per accuracy.
    #[test]
    fn brute_force_matches_exhaustive_simulation() {
        let (c, n) = (7, 300);
        let (logits, labels) = synthetic(3, n, c, 11);
        let m = members(&logits, c, &[1.0, 2.5, 6.0]);
        let rows: Vec<usize> = (0..n).collect();
        for accumulate in [true, false] {
            let opts = Options {
                max_models: 3,
                accumulate,
                ..Default::default()
            };
            let mut pool = Pool::new(&m, &labels, &rows, opts).unwrap();
            let fronts = brute_force(&mut pool).unwrap();
            // Reference: for the cascade 0 -> 1 -> 2 on a coarser sub-grid (every 5th value,
            // which the search also covers), min cost per correct count via simulate.
            let mut reference: HashMap<usize, f64> = HashMap::new();
            for a in (0..=GRID).step_by(5) {
                for b in (0..=GRID).step_by(5) {
                    let spec = CascadeSpec {
                        stages: vec![0, 1, 2],
                        thresholds: vec![threshold(a), threshold(b)],
                        accumulate,
                        combine: Combine::MeanProb,
                        confidence: Confidence::MaxProb,
                    };
                    let o = simulate(&m, &spec, &rows, &labels);
                    let correct = (o.top1 * n as f64 / 100.0).round() as usize;
                    let e = reference.entry(correct).or_insert(f64::INFINITY);
                    *e = e.min(o.avg_gmacs);
                }
            }
            // Every reference point is matched or dominated by the search's front.
            for (&correct, &cost) in &reference {
                assert!(
                    fronts
                        .all
                        .iter()
                        .any(|f| f.correct >= correct && f.avg_gmacs() <= cost + 1e-9),
                    "reference ({correct}, {cost}) not dominated (accumulate {accumulate})"
                );
            }
            // And every cascade on the front is exactly what simulate says about it.
            for f in fronts.all.iter().filter(|f| f.kind == Kind::Cascade) {
                let spec = CascadeSpec {
                    stages: f.members.clone(),
                    thresholds: f.thresholds.clone(),
                    accumulate,
                    combine: Combine::MeanProb,
                    confidence: Confidence::MaxProb,
                };
                let o = simulate(&m, &spec, &rows, &labels);
                assert!((o.top1 - f.top1()).abs() < 1e-9, "{f:?} vs {}", o.top1);
                assert!((o.avg_gmacs - f.avg_gmacs()).abs() < 1e-9);
            }
        }
    }

    /// Hand-computed: two classes, four samples, two models.
    /// cheap (1 GMAC): right on 0, 1, 2 with confidences 0.905, 0.805, 0.605; wrong on 3
    /// (0.705); confidences off the grid so that no threshold sits on a rounding edge.
    /// big (3 GMACs): right on all four. Without accumulation, cascade cheap -> big with
    /// threshold t: samples with conf >= t exit at cheap.
    /// - t in (0.805, 0.905]: sample 0 exits (right), 1..3 go to big: 4/4 right, cost 3.25.
    /// - t in (0.705, 0.805]: 0, 1 exit, 4/4 right, cost 1 + 3*2/4 = 2.5.
    /// - t in (0.605, 0.705]: 0, 1, 3 exit: 3/4 right (sample 3 wrong), cost 1 + 3/4 = 1.75.
    #[test]
    fn objectives_by_hand() {
        let logit = |p: f64| ((p / (1.0 - p)).ln()) as f32; // softmax([l, 0]) = (p, 1 - p)
        // Labels 0,0,0,0; cheap predicts class 1 on sample 3 with confidence 0.7.
        let cheap: Vec<f32> = [0.905, 0.805, 0.605]
            .iter()
            .flat_map(|&p| [logit(p), 0.0])
            .chain([0.0, logit(0.705)])
            .collect();
        let big: Vec<f32> = [0.99; 4].iter().flat_map(|&p| [logit(p), 0.0]).collect();
        let labels = vec![0i64; 4];
        let logits = vec![cheap, big];
        let m = members(&logits, 2, &[1.0, 3.0]);
        let opts = Options {
            max_models: 2,
            accumulate: false,
            ..Default::default()
        };
        let mut pool = Pool::new(&m, &labels, &[0, 1, 2, 3], opts).unwrap();
        let fronts = brute_force(&mut pool).unwrap();
        // Target 100%: the cheapest is the cascade at t in (0.705, 0.805]: 2.5 GMACs < big's 3.
        let c = choose(&fronts.all, Objective::TargetAccuracy(100.0)).unwrap();
        assert_eq!(c.kind, Kind::Cascade);
        assert_eq!(c.members, [0, 1]);
        assert!((c.avg_gmacs() - 2.5).abs() < 1e-12);
        assert!(c.thresholds[0] > 0.705 && c.thresholds[0] <= 0.805, "{c:?}");
        // Budget 2 GMACs: the cascade at t in (0.605, 0.705] reaches 75% at 1.75 (cheap alone: 75%
        // at 1.0, which wins the tie on accuracy by cost).
        let c = choose(&fronts.all, Objective::Budget(2.0)).unwrap();
        assert_eq!(c.correct, 3);
        assert!((c.avg_gmacs() - 1.0).abs() < 1e-12, "{c:?}");
        assert_eq!(c.kind, Kind::Single);
        // Budget 2.5: 100%.
        let c = choose(&fronts.all, Objective::Budget(2.5)).unwrap();
        assert_eq!(c.correct, 4);
        // Worst-case bound below 4 GMACs: no cascade, no ensemble: big alone for 100%.
        let opts = Options {
            max_models: 2,
            accumulate: false,
            worst_case_gmacs: Some(3.5),
            ..Default::default()
        };
        let mut pool = Pool::new(&m, &labels, &[0, 1, 2, 3], opts).unwrap();
        let fronts = brute_force(&mut pool).unwrap();
        let c = choose(&fronts.all, Objective::TargetAccuracy(100.0)).unwrap();
        assert_eq!((c.kind, c.members.as_slice()), (Kind::Single, &[1][..]));
        // Unreachable and over-budget objectives are errors.
        assert!(matches!(
            choose(&fronts.all, Objective::Budget(0.5)),
            Err(SearchError::OverBudget { .. })
        ));
        let (logits1, _) = (vec![logits[0].clone()], ());
        let m1 = members(&logits1, 2, &[1.0]);
        let mut pool = Pool::new(&m1, &labels, &[0, 1, 2, 3], Options::default()).unwrap();
        let fronts = brute_force(&mut pool).unwrap();
        assert!(matches!(
            choose(&fronts.all, Objective::TargetAccuracy(90.0)),
            Err(SearchError::Unreachable { .. })
        ));
    }

    #[test]
    fn greedy_reaches_the_target_and_never_beats_brute_force() {
        let (c, n) = (10, 400);
        let (logits, labels) = synthetic(5, n, c, 3);
        let m = members(&logits, c, &[0.3, 0.8, 1.5, 3.0, 6.0]);
        let rows: Vec<usize> = (0..n).collect();
        let mut pool = Pool::new(&m, &labels, &rows, Options::default()).unwrap();
        let fronts = brute_force(&mut pool).unwrap();
        let best_single = fronts.singles.iter().map(Found::top1).fold(0.0, f64::max);
        let target = Objective::TargetAccuracy(best_single);
        let b = choose(&fronts.all, target).unwrap();
        let g = greedy(&mut pool, target).unwrap();
        assert!(g.top1() >= best_single - 1e-9);
        assert!(
            g.total_gmacs >= b.total_gmacs - 1e-9,
            "greedy {g:?} brute {b:?}"
        );
        // And the greedy result is what simulate says.
        let spec = CascadeSpec {
            stages: g.members.clone(),
            thresholds: g.thresholds.clone(),
            accumulate: true,
            combine: Combine::MeanProb,
            confidence: Confidence::MaxProb,
        };
        let o = simulate(&m, &spec, &rows, &labels);
        assert!((o.top1 - g.top1()).abs() < 1e-9);
        assert!((o.avg_gmacs - g.avg_gmacs()).abs() < 1e-9);
    }

    #[test]
    fn state_scores_equal_simulation() {
        let (c, n) = (9, 300);
        let (logits, labels) = synthetic(3, n, c, 21);
        let m = members(&logits, c, &[1.0, 2.0, 4.0]);
        let (fit, eval) = crate::split::stratified(&labels, 0.5, 3);
        let opts = Options::default();
        let mut pool = Pool::new(&m, &labels, &fit, opts.clone()).unwrap();
        let fronts = brute_force(&mut pool).unwrap();
        let mut other = Pool::new(&m, &labels, &eval, opts.clone()).unwrap();
        assert!(fronts.all.len() > 3);
        for f in &fronts.all {
            let s = other.score(f);
            let o = evaluate(&m, f, &eval, &labels, &opts);
            assert!((s.top1 - o.top1).abs() < 1e-9, "{f:?}");
            assert!((s.avg_gmacs - o.avg_gmacs).abs() < 1e-9);
            assert_eq!(s.exit_fractions.len(), o.exit_fractions.len());
            for (a, b) in s.exit_fractions.iter().zip(&o.exit_fractions) {
                assert!((a - b).abs() < 1e-9, "{a} {b}");
            }
        }
    }

    #[test]
    fn fast_argmax_path_equals_full_combination() {
        // 12 classes > TOP: the candidate shortcut is used; compare with the full path.
        let (c, n) = (12, 200);
        let (logits, labels) = synthetic(3, n, c, 5);
        let m = members(&logits, c, &[1.0, 2.0, 3.0]);
        let rows: Vec<usize> = (0..n).collect();
        for conf in [Confidence::MaxProb, Confidence::Margin] {
            let opts = Options {
                confidence: conf,
                ..Default::default()
            };
            let mut pool = Pool::new(&m, &labels, &rows, opts).unwrap();
            let s = pool.compute(0b111);
            for i in 0..n {
                let r: Vec<&[f32]> = logits.iter().map(|l| &l[i * c..(i + 1) * c]).collect();
                let p = combine(&r, &[1.0; 3], Combine::MeanProb);
                assert_eq!(s.bins[i], bin(conf.of(&p)), "row {i}");
                assert_eq!(s.correct[i], argmax(&p) as i64 == labels[i]);
            }
        }
    }
}
