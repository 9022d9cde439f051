//! Ensemble combine rules, confidence measures and temperature scaling.

use serde::{Deserialize, Serialize};

/// Softmax of `row / t`, in f64.
pub fn softmax(row: &[f32], t: f64) -> Vec<f64> {
    let (max, s) = softmax_parts(row, t);
    row.iter().map(|&v| softmax_at(v, t, max, s)).collect()
}

/// The softmax's shift (max of `v / t`) and normaliser: with them [`softmax_at`] gives any
/// one probability, bit for bit as [`softmax`] does, without the others.
pub fn softmax_parts(row: &[f32], t: f64) -> (f64, f64) {
    softmax_parts_into(row, t, &mut vec![0.0; row.len()])
}

/// [`softmax_parts`], leaving each `exp(v / t - max)` in `exp` (as long as `row`): divided
/// by the normaliser they are [`softmax_at`]'s values, bit for bit (vectorised:
/// [`crate::exp`]).
pub fn softmax_parts_into(row: &[f32], t: f64, exp: &mut [f64]) -> (f64, f64) {
    crate::exp::exp_row(row, t, exp)
}

#[inline]
pub fn softmax_at(v: f32, t: f64, max: f64, s: f64) -> f64 {
    crate::exp::exp(v as f64 / t - max) / s
}

/// How member outputs are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Combine {
    /// Mean of softmax probabilities (Wisdom of Committees).
    #[default]
    MeanProb,
    /// Mean of logits, then softmax: the renormalised geometric mean of the probabilities
    /// (Kondratyuk et al.).
    MeanLogits,
}

impl std::str::FromStr for Combine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mean-prob" | "prob" => Ok(Self::MeanProb),
            "mean-logits" | "logits" => Ok(Self::MeanLogits),
            _ => Err(format!(
                "unknown combine rule '{s}' (mean-prob, mean-logits)"
            )),
        }
    }
}

/// Combined class probabilities of several members' logits rows (with per-member temperature).
pub fn combine(rows: &[&[f32]], temps: &[f64], rule: Combine) -> Vec<f64> {
    let k = rows.len() as f64;
    let c = rows.first().map_or(0, |r| r.len());
    match rule {
        Combine::MeanProb => {
            let mut p = vec![0.0; c];
            for (r, &t) in rows.iter().zip(temps) {
                for (acc, v) in p.iter_mut().zip(softmax(r, t)) {
                    *acc += v / k;
                }
            }
            p
        }
        Combine::MeanLogits => {
            let mean: Vec<f32> = (0..c)
                .map(|j| {
                    (rows
                        .iter()
                        .zip(temps)
                        .map(|(r, &t)| r[j] as f64 / t)
                        .sum::<f64>()
                        / k) as f32
                })
                .collect();
            softmax(&mean, 1.0)
        }
    }
}

/// Confidence of a prediction, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    /// Largest probability (the papers' choice).
    #[default]
    MaxProb,
    /// Largest minus second largest probability.
    Margin,
    /// Negative entropy, rescaled to [0, 1] as `1 - H(p) / ln(classes)`.
    NegEntropy,
}

impl std::str::FromStr for Confidence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "max-prob" | "maxprob" => Ok(Self::MaxProb),
            "margin" => Ok(Self::Margin),
            "neg-entropy" | "entropy" => Ok(Self::NegEntropy),
            _ => Err(format!(
                "unknown confidence '{s}' (max-prob, margin, neg-entropy)"
            )),
        }
    }
}

impl Confidence {
    pub fn of(self, p: &[f64]) -> f64 {
        match self {
            Confidence::MaxProb => p.iter().cloned().fold(0.0, f64::max),
            Confidence::Margin => {
                let (mut a, mut b) = (0.0f64, 0.0f64);
                for &v in p {
                    if v > a {
                        b = a;
                        a = v;
                    } else if v > b {
                        b = v;
                    }
                }
                a - b
            }
            Confidence::NegEntropy => {
                let h: f64 = p.iter().filter(|&&v| v > 0.0).map(|&v| -v * v.ln()).sum();
                let max = (p.len().max(2) as f64).ln();
                (1.0 - h / max).clamp(0.0, 1.0)
            }
        }
    }
}

