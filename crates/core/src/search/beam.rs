//! Beam search over ordered cascades, for pools too large for the exact search.
//!
//! Level 2 scores every ordered pair of members not cut by the exact search's bounds; each
//! later level inserts every other member at every position of the `width` best cascades of
//! the level before. Every candidate of up to 4 stages gets its optimal thresholds (the
//! exact threshold walk); a 5th or 6th stage is inserted before the final stage with the
//! thresholds before it kept (one sweep). A local search then swaps and drops stages of the
//! best cascade until nothing improves. Measured against the exact optimum in
//! docs/committees.md.

use std::collections::HashSet;

use super::exact::{Goal, cascade_best};
use super::greedy::{binom, exit_at, insertion_sweep};
use super::*;

/// Pools with more members than this and more than twice [`Options::screen_rows`] rows are
/// screened: the beam runs on about `screen_rows` of the rows (every n/screen_rows-th), and
/// its finalists get their optimal thresholds on all of them.
pub const SCREEN_MEMBERS: usize = 16;

/// The fewest errors a screen must be allowed at a target accuracy: with fewer, a handful of
/// sampled rows decides which cascades meet the target (at 100 %, any cascade that happens to
/// be right on the sample does), and the ranking misleads.
pub const SCREEN_MIN_ERRORS: f64 = 50.0;

/// The rows a beam over `pool` for `objective` runs on: all of them, or `Some(step)` when it
/// screens on every `step`-th. A target near 100 % needs more rows (at least
/// [`SCREEN_MIN_ERRORS`] errors allowed on them); past half the pool it is not screened.
pub fn screen_step(pool: &Pool, objective: Objective) -> Option<usize> {
    if pool.opts.screen_rows == 0 {
        return None;
    }
    let mut rows = pool.opts.screen_rows as f64;
    if let Objective::TargetAccuracy(t) = objective {
        let allowed = (100.0 - t) / 100.0;
        rows = if allowed > 0.0 {
            rows.max((SCREEN_MIN_ERRORS / allowed).ceil())
        } else {
            f64::INFINITY
        };
    }
    (pool.members.len() > SCREEN_MEMBERS && (pool.n() as f64) > 2.0 * rows)
        .then(|| (pool.n() as f64 / rows) as usize)
}

/// The best cascade the beam finds for `objective` (`None` when no cascade reaches it).
/// `start`: the best singles/ensembles, which cut candidates that cannot beat them. On a
/// large pool ([`screen_step`]) the beam ranks cascades on a subsample of the rows; the cascades
/// of every level and of the local search are then fitted exactly on all rows, and the
/// best of those is the answer (measured against the full beam in docs/committees.md).
pub fn beam(pool: &mut Pool, objective: Objective, start: &[Found], width: usize) -> Option<Found> {
    pool.screened = None;
    let Some(step) = screen_step(pool, objective) else {
        return beam_on(pool, objective, start, width).0;
    };
    let mut screen = pool.subsample(step);
    let m = pool.members.len();
    // The start points re-scored on the subsample (cascades among them only cut candidates:
    // the subsample's singles and ensembles do that well enough).
    screen.ensure(&(0..m).map(|i| key(&[i])).collect::<Vec<_>>());
    let sets: Vec<Vec<usize>> = start
        .iter()
        .filter(|f| f.kind == Kind::Ensemble)
        .map(|f| f.members.clone())
        .collect();
    screen.ensure(&sets.iter().map(|s| key(s)).collect::<Vec<_>>());
    let mut start_s: Vec<Found> = (0..m).map(|i| screen.single(i)).collect();
    start_s.extend(sets.iter().map(|s| screen.ensemble(s)));
    let start_s: Vec<Found> = start_s
        .into_iter()
        .filter(|f| screen.within_worst(f))
        .collect();
    let (ranked, finalists) = beam_on(&mut screen, objective, &start_s, width);
    let rows = screen.n();
    drop(screen);
    let n = pool.n();
    let mut global = Goal::new(objective, n);
    for f in start {
        global.offer(f);
    }
    let mut best = None;
    for f in score(pool, finalists.clone(), &global, width) {
        offer(&mut global, &mut best, &f);
    }
    // Where the sample's answer was a cascade but no finalist meets the objective on all rows
    // at any thresholds, the sample misled: the beam runs again on every row. (No finalist
    // beating the start points is not that: then they are the answer.)
    let trusted = ranked.is_none()
        || best.is_some()
        || !score(pool, finalists, &Goal::new(objective, n), 1).is_empty();
    pool.screened = Some(Screened { rows, trusted });
    if trusted {
        best
    } else {
        beam_on(pool, objective, start, width).0
    }
}

