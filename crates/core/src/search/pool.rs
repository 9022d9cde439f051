//! The pool: members' confidences on the grid, top classes, and stage states shared between
//! candidates.

use super::*;

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

/// One stage state (a set of members combined) over the fit rows: confidence bin and whether
/// the combined prediction is right, per row.
pub struct State {
    pub bins: Vec<u8>,
    pub correct: Vec<bool>,
}

impl State {
    pub(crate) fn hits(&self) -> usize {
        self.correct.iter().filter(|&&c| c).count()
    }
}

/// The pool over the fit rows, with states computed on demand and kept.
pub struct Pool<'a> {
    pub members: &'a [Member<'a>],
    pub(crate) labels: Vec<i64>,
    pub(crate) rows: Vec<usize>,
    pub(crate) opts: Options,
    pub(crate) index: HashMap<u64, usize>,
    pub(crate) states: Vec<State>,
    /// Per member: what running it costs per image on every image (GMACs, or ms at the full
    /// batch), and what its stage costs in total when `r` of the rows reach it, for every
    /// `r` in `0..=n` (`r * unit` for GMACs; with time costs the batch it sees shrinks).
    pub(crate) unit: Vec<f64>,
    pub(crate) stage: Vec<Vec<f64>>,
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
        Ok(Self {
            members,
            labels: rows.iter().map(|&r| labels[r]).collect(),
            rows: rows.to_vec(),
            opts,
            index: HashMap::new(),
            states: Vec::new(),
            unit,
            stage,
        })
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

    /// Computes the states of all `masks` not computed yet. Sample-major and parallel over
    /// chunks of rows: each row's member softmaxes are computed once and shared by every state.
    pub(crate) fn ensure(&mut self, masks: &[u64]) {
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

    pub(crate) fn state(&self, mask: u64) -> &State {
        &self.states[self.index[&mask]]
    }

    /// Confidence and prediction of the members `set` combined on row `r`, computed exactly as
    /// [`combine`] + [`Confidence::of`] + [`argmax`] do, from each member's softmax `probs`.
    /// For mean-prob with max-prob or margin, only the union of the members' top classes is
    /// summed when a bound proves no other class can rank first (or second).
    pub(crate) fn decide_row(
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
            // As `argmax`: a shared maximum predicts no class.
            let best_j = if second == best { NO_CLASS } else { best_j };
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
    pub(crate) fn compute(&mut self, mask: u64) -> &State {
        self.ensure(&[mask]);
        self.state(mask)
    }

    /// The state a cascade is in after stage `j` of `stages`.
    pub(crate) fn stage_mask(&self, stages: &[usize], j: usize) -> u64 {
        if self.opts.accumulate {
            stages[..=j].iter().fold(0, |a, &m| a | 1 << m)
        } else {
            1 << stages[j]
        }
    }

    pub(crate) fn single(&self, m: usize) -> Found {
        let n = self.n();
        Found {
            kind: Kind::Single,
            members: vec![m],
            thresholds: vec![],
            correct: self.state(1 << m).hits(),
            n,
            total_cost: n as f64 * self.unit(m),
            worst_cost: self.unit(m),
        }
    }

    pub(crate) fn ensemble(&self, set: &[usize]) -> Found {
        let mask = set.iter().fold(0, |a, &m| a | 1 << m);
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
        self.opts
            .worst_case
            .is_none_or(|w| f.worst_cost <= w * (1.0 + 1e-12))
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
        let g: Vec<f64> = f.members.iter().map(|&m| self.members[m].gmacs).collect();
        let worst: f64 = g.iter().sum();
        let timed = self.opts.time.is_some();
        let worst_ms = timed.then(|| f.members.iter().map(|&m| self.unit(m)).sum::<f64>());
        if f.kind != Kind::Cascade {
            let mask = mask(&f.members);
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
