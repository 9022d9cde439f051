//! Brute force: every ordered cascade and every ensemble of up to K members, exact fronts.

use super::*;

/// Reusable buffers for scoring one cascade.
pub(crate) struct Scratch {
    pub(crate) exits: Vec<Vec<[u32; 2]>>,
    pub(crate) last: Vec<[u32; 3]>,
    pub(crate) rem: Vec<Vec<[u32; 1]>>,
    pub(crate) best_cost: Vec<f64>,
    pub(crate) best_tau: Vec<u32>,
}

impl Scratch {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            exits: Vec::new(),
            last: Vec::new(),
            rem: Vec::new(),
            best_cost: vec![f64::INFINITY; n + 1],
            best_tau: vec![0; n + 1],
        }
    }
}

/// Along axis `d` of a `G^dims` array: exclusive prefix sums ("bin < t") or, with `suffix`,
/// inclusive suffix sums ("bin >= t"). Runs over contiguous blocks, so it vectorises.
pub(crate) fn scan_axis<const F: usize>(a: &mut [[u32; F]], dims: usize, d: usize, suffix: bool) {
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

/// Fills `s` for the ordered cascade `stages` (k >= 2): per stage before the last two,
/// `exits[j]` over (b_0..b_j): samples with b_i < t_i for i < j and b_j >= t_j, and how many
/// of those stage j gets right; for the last two stages one array `last` over
/// (b_0..b_{k-2}) holding, per cell, the samples, those stage k-2 gets right and those stage
/// k-1 gets right, prefix-summed over all axes but the last. With `rem`, also `rem[j-1]` over
/// (b_0..b_{j-1}) for j in 1..k-1: samples with b_i < t_i for every i < j that some stage
/// j.. gets right (the exact search's accuracy bound).
pub(crate) fn fill(pool: &Pool, stages: &[usize], s: &mut Scratch, rem: bool) {
    let k = stages.len();
    let n = pool.n();
    let st: Vec<&State> = (0..k)
        .map(|j| pool.state(pool.stage_mask(stages, j)))
        .collect();
    let d = k - 1;
    s.exits.resize_with(d.saturating_sub(1), Vec::new);
    for j in 0..d - 1 {
        s.exits[j].clear();
        s.exits[j].resize(G.pow(j as u32 + 1), [0, 0]);
    }
    s.last.clear();
    s.last.resize(G.pow(d as u32), [0, 0, 0]);
    s.rem.resize_with(if rem { d - 1 } else { 0 }, Vec::new);
    for (j, r) in s.rem.iter_mut().enumerate() {
        r.clear();
        r.resize(G.pow(j as u32 + 1), [0]);
    }
    for i in 0..n {
        let mut cell = 0usize;
        for (stage, exits) in st[..d - 1].iter().zip(s.exits.iter_mut()) {
            cell = cell * G + stage.bins[i] as usize;
            let x = &mut exits[cell];
            x[0] += 1;
            x[1] += stage.correct[i] as u32;
        }
        cell = cell * G + st[d - 1].bins[i] as usize;
        let x = &mut s.last[cell];
        x[0] += 1;
        x[1] += st[d - 1].correct[i] as u32;
        x[2] += st[d].correct[i] as u32;
        if rem {
            let mut cell = 0usize;
            for (j, r) in s.rem.iter_mut().enumerate() {
                cell = cell * G + st[j].bins[i] as usize;
                r[cell][0] += st[j + 1..].iter().any(|t| t.correct[i]) as u32;
            }
        }
    }
    for j in 0..d - 1 {
        for axis in 0..=j {
            scan_axis(&mut s.exits[j], j + 1, axis, axis == j);
        }
    }
    for axis in 0..d - 1 {
        scan_axis(&mut s.last, d, axis, false);
    }
    for (j, r) in s.rem.iter_mut().enumerate() {
        for axis in 0..=j {
            scan_axis(r, j + 1, axis, false);
        }
    }
}

/// The exact Pareto front of one ordered cascade of `k` stages over all threshold vectors on
/// the grid, from the arrays of [`fill`]: the last threshold is swept in the innermost loop
/// with running suffix sums.
pub(crate) fn cascade_front(pool: &Pool, stages: &[usize], s: &mut Scratch) -> Vec<Found> {
    let k = stages.len();
    let n = pool.n();
    let g: Vec<f64> = stages.iter().map(|&m| pool.unit(m)).collect();
    let tab: Vec<&[f64]> = stages.iter().map(|&m| pool.stage[m].as_slice()).collect();
    let d = k - 1;
    fill(pool, stages, s, false);

    let Scratch {
        exits,
        last,
        best_cost,
        best_tau,
        ..
    } = s;
    best_cost.iter_mut().for_each(|c| *c = f64::INFINITY);
    struct Ctx<'a> {
        d: usize,
        /// Per stage: total cost when `r` rows reach it.
        tab: &'a [&'a [f64]],
        exits: &'a [Vec<[u32; 2]>],
        last: &'a [[u32; 3]],
    }
    // The recursion's whole state, passed down rather than packed into a struct per level.
    #[allow(clippy::too_many_arguments)]
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
            let cost = cost + c.tab[j][reach as usize];
            let (tl, mut ex_n, mut ex_c, mut ex_l) = (c.tab[c.d], 0u32, 0u32, 0u32);
            for t in (0..G).rev() {
                let x = row[t];
                ex_n += x[0];
                ex_c += x[1];
                ex_l += x[2];
                let right = (correct + ex_c + total_last - ex_l) as usize;
                let total = cost + tl[(reach - ex_n) as usize];
                if total < best_cost[right] {
                    best_cost[right] = total;
                    best_tau[right] = (idx * G + t) as u32;
                }
            }
            return;
        }
        let cost = cost + c.tab[j][reach as usize];
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
        tab: &tab,
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
            out.push(Found {
                kind: Kind::Cascade,
                members: stages.to_vec(),
                thresholds: thresholds_of(best_tau[c] as usize, d),
                correct: c,
                n,
                total_cost: best_cost[c],
                worst_cost: worst,
            });
        }
    }
    out.reverse();
    out
}

