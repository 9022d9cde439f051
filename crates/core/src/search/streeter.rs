//! Streeter's greedy (Streeter, "Approximation Algorithms for Cascading Prediction Models",
//! ICML 2018), for comparison with the beam on large pools.
//!
//! The cascade ends with a reference model `f` that decides whatever reaches it. Stages are
//! added before it one at a time, greedily: each round takes the (model, threshold) stage
//! that decides the most images still undecided per unit of its cost, among the stages whose
//! decided images lose at most `delta` of them in accuracy against what the cascade would
//! have got right by going on (the accuracy constraint). After each round the prefix is
//! closed by `f`. Swept over `delta` and over the references `f` on the single models'
//! front, this gives a set of cascades, from cheap to accurate; the objective picks among
//! them. Measured against the beam and the optimum in docs/committees.md.

use super::*;

/// The accuracy losses swept: the share of its decided images a stage may get wrong that
/// the rest of the cascade would have got right.
const DELTAS: [f64; 10] = [0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4];

/// Every cascade Streeter's greedy builds: for each reference model on the single models'
/// front and each `delta`, each prefix closed by the reference.
pub fn streeter_cascades(pool: &mut Pool) -> Vec<Found> {
    let m = pool.members.len();
    let k = pool.opts.max_models.max(1).min(m);
    let n = pool.n();
    pool.ensure(&(0..m).map(|i| key(&[i])).collect::<Vec<_>>());
    let mut out = Vec::new();
    if k < 2 {
        return out;
    }
    let singles: Vec<Found> = (0..m).map(|i| pool.single(i)).collect();
    let refs: Vec<usize> = front(singles).iter().map(|f| f.members[0]).collect();
    for &f in &refs {
        for delta in DELTAS {
            let mut prefix: Vec<usize> = Vec::new();
            let mut thresholds: Vec<f64> = Vec::new();
            let mut undecided = vec![true; n];
            let (mut reach, mut right, mut cost) = (n, 0usize, 0.0f64);
            while prefix.len() < k - 1 && reach > 0 {
                let cands: Vec<usize> = (0..m).filter(|c| *c != f && !prefix.contains(c)).collect();
                let masks: Vec<(Key, Key)> = cands
                    .iter()
                    .map(|&c| {
                        let mut s = prefix.clone();
                        s.push(c);
                        let here = pool.stage_mask(&s, s.len() - 1);
                        s.push(f);
                        (here, pool.stage_mask(&s, s.len() - 1))
                    })
                    .collect();
                pool.ensure(&masks.iter().flat_map(|&(a, b)| [a, b]).collect::<Vec<_>>());
                let worst: f64 = prefix.iter().map(|&i| pool.unit(i)).sum::<f64>() + pool.unit(f);
                let mut step: Option<(f64, usize, usize)> = None;
                for (&c, &(here, fin)) in cands.iter().zip(&masks) {
                    if !pool.worst_ok(worst + pool.unit(c)) {
                        continue;
                    }
                    let (here, fin) = (pool.state(here), pool.state(fin));
                    // Per bin of the stage's confidence, over the undecided rows: how many,
                    // how many the stage gets right, how many the cascade would by going on.
                    let mut hist = [[0u32; 3]; G];
                    for i in (0..n).filter(|&i| undecided[i]) {
                        let h = &mut hist[here.bins[i] as usize];
                        h[0] += 1;
                        h[1] += here.correct[i] as u32;
                        h[2] += fin.correct[i] as u32;
                    }
                    let c_cost = pool.stage_cost(c, reach).max(f64::MIN_POSITIVE);
                    let (mut ex, mut ex_here, mut ex_fin) = (0u32, 0u32, 0u32);
                    // Threshold 0 decides everything: that is a final stage, not a step.
                    for t in (1..G).rev() {
                        ex += hist[t][0];
                        ex_here += hist[t][1];
                        ex_fin += hist[t][2];
                        let lost = ex_fin as f64 - ex_here as f64;
                        if ex == 0 || lost > delta * ex as f64 {
                            continue;
                        }
                        let ratio = ex as f64 / c_cost;
                        if step.is_none_or(|(b, _, _)| ratio > b) {
                            step = Some((ratio, c, t));
                        }
                    }
                }
                let Some((_, c, t)) = step else { break };
                prefix.push(c);
                let st = pool.state(pool.stage_mask(&prefix, prefix.len() - 1));
                cost += pool.stage_cost(c, reach);
                let (left, r) = super::greedy::exit_at(st, t as u8, &mut undecided);
                reach -= left;
                right += r;
                thresholds.push(threshold(t));
                // Close the prefix with the reference.
                let mut members = prefix.clone();
                members.push(f);
                let fin = pool.state(pool.stage_mask(&members, members.len() - 1));
                let r = (0..n).filter(|&i| undecided[i] && fin.correct[i]).count();
                out.push(Found {
                    kind: Kind::Cascade,
                    members,
                    thresholds: thresholds.clone(),
                    correct: right + r,
                    n,
                    total_cost: cost + pool.stage_cost(f, reach),
                    worst_cost: worst + pool.unit(c),
                });
            }
        }
    }
    out
}

/// Fronts from Streeter's greedy: singles and ensembles as in the greedy's fronts, cascades
/// from the sweep.
pub fn streeter_fronts(pool: &mut Pool) -> Fronts {
    let (singles, ensembles) = super::greedy::singles_and_some_ensembles(pool);
    let cascades = streeter_cascades(pool);
    let candidates = singles.len() + ensembles.len() + cascades.len();
    let all = overall(pool, &singles, &ensembles, &cascades);
    Fronts {
        candidates,
        ensembles: front(ensembles),
        cascades: front(cascades),
        singles,
        all,
    }
}
