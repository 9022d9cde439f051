//! A model's batch split over the threads.

use super::*;

/// `f` over `x`'s batch split into one part per thread, each part through `f` on a thread of
/// its own (a one-thread rayon pool, so every kernel inside runs single-threaded), the
/// results concatenated; `Err(x)` when it does not apply (fewer images than threads). When
/// the images do not divide evenly (see [`images_apart`]), the remainder runs after the
/// split, whole.
///
/// Why: at batch 8 a MobileNet-style network moves each activation through DRAM between
/// layers (MobileNetV2's first expansion alone is 38 MB, more than the L3), and its short
/// products gain little from a second thread. One part per thread keeps each part's
/// activations in cache from layer to layer; two processes of one thread each had shown
/// 10-13 % more images/s than one process of two threads.
pub fn split_batch(
    x: Tensor<4>,
    f: impl Fn(Tensor<4>) -> Tensor<2> + Sync,
) -> Result<Tensor<2>, Tensor<4>> {
    let threads = rayon::current_num_threads();
    let n = x.dims()[0];
    if !eligible(Kernel::Batch, &x) || threads < 2 || n < threads {
        return Err(x);
    }
    // One one-thread pool per part, made once. Each part is handed to its pool from a
    // scoped OS thread, which blocks while it waits; handing it over from a rayon worker
    // instead keeps that worker spinning on a core the pools need (measured: half the speed).
    static POOLS: std::sync::OnceLock<Vec<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        (0..threads)
            .map_while(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok())
            .collect()
    });
    if pools.len() < threads {
        return Err(x);
    }
    // An uneven batch (3 images on 2 threads): the images that divide evenly split, the rest
    // after them whole, on all threads. Whole, one thread waited on the other's second image
    // in every layer: ResNet-50 at batch 3 ran at 18.3 img/s against 28.1 at batch 2.
    let head = if images_apart(n, threads) {
        n
    } else {
        n - n % threads
    };
    let (x, rest) = match head < n {
        true => (
            x.clone().narrow(0, 0, head),
            Some(x.narrow(0, head, n - head)),
        ),
        false => (x, None),
    };
    let parts: Vec<Tensor<4>> = x.chunk(threads, 0);
    let f = &f;
    let mut outs: Vec<Tensor<2>> = std::thread::scope(|scope| {
        let running: Vec<_> = parts
            .into_iter()
            .zip(pools)
            .map(|(part, pool)| scope.spawn(move || pool.install(|| in_pieces(part, f))))
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    outs.extend(rest.map(f));
    Ok(Tensor::cat(outs, 0))
}

/// Images a thread takes through the network at once in [`split_batch`]; a larger part runs
/// as pieces of at most this many, one after the other. Why one: the fewer images a layer
/// holds, the more of its activations the next layer finds in cache. Whole, MobileNetV2 at
/// batch 32 ran at half its batch-8 speed; at batch 8 on 2 threads, pieces of one image
/// against four ran MobileNetV2 bf16 at 176-203 against 158-163 img/s and EfficientNet-B0 at
/// 128 against 115-118 (ResNet-50 unchanged within noise; Intel Xeon, 2026-12-06).
pub(crate) const PIECE: usize = 1;

/// `f` over `part` in pieces of at most [`PIECE`] images, the results concatenated.
pub(crate) fn in_pieces(
    part: Tensor<4>,
    f: &(impl Fn(Tensor<4>) -> Tensor<2> + Sync),
) -> Tensor<2> {
    let n = part.dims()[0];
    if n <= PIECE {
        return f(part);
    }
    Tensor::cat(
        part.chunk(n.div_ceil(PIECE), 0)
            .into_iter()
            .map(f)
            .collect(),
        0,
    )
}