/// The thresholds of a cell index over (t_0..t_{d-1}) of the threshold walk.
pub(crate) fn thresholds_of(mut idx: usize, d: usize) -> Vec<f64> {
    let mut th = vec![0.0; d];
    for j in (0..d).rev() {
        th[j] = threshold(idx % G);
        idx /= G;
    }
    th
}

/// Rows some state gets right: `union |= state's right rows`.
pub(crate) fn or_into(union: &mut [u64], st: &State) {
    for (a, b) in union.iter_mut().zip(&st.bits) {
        *a |= b;
    }
}

pub(crate) fn count(bits: &[u64]) -> usize {
    bits.iter().map(|w| w.count_ones() as usize).sum()
}

pub(crate) fn subsets(m: usize, max: usize) -> Vec<Vec<usize>> {
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

pub(crate) fn permutations(m: usize, len: usize) -> Vec<Vec<usize>> {
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

/// Every member alone.
pub fn singles(pool: &mut Pool) -> Vec<Found> {
    let m = pool.members.len();
    pool.ensure(&(0..m).map(|i| key(&[i])).collect::<Vec<_>>());
    (0..m).map(|i| pool.single(i)).collect()
}

/// Singles and all ensembles of 2..=K members (shared by both strategies).
pub(crate) fn singles_and_ensembles(pool: &mut Pool) -> (Vec<Found>, Vec<Found>) {
    let m = pool.members.len();
    let sets = subsets(m, pool.opts.max_models.max(1));
    pool.ensure(&sets.iter().map(|s| key(s)).collect::<Vec<_>>());
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
pub(crate) fn overall(
    pool: &Pool,
    singles: &[Found],
    ensembles: &[Found],
    cascades: &[Found],
) -> Vec<Found> {
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
        pool.ensure(&(0..m).map(|i| key(&[i])).collect::<Vec<_>>());
    }
    let cascades: Vec<Vec<usize>> = (2..=k.min(m))
        .flat_map(|len| permutations(m, len))
        .filter(|c| pool.stages_ok(c))
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
