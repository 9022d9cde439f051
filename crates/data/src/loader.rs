//! A parallel, ordered, bounded pipeline: worker threads decode and preprocess batch k+1..k+p
//! while the model runs batch k. Failures travel with their index; nothing is dropped.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

/// One batch: every sample of the chunk, in order, decoded or with its error.
#[derive(Debug)]
pub struct Batch<T> {
    /// `(sample index, result)` in sample order.
    pub items: Vec<(usize, Result<T, String>)>,
}

/// Iterator over prepared batches; the producer stops when this is dropped.
pub struct Loader<T> {
    rx: Receiver<Batch<T>>,
    handle: Option<JoinHandle<()>>,
}

impl<T> Iterator for Loader<T> {
    type Item = Batch<T>;
    fn next(&mut self) -> Option<Batch<T>> {
        match self.rx.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                if let Some(h) = self.handle.take() {
                    // A worker panic would otherwise end the data silently: surface it.
                    if let Err(e) = h.join() {
                        std::panic::resume_unwind(e);
                    }
                }
                None
            }
        }
    }
}

/// Prepares `paths` in batches of `batch` with `workers` threads, at most `prefetch` batches
/// ahead of the consumer. `prepare` must not panic on bad input: it returns an error instead.
pub fn load<T, F>(
    paths: Vec<PathBuf>,
    batch: usize,
    workers: usize,
    prefetch: usize,
    prepare: F,
) -> Loader<T>
where
    T: Send + 'static,
    F: Fn(&std::path::Path) -> Result<T, String> + Send + Sync + 'static,
{
    load_items(paths, batch, workers, prefetch, move |p: &PathBuf| {
        prepare(p)
    })
}

/// [`load`] over any work items (training passes each sample's index and augmentation seed
/// along with its path). Indices in the batches are positions in `items`.
pub fn load_items<I, T, F>(
    items: Vec<I>,
    batch: usize,
    workers: usize,
    prefetch: usize,
    prepare: F,
) -> Loader<T>
where
    I: Send + Sync + 'static,
    T: Send + 'static,
    F: Fn(&I) -> Result<T, String> + Send + Sync + 'static,
{
    use rayon::prelude::*;
    let (tx, rx) = sync_channel(prefetch.max(1));
    let batch = batch.max(1);
    let handle = std::thread::spawn(move || {
        let indexed: Vec<(usize, I)> = items.into_iter().enumerate().collect();
        let pool = match rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .build()
        {
            Ok(p) => p,
            Err(e) => {
                // Never an empty run: every item fails with the reason.
                let why = format!("the {workers} decoding threads could not start: {e}");
                for chunk in indexed.chunks(batch) {
                    let items = chunk.iter().map(|(i, _)| (*i, Err(why.clone()))).collect();
                    if tx.send(Batch { items }).is_err() {
                        return;
                    }
                }
                return;
            }
        };
        for chunk in indexed.chunks(batch) {
            let items: Vec<(usize, Result<T, String>)> = pool.install(|| {
                chunk
                    .par_iter()
                    .map(|(i, p)| (*i, guarded(&prepare, p)))
                    .collect()
            });
            if tx.send(Batch { items }).is_err() {
                return;
            }
        }
    });
    Loader {
        rx,
        handle: Some(handle),
    }
}

/// `prepare(item)`, with a panic inside it (a decoder's bug on a hostile file) turned into that
/// item's failure, so one file never ends the run.
fn guarded<I, T>(prepare: &impl Fn(&I) -> Result<T, String>, item: &I) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(item))).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(format!("the decoder panicked: {msg}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_errors() {
        let paths: Vec<PathBuf> = (0..23).map(|i| PathBuf::from(format!("{i}"))).collect();
        let out: Vec<_> = load(paths, 5, 3, 2, |p| {
            let i: usize = p.to_str().unwrap().parse().unwrap();
            if i % 7 == 3 {
                Err(format!("bad {i}"))
            } else {
                Ok(i * 10)
            }
        })
        .collect();
        assert_eq!(out.len(), 5);
        let flat: Vec<(usize, Result<usize, String>)> =
            out.into_iter().flat_map(|b| b.items).collect();
        assert_eq!(flat.len(), 23);
        for (k, (i, r)) in flat.iter().enumerate() {
            assert_eq!(*i, k);
            match r {
                Ok(v) => assert_eq!(*v, k * 10),
                Err(e) => assert_eq!(e, &format!("bad {k}")),
            }
        }
    }

    /// A panic while preparing one item is that item's failure; the others are unaffected.
    #[test]
    fn a_panicking_item_is_a_named_failure() {
        let paths: Vec<PathBuf> = (0..6).map(|i| PathBuf::from(format!("{i}"))).collect();
        let flat: Vec<(usize, Result<usize, String>)> = load(paths, 4, 2, 1, |p| {
            let i: usize = p.to_str().unwrap().parse().unwrap();
            if i == 4 {
                panic!("bad header in {i}");
            }
            Ok(i)
        })
        .flat_map(|b| b.items)
        .collect();
        assert_eq!(flat.len(), 6);
        for (i, r) in flat {
            match (i, r) {
                (4, Err(e)) => assert!(
                    e.contains("panicked") && e.contains("bad header in 4"),
                    "{e}"
                ),
                (i, Ok(v)) => assert_eq!(v, i),
                (i, Err(e)) => panic!("item {i} failed: {e}"),
            }
        }
    }
}
