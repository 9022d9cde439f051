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
    /// Write a randomly initialised checkpoint of this registry model (timm's names) to
    /// --out: for timing live committees without trained weights (speed does not depend on
    /// the values).
    #[arg(long, value_name = "MODEL", requires = "out")]
    init: Option<String>,
    #[arg(long, requires = "init")]
    out: Option<std::path::PathBuf>,
    /// With --init: classes of the head.
    #[arg(long, default_value_t = 1000, value_parser = crate::cmd::args::positive)]
    num_classes: usize,
    /// With --init: the initialiser's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --init: `timm` draws the parameters as `timm.create_model` does (random CNNs whose
    /// confidence varies from image to image, so cascade thresholds split them); `burn` keeps
    /// Burn's layer defaults (PyTorch's per-layer ones).
    #[arg(long, default_value = "timm", requires = "init")]
    scheme: committee_zoo::init::Scheme,
}

/// `--init`: a random-weight checkpoint, written atomically.
fn init(args: &Args, name: &str, out: &std::path::Path) -> Result<()> {
    let (num_classes, seed) = (args.num_classes, args.seed);
    use anyhow::Context;
    let spec = registry::get(name).with_context(|| format!("unknown model '{name}'"))?;
    let device = committee_ops::backend::cpu_device();
    device.seed(seed);
    let opts = committee_zoo::CommonOptions {
        num_classes,
        ..Default::default()
    };
    let model =
        committee_zoo::weights::random_model(&spec, &opts, [spec.eval.img_size; 2], &device);
    let model = committee_zoo::init::apply(model, args.scheme);
    let meta = committee_zoo::export::metadata(name, &spec.eval);
    let bytes = committee_zoo::export::to_safetensors(&model, meta).map_err(anyhow::Error::msg)?;
    crate::util::write_atomic(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote {} (random weights, {:?} initialisation, seed {seed})",
        out.display(),
        args.scheme
    );
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    if let (Some(name), Some(out)) = (&args.init, &args.out) {
        return init(&args, name, out);
    }
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
