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
    pub fn row(&self, i: usize) -> &[f32] {
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

/// Decides one sample at `stage`, given the logits rows (and temperatures) of the stages it
/// went through so far, in order: the prediction's probabilities and whether it exits here.
/// The live cascade and the offline simulation both call this, so they agree exactly.
pub fn decide(
    spec: &CascadeSpec,
    rows: &[&[f32]],
    temps: &[f64],
    stage: usize,
) -> (Vec<f64>, bool) {
    let from = if spec.accumulate { 0 } else { stage };
    let probs = combine(&rows[from..=stage], &temps[from..=stage], spec.combine);
    let last = stage + 1 == spec.stages.len();
    let exit = last || spec.confidence.of(&probs) >= spec.thresholds[stage];
    (probs, exit)
}

/// Summarises per-sample exits and predictions; `stage_gmacs` is each stage's own cost, in
/// stage order (a sample exiting at stage k paid for stages 0..=k).
pub fn outcome(
    predictions: Vec<usize>,
    exit_stage: Vec<usize>,
    labels: &[i64],
    stage_gmacs: &[f64],
) -> Outcome {
    let cum: Vec<f64> = stage_gmacs
        .iter()
        .scan(0.0, |acc, g| {
            *acc += g;
            Some(*acc)
        })
        .collect();
    let n = predictions.len().max(1) as f64;
    let k = cum.len();
    let mut exit_fractions = vec![0.0; k];
    let mut cost = 0.0;
    for &e in &exit_stage {
        exit_fractions[e] += 1.0 / n;
        cost += cum[e];
    }
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, y)| **p as i64 == **y)
        .count();
    Outcome {
        top1: 100.0 * correct as f64 / n,
        avg_gmacs: cost / n,
        worst_gmacs: cum[k - 1],
        exit_fractions,
        predictions,
        exit_stage,
    }
}

/// Runs the cascade on `rows` (sample indices) of the members' caches.
pub fn simulate(members: &[Member], spec: &CascadeSpec, rows: &[usize], labels: &[i64]) -> Outcome {
    let mut predictions = Vec::with_capacity(rows.len());
    let mut exit_stage = Vec::with_capacity(rows.len());
    let temps: Vec<f64> = spec
        .stages
        .iter()
        .map(|&s| members[s].temperature)
        .collect();
    for &i in rows {
        let mut seen: Vec<&[f32]> = Vec::with_capacity(spec.stages.len());
        for (stage, &s) in spec.stages.iter().enumerate() {
            seen.push(members[s].row(i));
            let (probs, exit) = decide(spec, &seen, &temps, stage);
            if exit {
                predictions.push(argmax(&probs));
                exit_stage.push(stage);
                break;
            }
        }
    }
    let labels: Vec<i64> = rows.iter().map(|&i| labels[i]).collect();
    let costs: Vec<f64> = spec.stages.iter().map(|&s| members[s].gmacs).collect();
    outcome(predictions, exit_stage, &labels, &costs)
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
