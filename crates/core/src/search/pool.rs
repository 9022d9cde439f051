//! The pool: members' confidences on the grid, top classes, and stage states shared between
//! candidates.

use super::*;
use crate::combine::softmax_at;

/// Indices of the `TOP` largest values, descending, earlier indices first on ties.
pub(crate) fn top_of(p: &[f64]) -> [u32; TOP] {
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

/// Per member: its cost per image on every image, its stage's cost for each number of rows
/// (0..=n) reaching it, and that made non-decreasing from above (see [`Pool`]'s fields).
#[allow(clippy::type_complexity)]
fn costs(
    members: &[Member],
    opts: &Options,
    n: usize,
) -> Result<(Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>), SearchError> {
    let (unit, stage): (Vec<f64>, Vec<Vec<f64>>) = match &opts.time {
        None => members
            .iter()
            .map(|m| (m.gmacs, (0..=n).map(|r| r as f64 * m.gmacs).collect()))
            .unzip(),
        Some(t) => {
            if t.curves.len() != members.len() {
                return Err(SearchError::Curves(t.curves.len(), members.len()));
            }
            t.curves
                .iter()
                .map(|c| {
                    let all = c.ms_per_img(t.batch as f64);
                    (all, (0..=n).map(|r| c.stage_ms(t.batch, r, n)).collect())
                })
                .unzip()
        }
    };
    let stage_lb = stage
        .iter()
        .map(|s| {
            let mut lb = s.clone();
            for r in (0..n).rev() {
                lb[r] = lb[r].min(lb[r + 1]);
            }
            lb
        })
        .collect();
    Ok((unit, stage, stage_lb))
}

/// The `EXT` largest values of `row` and their indices, descending (NaNs never enter).
pub(crate) fn ext_of(row: &[f32]) -> [(f32, u32); EXT] {
    let mut top = [(f32::NEG_INFINITY, u32::MAX); EXT];
    for (j, &v) in row.iter().enumerate() {
        if v > top[EXT - 1].0 {
            let mut q = EXT - 1;
            while q > 0 && top[q - 1].0 < v {
                top[q] = top[q - 1];
                q -= 1;
            }
            top[q] = (v, j as u32);
        }
    }
    top
}

/// Per-row scratch of [`Pool::decide_row`]: candidate classes, and members' full softmaxes
/// for the row being decided (computed on first use).
pub(crate) struct RowCache {
    cands: Vec<u32>,
    bounds: Vec<Bounded>,
    probs: Probs,
}

pub(crate) struct Probs {
    p: Vec<Vec<f64>>,
    row: Vec<usize>,
}

impl Probs {
    fn get(&mut self, members: &[Member], m: usize, i: usize, r: usize) -> &[f64] {
        if self.row[m] != i {
            let mb = &members[m];
            self.p[m] = crate::combine::softmax(mb.row(r), mb.temperature);
            self.row[m] = i;
        }
        &self.p[m]
    }
}

impl RowCache {
    pub(crate) fn new(members: usize) -> Self {
        Self {
            cands: Vec::new(),
            bounds: Vec::new(),
            probs: Probs {
                p: vec![Vec::new(); members],
                row: vec![usize::MAX; members],
            },
        }
    }
}

/// A class among a set's members' top classes: the sum of the probabilities (each divided by
/// the set's size) of the members that rank it in their top, and which members do (bits).
pub(crate) struct Bounded {
    class: u32,
    lo: f64,
    members: u32,
    /// Per member of the set (by position) that ranks it in its top: its probability.
    p: [f64; MAX_SET],
}

/// The combined decision (bin, class) of `set` on fit row `i` from the members' top classes
/// alone, with no exponential, when that decides it; `None` otherwise. A class missing from
/// member m's top has a probability between 0 and m's `TOP`-th, so every class's combined
/// probability lies in an interval: when the best lower end clears every other upper end (and
/// that of any class outside the union), the argmax is known, and when the confidence's whole
/// interval lies in one grid bin, so is the bin. The margins (1e-12) cover the rounding of the
/// exact sums, so the result equals the full combination's.
pub(crate) fn bounded(
    sum: &[Summary],
    set: &[usize],
    i: usize,
    confidence: Confidence,
    c: &mut Vec<Bounded>,
) -> Option<(u8, usize)> {
    const EPS: f64 = 1e-12;
    let k = set.len() as f64;
    let mut tails = [0.0f64; MAX_SET];
    c.clear();
    for (b, &m) in set.iter().enumerate() {
        let s = &sum[m];
        tails[b] = s.p[i][TOP - 1] / k;
        for (&j, &p) in s.ids[i].iter().zip(&s.p[i]) {
            match c.iter_mut().find(|e| e.class == j) {
                Some(e) => {
                    e.lo += p / k;
                    e.members |= 1 << b;
                    e.p[b] = p;
                }
                None => {
                    let mut e = Bounded {
                        class: j,
                        lo: p / k,
                        members: 1 << b,
                        p: [0.0; MAX_SET],
                    };
                    e.p[b] = p;
                    c.push(e);
                }
            }
        }
    }
    let gap = |mask: u32| -> f64 {
        (0..set.len())
            .filter(|b| mask & (1 << b) == 0)
            .map(|b| tails[b])
            .sum()
    };
    let best = (0..c.len()).max_by(|&a, &b| c[a].lo.total_cmp(&c[b].lo).then(b.cmp(&a)))?;
    let (lo, hi) = (c[best].lo, c[best].lo + gap(c[best].members));
    // The runner-up's interval: at least the best other lower end, at most the largest other
    // upper end or what a class outside the union can reach.
    let (mut s_lo, mut s_hi) = (0.0f64, gap(0));
    for (q, e) in c.iter().enumerate() {
        if q != best {
            s_lo = s_lo.max(e.lo);
            s_hi = s_hi.max(e.lo + gap(e.members));
        }
    }
    if lo - EPS <= s_hi + EPS {
        return None;
    }
    let (a, b) = match confidence {
        Confidence::MaxProb => (lo, hi),
        Confidence::Margin => (lo - s_hi, hi - s_lo),
        _ => return None,
    };
    let (ba, bb) = (bin(a - 4.0 * EPS), bin(b + 4.0 * EPS));
    (ba == bb).then_some((ba, c[best].class as usize))
}

/// The two largest combined probabilities seen and the class of the first.
struct Top {
    best: f64,
    best_j: usize,
    second: f64,
    /// A NaN was offered (the full combination's rules then decide: no class).
    nan: bool,
}

impl Default for Top {
    fn default() -> Self {
        Self {
            best: f64::NEG_INFINITY,
            best_j: 0,
            second: f64::NEG_INFINITY,
            nan: false,
        }
    }
}

impl Top {
    /// A class with the same value as the best becomes the runner-up, so a tie is seen.
    fn offer(&mut self, v: f64, j: u32) {
        self.nan |= v.is_nan();
        if v > self.best {
            self.second = self.best;
            self.best = v;
            self.best_j = j as usize;
        } else if v > self.second {
            self.second = v;
        }
    }
}

/// A set of pool members (at most [`MAX_SET`]) as a map key: the sorted indices + 1, 16 bits
/// each, so pools are not limited to 64 members.
pub(crate) type Key = u128;
pub(crate) const MAX_SET: usize = 8;

pub(crate) fn key(set: &[usize]) -> Key {
    let mut s: Vec<usize> = set.to_vec();
    s.sort_unstable();
    s.dedup();
    debug_assert!(s.len() <= MAX_SET && s.iter().all(|&m| m < u16::MAX as usize));
    s.iter().fold(0, |a, &m| a << 16 | (m as u128 + 1))
}

/// The members of a key, ascending.
pub(crate) fn members_of(mut k: Key) -> Vec<usize> {
    let mut out = Vec::new();
    while k != 0 {
        out.push((k & 0xffff) as usize - 1);
        k >>= 16;
    }
    out.reverse();
    out
}

/// One stage state (a set of members combined) over the fit rows: confidence bin and whether
/// the combined prediction is right, per row; the right rows also as a bitset, for the
/// bounds of the exact search.
pub struct State {
    pub bins: Vec<u8>,
    pub correct: Vec<bool>,
    pub(crate) bits: Vec<u64>,
    pub(crate) hits: usize,
}

impl State {
    fn new(bins: Vec<u8>, correct: Vec<bool>) -> Self {
        let mut bits = vec![0u64; correct.len().div_ceil(64)];
        for (i, &c) in correct.iter().enumerate() {
            bits[i / 64] |= (c as u64) << (i % 64);
        }
        let hits = correct.iter().filter(|&&c| c).count();
        Self {
            bins,
            correct,
            bits,
            hits,
        }
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits
    }
}

/// Per member and fit row: the softmax's `TOP` largest probabilities and their classes,
/// computed once, so a state costs no softmax over all classes unless the top classes cannot
/// decide it (see [`Pool::decide_row`]).
pub(crate) struct Summary {
    pub(crate) ids: Vec<[u32; TOP]>,
    pub(crate) p: Vec<[f64; TOP]>,
    /// The `EXT` largest logits and their classes, descending: where the top classes cannot
    /// decide, the classes that can still matter are found here instead of in the whole row
    /// (a row of 1,000 logits is 4 KB read per member; this is 64 bytes).
    pub(crate) ext: Vec<[(f32, u32); EXT]>,
    /// The softmax's shift and normaliser per row ([`crate::combine::softmax_parts`]).
    pub(crate) parts: Vec<(f64, f64)>,
}

/// The pool over the fit rows, with states computed on demand and kept.
pub struct Pool<'a> {
    pub members: &'a [Member<'a>],
    pub(crate) labels: Vec<i64>,
    pub(crate) rows: Vec<usize>,
    pub(crate) opts: Options,
    pub(crate) index: HashMap<Key, usize>,
    pub(crate) states: Vec<State>,
    /// Per member: what running it costs per image on every image (GMACs, or ms at the full
    /// batch), and what its stage costs in total when `r` of the rows reach it, for every
    /// `r` in `0..=n` (`r * unit` for GMACs; with time costs the batch it sees shrinks).
    pub(crate) unit: Vec<f64>,
    pub(crate) stage: Vec<Vec<f64>>,
    /// `stage` made non-decreasing from above (`min over r' >= r`): an admissible lower
    /// bound on a stage's cost when at least `r` rows reach it.
    pub(crate) stage_lb: Vec<Vec<f64>>,
    /// `None` when the top classes cannot decide (mean-logits, other confidences, few classes).
    pub(crate) summary: Option<Vec<Summary>>,
    /// What the last beam over this pool did with screening (`None`: it ran on every row).
    pub(crate) screened: Option<Screened>,
}

