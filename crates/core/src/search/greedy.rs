//! Greedy search for pools too large to enumerate.

use super::*;

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
    pool.ensure(&(0..m).map(|i| key(&[i])).collect::<Vec<_>>());
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
            let masks: Vec<Key> = cands
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
                let worst: f64 = s.iter().map(|&i| pool.unit(i)).sum();
                if !pool.worst_ok(worst) {
                    continue;
                }
                for (t, ex, right) in insertion_sweep(here, fin, &undecided) {
                    let correct = base_correct + right as usize;
                    let total = base_cost
                        + pool.stage_cost(c, reach as usize)
                        + pool.stage_cost(f, (reach - ex) as usize);
                    let mut th = thresholds.clone();
                    th.push(threshold(t));
                    let cand = Found {
                        kind: Kind::Cascade,
                        members: s.clone(),
                        thresholds: th,
                        correct,
                        n,
                        total_cost: total,
                        worst_cost: worst,
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
                    base_cost += pool.stage_cost(c, reach as usize);
                    let (out, right) = exit_at(here, t, &mut undecided);
                    reach -= out as u32;
                    base_correct += right;
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

/// A stage with state `here`, inserted before the final stage (state `fin`) and reached by
/// the `undecided` rows: per threshold t, descending, how many of those rows exit at it
/// (bin >= t) and how many of all of them end right (by `here` if they exit, else by `fin`).
pub(crate) fn insertion_sweep(
    here: &State,
    fin: &State,
    undecided: &[bool],
) -> impl Iterator<Item = (usize, u32, u32)> {
    let mut hist = [[0u32; 3]; G];
    for (i, _) in undecided.iter().enumerate().filter(|(_, u)| **u) {
        let h = &mut hist[here.bins[i] as usize];
        h[0] += 1;
        h[1] += here.correct[i] as u32;
        h[2] += fin.correct[i] as u32;
    }
    let total_fin: u32 = hist.iter().map(|h| h[2]).sum();
    let (mut ex, mut ex_c, mut ex_f) = (0u32, 0u32, 0u32);
    (0..G).rev().map(move |t| {
        ex += hist[t][0];
        ex_c += hist[t][1];
        ex_f += hist[t][2];
        (t, ex, ex_c + total_fin - ex_f)
    })
}

/// The `undecided` rows whose bin in `st` reaches `tau` leave: how many, and how many of
/// them `st` gets right.
pub(crate) fn exit_at(st: &State, tau: u8, undecided: &mut [bool]) -> (usize, usize) {
    let (mut out, mut right) = (0, 0);
    for (i, u) in undecided.iter_mut().enumerate() {
        if *u && st.bins[i] >= tau {
            *u = false;
            out += 1;
            right += st.correct[i] as usize;
        }
    }
    (out, right)
}

/// Greedy fronts: singles and ensembles as in brute force (ensembles only while there are at
/// most 20,000 sets), cascades from greedy runs at a sweep of target accuracies.
pub fn greedy_fronts(pool: &mut Pool) -> Fronts {
    let (singles, ensembles) = singles_and_some_ensembles(pool);
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

/// Singles, and every ensemble while there are at most 20,000 sets (none above).
pub(crate) fn singles_and_some_ensembles(pool: &mut Pool) -> (Vec<Found>, Vec<Found>) {
    let m = pool.members.len();
    let k = pool.opts.max_models.max(1);
    let sets: usize = (1..=k.min(m)).map(|j| binom(m, j)).sum();
    if sets <= 20_000 {
        singles_and_ensembles(pool)
    } else {
        pool.ensure(&(0..m).map(|i| key(&[i])).collect::<Vec<_>>());
        ((0..m).map(|i| pool.single(i)).collect(), Vec::new())
    }
}

pub(crate) fn binom(n: usize, k: usize) -> usize {
    (0..k).fold(1usize, |acc, i| acc.saturating_mul(n - i) / (i + 1))
}
