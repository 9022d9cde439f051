//! `committee models`: the registry as a table or JSON.

use anyhow::Result;
use committee_zoo::manifest::param_count;
use committee_zoo::registry;
use committee_zoo::weights::registry_manifest;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let rows: Vec<_> = registry::all()
        .into_iter()
        .map(|s| {
            let params = param_count(&registry_manifest(&s, 1000));
            (s.clone(), params, s.gmacs())
        })
        .collect();
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(s, params, gmacs)| {
                json!({
                    "name": s.name, "family": s.family(), "params": params,
                    "gmacs": (gmacs * 1e4).round() / 1e4, "img_size": s.eval.img_size,
                    "crop_pct": s.eval.crop_pct, "interpolation": s.eval.interpolation.to_string(),
                    "mean": s.eval.mean, "std": s.eval.std,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<13} {:>12} {:>9} {:>5} {:>6} {:<9} mean/std",
        "name", "family", "params", "GMACs", "img", "crop", "interp"
    );
    for (s, params, gmacs) in rows {
        let norm = if s.eval.mean == registry::HALF {
            "0.5/0.5"
        } else {
            "imagenet"
        };
        println!(
            "{:<24} {:<13} {:>12} {:>9.3} {:>5} {:>6.3} {:<9} {}",
            s.name,
            s.family(),
            params,
            gmacs,
            s.eval.img_size,
            s.eval.crop_pct,
            s.eval.interpolation,
            norm
        );
    }
    Ok(())
}
