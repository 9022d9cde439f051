//! Kondratyuk et al. (2020)'s comparison: single models of one family at several sizes against
//! ensembles of k independently trained smaller members at equal or lower total cost.
//!
//! Caches are grouped by architecture and input size (a group's caches are its seeds). For
//! every group and k, the ensemble of every k-subset of its members is scored (mean of
//! probabilities), so a point is the mean over subsets with its range, not one lucky draw; a
//! single model's point is the mean over its seeds.

use serde::Serialize;

use crate::cache::{CacheError, LogitsCache, check_aligned};
use crate::combine::{Combine, combine};
use crate::metrics::argmax;

/// One group at one ensemble size: k members of the same architecture and input size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// `model@img_size`.
    pub group: String,
    pub k: usize,
    /// k times the member's GMACs per image.
    pub gmacs: f64,
    /// Top-1 (%) averaged over the scored k-subsets, and their range.
    pub top1_mean: f64,
    pub top1_min: f64,
    pub top1_max: f64,
    /// How many k-subsets were scored (all of them, up to the cap, in lexicographic order).
    pub subsets: usize,
}

/// A single model against the best ensemble of a cheaper group at no more total cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub single: Point,
    /// The ensemble (k >= 2, another group) with the highest mean top-1 at <= the single's
    /// GMACs; `None` when no such ensemble exists in the pool.
    pub ensemble: Option<Point>,
    /// ensemble top-1 mean minus single top-1 mean, in points.
    pub gain: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Study {
    pub images: usize,
    /// Every group at k = 1..=its member count (capped), sorted by group cost, then k.
    pub points: Vec<Point>,
    /// One per group, cheapest first.
    pub comparisons: Vec<Comparison>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScalingError {
    #[error("{0}")]
    Cache(#[from] CacheError),
    #[error("no caches given")]
    Empty,
    #[error("{a} and {b} are both {group} but declare different GMACs ({ga} and {gb})")]
    Gmacs {
        a: String,
        b: String,
        group: String,
        ga: f64,
        gb: f64,
    },
}

/// `caches` are (name for messages, cache); `max_k` caps the ensemble size and `max_subsets`
/// the subsets scored per (group, k).
pub fn study(
    caches: &[(&str, &LogitsCache)],
    max_k: usize,
    max_subsets: usize,
) -> Result<Study, ScalingError> {
    let first = caches.first().ok_or(ScalingError::Empty)?;
    check_aligned(caches)?;
    // Groups in first-seen order: (label, gmacs, member indices).
    let mut groups: Vec<(String, f64, Vec<usize>)> = Vec::new();
    for (i, (name, c)) in caches.iter().enumerate() {
        let label = format!("{}@{}", c.meta.model, c.meta.img_size);
        match groups.iter_mut().find(|g| g.0 == label) {
            Some(g) => {
                let (a, ga) = (caches[g.2[0]].0, g.1);
                if (ga - c.meta.gmacs).abs() > 1e-9 * ga.abs().max(1.0) {
                    return Err(ScalingError::Gmacs {
                        a: a.to_string(),
                        b: name.to_string(),
                        group: label,
                        ga,
                        gb: c.meta.gmacs,
                    });
                }
                g.2.push(i);
            }
            None => groups.push((label, c.meta.gmacs, vec![i])),
        }
    }
    groups.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let n = first.1.len();
    let mut points = Vec::new();
    for (label, g, members) in &groups {
        for k in 1..=members.len().min(max_k.max(1)) {
            let accs: Vec<f64> = subsets(members.len(), k)
                .take(max_subsets.max(1))
                .map(|s| {
                    let chosen: Vec<&LogitsCache> =
                        s.iter().map(|&j| caches[members[j]].1).collect();
                    top1(&chosen)
                })
                .collect();
            let mean = accs.iter().sum::<f64>() / accs.len() as f64;
            points.push(Point {
                group: label.clone(),
                k,
                gmacs: k as f64 * g,
                top1_mean: mean,
                top1_min: accs.iter().copied().fold(f64::INFINITY, f64::min),
                top1_max: accs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                subsets: accs.len(),
            });
        }
    }
    let comparisons = groups
        .iter()
        .filter_map(|(label, _, _)| {
            let single = points
                .iter()
                .find(|p| p.group == *label && p.k == 1)?
                .clone();
            let ensemble = points
                .iter()
                .filter(|p| p.k >= 2 && p.group != *label && p.gmacs <= single.gmacs * (1.0 + 1e-9))
                .max_by(|a, b| a.top1_mean.total_cmp(&b.top1_mean))
                .cloned();
            let gain = ensemble.as_ref().map(|e| e.top1_mean - single.top1_mean);
            Some(Comparison {
                single,
                ensemble,
                gain,
            })
        })
        .collect();
    Ok(Study {
        images: n,
        points,
        comparisons,
    })
}

/// Top-1 (%) of the mean-probability ensemble of `members` (one member: the model itself).
/// A tie or a NaN never counts as correct (`metrics::argmax`).
fn top1(members: &[&LogitsCache]) -> f64 {
    let n = members[0].len();
    let temps = vec![1.0; members.len()];
    let right = (0..n)
        .filter(|&i| {
            let rows: Vec<&[f32]> = members.iter().map(|c| c.row(i)).collect();
            let p = combine(&rows, &temps, Combine::MeanProb);
            usize::try_from(members[0].labels[i]).is_ok_and(|y| argmax(&p) == y)
        })
        .count();
    100.0 * right as f64 / n.max(1) as f64
}

/// The k-subsets of 0..n in lexicographic order.
fn subsets(n: usize, k: usize) -> impl Iterator<Item = Vec<usize>> {
    let mut next = (k <= n).then(|| (0..k).collect::<Vec<usize>>());
    std::iter::from_fn(move || {
        let cur = next.take()?;
        // Advance: the rightmost index that can move, then its followers packed after it.
        let mut s = cur.clone();
        if let Some(i) = (0..k).rev().find(|&i| s[i] < n - k + i) {
            s[i] += 1;
            for j in i + 1..k {
                s[j] = s[j - 1] + 1;
            }
            next = Some(s);
        }
        Some(cur)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheMeta;

    /// A cache of `model` at 28 px with `gmacs`, over 4 images of 2 classes (labels 0,1,0,1).
    fn member(model: &str, gmacs: f64, logits: &[f32]) -> LogitsCache {
        LogitsCache {
            meta: CacheMeta {
                model: model.into(),
                name: None,
                weights: "w.safetensors".into(),
                weights_sha256: "ab".into(),
                img_size: 28,
                gmacs,
                num_classes: 2,
                data_root: "/data".into(),
                files: ["a", "b", "c", "d"].map(String::from).to_vec(),
                shard: None,
            },
            logits: logits.to_vec().into(),
            labels: vec![0, 1, 0, 1],
        }
    }

    #[test]
    fn subsets_are_all_k_subsets_in_order() {
        let v: Vec<Vec<usize>> = subsets(4, 2).collect();
        assert_eq!(
            v,
            vec![
                vec![0, 1],
                vec![0, 2],
                vec![0, 3],
                vec![1, 2],
                vec![1, 3],
                vec![2, 3]
            ]
        );
        assert_eq!(subsets(3, 3).count(), 1);
        assert_eq!(subsets(2, 3).count(), 0);
        assert_eq!(subsets(5, 1).count(), 5);
    }

    #[test]
    fn hand_computed_ensembles_against_a_larger_single() {
        // Small members: s0 right on a,b,c (wrong on d, confidently); s1 right on a,b,d
        // (wrong on c, barely). Their mean-prob ensemble: a,b right; c: s0 says 0 at p=0.88
        // (logits 2,0), s1 says 1 at p=0.52 (0,0.1): mean p(0) = (0.881+0.475)/2 > 0.5: right;
        // d: s0 says 0 at 0.88, s1 says 1 at 0.73 (0,1): mean p(1) = (0.119+0.731)/2 < 0.5:
        // wrong. So singles 75 % each, ensemble 75 %.
        let s0 = member("small", 1.0, &[3., 0., 0., 3., 2., 0., 2., 0.]);
        let s1 = member("small", 1.0, &[3., 0., 0., 3., 0., 0.1, 0., 1.]);
        // s2 right on a,b (d wrong barely): with s0, d's mean p(1) = (0.119+0.475)/2 < 0.5
        let s2 = member("small", 1.0, &[3., 0., 0., 3., 2., 0., 0.1, 0.]);
        // The large model: right on all but c, at 2.5 GMACs.
        let big = member("large", 2.5, &[1., 0., 0., 1., 0., 1., 0., 1.]);
        let caches = [("s0", &s0), ("s1", &s1), ("s2", &s2), ("big", &big)];
        let st = study(&caches, 3, 100).unwrap();
        assert_eq!(st.images, 4);
        let p = |g: &str, k: usize| {
            st.points
                .iter()
                .find(|p| p.group == g && p.k == k)
                .unwrap()
                .clone()
        };
        // Singles of small: s0 75 % (a,b,c), s1 75 % (a,b,d), s2 75 % (a,b,c).
        let one = p("small@28", 1);
        assert_eq!((one.top1_mean, one.subsets, one.gmacs), (75.0, 3, 1.0));
        // Pairs: s0+s1: a,b,c right (c: mean p0 0.678), d wrong (mean p1 0.425) -> 75;
        // s0+s2: a,b,c right, d: both say 0 -> wrong -> 75; s1+s2: c: p0 = (0.475+0.881)/2
        // right, d: p1 = (0.731+0.475)/2 = 0.603 right -> 100.
        let two = p("small@28", 2);
        assert_eq!(two.subsets, 3);
        assert!((two.top1_mean - 250.0 / 3.0).abs() < 1e-9, "{two:?}");
        assert_eq!((two.top1_min, two.top1_max, two.gmacs), (75.0, 100.0, 2.0));
        // Triple: c: p0 = (0.881+0.475+0.881)/3 right; d: p1 = (0.119+0.731+0.475)/3 < .5.
        assert_eq!(p("small@28", 3).top1_mean, 75.0);
        // large@28 (75 %) against the best cheaper ensemble: pairs (2.0 <= 2.5), not the
        // triple (3.0 > 2.5).
        let c = st
            .comparisons
            .iter()
            .find(|c| c.single.group == "large@28")
            .unwrap();
        assert_eq!(c.ensemble.as_ref().unwrap().k, 2);
        assert!((c.gain.unwrap() - (250.0 / 3.0 - 75.0)).abs() < 1e-9);
        // The smallest group has no cheaper ensemble of another group.
        let c = &st.comparisons[0];
        assert_eq!(c.single.group, "small@28");
        assert!(c.ensemble.is_none() && c.gain.is_none());
        // The subset cap takes the first subsets in order.
        let capped = study(&caches, 2, 1).unwrap();
        let two = capped
            .points
            .iter()
            .find(|p| p.group == "small@28" && p.k == 2)
            .unwrap();
        assert_eq!((two.subsets, two.top1_mean), (1, 75.0));
    }

    #[test]
    fn inconsistent_or_misaligned_pools_are_refused() {
        let a = member("m", 1.0, &[1., 0., 0., 1., 1., 0., 0., 1.]);
        let b = member("m", 2.0, &[1., 0., 0., 1., 1., 0., 0., 1.]);
        let e = study(&[("a", &a), ("b", &b)], 2, 10).unwrap_err();
        assert!(e.to_string().contains("a and b"), "{e}");
        let mut c = member("n", 1.0, &[1., 0., 0., 1., 1., 0., 0., 1.]);
        c.labels[0] = 1;
        assert!(study(&[("a", &a), ("c", &c)], 2, 10).is_err());
        assert!(matches!(study(&[], 2, 10), Err(ScalingError::Empty)));
    }
}