/// [`beam`] on all of `pool`'s rows, and its finalists: every level's cascades and the local
/// search's steps.
fn beam_on(
    pool: &mut Pool,
    objective: Objective,
    start: &[Found],
    width: usize,
) -> (Option<Found>, Vec<Vec<usize>>) {
    let m = pool.members.len();
    let k = pool.opts.max_models.max(1);
    if k < 2 || m < 2 {
        return (None, Vec::new());
    }
    let mut finalists: Vec<Vec<usize>> = Vec::new();
    let n = pool.n();
    let mut global = Goal::new(objective, n);
    for f in start {
        global.offer(f);
    }
    pool.ensure(&(0..m).map(|i| key(&[i])).collect::<Vec<_>>());
    let pairs: Vec<Vec<usize>> = (0..m)
        .flat_map(|a| (0..m).filter(move |&b| b != a).map(move |b| vec![a, b]))
        .collect();
    let mut level = if k == 2 {
        score(pool, pairs, &global, width)
    } else {
        diverse(pool, pairs, &global, width)
    };
    let mut best: Option<Found> = level.first().cloned();
    for f in &level {
        offer(&mut global, &mut best, f);
    }
    finalists.extend(level.iter().map(|f| f.members.clone()));
    for len in 3..=k.min(m) {
        let mut seen = HashSet::new();
        let mut cands: Vec<Vec<usize>> = Vec::new();
        for f in &level {
            let positions = if len <= 4 { 0..len } else { len - 2..len - 1 };
            for p in positions {
                for x in 0..m {
                    if f.members.contains(&x) {
                        continue;
                    }
                    let mut t = f.members.clone();
                    t.insert(p, x);
                    if seen.insert(t.clone()) {
                        cands.push(t);
                    }
                }
            }
        }
        level = if len == k.min(m).min(4) {
            score(pool, cands, &global, width)
        } else if len <= 4 {
            diverse(pool, cands, &global, width)
        } else {
            insert_before_last(pool, &level, m, objective, width)
        };
        for f in &level {
            offer(&mut global, &mut best, f);
        }
        if level.is_empty() {
            break;
        }
        finalists.extend(level.iter().map(|f| f.members.clone()));
    }
    // Local search: swap one stage for another member, or drop one, while it pays.
    for _ in 0..4 {
        let Some(b) = best.clone() else { break };
        if b.members.len() > 4 {
            break;
        }
        let mut cands: Vec<Vec<usize>> = Vec::new();
        for j in 0..b.members.len() {
            for x in 0..m {
                if !b.members.contains(&x) {
                    let mut t = b.members.clone();
                    t[j] = x;
                    cands.push(t);
                }
            }
            if b.members.len() > 2 {
                let mut t = b.members.clone();
                t.remove(j);
                cands.push(t);
            }
        }
        let before = (global.cost_and_correct(), b.members.clone());
        for f in score(pool, cands, &global, 1) {
            finalists.push(f.members.clone());
            offer(&mut global, &mut best, &f);
        }
        if (
            global.cost_and_correct(),
            best.as_ref().map(|f| f.members.clone()),
        ) == (before.0, Some(before.1))
        {
            break;
        }
    }
    finalists.extend(best.as_ref().map(|f| f.members.clone()));
    let mut seen = HashSet::new();
    finalists.retain(|t| seen.insert(t.clone()));
    (best, finalists)
}

