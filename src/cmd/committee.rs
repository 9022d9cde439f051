//! `committee ensemble` and `committee cascade` over logits caches (offline: no model runs).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use committee_core::cache::{LogitsCache, check_aligned};
use committee_core::cascade::{CascadeSpec, Member, simulate};
use committee_core::combine::{Combine, Confidence, combine};
use committee_core::metrics::Accuracy;
use serde_json::json;

fn load_caches(paths: &[PathBuf]) -> Result<Vec<(String, LogitsCache)>> {
    let mut v = Vec::new();
    for p in paths {
        v.push((p.display().to_string(), LogitsCache::load(p)?));
    }
    let named: Vec<(&str, &LogitsCache)> = v.iter().map(|(n, c)| (n.as_str(), c)).collect();
    check_aligned(&named)?;
    Ok(v)
}

fn members(caches: &[(String, LogitsCache)]) -> Vec<Member<'_>> {
    caches
        .iter()
        .map(|(_, c)| Member {
            name: c.meta.model.clone(),
            logits: &c.logits,
            classes: c.meta.num_classes,
            gmacs: c.meta.gmacs,
            temperature: 1.0,
        })
        .collect()
}

#[derive(clap::Args)]
pub struct EnsembleArgs {
    /// Logits caches from `committee eval --save-logits`, one per member.
    #[arg(long, num_args = 1.., required = true)]
    logits: Vec<PathBuf>,
    /// mean-prob (average of probabilities) or mean-logits (renormalised geometric mean).
    #[arg(long, default_value = "mean-prob")]
    combine: Combine,
    #[arg(long)]
    json: bool,
}

pub fn ensemble(a: EnsembleArgs) -> Result<()> {
    let caches = load_caches(&a.logits)?;
    let m = members(&caches);
    let labels = &caches[0].1.labels;
    let mut acc = Accuracy::default();
    let temps = vec![1.0; m.len()];
    for (i, &y) in labels.iter().enumerate() {
        let rows: Vec<&[f32]> = caches.iter().map(|(_, c)| c.row(i)).collect();
        let p: Vec<f32> = combine(&rows, &temps, a.combine)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        acc.add(&p, y as usize);
    }
    let gmacs: f64 = m.iter().map(|x| x.gmacs).sum();
    let names: Vec<&str> = m.iter().map(|x| x.name.as_str()).collect();
    if a.json {
        let r = json!({"members": names, "combine": a.combine, "top1": acc.top1_pct(), "top5": acc.top5_pct(),
                       "gmacs": gmacs, "images": acc.n});
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "ensemble {} ({:?}): top-1 {:.3}%  top-5 {:.3}%  {:.3} GMACs/img  on {} images",
            names.join("+"),
            a.combine,
            acc.top1_pct(),
            acc.top5_pct(),
            gmacs,
            acc.n
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct CascadeArgs {
    /// Logits caches in stage order (cheapest first, usually).
    #[arg(long, num_args = 1.., required = true)]
    logits: Vec<PathBuf>,
    /// One threshold per stage except the last, in [0, 1].
    #[arg(long, value_delimiter = ',')]
    thresholds: Vec<f64>,
    /// Predict with stage k alone instead of the combination of stages 1..k.
    #[arg(long)]
    no_accumulate: bool,
    #[arg(long, default_value = "max-prob")]
    confidence: Confidence,
    #[arg(long, default_value = "mean-prob")]
    combine: Combine,
    #[arg(long)]
    json: bool,
}

pub fn cascade(a: CascadeArgs) -> Result<()> {
    let caches = load_caches(&a.logits)?;
    let m = members(&caches);
    let spec = CascadeSpec {
        stages: (0..m.len()).collect(),
        thresholds: a.thresholds.clone(),
        accumulate: !a.no_accumulate,
        combine: a.combine,
        confidence: a.confidence,
    };
    spec.validate(m.len()).context("invalid cascade")?;
    let labels = &caches[0].1.labels;
    if labels.is_empty() {
        bail!("the caches hold no images");
    }
    let rows: Vec<usize> = (0..labels.len()).collect();
    let o = simulate(&m, &spec, &rows, labels);
    let largest = m.iter().map(|x| x.gmacs).fold(0.0, f64::max);
    let predicted = largest / o.avg_gmacs.max(1e-12);
    let names: Vec<&str> = m.iter().map(|x| x.name.as_str()).collect();
    if a.json {
        let r = json!({"stages": names, "thresholds": a.thresholds, "top1": o.top1, "avg_gmacs": o.avg_gmacs,
                       "worst_gmacs": o.worst_gmacs, "exit_fractions": o.exit_fractions,
                       "predicted_speedup": predicted, "images": rows.len()});
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "cascade {}: top-1 {:.3}%  avg {:.3} GMACs  worst {:.3} GMACs  exits {:?}  predicted speed-up {:.2}x",
            names.join(" -> "),
            o.top1,
            o.avg_gmacs,
            o.worst_gmacs,
            o.exit_fractions
                .iter()
                .map(|f| format!("{:.3}", f))
                .collect::<Vec<_>>(),
            predicted
        );
    }
    Ok(())
}
