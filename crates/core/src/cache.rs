//! The logits cache: what `committee eval --save-logits` writes and every offline command reads.
//!
//! A safetensors file with tensors `logits` (f32 `[N, classes]`) and `labels` (i64 `[N]`) and
//! string metadata: `model`, `weights`, `weights_sha256`, `img_size`, `gmacs` (per image),
//! `num_classes`, `data_root`, `files` (JSON array of image paths relative to the root, in row
//! order). Other tools may write it too; see docs/evaluating.md.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("caches do not match: {0}")]
    Mismatch(String),
}

/// Metadata of a cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheMeta {
    pub model: String,
    /// A label telling members of the same architecture apart (e.g. `mnv2_050-s1`);
    /// committees name members by it when set.
    pub name: Option<String>,
    pub weights: String,
    pub weights_sha256: String,
    pub img_size: usize,
    pub gmacs: f64,
    pub num_classes: usize,
    pub data_root: String,
    pub files: Vec<String>,
    /// `[K, N]` when the cache holds shard K of N (`eval --shard K/N`): `merge` checks that
    /// every shard is there.
    pub shard: Option<[usize; 2]>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogitsCache {
    pub meta: CacheMeta,
    /// Row-major `[N, num_classes]`.
    pub logits: Logits,
    pub labels: Vec<i64>,
}

/// A cache's logits: in memory, or read in place from the file (large caches: a pool of 100
/// ImageNet caches is 20 GB of f32, more than the memory of most hosts, and the search reads
/// each row of most members once). Derefs to the `[N, classes]` row-major values.
#[derive(Clone)]
pub enum Logits {
    Owned(Vec<f32>),
    /// `len` f32 values at byte `start` of a read-only map of the cache file.
    Mapped {
        map: std::sync::Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
}

impl std::ops::Deref for Logits {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Self::Owned(v) => v,
            // SAFETY: `Logits::mapped` checked that the range lies in the map, is 4-byte
            // aligned and that the host is little-endian (the file's byte order), so the bytes
            // are `len` valid f32 values; the map lives as long as `self`.
            Self::Mapped { map, start, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*start).cast::<f32>(), *len)
            },
        }
    }
}

impl Logits {
    /// `bytes` (a range of `map`) as f32 values read in place, or `None` where they cannot be
    /// (misaligned, or a big-endian host).
    fn mapped(map: &std::sync::Arc<memmap2::Mmap>, bytes: &[u8]) -> Option<Self> {
        let start = (bytes.as_ptr() as usize).checked_sub(map.as_ptr() as usize)?;
        let fits = start + bytes.len() <= map.len();
        let aligned = (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<f32>());
        (cfg!(target_endian = "little") && fits && aligned && bytes.len().is_multiple_of(4)).then(
            || Self::Mapped {
                map: map.clone(),
                start,
                len: bytes.len() / 4,
            },
        )
    }

    /// The values as an owned vector (a copy when mapped).
    pub fn into_vec(self) -> Vec<f32> {
        match self {
            Self::Owned(v) => v,
            m => m.to_vec(),
        }
    }
}

impl From<Vec<f32>> for Logits {
    fn from(v: Vec<f32>) -> Self {
        Self::Owned(v)
    }
}

impl PartialEq for Logits {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Logits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Owned(_) => "Owned",
            Self::Mapped { .. } => "Mapped",
        };
        write!(f, "Logits::{kind}({:?})", &**self)
    }
}

/// Files from this size on are read in place ([`Logits::Mapped`]) rather than into memory.
pub const MAP_FROM_BYTES: u64 = 64 << 20;

