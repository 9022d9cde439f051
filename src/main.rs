//! `committee`: image classifiers and the committees (ensembles, cascades) made of them.

mod cmd;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "committee",
    version,
    about = "Image classifiers and committees of them, in Burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Refuse images whose header declares more pixels than this, before decoding (PIL's
    /// decompression-bomb limit by default: 178956970).
    #[arg(long, global = true, value_name = "N", value_parser = cmd::args::positive_u64)]
    max_image_pixels: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// List the model registry: parameters, GMACs and default eval preprocessing.
    Models(cmd::models::Args),
    /// Classify images, or run a model on a tensor file (parity checks against PyTorch).
    Predict(cmd::predict::Args),
    /// Evaluate a model on an image folder (top-1/top-5, logits cache).
    Eval(cmd::eval::Args),
    /// Join shard logits caches from `eval --shard K/N` into one.
    MergeLogits(cmd::merge::Args),
    /// Ensemble members, live on images or offline over logits caches.
    Ensemble(cmd::committee::EnsembleArgs),
    /// Run a confidence cascade, live on images or offline over logits caches.
    Cascade(cmd::committee::CascadeArgs),
    /// Search the best single model, ensemble or cascade of a pool of logits caches.
    Search(cmd::search::Args),
    /// Single models against ensembles of smaller ones at equal cost, over logits caches.
    Scaling(cmd::scaling::Args),
    /// Train a model (or one member per seed) from scratch on an image folder.
    Train(cmd::train::Args),
    /// Import datasets as image folders.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Forward-pass latency and throughput per model, backend and batch size.
    Bench(cmd::bench::Args),
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Models(a) => cmd::models::run(a),
        Command::Predict(a) => cmd::predict::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::MergeLogits(a) => cmd::merge::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Data(c) => cmd::data::run(c),
        Command::Ensemble(a) => cmd::committee::ensemble(a),
        Command::Cascade(a) => cmd::committee::cascade(a),
        Command::Search(a) => cmd::search::run(a),
        Command::Scaling(a) => cmd::scaling::run(a),
        Command::Train(a) => cmd::train::run(a),
    }
}

/// The system's allocator, keeping freed blocks of 32 MB and more for reuse (see its doc).
#[global_allocator]
static ALLOC: committee_ops::heap::KeepLarge = committee_ops::heap::KeepLarge;

fn main() {
    // Before any thread allocates: tensors reuse freed memory (see the module's doc).
    committee_ops::heap::keep_freed_memory();
    let cli = Cli::parse();
    if let Some(n) = cli.max_image_pixels {
        committee_data::limits::set_max_pixels(n);
    }
    let result = match cli.command {
        // bench may drive the kernels from the main thread instead, to time the difference.
        Command::Bench(a) => {
            util::init_pool(a.threads);
            cmd::bench::run(a)
        }
        other => {
            util::init_pool(None);
            util::on_pool(move || run(other))
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
