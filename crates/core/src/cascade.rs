//! Confidence cascades over cached member outputs: which stage each sample exits at, what it
//! predicts there, and what it cost.

use serde::{Deserialize, Serialize};

use crate::combine::{Combine, Confidence, combine};
use crate::metrics::argmax;

/// One model's cached logits, with its cost and temperature.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    pub name: String,
    /// Row-major `[N, classes]`.
    pub logits: &'a [f32],
    pub classes: usize,
    pub gmacs: f64,
    pub temperature: f64,
}

impl Member<'_> {
    fn row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.classes..(i + 1) * self.classes]
    }
}

/// An ordered cascade: member indices and one threshold per stage except the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeSpec {
    pub stages: Vec<usize>,
    pub thresholds: Vec<f64>,
    /// Predict with the combination of stages 1..k (the paper's default) or stage k alone.
    pub accumulate: bool,
    pub combine: Combine,
    pub confidence: Confidence,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CascadeError {
    #[error("a cascade of {stages} stages needs {} thresholds, got {got}", stages - 1)]
    ThresholdCount { stages: usize, got: usize },
    #[error("threshold {0} is outside [0, 1]")]
    ThresholdRange(f64),
    #[error("stage {0} names no member")]
    NoMember(usize),
    #[error("a cascade needs at least one stage")]
    Empty,
}

impl CascadeSpec {
    pub fn validate(&self, members: usize) -> Result<(), CascadeError> {
        if self.stages.is_empty() {
            return Err(CascadeError::Empty);
        }
        if self.thresholds.len() + 1 != self.stages.len() {
            return Err(CascadeError::ThresholdCount {
                stages: self.stages.len(),
                got: self.thresholds.len(),
            });
        }
        if let Some(&t) = self.thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(CascadeError::ThresholdRange(t));
        }
        if let Some(&s) = self.stages.iter().find(|&&s| s >= members) {
            return Err(CascadeError::NoMember(s));
        }
        Ok(())
    }
}

/// What a cascade did on a set of samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub predictions: Vec<usize>,
    /// 0-based stage each sample exited at.
    pub exit_stage: Vec<usize>,
    pub top1: f64,
    pub avg_gmacs: f64,
    pub worst_gmacs: f64,
    pub exit_fractions: Vec<f64>,
}