impl LogitsCache {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        let c = self.meta.num_classes;
        &self.logits[i * c..(i + 1) * c]
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CacheError> {
        let n = self.len();
        let c = self.meta.num_classes;
        let lb: Vec<u8> = self.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        let yb: Vec<u8> = self.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let err = |e: safetensors::SafeTensorError| CacheError::Invalid {
            path: "<cache>".into(),
            reason: e.to_string(),
        };
        let views = vec![
            (
                "logits",
                TensorView::new(Dtype::F32, vec![n, c], &lb).map_err(err)?,
            ),
            (
                "labels",
                TensorView::new(Dtype::I64, vec![n], &yb).map_err(err)?,
            ),
        ];
        let m = &self.meta;
        let meta: HashMap<String, String> = [
            ("model", m.model.clone()),
            ("name", m.name.clone().unwrap_or_default()),
            ("weights", m.weights.clone()),
            ("weights_sha256", m.weights_sha256.clone()),
            ("img_size", m.img_size.to_string()),
            ("gmacs", m.gmacs.to_string()),
            ("num_classes", c.to_string()),
            ("data_root", m.data_root.clone()),
            ("files", serde_json::to_string(&m.files).unwrap_or_default()),
            (
                "shard",
                m.shard.map(|[k, n]| format!("{k}/{n}")).unwrap_or_default(),
            ),
        ]
        .into_iter()
        .filter(|(k, v)| !matches!(*k, "name" | "shard") || !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize(views, Some(meta)).map_err(err)
    }

    /// Writes atomically ([`crate::write_atomic`]).
    pub fn save(&self, path: &Path) -> Result<(), CacheError> {
        let bytes = self.to_bytes()?;
        crate::write_atomic(path, &bytes).map_err(|e| CacheError::Io {
            path: e.path,
            reason: e.source.to_string(),
        })
    }

    /// Reads a cache: into memory, or in place ([`Logits::Mapped`]) from
    /// [`MAP_FROM_BYTES`] on. A mapped file must not change while it is read (`committee`
    /// itself only ever replaces caches atomically, which leaves a mapped file intact).
    pub fn load(path: &Path) -> Result<Self, CacheError> {
        let io = |e: std::io::Error| CacheError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size < MAP_FROM_BYTES {
            let bytes = std::fs::read(path).map_err(io)?;
            return Self::from_bytes(&bytes).map_err(|reason| CacheError::Invalid {
                path: path.display().to_string(),
                reason,
            });
        }
        Self::load_mapped(path)
    }

    /// [`Self::load`] reading the logits in place whatever the file's size.
    pub fn load_mapped(path: &Path) -> Result<Self, CacheError> {
        let file = std::fs::File::open(path).map_err(|e| CacheError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        // SAFETY: a read-only private map; see `load` on files changed while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CacheError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let map = std::sync::Arc::new(map);
        Self::parse(&map, |b| Logits::mapped(&map, b)).map_err(|reason| CacheError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        Self::parse(bytes, |_| None)
    }

    /// Parses and checks a cache; `in_place` may keep the logits' bytes where they are.
    fn parse(bytes: &[u8], in_place: impl Fn(&[u8]) -> Option<Logits>) -> Result<Self, String> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| format!("not a safetensors file: {e}"))?;
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let md = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            md.get(k)
                .cloned()
                .ok_or_else(|| format!("metadata key '{k}' is missing"))
        };
        let num = |k: &str| -> Result<f64, String> {
            get(k)?
                .parse::<f64>()
                .map_err(|_| format!("metadata '{k}' is not a number"))
        };
        let lt = st
            .tensor("logits")
            .map_err(|_| "no tensor 'logits'".to_string())?;
        let yt = st
            .tensor("labels")
            .map_err(|_| "no tensor 'labels'".to_string())?;
        if lt.dtype() != Dtype::F32 || lt.shape().len() != 2 {
            return Err(format!(
                "'logits' must be f32 [N, classes], got {:?} {:?}",
                lt.dtype(),
                lt.shape()
            ));
        }
        if yt.dtype() != Dtype::I64 || yt.shape().len() != 1 {
            return Err(format!(
                "'labels' must be i64 [N], got {:?} {:?}",
                yt.dtype(),
                yt.shape()
            ));
        }
        let (n, c) = (lt.shape()[0], lt.shape()[1]);
        if yt.shape()[0] != n {
            return Err(format!("{n} rows of logits but {} labels", yt.shape()[0]));
        }
        let logits = in_place(lt.data()).unwrap_or_else(|| {
            Logits::Owned(
                lt.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        });
        if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "logits row {} holds a non-finite value ({})",
                i / c.max(1),
                logits[i]
            ));
        }
        let labels: Vec<i64> = yt
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        if let Some(l) = labels.iter().find(|&&l| l < 0 || l as usize >= c) {
            return Err(format!("label {l} is outside 0..{c}"));
        }
        let files: Vec<String> = serde_json::from_str(&get("files")?)
            .map_err(|e| format!("metadata 'files' is not a JSON array: {e}"))?;
        if files.len() != n {
            return Err(format!("'files' lists {} paths for {n} rows", files.len()));
        }
        let meta = CacheMeta {
            model: get("model")?,
            name: md.get("name").filter(|n| !n.is_empty()).cloned(),
            weights: md.get("weights").cloned().unwrap_or_default(),
            weights_sha256: md.get("weights_sha256").cloned().unwrap_or_default(),
            img_size: match num("img_size")? {
                s if s >= 1.0 && s.fract() == 0.0 && s <= u32::MAX as f64 => s as usize,
                s => return Err(format!("metadata img_size {s} is not a size in pixels")),
            },
            gmacs: match num("gmacs")? {
                g if g.is_finite() && g >= 0.0 => g,
                g => return Err(format!("metadata gmacs {g} is not a cost (finite, >= 0)")),
            },
            num_classes: c,
            data_root: md.get("data_root").cloned().unwrap_or_default(),
            files,
            shard: md.get("shard").map(|s| parse_shard(s)).transpose()?,
        };
        if let Some(mc) = md.get("num_classes")
            && mc.parse::<usize>().ok() != Some(c)
        {
            return Err(format!(
                "metadata num_classes {mc} but logits have {c} columns"
            ));
        }
        Ok(Self {
            meta,
            logits,
            labels,
        })
    }
}