/// Mean negative log-likelihood of `labels` under `softmax(logits / t)`.
pub fn nll(logits: &[f32], labels: &[i64], classes: usize, t: f64) -> f64 {
    let n = labels.len().max(1) as f64;
    labels
        .iter()
        .enumerate()
        .map(|(i, &y)| {
            let row = &logits[i * classes..(i + 1) * classes];
            -softmax(row, t)[y as usize].max(1e-300).ln()
        })
        .sum::<f64>()
        / n
}

/// The temperature minimising NLL on held-out data (golden-section search on log t, which the
/// NLL is unimodal in for practical purposes), within [0.05, 20].
pub fn fit_temperature(logits: &[f32], labels: &[i64], classes: usize) -> f64 {
    let f = |lt: f64| nll(logits, labels, classes, lt.exp());
    let (mut a, mut b) = ((0.05f64).ln(), (20.0f64).ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..80 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn combine_rules_by_hand() {
        // Two members, two classes: logits (0, ln 3) -> p = (1/4, 3/4); (ln 3, 0) -> (3/4, 1/4).
        let l3 = 3f32.ln();
        let a = [0.0f32, l3];
        let b = [l3, 0.0f32];
        let p = combine(&[&a, &b], &[1.0, 1.0], Combine::MeanProb);
        assert!(close(p[0], 0.5) && close(p[1], 0.5));
        // Member a twice as sure: (0, ln 9) -> (0.1, 0.9). Mean prob: (0.425, 0.575).
        let a2 = [0.0f32, 9f32.ln()];
        let p = combine(&[&a2, &b], &[1.0, 1.0], Combine::MeanProb);
        assert!((p[0] - 0.425).abs() < 1e-6, "{p:?}");
        // Mean logits: (ln3/2, ln9/2) = (ln sqrt3, ln 3): softmax -> (sqrt3, 3)/(sqrt3+3):
        // the renormalised geometric mean of (0.1, 0.9) and (0.75, 0.25).
        let p = combine(&[&a2, &b], &[1.0, 1.0], Combine::MeanLogits);
        let g0 = (0.1f64 * 0.75).sqrt();
        let g1 = (0.9f64 * 0.25).sqrt();
        assert!((p[0] - g0 / (g0 + g1)).abs() < 1e-6, "{p:?}");
        // Temperature 2 halves the logits.
        let p = combine(&[&a2], &[2.0], Combine::MeanProb);
        assert!((p[1] - 0.75).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn confidences_by_hand() {
        let p = [0.5, 0.3, 0.2];
        assert!(close(Confidence::MaxProb.of(&p), 0.5));
        assert!(close(Confidence::Margin.of(&p), 0.2));
        let h = -(0.5f64 * 0.5f64.ln() + 0.3 * 0.3f64.ln() + 0.2 * 0.2f64.ln());
        assert!(close(Confidence::NegEntropy.of(&p), 1.0 - h / 3f64.ln()));
        assert!(close(Confidence::NegEntropy.of(&[1.0, 0.0, 0.0]), 1.0));
        assert!(close(Confidence::NegEntropy.of(&[1.0 / 3.0; 3]), 0.0));
    }

    #[test]
    fn temperature_recovers_a_known_scale() {
        // Labels drawn so that the calibrated model is softmax(z): logits scaled by 3 should
        // fit t close to 3.
        let classes = 4;
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..4000 {
            let z: Vec<f32> = (0..classes).map(|_| (rnd() * 4.0 - 2.0) as f32).collect();
            let p = softmax(&z, 1.0);
            let u = rnd();
            let mut acc = 0.0;
            let y = p.iter().position(|&v| {
                acc += v;
                u < acc
            });
            labels.push(y.unwrap_or(classes - 1) as i64);
            logits.extend(z.iter().map(|v| v * 3.0));
        }
        let t = fit_temperature(&logits, &labels, classes);
        assert!((t - 3.0).abs() < 0.3, "fitted {t}");
        assert!(nll(&logits, &labels, classes, t) <= nll(&logits, &labels, classes, 1.0));
    }
}
