//! `committee data`: dataset import.

use std::path::PathBuf;

use anyhow::Result;
use committee_data::fashion_mnist;

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Debian's dataset-fashion-mnist (IDX) to train/ (55k), holdout/ (5k, stratified), test/ (10k).
    FashionMnist {
        #[arg(long)]
        out: PathBuf,
        /// Directory holding the IDX files.
        #[arg(long, default_value = fashion_mnist::DEBIAN_DIR)]
        src: PathBuf,
        /// Held-out images per class (10 classes).
        #[arg(long, default_value_t = 500)]
        holdout_per_class: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::FashionMnist {
            out,
            src,
            holdout_per_class,
            seed,
        } => {
            let s = fashion_mnist::import(&src, &out, holdout_per_class, seed)?;
            println!(
                "wrote {}: train {} / holdout {} / test {} images",
                out.display(),
                s.train,
                s.holdout,
                s.test
            );
            Ok(())
        }
    }
}
