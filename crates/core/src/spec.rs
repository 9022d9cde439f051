//! The committee spec: a TOML file `committee search --spec-out` writes and `committee
//! cascade/ensemble --spec` runs, live (with weights) or offline (from caches).
//!
//! ```toml
//! kind = "cascade"            # single | ensemble | cascade
//! thresholds = [0.83]         # one per stage except the last (cascades)
//! accumulate = true
//! combine = "mean-prob"
//! confidence = "max-prob"
//! cost = "ms"                 # optional: searched on measured time (search --costs) ...
//! cost_device = "cpu"         # ... on this device's cost table
//! cost_batch = 32             # ... for this batch size
//!
//! [[member]]
//! model = "efficientnet_b0"
//! name = "b0-seed1"                                 # optional: the cache label (eval --name)
//! weights = "weights/efficientnet_b0.safetensors"   # optional: needed to run live
//! weights_sha256 = "7197f2ad..."                    # optional: live runs refuse other weights
//! img_size = 224                                    # optional
//! temperature = 1.0                                 # optional, default 1
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::combine::{Combine, Confidence};

/// What a committee is: one model, an ensemble, or a cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Single,
    Ensemble,
    Cascade,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberSpec {
    pub model: String,
    /// The cache label (`eval --name`) when members share an architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// SHA-256 of `weights` when the spec was written: a live run refuses other weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub img_size: Option<usize>,
    #[serde(default = "one")]
    pub temperature: f64,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeSpec {
    pub kind: Kind,
    #[serde(default)]
    pub thresholds: Vec<f64>,
    #[serde(default = "yes")]
    pub accumulate: bool,
    #[serde(default)]
    pub combine: Combine,
    #[serde(default)]
    pub confidence: Confidence,
    /// What the search minimised: `"ms"` when it ran on a cost table (`search --costs`), with
    /// the table's device and the batch size the times assume; absent for GMACs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_batch: Option<usize>,
    #[serde(rename = "member")]
    pub members: Vec<MemberSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl CommitteeSpec {
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, SpecError> {
        let bad = |reason: String| SpecError::Invalid {
            path: path.to_string(),
            reason,
        };
        let s: Self = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if s.members.is_empty() {
            return Err(bad("the spec names no [[member]]".into()));
        }
        let want = match s.kind {
            Kind::Cascade => s.members.len() - 1,
            _ => 0,
        };
        if s.kind == Kind::Single && s.members.len() != 1 {
            return Err(bad(format!(
                "kind single needs one member, got {}",
                s.members.len()
            )));
        }
        if s.thresholds.len() != want {
            return Err(bad(format!(
                "a {:?} of {} members needs {want} thresholds, got {}",
                s.kind,
                s.members.len(),
                s.thresholds.len()
            )));
        }
        if let Some(m) = s.members.iter().find(|m| m.img_size == Some(0)) {
            return Err(bad(format!(
                "member {}: img_size must be at least 1",
                m.model
            )));
        }
        if let Some(t) = s.thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(bad(format!("threshold {t} is outside [0, 1]")));
        }
        if let Some(m) = s
            .members
            .iter()
            .find(|m| !(m.temperature.is_finite() && m.temperature > 0.0))
        {
            return Err(bad(format!(
                "member {}: temperature must be positive",
                m.model
            )));
        }
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CommitteeSpec {
        CommitteeSpec {
            kind: Kind::Cascade,
            thresholds: vec![0.8],
            accumulate: true,
            combine: Combine::MeanProb,
            confidence: Confidence::Margin,
            cost: Some("ms".into()),
            cost_device: Some("cpu".into()),
            cost_batch: Some(32),
            members: vec![
                MemberSpec {
                    model: "resnet18".into(),
                    name: Some("r18-seed1".into()),
                    weights: Some("r18.safetensors".into()),
                    weights_sha256: Some("ab12".into()),
                    img_size: Some(160),
                    temperature: 1.5,
                },
                MemberSpec {
                    model: "resnet50".into(),
                    name: None,
                    weights: None,
                    weights_sha256: None,
                    img_size: None,
                    temperature: 1.0,
                },
            ],
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let s = spec();
        let text = s.to_toml();
        assert!(text.contains("[[member]]"), "{text}");
        assert!(text.contains("confidence = \"margin\""), "{text}");
        assert_eq!(CommitteeSpec::parse(&text, "x").unwrap(), s);
    }

    #[test]
    fn bad_specs_name_the_problem() {
        let mut s = spec();
        s.thresholds = vec![];
        let e = CommitteeSpec::parse(&s.to_toml(), "a.toml").unwrap_err();
        assert!(e.to_string().contains("a.toml") && e.to_string().contains("needs 1 thresholds"));
        let mut s = spec();
        s.thresholds = vec![1.2];
        let e = CommitteeSpec::parse(&s.to_toml(), "a.toml").unwrap_err();
        assert!(e.to_string().contains("outside [0, 1]"), "{e}");
        let e = CommitteeSpec::parse("kind = \"cascade\"\nmember = []\n", "b.toml").unwrap_err();
        assert!(e.to_string().contains("no [[member]]"), "{e}");
        let e = CommitteeSpec::parse("kind = \"pyramid\"\n", "c.toml").unwrap_err();
        assert!(e.to_string().contains("c.toml"), "{e}");
    }
}
