//! Exact search for one objective: branch and bound over ordered prefixes.
//!
//! A cascade's exits follow its thresholds, so two bounds hold for any thresholds:
//! - accuracy: a row can only be right if some stage's state gets it right, so a cascade gets
//!   at most `|C_0 ∪ ... ∪ C_{k-1}|` rows right (`C_j`: rows state j gets right);
//! - cost (target accuracy `c*` rows): the rows that leave before stage j are right at most
//!   `|C_0 ∪ ... ∪ C_{j-1}|` times, so at least `c* - |C_0 ∪ ... ∪ C_{j-1}|` rows must reach
//!   stage j; its cost is at least the cost of that many rows (costs only grow with the rows).
//!
//! The second bound depends on the prefix only and costs only add up, so a prefix whose bound
//! already exceeds the best cascade found is cut with all its extensions. Within one cascade
//! the threshold walk of [`super::brute`] is cut the same way: the cost so far and the rows
//! still undecided that a later stage could get right bound everything below a node.
//! Floating-point addition is monotone, so a bound summed in the walk's order never exceeds
//! the total it bounds: pruning loses nothing.

use std::sync::Mutex;
use std::time::Instant;

use super::*;

/// The best cascade found so far, as the walk compares candidates with it.
#[derive(Debug, Clone)]
pub(crate) struct Goal {
    objective: Objective,
    n: usize,
    /// Target accuracy: the least number of right rows that reaches it.
    need: usize,
    cost: f64,
    correct: usize,
    /// The incumbent's members: an equal candidate replaces it when its members sort first,
    /// so the answer does not depend on the order the search visits candidates in.
    members: Vec<usize>,
    /// Whether the cascade being searched may replace an equal incumbent.
    pub(crate) tie_ok: bool,
}

impl Goal {
    pub(crate) fn new(objective: Objective, n: usize) -> Self {
        let need = match objective {
            Objective::TargetAccuracy(t) => (0..=n)
                .find(|&c| 100.0 * c as f64 / n.max(1) as f64 >= t - 1e-9)
                .unwrap_or(n + 1),
            Objective::Budget(_) => 0,
        };
        Self {
            objective,
            n,
            need,
            cost: f64::INFINITY,
            correct: 0,
            members: Vec::new(),
            tie_ok: true,
        }
    }

    pub(crate) fn objective(&self) -> Objective {
        self.objective
    }

    pub(crate) fn cost_and_correct(&self) -> (f64, usize) {
        (self.cost, self.correct)
    }

    /// Takes `f` as the incumbent when it is better (any kind: a cascade must beat it);
    /// whether it did.
    pub(crate) fn offer(&mut self, f: &Found) -> bool {
        self.tie_ok = f.members < self.members || self.members.is_empty();
        let take = self.accepts(f.total_cost, f.correct);
        if take {
            self.cost = f.total_cost;
            self.correct = f.correct;
            self.members = f.members.clone();
        }
        take
    }

    fn feasible_cost(&self, total: f64) -> bool {
        match self.objective {
            Objective::TargetAccuracy(_) => true,
            Objective::Budget(g) => within(total / self.n.max(1) as f64, g),
        }
    }

    /// Whether a cascade with this total cost and right rows beats the incumbent.
    #[inline]
    pub(crate) fn accepts(&self, total: f64, right: usize) -> bool {
        let tie = self.tie_ok && total == self.cost && right == self.correct;
        match self.objective {
            Objective::TargetAccuracy(_) => {
                right >= self.need
                    && (total < self.cost || (total == self.cost && right > self.correct) || tie)
            }
            Objective::Budget(_) => {
                self.feasible_cost(total)
                    && (right > self.correct || (right == self.correct && total < self.cost) || tie)
            }
        }
    }

    /// Whether nothing costing at least `cost_lb` with at most `correct_ub` right rows can
    /// beat the incumbent.
    #[inline]
    pub(crate) fn prune(&self, cost_lb: f64, correct_ub: usize) -> bool {
        let equal_ok = self.tie_ok;
        match self.objective {
            Objective::TargetAccuracy(_) => {
                correct_ub < self.need
                    || cost_lb > self.cost
                    || (cost_lb == self.cost
                        && (correct_ub < self.correct || (correct_ub == self.correct && !equal_ok)))
            }
            Objective::Budget(_) => {
                !self.feasible_cost(cost_lb)
                    || correct_ub < self.correct
                    || (correct_ub == self.correct
                        && (cost_lb > self.cost || (cost_lb == self.cost && !equal_ok)))
            }
        }
    }

    /// The rows that must reach a stage whose earlier stages get at most `covered` right.
    pub(crate) fn must_reach(&self, covered: usize) -> usize {
        self.need.saturating_sub(covered).min(self.n)
    }
}

