//! `committee merge-logits`: joins shard caches (from `eval --shard K/N`) into one.

use std::path::PathBuf;

use anyhow::Result;
use committee_core::cache::{LogitsCache, merge};

#[derive(clap::Args)]
pub struct Args {
    /// Shard caches.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Output cache.
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let mut shards = Vec::new();
    for p in &a.shards {
        shards.push((p.display().to_string(), LogitsCache::load(p)?));
    }
    let named: Vec<(&str, LogitsCache)> = shards
        .iter()
        .map(|(n, c)| (n.as_str(), c.clone()))
        .collect();
    let merged = merge(&named)?;
    merged.save(&a.out)?;
    eprintln!(
        "merged {} shards into {} ({} rows)",
        a.shards.len(),
        a.out.display(),
        merged.len()
    );
    Ok(())
}