/// Checks that caches cover the same images in the same order with the same labels and class
/// count, and says exactly what differs.
pub fn check_aligned(caches: &[(&str, &LogitsCache)]) -> Result<(), CacheError> {
    let Some((name0, first)) = caches.first() else {
        return Ok(());
    };
    for (name, c) in &caches[1..] {
        if c.meta.num_classes != first.meta.num_classes {
            return Err(CacheError::Mismatch(format!(
                "{name0} has {} classes, {name} has {}",
                first.meta.num_classes, c.meta.num_classes
            )));
        }
        if c.len() != first.len() {
            return Err(CacheError::Mismatch(format!(
                "{name0} covers {} images, {name} covers {}",
                first.len(),
                c.len()
            )));
        }
        if let Some(i) = (0..c.len()).find(|&i| c.meta.files[i] != first.meta.files[i]) {
            return Err(CacheError::Mismatch(format!(
                "row {i}: {name0} has '{}', {name} has '{}' (different images or order)",
                first.meta.files[i], c.meta.files[i]
            )));
        }
        if let Some(i) = (0..c.len()).find(|&i| c.labels[i] != first.labels[i]) {
            return Err(CacheError::Mismatch(format!(
                "row {i} ('{}'): label {} in {name0}, {} in {name}",
                first.meta.files[i], first.labels[i], c.labels[i]
            )));
        }
    }
    Ok(())
}

/// `K/N` with `K < N`.
fn parse_shard(s: &str) -> Result<[usize; 2], String> {
    let bad = || format!("metadata shard '{s}' is not K/N with K < N");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n) = (k.parse::<usize>(), n.parse::<usize>());
    match (k, n) {
        (Ok(k), Ok(n)) if k < n => Ok([k, n]),
        _ => Err(bad()),
    }
}

/// Every shard of one `N` exactly once, when the caches say which shard they hold; caches
/// from before shards were recorded (none says) are taken as they are.
fn check_complete(shards: &[(&str, LogitsCache)]) -> Result<(), CacheError> {
    let known: Vec<(&str, [usize; 2])> = shards
        .iter()
        .filter_map(|(name, c)| c.meta.shard.map(|s| (*name, s)))
        .collect();
    if known.is_empty() {
        return Ok(());
    }
    if known.len() != shards.len() {
        return Err(CacheError::Mismatch(
            "some caches record which shard they hold and some do not: give shards of one eval --shard run"
                .into(),
        ));
    }
    let n = known[0].1[1];
    let mut seen: Vec<Option<&str>> = vec![None; n];
    for &(name, [k, nk]) in &known {
        if nk != n {
            return Err(CacheError::Mismatch(format!(
                "{name} is shard {k}/{nk} but {} is shard {}/{n}",
                known[0].0, known[0].1[0]
            )));
        }
        if let Some(other) = seen[k].replace(name) {
            return Err(CacheError::Mismatch(format!(
                "shard {k}/{n} appears in more than one shard: {other} and {name}"
            )));
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|&k| seen[k].is_none())
        .map(|k| format!("{k}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(CacheError::Mismatch(format!(
            "incomplete: shard {} missing ({} of {n} given)",
            missing.join(", "),
            n - missing.len()
        )));
    }
    Ok(())
}

