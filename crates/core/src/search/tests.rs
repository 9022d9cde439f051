//! The search against hand-computed cases and an independent evaluation.

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
                    .any(|f| f.correct >= correct && f.avg_cost() <= cost + 1e-9),
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
            assert!((o.avg_gmacs - f.avg_cost()).abs() < 1e-9);
        }
    }
}

/// The pool of [`objectives_by_hand`]: labels 0,0,0,0; cheap is right with confidence 0.905,
/// 0.805, 0.605 and predicts class 1 on sample 3 with confidence 0.705; big is right on all
/// with 0.99.
fn cheap_and_big() -> (Vec<Vec<f32>>, Vec<i64>) {
    let logit = |p: f64| ((p / (1.0 - p)).ln()) as f32; // softmax([l, 0]) = (p, 1 - p)
    let cheap: Vec<f32> = [0.905, 0.805, 0.605]
        .iter()
        .flat_map(|&p| [logit(p), 0.0])
        .chain([0.0, logit(0.705)])
        .collect();
    let big: Vec<f32> = [0.99; 4].iter().flat_map(|&p| [logit(p), 0.0]).collect();
    (vec![cheap, big], vec![0i64; 4])
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
    let (logits, labels) = cheap_and_big();
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
    assert!((c.avg_cost() - 2.5).abs() < 1e-12);
    assert!(c.thresholds[0] > 0.705 && c.thresholds[0] <= 0.805, "{c:?}");
    // Budget 2 GMACs: the cascade at t in (0.605, 0.705] reaches 75% at 1.75 (cheap alone: 75%
    // at 1.0, which wins the tie on accuracy by cost).
    let c = choose(&fronts.all, Objective::Budget(2.0)).unwrap();
    assert_eq!(c.correct, 3);
    assert!((c.avg_cost() - 1.0).abs() < 1e-12, "{c:?}");
    assert_eq!(c.kind, Kind::Single);
    // Budget 2.5: 100%.
    let c = choose(&fronts.all, Objective::Budget(2.5)).unwrap();
    assert_eq!(c.correct, 4);
    // Worst-case bound below 4 GMACs: no cascade, no ensemble: big alone for 100%.
    let opts = Options {
        max_models: 2,
        accumulate: false,
        worst_case: Some(3.5),
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
        g.total_cost >= b.total_cost - 1e-9,
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
    assert!((o.avg_gmacs - g.avg_cost()).abs() < 1e-9);
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

/// The pool of `objectives_by_hand` with measured times instead of GMACs, run at batch 4.
/// cheap: 4 ms per batch of 1 and of 4 (1 ms per image at batch 4, 4 at batch 1). big: 7 ms at
/// batch 1, 12 ms at 4 (3 ms per image at batch 4; at batch 2 the batch takes 7 + 5/3 ms, so
/// 4.333 per image; at batch 3, 10.333 ms). The cascade cheap -> big at t in (0.705, 0.805]
/// sends 2 of 4 images on, in batches of 2: 4 + 2 x 4.333 = 12.667 ms, 3.167 per image, more
/// than big alone (3.0) although its GMACs are fewer (2.5 against 3): with time costs the
/// search for 100 % picks big alone.
#[test]
fn time_costs_by_hand() {
    use crate::costs::TimeCurve;
    let (logits, labels) = cheap_and_big();
    let m = members(&logits, 2, &[1.0, 3.0]);
    let time = TimeCosts {
        curves: vec![
            TimeCurve {
                points: vec![(1, 4.0), (4, 4.0)],
            },
            TimeCurve {
                points: vec![(1, 7.0), (4, 12.0)],
            },
        ],
        batch: 4,
    };
    let opts = |worst_case| Options {
        max_models: 2,
        accumulate: false,
        worst_case,
        time: Some(time.clone()),
        ..Default::default()
    };
    let mut pool = Pool::new(&m, &labels, &[0, 1, 2, 3], opts(None)).unwrap();
    assert_eq!(pool.unit_name(), "ms");
    let fronts = brute_force(&mut pool).unwrap();
    let c = choose(&fronts.all, Objective::TargetAccuracy(100.0)).unwrap();
    assert_eq!((c.kind, c.members.as_slice()), (Kind::Single, &[1][..]));
    assert!((c.avg_cost() - 3.0).abs() < 1e-12, "{c:?}");
    // The cascade's own front: 100 % at 3.167 ms (t in (0.705, 0.805]).
    let best = cascade_front(&pool, &[0, 1], &mut Scratch::new(4))
        .iter()
        .filter(|f| f.members == [0, 1] && f.correct == 4)
        .map(Found::avg_cost)
        .fold(f64::INFINITY, f64::min);
    assert!(
        (best - (4.0 + 2.0 * (7.0 + 5.0 / 3.0) / 2.0) / 4.0).abs() < 1e-9,
        "{best}"
    );
    // Budget 2 ms: cheap alone, 75 % at 1 ms.
    let c = choose(&fronts.all, Objective::Budget(2.0)).unwrap();
    assert_eq!((c.kind, c.correct), (Kind::Single, 3));
    let e = choose_in(&fronts.all, Objective::Budget(0.5), pool.unit_name()).unwrap_err();
    assert!(e.to_string().contains("0.5 ms per image"), "{e}");
    // Scored: the predicted ms per image from the exits it makes, and with every stage run.
    let cascade = Found {
        kind: Kind::Cascade,
        members: vec![0, 1],
        thresholds: vec![0.75],
        correct: 0,
        n: 4,
        total_cost: 0.0,
        worst_cost: 0.0,
    };
    let s = pool.score(&cascade);
    assert_eq!(s.exit_fractions, vec![0.5, 0.5]);
    assert!(
        (s.avg_ms.unwrap() - (4.0 + 7.0 + 5.0 / 3.0) / 4.0).abs() < 1e-9,
        "{s:?}"
    );
    assert_eq!(s.worst_ms, Some(4.0));
    assert_eq!(s.avg_gmacs, 2.5);
    // A worst-case bound of 3.5 ms (cheap + big = 4 ms) leaves out every cascade and ensemble.
    let mut pool = Pool::new(&m, &labels, &[0, 1, 2, 3], opts(Some(3.5))).unwrap();
    let fronts = brute_force(&mut pool).unwrap();
    assert!(fronts.cascades.is_empty() && fronts.ensembles.is_empty());
    // Greedy reaches the exhaustive optimum (big alone, or big before a stage it never
    // reaches, at the same 3 ms).
    let mut pool = Pool::new(&m, &labels, &[0, 1, 2, 3], opts(None)).unwrap();
    let g = greedy(&mut pool, Objective::TargetAccuracy(100.0)).unwrap();
    assert_eq!(g.correct, 4);
    assert!((g.avg_cost() - 3.0).abs() < 1e-12, "{g:?}");
    // One curve per member.
    let mut short = opts(None);
    short.time.as_mut().unwrap().curves.pop();
    assert!(matches!(
        Pool::new(&m, &labels, &[0, 1, 2, 3], short),
        Err(SearchError::Curves(1, 2))
    ));
}