/// Runs the cascade on `rows` (sample indices) of the members' caches.
pub fn simulate(members: &[Member], spec: &CascadeSpec, rows: &[usize], labels: &[i64]) -> Outcome {
    let k = spec.stages.len();
    let mut predictions = Vec::with_capacity(rows.len());
    let mut exit_stage = Vec::with_capacity(rows.len());
    let mut cost = 0.0;
    let mut correct = 0usize;
    let cum: Vec<f64> = spec
        .stages
        .iter()
        .scan(0.0, |acc, &s| {
            *acc += members[s].gmacs;
            Some(*acc)
        })
        .collect();
    for &i in rows {
        let mut seen: Vec<&[f32]> = Vec::with_capacity(k);
        let mut temps = Vec::with_capacity(k);
        let mut exit = k - 1;
        let mut probs = Vec::new();
        for (stage, &s) in spec.stages.iter().enumerate() {
            let m = &members[s];
            if spec.accumulate {
                seen.push(m.row(i));
                temps.push(m.temperature);
            } else {
                seen = vec![m.row(i)];
                temps = vec![m.temperature];
            }
            probs = combine(&seen, &temps, spec.combine);
            if stage + 1 < k && spec.confidence.of(&probs) >= spec.thresholds[stage] {
                exit = stage;
                break;
            }
        }
        let pred = argmax(&probs);
        correct += (pred as i64 == labels[i]) as usize;
        cost += cum[exit];
        predictions.push(pred);
        exit_stage.push(exit);
    }
    let n = rows.len().max(1) as f64;
    let mut exit_fractions = vec![0.0; k];
    for &e in &exit_stage {
        exit_fractions[e] += 1.0 / n;
    }
    Outcome {
        predictions,
        exit_stage,
        top1: 100.0 * correct as f64 / n,
        avg_gmacs: cost / n,
        worst_gmacs: cum[k - 1],
        exit_fractions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three samples, two classes. Small model: confident & right on 0, unsure on 1 and 2.
    /// Big model: right on all. Costs 1 and 4 GMACs.
    fn setup() -> (Vec<f32>, Vec<f32>, Vec<i64>) {
        let small = vec![3.0, 0.0, 0.1, 0.0, 0.0, 0.2];
        let big = vec![2.0, 0.0, 0.0, 2.0, 0.0, 2.0];
        (small, big, vec![0, 1, 1])
    }

    #[test]
    fn cascade_by_hand() {
        let (small, big, labels) = setup();
        let m = vec![
            Member {
                name: "s".into(),
                logits: &small,
                classes: 2,
                gmacs: 1.0,
                temperature: 1.0,
            },
            Member {
                name: "b".into(),
                logits: &big,
                classes: 2,
                gmacs: 4.0,
                temperature: 1.0,
            },
        ];
        // Sample 0: p(small) = softmax(3, 0) max 0.9526 >= 0.9 -> exits at stage 0.
        // Samples 1, 2: max prob 0.525 / 0.55 < 0.9 -> stage 1.
        let spec = CascadeSpec {
            stages: vec![0, 1],
            thresholds: vec![0.9],
            accumulate: false,
            combine: Combine::MeanProb,
            confidence: Confidence::MaxProb,
        };
        let o = simulate(&m, &spec, &[0, 1, 2], &labels);
        assert_eq!(o.exit_stage, [0, 1, 1]);
        assert_eq!(o.predictions, [0, 1, 1]);
        assert!((o.avg_gmacs - (1.0 + 5.0 + 5.0) / 3.0).abs() < 1e-12);
        assert_eq!(o.worst_gmacs, 5.0);
        assert!((o.top1 - 100.0).abs() < 1e-12);
        assert!((o.exit_fractions[0] - 1.0 / 3.0).abs() < 1e-12);

        // Accumulating: sample 1 combines small (0.525 for class 0) and big (0.881 for class 1):
        // mean prob for class 1 = (0.475 + 0.881) / 2 = 0.678 -> still class 1.
        let acc = CascadeSpec {
            accumulate: true,
            ..spec.clone()
        };
        let o = simulate(&m, &acc, &[0, 1, 2], &labels);
        assert_eq!(o.predictions, [0, 1, 1]);
        // Threshold 1.0 never exits early: everything runs both.
        let all = CascadeSpec {
            thresholds: vec![1.0],
            ..spec.clone()
        };
        assert_eq!(simulate(&m, &all, &[0, 1, 2], &labels).avg_gmacs, 5.0);
        // Threshold 0 exits everything at stage 0: the small model alone, right on 0 and 2.
        let none = CascadeSpec {
            thresholds: vec![0.0],
            ..spec
        };
        let o = simulate(&m, &none, &[0, 1, 2], &labels);
        assert_eq!(o.avg_gmacs, 1.0);
        assert!((o.top1 - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(o.predictions, [0, 0, 1]);
    }

    #[test]
    fn invalid_specs_are_errors() {
        let base = CascadeSpec {
            stages: vec![0, 1],
            thresholds: vec![0.5],
            accumulate: true,
            combine: Combine::MeanProb,
            confidence: Confidence::MaxProb,
        };
        assert!(base.validate(2).is_ok());
        assert_eq!(
            CascadeSpec {
                thresholds: vec![1.5],
                ..base.clone()
            }
            .validate(2),
            Err(CascadeError::ThresholdRange(1.5))
        );
        assert!(matches!(
            CascadeSpec {
                thresholds: vec![],
                ..base.clone()
            }
            .validate(2),
            Err(CascadeError::ThresholdCount { .. })
        ));
        assert_eq!(base.validate(1), Err(CascadeError::NoMember(1)));
    }
}