fn offer(global: &mut Goal, best: &mut Option<Found>, f: &Found) {
    let was = global.cost_and_correct();
    global.offer(f);
    if global.cost_and_correct() != was || best.is_none() {
        *best = Some(f.clone());
    }
}

/// Each tuple's optimal thresholds for `objective` (each on its own, so the beam can rank
/// tuples that do not beat the best yet); the `width` best, best first. Tuples the bounds
/// prove cannot beat `global` are not scored.
fn score(pool: &mut Pool, tuples: Vec<Vec<usize>>, global: &Goal, width: usize) -> Vec<Found> {
    let n = pool.n();
    let tuples: Vec<Vec<usize>> = tuples.into_iter().filter(|t| pool.stages_ok(t)).collect();
    // The cost bound needs only the prefix states; the final stage's state is computed for
    // the tuples it does not cut.
    let keys: Vec<Key> = tuples
        .iter()
        .flat_map(|t| {
            (0..t.len() - 1)
                .map(|j| pool.stage_mask(t, j))
                .collect::<Vec<_>>()
        })
        .collect();
    pool.ensure(&keys);
    let obj = global.objective();
    let mut order: Vec<(f64, usize)> = tuples
        .iter()
        .enumerate()
        .map(|(i, t)| (lower_bound(pool, t, &Goal::new(obj, n)), i))
        .filter(|&(lb, _)| !global.prune(lb, n))
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    // All final states in one pass: many sets per row share each member's softmax.
    let keys: Vec<Key> = order
        .iter()
        .map(|&(_, i)| pool.stage_mask(&tuples[i], tuples[i].len() - 1))
        .collect();
    pool.ensure(&keys);
    let mut found: Vec<Found> = Vec::new();
    for chunk in order.chunks(512) {
        let mut floor = Goal::new(obj, n);
        if found.len() >= width {
            floor.offer(&found[width - 1]);
        }
        floor.tie_ok = false;
        let live: Vec<usize> = chunk
            .iter()
            .filter(|&&(lb, _)| !floor.prune(lb, n))
            .map(|&(_, i)| i)
            .collect();
        let p = &*pool;
        let more: Vec<Found> = live
            .par_iter()
            .map_init(
                || Scratch::new(n),
                |s, &i| {
                    let mut g = floor.clone();
                    cascade_best(p, &tuples[i], &mut g, s)
                },
            )
            .flatten()
            .collect();
        found.extend(more);
        rank(&mut found, obj);
        found.truncate(width);
    }
    found
}

