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