/// The best thresholds of one ordered cascade (2..=4 stages, states computed) for `goal`,
/// if they beat its incumbent (which they then replace).
pub(crate) fn cascade_best(
    pool: &Pool,
    stages: &[usize],
    goal: &mut Goal,
    s: &mut Scratch,
) -> Option<Found> {
    let k = stages.len();
    let n = pool.n();
    let d = k - 1;
    let covered = {
        let mut u = vec![0u64; n.div_ceil(64)];
        for j in 0..k {
            or_into(&mut u, pool.state(pool.stage_mask(stages, j)));
        }
        count(&u)
    };
    if goal.prune(pool.stage[stages[0]][n], covered) {
        return None;
    }
    fill(pool, stages, s, true);
    let tab: Vec<&[f64]> = stages.iter().map(|&m| pool.stage[m].as_slice()).collect();
    struct Ctx<'a> {
        d: usize,
        tab: &'a [&'a [f64]],
        exits: &'a [Vec<[u32; 2]>],
        last: &'a [[u32; 3]],
        rem: &'a [Vec<[u32; 1]>],
    }
    // The walk's state, passed down as in `cascade_front`.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        c: &Ctx,
        j: usize,
        idx: usize,
        reach: u32,
        correct: u32,
        cost: f64,
        goal: &mut Goal,
        found: &mut Option<(usize, f64, usize)>,
        covered: u32,
    ) {
        let cost = cost + c.tab[j][reach as usize];
        let later = if j == 0 {
            covered
        } else {
            c.rem[j - 1][idx][0]
        };
        if goal.prune(cost, (correct + later) as usize) {
            return;
        }
        if j == c.d - 1 {
            let row = &c.last[idx * G..idx * G + G];
            let total_last: u32 = row.iter().map(|x| x[2]).sum();
            let (tl, mut ex_n, mut ex_c, mut ex_l) = (c.tab[c.d], 0u32, 0u32, 0u32);
            for t in (0..G).rev() {
                let x = row[t];
                ex_n += x[0];
                ex_c += x[1];
                ex_l += x[2];
                let right = (correct + ex_c + total_last - ex_l) as usize;
                let total = cost + tl[(reach - ex_n) as usize];
                if goal.accepts(total, right) {
                    goal.cost = total;
                    goal.correct = right;
                    goal.tie_ok = false;
                    *found = Some((idx * G + t, total, right));
                }
            }
            return;
        }
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
                goal,
                found,
                covered,
            );
        }
    }
    let ctx = Ctx {
        d,
        tab: &tab,
        exits: &s.exits,
        last: &s.last,
        rem: &s.rem,
    };
    let mut found = None;
    walk(
        &ctx,
        0,
        0,
        n as u32,
        0,
        0.0,
        goal,
        &mut found,
        covered as u32,
    );
    let (idx, total, right) = found?;
    goal.members = stages.to_vec();
    Some(Found {
        kind: Kind::Cascade,
        members: stages.to_vec(),
        thresholds: thresholds_of(idx, d),
        correct: right,
        n,
        total_cost: total,
        worst_cost: stages.iter().map(|&m| pool.unit(m)).sum(),
    })
}

/// What the exact search found and proved.
#[derive(Debug, Clone)]
pub struct Exact {
    /// The best cascade, when one beats the incumbent it started from.
    pub best: Option<Found>,
    /// False when the deadline cut the search short.
    pub complete: bool,
    /// Cut short: no cascade left unexplored can cost less than this on average (target
    /// accuracy) or get a higher top-1 (budget).
    pub bound: Option<f64>,
    /// Ordered cascades whose thresholds were searched, and those cut by the bounds first.
    pub searched: usize,
    pub pruned: usize,
}