/// For a level that is extended further: each tuple's exact front, and the beam made of the
/// best tuples for the objective and for relaxed versions of it (a lower target, a larger
/// budget). A prefix that misses the target can be the best start: a cheap, diverse stage
/// inserted later lifts it (measured: ranking by the objective alone lost 2.9x on such a pool).
fn diverse(pool: &mut Pool, tuples: Vec<Vec<usize>>, global: &Goal, width: usize) -> Vec<Found> {
    let n = pool.n();
    let tuples: Vec<Vec<usize>> = tuples.into_iter().filter(|t| pool.stages_ok(t)).collect();
    let keys: Vec<Key> = tuples
        .iter()
        .flat_map(|t| {
            (0..t.len())
                .map(|j| pool.stage_mask(t, j))
                .collect::<Vec<_>>()
        })
        .collect();
    pool.ensure(&keys);
    let p = &*pool;
    let fronts: Vec<Vec<Found>> = tuples
        .par_iter()
        .map_init(|| Scratch::new(n), |s, t| cascade_front(p, t, s))
        .collect();
    let obj = global.objective();
    let subs: Vec<Objective> = match obj {
        Objective::TargetAccuracy(t) => [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
            .iter()
            .map(|d| Objective::TargetAccuracy(t - d))
            .collect(),
        Objective::Budget(g) => [1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0]
            .iter()
            .map(|f| Objective::Budget(g * f))
            .collect(),
    };
    let per = width.div_ceil(subs.len()).max(3);
    let mut out: Vec<Found> = Vec::new();
    let mut taken = HashSet::new();
    for (q, sub) in subs.iter().enumerate() {
        let mut pts: Vec<Found> = fronts.iter().filter_map(|f| choose(f, *sub).ok()).collect();
        rank(&mut pts, *sub);
        // The objective itself keeps its full share; the relaxed ones fill the rest.
        let want = if q == 0 { per.max(width / 2) } else { per };
        let mut took = 0;
        for f in pts {
            if took == want || !taken.insert(f.members.clone()) {
                continue;
            }
            took += 1;
            // Report the tuple at the objective's own point when it has one.
            let i = tuples.iter().position(|t| *t == f.members);
            let own = i.and_then(|i| choose(&fronts[i], obj).ok());
            out.push(
                own.filter(|o| better(o, &f, obj) || o.members == f.members)
                    .unwrap_or(f),
            );
        }
    }
    rank(&mut out, obj);
    out
}

/// The exact search's cost bound of one ordered cascade.
fn lower_bound(p: &Pool, t: &[usize], g: &Goal) -> f64 {
    let n = p.n();
    let mut union = vec![0u64; n.div_ceil(64)];
    let mut lb = 0.0;
    for j in 0..t.len() {
        let reach = if j == 0 {
            n
        } else {
            g.must_reach(count(&union))
        };
        lb += p.stage_lb[t[j]][reach];
        if j + 1 < t.len() {
            or_into(&mut union, p.state(p.stage_mask(t, j)));
        }
    }
    lb
}

/// Cascades of 5 or 6 stages: a member inserted before the final stage of each of `level`,
/// its threshold swept with every other threshold kept (one histogram over the rows the
/// earlier stages leave undecided).
fn insert_before_last(
    pool: &mut Pool,
    level: &[Found],
    m: usize,
    objective: Objective,
    width: usize,
) -> Vec<Found> {
    let n = pool.n();
    let mut keys = Vec::new();
    for f in level {
        let (pre, last) = f.members.split_at(f.members.len() - 1);
        for x in (0..m).filter(|x| !f.members.contains(x)) {
            let mut t = pre.to_vec();
            t.push(x);
            keys.push(pool.stage_mask(&t, t.len() - 1));
            t.push(last[0]);
            keys.push(pool.stage_mask(&t, t.len() - 1));
        }
    }
    pool.ensure(&keys);
    let mut out = Vec::new();
    for f in level {
        let (pre, last) = f.members.split_at(f.members.len() - 1);
        // What the kept stages decide: rows still undecided, right rows and cost so far.
        let mut undecided = vec![true; n];
        let (mut reach, mut right) = (n, 0usize);
        let mut cost = 0.0;
        for (j, t) in f.thresholds.iter().enumerate() {
            cost += pool.stage_cost(pre[j], reach);
            let (out, r) = exit_at(
                pool.state(pool.stage_mask(pre, j)),
                tau_of(*t),
                &mut undecided,
            );
            reach -= out;
            right += r;
        }
        let mut goal = Goal::new(objective, n);
        let mut best: Option<Found> = None;
        for x in (0..m).filter(|x| !f.members.contains(x)) {
            let worst = f.worst_cost + pool.unit(x);
            if !pool.worst_ok(worst) {
                continue;
            }
            let mut t = pre.to_vec();
            t.push(x);
            let here = pool.state(pool.stage_mask(&t, t.len() - 1));
            t.push(last[0]);
            let fin = pool.state(pool.stage_mask(&t, t.len() - 1));
            let c0 = cost + pool.stage_cost(x, reach);
            for (tau, ex, r) in insertion_sweep(here, fin, &undecided) {
                let r = right + r as usize;
                let total = c0 + pool.stage_cost(last[0], reach - ex as usize);
                if goal.accepts(total, r) {
                    let mut th = f.thresholds.clone();
                    th.push(threshold(tau));
                    let cand = Found {
                        kind: Kind::Cascade,
                        members: t.clone(),
                        thresholds: th,
                        correct: r,
                        n,
                        total_cost: total,
                        worst_cost: worst,
                    };
                    goal.offer(&cand);
                    best = Some(cand);
                }
            }
        }
        out.extend(best);
    }
    rank(&mut out, objective);
    out.truncate(width);
    out
}

/// Best first for `objective`; ties by members.
fn rank(v: &mut [Found], obj: Objective) {
    v.sort_by(|a, b| {
        if better(a, b, obj) {
            std::cmp::Ordering::Less
        } else if better(b, a, obj) {
            std::cmp::Ordering::Greater
        } else {
            a.members.cmp(&b.members)
        }
    });
}

/// The best ensemble a beam over member sets finds: each level adds every other member to
/// the `width` best sets of the level before (for pools whose sets cannot all be scored).
pub fn ensemble_beam(pool: &mut Pool, objective: Objective, width: usize) -> Vec<Found> {
    let m = pool.members.len();
    let k = pool.opts.max_models.max(1).min(m);
    pool.ensure(&(0..m).map(|i| key(&[i])).collect::<Vec<_>>());
    let mut level: Vec<Vec<usize>> = (0..m).map(|i| vec![i]).collect();
    let mut out = Vec::new();
    for _ in 2..=k {
        let mut seen = HashSet::new();
        let sets: Vec<Vec<usize>> = level
            .iter()
            .flat_map(|s| {
                (0..m).filter(|x| !s.contains(x)).map(move |x| {
                    let mut t = s.clone();
                    t.push(x);
                    t.sort_unstable();
                    t
                })
            })
            .filter(|t| seen.insert(t.clone()))
            .collect();
        pool.ensure(&sets.iter().map(|s| key(s)).collect::<Vec<_>>());
        let mut found: Vec<Found> = sets
            .iter()
            .map(|s| pool.ensemble(s))
            .filter(|f| pool.within_worst(f))
            .collect();
        rank(&mut found, objective);
        found.truncate(width);
        level = found.iter().map(|f| f.members.clone()).collect();
        out.extend(found);
    }
    out
}

/// Fronts for pools too large for brute force: singles; every ensemble while there are at
/// most 20,000 sets, else an ensemble beam per target; cascades from the beam for each
/// `targets` accuracy (percent).
pub fn beam_fronts(pool: &mut Pool, targets: &[f64], width: usize) -> Fronts {
    let m = pool.members.len();
    let k = pool.opts.max_models.max(1);
    let sets: usize = (1..=k.min(m)).map(|j| binom(m, j)).sum();
    let (singles, mut ensembles) = if sets <= 20_000 {
        singles_and_ensembles(pool)
    } else {
        pool.ensure(&(0..m).map(|i| key(&[i])).collect::<Vec<_>>());
        ((0..m).map(|i| pool.single(i)).collect(), Vec::new())
    };
    let exhaustive = sets <= 20_000;
    let mut cascades = Vec::new();
    let mut candidates = singles.len() + ensembles.len();
    for &t in targets {
        let obj = Objective::TargetAccuracy(t);
        if !exhaustive {
            let e = match screen_step(pool, obj) {
                // Screened as the cascades are: the beam's sets scored again on all rows.
                Some(step) => {
                    let mut screen = pool.subsample(step);
                    let sets: Vec<Vec<usize>> = ensemble_beam(&mut screen, obj, width)
                        .into_iter()
                        .map(|f| f.members)
                        .collect();
                    drop(screen);
                    pool.ensure(&sets.iter().map(|s| key(s)).collect::<Vec<_>>());
                    sets.iter()
                        .map(|s| pool.ensemble(s))
                        .filter(|f| pool.within_worst(f))
                        .collect()
                }
                None => ensemble_beam(pool, obj, width),
            };
            candidates += e.len();
            ensembles.extend(e);
        }
        let mut start: Vec<Found> = singles.clone();
        start.extend(ensembles.iter().cloned());
        let start: Vec<Found> = start.into_iter().filter(|f| pool.within_worst(f)).collect();
        cascades.extend(beam(pool, obj, &start, width));
        candidates += 1;
    }
    let all = overall(pool, &singles, &ensembles, &cascades);
    Fronts {
        candidates,
        ensembles: front(ensembles),
        cascades: front(cascades),
        singles,
        all,
    }
}
