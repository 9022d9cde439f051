//! `committee scaling`: single models against ensembles of smaller ones at equal cost
//! (Kondratyuk et al., 2020), over logits caches of one family at several sizes and seeds.

use std::path::PathBuf;

use anyhow::{Result, bail};
use committee_core::scaling::{Point, study};

use crate::cmd::committee::load_caches;
use crate::cmd::plot;

#[derive(clap::Args)]
pub struct Args {
    /// Logits caches (`eval --save-logits`), all on the same images: caches of the same model
    /// and input size are seeds of one size.
    #[arg(long, num_args = 1.., required = true)]
    logits: Vec<PathBuf>,
    /// Largest ensemble scored per size.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    max_members: u64,
    /// At most this many member subsets scored per size and ensemble size (lexicographic).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_subsets: u64,
    /// Plot (SVG): top-1 against GMACs, one line per ensemble size, in the paper's style.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let caches = load_caches(&a.logits)?;
    let named: Vec<(&str, &_)> = caches.iter().map(|(n, c)| (n.as_str(), c)).collect();
    let st = study(&named, a.max_members as usize, a.max_subsets as usize)?;
    if st.points.iter().all(|p| p.k == 1) {
        bail!("every size has one cache: ensembles need at least two seeds of one size");
    }
    if let Some(path) = &a.plot {
        draw(path, &st.points)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!(
        "{} images; top-1 of each size alone and as ensembles of k seeds (mean over subsets, range)",
        st.images
    );
    println!(
        "{:<28} {:>2} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "size", "k", "GMACs", "top-1", "min", "max", "subsets"
    );
    for p in &st.points {
        println!(
            "{:<28} {:>2} {:>9.5} {:>8.3} {:>8.3} {:>8.3} {:>7}",
            p.group, p.k, p.gmacs, p.top1_mean, p.top1_min, p.top1_max, p.subsets
        );
    }
    println!("\neach size alone against the best ensemble of another size at no more GMACs");
    for c in &st.comparisons {
        let s = &c.single;
        match (&c.ensemble, c.gain) {
            (Some(e), Some(g)) => println!(
                "{} ({:.5} GMACs) {:.3} vs {} x {} ({:.5}, {:.2}x) {:.3}: ensemble {} by {:.2} points",
                s.group,
                s.gmacs,
                s.top1_mean,
                e.k,
                e.group,
                e.gmacs,
                e.gmacs / s.gmacs,
                e.top1_mean,
                if g > 0.0 {
                    "ahead"
                } else if g < 0.0 {
                    "behind"
                } else {
                    "level"
                },
                g.abs()
            ),
            _ => println!(
                "{} ({:.5} GMACs) {:.3}: no ensemble of another size costs as little",
                s.group, s.gmacs, s.top1_mean
            ),
        }
    }
    Ok(())
}

/// One line per ensemble size k through the sizes (k = 1: the single models), each point's
/// range over seeds or member subsets as a bar.
fn draw(path: &std::path::Path, points: &[Point]) -> Result<()> {
    let kmax = points.iter().map(|p| p.k).max().unwrap_or(1);
    let series: Vec<plot::Series> = (1..=kmax)
        .map(|k| {
            let name = if k == 1 {
                "single models".to_string()
            } else {
                format!("ensembles of {k}")
            };
            let at_k: Vec<&Point> = points.iter().filter(|p| p.k == k).collect();
            plot::Series {
                name,
                points: at_k
                    .iter()
                    .map(|p| plot::Point {
                        x: p.gmacs,
                        y: p.top1_mean,
                        label: if k == 1 {
                            p.group.clone()
                        } else {
                            String::new()
                        },
                    })
                    .collect(),
                ranges: at_k.iter().map(|p| (p.top1_min, p.top1_max)).collect(),
            }
        })
        .collect();
    plot::lines(
        path,
        "single models vs ensembles of the same family (mean over seeds, bars: range)",
        &series,
    )
}
