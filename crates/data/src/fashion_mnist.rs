//! Imports Debian's `dataset-fashion-mnist` (IDX files) as image folders:
//! `train/` (55,000), `holdout/` (5,000, stratified: 500 per class, for cascade thresholds)
//! and `test/` (10,000), 28x28 grayscale PNGs under class folders that sort in label order.

use std::path::{Path, PathBuf};

use crate::idx;

/// Where the Debian package puts the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Class folder names; the numeric prefix keeps sorted order equal to label order.
pub const CLASSES: [&str; 10] = [
    "0_tshirt_top",
    "1_trouser",
    "2_pullover",
    "3_dress",
    "4_coat",
    "5_sandal",
    "6_shirt",
    "7_sneaker",
    "8_bag",
    "9_ankle_boot",
];

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "{0} not found: install the data with `apt-get install dataset-fashion-mnist` (or pass --src)"
    )]
    Missing(String),
    #[error("{path}: {source}")]
    Idx { path: String, source: idx::IdxError },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

fn read(src: &Path, stem: &str) -> Result<idx::Idx, ImportError> {
    let candidates = [src.join(format!("{stem}.gz")), src.join(stem)];
    let path = candidates
        .iter()
        .find(|p| p.is_file())
        .ok_or_else(|| ImportError::Missing(candidates[0].display().to_string()))?;
    let bytes = std::fs::read(path).map_err(|e| ImportError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    idx::parse(&bytes).map_err(|source| ImportError::Idx {
        path: path.display().to_string(),
        source,
    })
}

/// Images `[N, 28, 28]` and labels `[N]` of one split, checked against each other.
fn split(src: &Path, images: &str, labels: &str) -> Result<(Vec<[u8; 784]>, Vec<u8>), ImportError> {
    let im = read(src, images)?;
    let lb = read(src, labels)?;
    if im.dims.len() != 3 || im.dims[1] != 28 || im.dims[2] != 28 {
        return Err(ImportError::Invalid(format!(
            "{images}: expected [N, 28, 28], got {:?}",
            im.dims
        )));
    }
    if lb.dims != [im.dims[0]] {
        return Err(ImportError::Invalid(format!(
            "{labels}: {:?} labels for {} images",
            lb.dims, im.dims[0]
        )));
    }
    if let Some(l) = lb.data.iter().find(|&&l| l > 9) {
        return Err(ImportError::Invalid(format!(
            "{labels}: label {l} is not in 0..10"
        )));
    }
    let imgs = im
        .data
        .chunks_exact(784)
        .map(|c| c.try_into().unwrap_or([0; 784]))
        .collect();
    Ok((imgs, lb.data))
}

/// SplitMix64: a small, seeded, portable generator for the holdout split.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
}

/// Indices held out: `per_class` of each label, chosen by a seeded shuffle.
pub fn stratified_holdout(
    labels: &[u8],
    per_class: usize,
    seed: u64,
) -> Result<Vec<bool>, ImportError> {
    let mut rng = SplitMix(seed);
    let mut held = vec![false; labels.len()];
    for c in 0..10u8 {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        if idx.len() < per_class {
            return Err(ImportError::Invalid(format!(
                "class {c} has {} images, fewer than {per_class}",
                idx.len()
            )));
        }
        for i in (1..idx.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        for &i in &idx[..per_class] {
            held[i] = true;
        }
    }
    Ok(held)
}

/// Counts written per split.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub train: usize,
    pub holdout: usize,
    pub test: usize,
}

/// Writes the folders under `out` (staged in `out.partial`, renamed when complete, so an
/// interrupted import never leaves a half-written dataset behind).
pub fn import(
    src: &Path,
    out: &Path,
    holdout_per_class: usize,
    seed: u64,
) -> Result<Summary, ImportError> {
    if !src.is_dir() {
        return Err(ImportError::Missing(src.display().to_string()));
    }
    let (train_x, train_y) = split(src, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let (test_x, test_y) = split(src, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    let held = stratified_holdout(&train_y, holdout_per_class, seed)?;
    let io = |p: &Path, e: &dyn std::fmt::Display| ImportError::Io {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    if out.exists() {
        return Err(ImportError::Invalid(format!(
            "{} exists; remove it or choose another --out",
            out.display()
        )));
    }
    let stage = PathBuf::from(format!("{}.partial", out.display()));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| io(&stage, &e))?;
    }
    let mut summary = Summary::default();
    let mut write = |split: &str, i: usize, x: &[u8; 784], y: u8| -> Result<(), ImportError> {
        let dir = stage.join(split).join(CLASSES[y as usize]);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, &e))?;
        let p = dir.join(format!("{i:05}.png"));
        image::GrayImage::from_raw(28, 28, x.to_vec())
            .ok_or_else(|| ImportError::Invalid("image buffer".into()))?
            .save(&p)
            .map_err(|e| io(&p, &e))?;
        match split {
            "train" => summary.train += 1,
            "holdout" => summary.holdout += 1,
            _ => summary.test += 1,
        }
        Ok(())
    };
    for (i, (x, &y)) in train_x.iter().zip(&train_y).enumerate() {
        write(if held[i] { "holdout" } else { "train" }, i, x, y)?;
    }
    for (i, (x, &y)) in test_x.iter().zip(&test_y).enumerate() {
        write("test", i, x, y)?;
    }
    std::fs::rename(&stage, out).map_err(|e| io(out, &e))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_stratified_and_seeded() {
        let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
        let a = stratified_holdout(&labels, 7, 3).unwrap();
        let b = stratified_holdout(&labels, 7, 3).unwrap();
        let c = stratified_holdout(&labels, 7, 4).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        for k in 0..10u8 {
            assert_eq!((0..1000).filter(|&i| a[i] && labels[i] == k).count(), 7);
        }
        assert!(stratified_holdout(&labels, 101, 0).is_err());
    }

    #[test]
    fn class_folders_sort_in_label_order() {
        let mut s = CLASSES.to_vec();
        s.sort();
        assert_eq!(s, CLASSES);
    }
}