/// A screened beam: the rows it ranked cascades on, and whether its answer was kept (it meets
/// the objective on all rows) or the beam ran again on every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screened {
    pub rows: usize,
    pub trusted: bool,
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
        let n = rows.len();
        let (unit, stage, stage_lb) = costs(members, &opts, n)?;
        let summarise = members[0].classes > TOP
            && opts.combine == Combine::MeanProb
            && matches!(opts.confidence, Confidence::MaxProb | Confidence::Margin);
        let summary = summarise.then(|| {
            members
                .par_iter()
                .map(|mb| {
                    let mut s = Summary {
                        ids: Vec::with_capacity(n),
                        p: Vec::with_capacity(n),
                        ext: Vec::with_capacity(n),
                        parts: Vec::with_capacity(n),
                    };
                    let mut probs = vec![0.0f64; mb.classes];
                    for &r in rows {
                        // `softmax` from its parts, which are kept: each exponential once,
                        // the same values and sum as `softmax_parts` and `softmax_at`.
                        let (row, t) = (mb.row(r), mb.temperature);
                        let (max, z) = crate::combine::softmax_parts_into(row, t, &mut probs);
                        // The largest logits have the largest exponentials, and dividing by z
                        // keeps the order (ties aside, and any class outside stays at most the
                        // TOP-th): the top classes are the first of `ext`, only those divided.
                        let ext = ext_of(row);
                        let ids: [u32; TOP] =
                            if t > 0.0 && ext[..TOP].iter().all(|e| e.1 != u32::MAX) {
                                std::array::from_fn(|q| ext[q].1)
                            } else {
                                // NaN or -inf logits (or a temperature that is not positive).
                                top_of(&probs)
                            };
                        s.ids.push(ids);
                        s.p.push(ids.map(|j| probs[j as usize] / z));
                        s.ext.push(ext);
                        s.parts.push((max, z));
                    }
                    s
                })
                .collect()
        });
        Ok(Self {
            members,
            labels: rows.iter().map(|&r| labels[r]).collect(),
            rows: rows.to_vec(),
            opts,
            index: HashMap::new(),
            states: Vec::new(),
            unit,
            stage,
            stage_lb,
            summary,
            screened: None,
        })
    }

    /// The pool over every `step`-th of these rows, with the same members, options and (not
    /// recomputed) summaries; no states. What the beam screens large pools on.
    pub(crate) fn subsample(&self, step: usize) -> Pool<'a> {
        let idx: Vec<usize> = (0..self.n()).step_by(step.max(1)).collect();
        fn pick<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
            idx.iter().map(|&i| v[i]).collect()
        }
        let (unit, stage, stage_lb) =
            costs(self.members, &self.opts, idx.len()).expect("checked when this pool was made");
        Pool {
            members: self.members,
            labels: pick(&self.labels, &idx),
            rows: pick(&self.rows, &idx),
            opts: self.opts.clone(),
            index: HashMap::new(),
            states: Vec::new(),
            unit,
            stage,
            stage_lb,
            summary: self.summary.as_ref().map(|sum| {
                sum.iter()
                    .map(|s| Summary {
                        ids: pick(&s.ids, &idx),
                        p: pick(&s.p, &idx),
                        ext: pick(&s.ext, &idx),
                        parts: pick(&s.parts, &idx),
                    })
                    .collect()
            }),
            screened: None,
        }
    }

    /// What the last beam over this pool did with screening.
    pub fn screened(&self) -> Option<Screened> {
        self.screened
    }

    /// The unit the costs are in.
    pub fn unit_name(&self) -> &'static str {
        if self.opts.time.is_some() {
            "ms"
        } else {
            "GMACs"
        }
    }

    pub fn n(&self) -> usize {
        self.rows.len()
    }

    /// Cost per image of member `m` run on every image.
    pub(crate) fn unit(&self, m: usize) -> f64 {
        self.unit[m]
    }

    /// Total cost of member `m` as a cascade stage that `reach` of the rows reach.
    pub(crate) fn stage_cost(&self, m: usize, reach: usize) -> f64 {
        self.stage[m][reach]
    }

    /// Computes the states of all `keys` not computed yet, parallel over chunks of rows.
    pub(crate) fn ensure(&mut self, keys: &[Key]) {
        let mut todo: Vec<Key> = keys
            .iter()
            .copied()
            .filter(|k| !self.index.contains_key(k))
            .collect();
        todo.sort_unstable();
        todo.dedup();
        if todo.is_empty() {
            return;
        }
        let sets: Vec<Vec<usize>> = todo.iter().map(|&k| members_of(k)).collect();
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
                let mut rc = RowCache::new(this.members.len());
                for i in lo..hi {
                    for (set, o) in sets.iter().zip(out.iter_mut()) {
                        let (b, pred) = this.decide_row(set, i, &mut rc);
                        o.0.push(b);
                        o.1.push(pred as i64 == this.labels[i]);
                    }
                }
                out
            })
            .collect();
        for (k, key) in todo.into_iter().enumerate() {
            let (mut bins, mut correct) =
                (Vec::with_capacity(self.n()), Vec::with_capacity(self.n()));
            for c in &chunks {
                bins.extend_from_slice(&c[k].0);
                correct.extend_from_slice(&c[k].1);
            }
            self.index.insert(key, self.states.len());
            self.states.push(State::new(bins, correct));
        }
    }

    pub(crate) fn state(&self, key: Key) -> &State {
        &self.states[self.index[&key]]
    }

    /// Confidence bin and prediction of the members `set` combined on fit row `i`, the same as
    /// [`combine`] + [`Confidence::of`] + [`bin`] + [`argmax`] give. For mean-prob with
    /// max-prob or margin the members' top classes decide when bounds prove the outcome
    /// ([`bounded`]); else only the union of the top classes is summed when a bound proves no
    /// other class can rank first (or second); else the full combination.
    pub(crate) fn decide_row(&self, set: &[usize], i: usize, rc: &mut RowCache) -> (u8, usize) {
        let r = self.rows[i];
        let k = set.len() as f64;
        if self.opts.combine == Combine::MeanLogits {
            let rows: Vec<&[f32]> = set.iter().map(|&m| self.members[m].row(r)).collect();
            let temps: Vec<f64> = set.iter().map(|&m| self.members[m].temperature).collect();
            let p = combine(&rows, &temps, Combine::MeanLogits);
            return (bin(self.opts.confidence.of(&p)), argmax(&p));
        }
        if let Some(sum) = &self.summary
            && let Some(d) = bounded(sum, set, i, self.opts.confidence, &mut rc.bounds)
        {
            return d;
        }
        if let Some(sum) = &self.summary {
            // `bounded` left the union of the members' top classes in `rc.bounds`, each with
            // the probabilities it has where it is in a top.
            let RowCache { cands, bounds, .. } = rc;
            // Same arithmetic, in the same member order, as `combine`. A candidate missing
            // from a member's top classes takes its probability from the softmax's parts.
            let exact = |j: u32, known: Option<&Bounded>| -> f64 {
                let mut v = 0.0;
                for (b, &m) in set.iter().enumerate() {
                    let pj = match known.filter(|e| e.members & (1 << b) != 0) {
                        Some(e) => e.p[b],
                        None => {
                            let mb = &self.members[m];
                            let (max, z) = sum[m].parts[i];
                            softmax_at(mb.row(r)[j as usize], mb.temperature, max, z)
                        }
                    };
                    v += pj / k;
                }
                v
            };
            // Each candidate's upper end (its top probabilities plus the other members'
            // TOP-th); evaluated from the highest down, until no upper end can reach the best
            // (max-prob: a tie with it included) or the runner-up (margin).
            let mut tails = [0.0f64; MAX_SET];
            for (b, &m) in set.iter().enumerate() {
                tails[b] = sum[m].p[i][TOP - 1] / k;
            }
            let mut order: Vec<(f64, usize)> = bounds
                .iter()
                .enumerate()
                .map(|(q, e)| {
                    let gap: f64 = (0..set.len())
                        .filter(|b| e.members & (1 << b) == 0)
                        .map(|b| tails[b])
                        .sum();
                    ((e.lo + gap) * (1.0 + 1e-9) + 1e-300, q)
                })
                .collect();
            order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            let mut top = Top::default();
            for &(hi, q) in &order {
                let floor = match self.opts.confidence {
                    Confidence::MaxProb => top.best,
                    _ => top.second,
                };
                if hi < floor {
                    break;
                }
                let e = &bounds[q];
                top.offer(exact(e.class, Some(e)), e.class);
            }
            // Any other class is below every member's TOP-th probability.
            let mut bound = 0.0;
            for &m in set {
                bound += sum[m].p[i][TOP - 1] / k;
            }
            let bound = bound * (1.0 + 1e-9) + 1e-300;
            let need = match self.opts.confidence {
                Confidence::MaxProb => top.best,
                _ => top.second,
            };
            if top.nan {
                // NaN logits: the full combination's rules (no class) apply.
            } else if need <= bound {
                // A class outside the tops may still rank first (or second): it must reach
                // `need` in at least one member (a mean is at most its largest term), so
                // only classes whose logit clears that member's cutoff are summed.
                let mut more = Vec::new();
                for &m in set {
                    let mb = &self.members[m];
                    let (max, z) = sum[m].parts[i];
                    let t = mb.temperature;
                    let c = need.max(0.0) * (1.0 - 1e-9);
                    // p >= c  <=>  v / t >= max + ln(c z); the margin covers the rounding.
                    let cut = if c > 0.0 {
                        let u = (max + (c * z).ln()) * t;
                        u - 1e-9 * (1.0 + u.abs())
                    } else {
                        f64::NEG_INFINITY
                    };
                    let ext = &sum[m].ext[i];
                    if (ext[EXT - 1].0 as f64) < cut {
                        // Every class outside `ext` is at most its last logit: below the cut.
                        for &(v, j) in ext {
                            if (v as f64) < cut {
                                break;
                            }
                            more.push(j);
                        }
                    } else {
                        for (j, &v) in mb.row(r).iter().enumerate() {
                            if v as f64 >= cut {
                                more.push(j as u32);
                            }
                        }
                    }
                }
                more.sort_unstable();
                more.dedup();
                cands.clear();
                cands.extend(bounds.iter().map(|e| e.class));
                cands.sort_unstable();
                for j in more {
                    if cands.binary_search(&j).is_err() {
                        top.offer(exact(j, None), j);
                    }
                }
            }
            if !top.nan {
                // As `argmax`: a shared maximum predicts no class.
                let best_j = if top.second == top.best {
                    NO_CLASS
                } else {
                    top.best_j
                };
                let conf = match self.opts.confidence {
                    Confidence::MaxProb => top.best,
                    _ => top.best - top.second,
                };
                return (bin(conf), best_j);
            }
        }
        let c = self.members[set[0]].classes;
        let mut p = vec![0.0; c];
        for &m in set {
            for (acc, &v) in p.iter_mut().zip(rc.probs.get(self.members, m, i, r)) {
                *acc += v / k;
            }
        }
        (bin(self.opts.confidence.of(&p)), argmax(&p))
    }

    #[cfg(test)]
    pub(crate) fn compute(&mut self, mask: Key) -> &State {
        self.ensure(&[mask]);
        self.state(mask)
    }

    /// The state a cascade is in after stage `j` of `stages`.
    pub(crate) fn stage_mask(&self, stages: &[usize], j: usize) -> Key {
        if self.opts.accumulate {
            key(&stages[..=j])
        } else {
            key(&stages[j..=j])
        }
    }

    pub(crate) fn single(&self, m: usize) -> Found {
        let n = self.n();
        Found {
            kind: Kind::Single,
            members: vec![m],
            thresholds: vec![],
            correct: self.state(key(&[m])).hits(),
            n,
            total_cost: n as f64 * self.unit(m),
            worst_cost: self.unit(m),
        }
    }

    pub(crate) fn ensemble(&self, set: &[usize]) -> Found {
        let mask = key(set);
        let g: f64 = set.iter().map(|&m| self.unit(m)).sum();
        Found {
            kind: Kind::Ensemble,
            members: set.to_vec(),
            thresholds: vec![],
            correct: self.state(mask).hits(),
            n: self.n(),
            total_cost: self.n() as f64 * g,
            worst_cost: g,
        }
    }

    pub(crate) fn within_worst(&self, f: &Found) -> bool {
        self.worst_ok(f.worst_cost)
    }

    /// Whether a committee costing `worst` with every stage run is within `--worst-case`.
    pub(crate) fn worst_ok(&self, worst: f64) -> bool {
        self.opts.worst_case.is_none_or(|w| within(worst, w))
    }

    /// [`Self::worst_ok`] for the ordered members `t`.
    pub(crate) fn stages_ok(&self, t: &[usize]) -> bool {
        self.worst_ok(t.iter().map(|&i| self.unit(i)).sum())
    }
}