/// The optimal cascade of up to `max_models` (at most 4) stages for `objective`, if one beats
/// `start` (the best single model or ensemble, or a cascade from a faster search). Stops at
/// `deadline`, reporting the bound it has proven.
pub fn exact(
    pool: &mut Pool,
    objective: Objective,
    start: &[Found],
    deadline: Option<Instant>,
) -> Result<Exact, SearchError> {
    let m = pool.members.len();
    let k = pool.opts.max_models.max(1);
    if k > 4 {
        return Err(SearchError::TooDeep(k));
    }
    let sets = (1..=k.min(m))
        .map(|j| super::greedy::binom(m, j))
        .sum::<usize>();
    if pool.opts.accumulate && sets > 100_000 {
        return Err(SearchError::TooManySets { sets, models: m });
    }
    let n = pool.n();
    let mut goal = Goal::new(objective, n);
    for f in start {
        goal.offer(f);
    }
    let sets: Vec<Key> = if pool.opts.accumulate {
        subsets(m, k).iter().map(|s| key(s)).collect()
    } else {
        (0..m).map(|i| key(&[i])).collect()
    };
    pool.ensure(&sets);
    let shared = Mutex::new((goal, None::<Found>));
    let tally = Mutex::new(Tally::default());
    let p = &*pool;
    (0..m).into_par_iter().for_each(|first| {
        let mut s = Scratch::new(n);
        let mut local = Tally::default();
        let mut prefix = vec![first];
        let union = p.state(p.stage_mask(&prefix, 0)).bits.clone();
        let goal = shared.lock().map(|g| g.0.clone()).ok();
        if let Some(mut goal) = goal {
            let lb = p.stage_lb[first][n];
            dfs(
                p,
                &mut prefix,
                &union,
                lb,
                k,
                &shared,
                &mut goal,
                &mut s,
                deadline,
                &mut local,
            );
        }
        if let Ok(mut t) = tally.lock() {
            t.absorb(&local);
        }
    });
    let (goal, best) = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    let t = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    let bound = (!t.complete).then(|| match objective {
        Objective::TargetAccuracy(_) => t.cut_cost.min(goal.cost) / n as f64,
        Objective::Budget(_) => 100.0 * t.cut_correct.max(goal.correct) as f64 / n as f64,
    });
    Ok(Exact {
        best,
        complete: t.complete,
        bound,
        searched: t.searched,
        pruned: t.pruned,
    })
}

struct Tally {
    searched: usize,
    pruned: usize,
    cut_cost: f64,
    cut_correct: usize,
    complete: bool,
}

impl Tally {
    fn absorb(&mut self, o: &Tally) {
        self.searched += o.searched;
        self.pruned += o.pruned;
        self.cut_cost = self.cut_cost.min(o.cut_cost);
        self.cut_correct = self.cut_correct.max(o.cut_correct);
        self.complete &= o.complete;
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            searched: 0,
            pruned: 0,
            cut_cost: f64::INFINITY,
            cut_correct: 0,
            complete: true,
        }
    }
}

/// Every cascade that extends `prefix`: each other member as the final stage, then (depth
/// left) as the next prefix stage. `union`: rows some prefix state gets right; `lb`: the
/// prefix's cost bound.
#[allow(clippy::too_many_arguments)]
fn dfs(
    p: &Pool,
    prefix: &mut Vec<usize>,
    union: &[u64],
    lb: f64,
    k: usize,
    shared: &Mutex<(Goal, Option<Found>)>,
    goal: &mut Goal,
    s: &mut Scratch,
    deadline: Option<Instant>,
    t: &mut Tally,
) {
    let n = p.n();
    let m = p.members.len();
    let reach = goal.must_reach(count(union));
    let worst: f64 = prefix.iter().map(|&i| p.unit(i)).sum();
    for f in 0..m {
        if prefix.contains(&f) || !p.worst_ok(worst + p.unit(f)) {
            continue;
        }
        // The incumbent may have improved in another thread.
        if let Ok(sh) = shared.lock()
            && better_goal(&sh.0, goal)
        {
            *goal = Goal {
                tie_ok: goal.tie_ok,
                ..sh.0.clone()
            };
        }
        let tlb = lb + p.stage_lb[f][reach];
        prefix.push(f);
        if deadline.is_some_and(|d| Instant::now() > d) {
            t.complete = false;
            t.cut_cost = t.cut_cost.min(tlb);
            t.cut_correct = n;
            prefix.pop();
            continue;
        }
        goal.tie_ok = goal.members.is_empty() || *prefix < goal.members;
        // Extensions only add cost: a prefix cut here is cut with all of them.
        if goal.prune(tlb, n) {
            t.pruned += 1;
            prefix.pop();
            continue;
        }
        t.searched += 1;
        if let Some(found) = cascade_best(p, prefix, goal, s)
            && let Ok(mut sh) = shared.lock()
            && sh.0.offer(&found)
        {
            sh.1 = Some(found);
        }
        if prefix.len() < k {
            let mut u = union.to_vec();
            or_into(&mut u, p.state(p.stage_mask(prefix, prefix.len() - 1)));
            dfs(p, prefix, &u, tlb, k, shared, goal, s, deadline, t);
        }
        prefix.pop();
    }
}

/// Whether goal `a`'s incumbent beats `b`'s.
fn better_goal(a: &Goal, b: &Goal) -> bool {
    let mut probe = b.clone();
    probe.tie_ok = !a.members.is_empty() && (b.members.is_empty() || a.members < b.members);
    !a.members.is_empty() && probe.accepts(a.cost, a.correct)
}