/// Joins shard caches into one, in folder order (paths compared component by component);
/// refuses duplicates, mixed models and, when the caches record it, a missing shard.
pub fn merge(shards: &[(&str, LogitsCache)]) -> Result<LogitsCache, CacheError> {
    let Some((name0, first)) = shards.first() else {
        return Err(CacheError::Mismatch("no shards given".into()));
    };
    check_complete(shards)?;
    let mut rows: Vec<(String, i64, &[f32])> = Vec::new();
    for (name, s) in shards {
        for (what, a, b) in [
            ("model", &s.meta.model, &first.meta.model),
            (
                "weights_sha256",
                &s.meta.weights_sha256,
                &first.meta.weights_sha256,
            ),
            ("data_root", &s.meta.data_root, &first.meta.data_root),
        ] {
            if a != b {
                return Err(CacheError::Mismatch(format!(
                    "{what}: '{b}' in {name0}, '{a}' in {name}"
                )));
            }
        }
        if s.meta.num_classes != first.meta.num_classes || s.meta.img_size != first.meta.img_size {
            return Err(CacheError::Mismatch(format!(
                "{name} differs from {name0} in classes or img_size"
            )));
        }
        for i in 0..s.len() {
            rows.push((s.meta.files[i].clone(), s.labels[i], s.row(i)));
        }
    }
    // Component-wise, as folder scanning orders paths ("a/x" before "a-b/x").
    rows.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(CacheError::Mismatch(format!(
            "'{}' appears in more than one shard",
            w[0].0
        )));
    }
    let mut meta = first.meta.clone();
    meta.files = rows.iter().map(|r| r.0.clone()).collect();
    meta.shard = None;
    Ok(LogitsCache {
        logits: Logits::Owned(rows.iter().flat_map(|r| r.2.iter().copied()).collect()),
        labels: rows.iter().map(|r| r.1).collect(),
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn cache(files: &[&str], labels: &[i64], logits: &[f32]) -> LogitsCache {
        LogitsCache {
            meta: CacheMeta {
                model: "m".into(),
                name: None,
                weights: "w.safetensors".into(),
                weights_sha256: "ab".into(),
                img_size: 224,
                gmacs: 0.5,
                num_classes: logits.len() / labels.len(),
                data_root: "/data".into(),
                files: files.iter().map(|s| s.to_string()).collect(),
                shard: None,
            },
            logits: logits.to_vec().into(),
            labels: labels.to_vec(),
        }
    }

    #[test]
    fn roundtrip() {
        let c = cache(&["a/1.jpg", "b/2.jpg"], &[0, 1], &[0.5, -1.0, 2.0, 3.0]);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.safetensors");
        c.save(&p).unwrap();
        assert_eq!(LogitsCache::load(&p).unwrap(), c);
    }

    /// Read in place, a cache has the same values as read into memory, and the same checks.
    #[test]
    fn mapped_reads_the_same_and_is_checked() {
        let c = cache(&["a/1.jpg", "b/2.jpg"], &[0, 1], &[0.5, -1.0, 2.0, 3.0]);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.safetensors");
        c.save(&p).unwrap();
        let m = LogitsCache::load_mapped(&p).unwrap();
        assert!(matches!(m.logits, Logits::Mapped { .. }), "{:?}", m.logits);
        assert_eq!(m, c);
        assert_eq!(m.row(1), &[2.0, 3.0]);
        let bad = cache(
            &["a/1.jpg", "b/2.jpg"],
            &[0, 1],
            &[0.5, -1.0, f32::NAN, 3.0],
        );
        bad.save(&p).unwrap();
        let e = LogitsCache::load_mapped(&p).unwrap_err().to_string();
        assert!(e.contains("c.safetensors") && e.contains("row 1"), "{e}");
        std::fs::write(&p, b"").unwrap();
        let e = LogitsCache::load_mapped(&p).unwrap_err().to_string();
        assert!(e.contains("c.safetensors"), "{e}");
    }

    /// A shard records which one it is; merging needs each of 0..N exactly once.
    #[test]
    fn merge_knows_when_a_shard_is_missing() {
        let shard = |k: usize, n: usize, f: &str| {
            let mut c = cache(&[f], &[0], &[0.5, -1.0]);
            c.meta.shard = Some([k, n]);
            c
        };
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.safetensors");
        shard(1, 3, "a").save(&p).unwrap();
        assert_eq!(LogitsCache::load(&p).unwrap().meta.shard, Some([1, 3]));
        let (s0, s1, s2) = (shard(0, 3, "a"), shard(1, 3, "b"), shard(2, 3, "c"));
        let all = merge(&[("s2", s2.clone()), ("s0", s0.clone()), ("s1", s1.clone())]).unwrap();
        assert_eq!((all.len(), all.meta.shard), (3, None));
        let e = merge(&[("s0", s0.clone()), ("s2", s2.clone())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("shard 1/3 missing (2 of 3 given)"), "{e}");
        let e = merge(&[("s0", s0.clone()), ("x", s0.clone())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shard 0/3 appears in more than one shard"),
            "{e}"
        );
        let e = merge(&[("s0", s0.clone()), ("t", shard(1, 2, "b"))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("shard 1/2"), "{e}");
        let legacy = cache(&["b"], &[0], &[0.5, -1.0]);
        assert!(merge(&[("s0", s0), ("old", legacy.clone())]).is_err());
        // Caches that say nothing about shards merge as before.
        assert!(merge(&[("a", cache(&["a"], &[0], &[0.5, -1.0])), ("b", legacy)]).is_ok());
        // A damaged field is an error, not a silent default.
        for bad in ["3/3", "x/3", "1", "1/0"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_nan_and_bad_labels() {
        let c = cache(&["a", "b"], &[0, 1], &[0.5, f32::NAN, 2.0, 3.0]);
        let e = LogitsCache::from_bytes(&c.to_bytes().unwrap()).unwrap_err();
        assert!(e.contains("row 0") && e.contains("non-finite"), "{e}");
        let c = cache(&["a", "b"], &[0, 2], &[0.5, 1.0, 2.0, 3.0]);
        let e = LogitsCache::from_bytes(&c.to_bytes().unwrap()).unwrap_err();
        assert!(e.contains("label 2"), "{e}");
        // Damaged metadata is an error, not a silent default.
        for (gmacs, img) in [(f64::NAN, 224), (-1.0, 224), (0.5, 0)] {
            let mut c = cache(&["a", "b"], &[0, 1], &[0.5, 1.0, 2.0, 3.0]);
            c.meta.gmacs = gmacs;
            c.meta.img_size = img;
            let e = LogitsCache::from_bytes(&c.to_bytes().unwrap()).unwrap_err();
            assert!(e.contains("metadata"), "{e}");
        }
    }

    #[test]
    fn alignment_errors_say_what_differs() {
        let a = cache(&["a", "b"], &[0, 1], &[0.0; 4]);
        let b = cache(&["a", "c"], &[0, 1], &[0.0; 4]);
        let e = check_aligned(&[("A", &a), ("B", &b)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 1") && e.contains("'b'") && e.contains("'c'"),
            "{e}"
        );
        let c3 = cache(&["a", "b"], &[0, 1], &[0.0; 6]);
        assert!(
            check_aligned(&[("A", &a), ("C", &c3)])
                .unwrap_err()
                .to_string()
                .contains("classes")
        );
        let short = cache(&["a"], &[0], &[0.0; 2]);
        assert!(
            check_aligned(&[("A", &a), ("S", &short)])
                .unwrap_err()
                .to_string()
                .contains("covers")
        );
    }

    #[test]
    fn merge_sorts_and_refuses_duplicates() {
        let s0 = cache(&["b", "d"], &[1, 1], &[1.0, 2.0, 3.0, 4.0]);
        let s1 = cache(&["a", "c"], &[0, 0], &[5.0, 6.0, 7.0, 8.0]);
        let m = merge(&[("s0", s0.clone()), ("s1", s1)]).unwrap();
        assert_eq!(m.meta.files, ["a", "b", "c", "d"]);
        assert_eq!(m.labels, [0, 1, 0, 1]);
        assert_eq!(m.row(1), [1.0, 2.0]);
        let e = merge(&[("s0", s0.clone()), ("again", s0)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one shard"), "{e}");
    }
}