/// A committee's numbers on some rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub top1: f64,
    pub avg_gmacs: f64,
    pub worst_gmacs: f64,
    pub exit_fractions: Vec<f64>,
    /// With time costs: the predicted milliseconds per image, on average and with every
    /// stage run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_ms: Option<f64>,
}

impl From<&Outcome> for Score {
    fn from(o: &Outcome) -> Self {
        Self {
            top1: o.top1,
            avg_gmacs: o.avg_gmacs,
            worst_gmacs: o.worst_gmacs,
            exit_fractions: o.exit_fractions.clone(),
            avg_ms: None,
            worst_ms: None,
        }
    }
}

impl Pool<'_> {
    /// Scores many committees, computing the states they need in one pass over the rows.
    pub fn score_all(&mut self, fs: &[Found]) -> Vec<Score> {
        let masks: Vec<Key> = fs
            .iter()
            .flat_map(|f| match f.kind {
                Kind::Cascade => (0..f.members.len())
                    .map(|j| self.stage_mask(&f.members, j))
                    .collect::<Vec<_>>(),
                _ => vec![key(&f.members)],
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
        let g: Vec<f64> = f.members.iter().map(|&m| self.members[m].gmacs).collect();
        let worst: f64 = g.iter().sum();
        let timed = self.opts.time.is_some();
        let worst_ms = timed.then(|| f.members.iter().map(|&m| self.unit(m)).sum::<f64>());
        if f.kind != Kind::Cascade {
            let mask = key(&f.members);
            self.ensure(&[mask]);
            return Score {
                top1: 100.0 * self.state(mask).hits() as f64 / n as f64,
                avg_gmacs: worst,
                worst_gmacs: worst,
                exit_fractions: vec![1.0],
                avg_ms: worst_ms,
                worst_ms,
            };
        }
        let k = f.members.len();
        let masks: Vec<Key> = (0..k).map(|j| self.stage_mask(&f.members, j)).collect();
        self.ensure(&masks);
        let st: Vec<&State> = masks.iter().map(|&m| self.state(m)).collect();
        let taus: Vec<u8> = f.thresholds.iter().map(|&t| tau_of(t)).collect();
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
        let avg_ms = timed.then(|| self.cascade_cost(&f.members, &exits) / n as f64);
        Score {
            top1: 100.0 * correct as f64 / n as f64,
            avg_gmacs: total / n as f64,
            worst_gmacs: worst,
            exit_fractions: exits.iter().map(|&e| e as f64 / n as f64).collect(),
            avg_ms,
            worst_ms,
        }
    }

    /// Total cost of a cascade whose stages saw `exits[j]` images leave at stage `j`.
    pub(crate) fn cascade_cost(&self, stages: &[usize], exits: &[usize]) -> f64 {
        crate::costs::cascade_total(exits, |j, reach| self.stage_cost(stages[j], reach))
    }
}
