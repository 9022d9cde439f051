//! The progress of a long `eval --save-logits` run, kept beside its target in chunks so that a
//! run killed after hours continues where it stopped (`--resume`) and ends with the cache an
//! uninterrupted run writes.
//!
//! `<target>.partial/` holds `run.json` (what the run is: model, weights hash, files,
//! preprocessing, batch, backend; a resume must match it) and `chunk-<start>.safetensors`
//! files, each covering the samples `start..end` of the run in order: tensors `logits`
//! (f32 `[n, classes]`), `labels` (i64 `[n]`), `index` (i64 `[n]`, the sample of each row) and
//! metadata `start`, `end`, `failed` (JSON `[[index, reason], ...]`). Every file goes through
//! [`crate::write_atomic`], so a kill leaves whole chunks only.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Name of the run description inside the progress folder.
const RUN: &str = "run.json";

#[derive(Debug, thiserror::Error)]
pub enum PartialError {
    #[error(
        "{dir} holds the progress of an interrupted run ({done} images done): run the same command with --resume to continue it, or remove {dir} to start over"
    )]
    Interrupted { dir: String, done: usize },
    #[error(
        "{dir} is the progress of another run: {field} was {then}, now {now}; run the command it was started with, or remove {dir} to start over"
    )]
    OtherRun {
        dir: String,
        field: String,
        then: String,
        now: String,
    },
    #[error("{path}: {reason}; remove {dir} to start over")]
    Damaged {
        path: String,
        dir: String,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

/// The rows of samples `start..end` of a run: the ones that were evaluated (`index`, in order)
/// and the ones that failed to decode.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chunk {
    pub start: usize,
    pub end: usize,
    /// Sample index of each row.
    pub index: Vec<usize>,
    pub labels: Vec<i64>,
    /// Row-major `[index.len(), classes]`.
    pub logits: Vec<f32>,
    /// Sample index and reason of each image that could not be decoded.
    pub failed: Vec<(usize, String)>,
}

/// An open progress folder.
#[derive(Debug)]
pub struct Partial {
    dir: PathBuf,
    classes: usize,
}

/// `<target>.partial`, beside the target.
pub fn dir_for(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

impl Partial {
    /// Opens the progress of the run `run` describes (a JSON object) for `target`. A new run
    /// creates the folder; with `resume`, the folder's run must be this one and its chunks are
    /// returned in order (none when there was no progress). Progress found without `resume`
    /// is an error, never overwritten.
    pub fn begin(
        target: &Path,
        run: &serde_json::Value,
        classes: usize,
        resume: bool,
    ) -> Result<(Self, Vec<Chunk>), PartialError> {
        let dir = dir_for(target);
        let p = Self { dir, classes };
        let run_path = p.dir.join(RUN);
        if !run_path.exists() {
            std::fs::create_dir_all(&p.dir).map_err(|e| p.io(&p.dir, e))?;
            let text = serde_json::to_string_pretty(run).unwrap_or_default();
            crate::write_atomic(&run_path, text.as_bytes()).map_err(|e| PartialError::Io {
                path: e.path,
                reason: e.source.to_string(),
            })?;
            return Ok((p, Vec::new()));
        }
        let paths = p.chunk_paths()?;
        if !resume {
            // How far it got is in the last chunk alone.
            let done = match paths.last() {
                Some(last) => p.read_chunk(last)?.end,
                None => 0,
            };
            return Err(PartialError::Interrupted {
                dir: p.dir.display().to_string(),
                done,
            });
        }
        let text = std::fs::read_to_string(&run_path).map_err(|e| p.io(&run_path, e))?;
        let then: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| p.damaged(&run_path, format!("not JSON: {e}")))?;
        p.check_same(&then, run)?;
        let chunks = p.chunks(&paths)?;
        Ok((p, chunks))
    }

    /// Writes one chunk (atomically: a kill leaves it whole or absent).
    pub fn append(&self, c: &Chunk) -> Result<(), PartialError> {
        let path = self.dir.join(format!("chunk-{:012}.safetensors", c.start));
        let bytes = to_bytes(c, self.classes).map_err(|reason| self.damaged(&path, reason))?;
        crate::write_atomic(&path, &bytes).map_err(|e| PartialError::Io {
            path: e.path,
            reason: e.source.to_string(),
        })
    }

    /// Removes the folder once the final output is written.
    pub fn finish(self) -> Result<(), PartialError> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| self.io(&self.dir, e))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first field of the run description that differs, if any.
    fn check_same(
        &self,
        then: &serde_json::Value,
        now: &serde_json::Value,
    ) -> Result<(), PartialError> {
        let empty = serde_json::Map::new();
        let (a, b) = (
            then.as_object().unwrap_or(&empty),
            now.as_object().unwrap_or(&empty),
        );
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let (x, y) = (a.get(k), b.get(k));
            if x != y {
                let show = |v: Option<&serde_json::Value>| {
                    v.map_or("absent".to_string(), |v| v.to_string())
                };
                return Err(PartialError::OtherRun {
                    dir: self.dir.display().to_string(),
                    field: k.clone(),
                    then: show(x),
                    now: show(y),
                });
            }
        }
        Ok(())
    }

    /// The chunk files in the folder, in sample order (their names hold the start, zero-padded).
    fn chunk_paths(&self) -> Result<Vec<PathBuf>, PartialError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        let mut paths = Vec::new();
        for e in entries {
            let e = e.map_err(|e| self.io(&self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Hidden names are the atomic writer's temporary files (a kill mid-write).
            if name.starts_with("chunk-") && name.ends_with(".safetensors") {
                paths.push(e.path());
            }
        }
        paths.sort();
        Ok(paths)
    }

    fn read_chunk(&self, path: &Path) -> Result<Chunk, PartialError> {
        let bytes = std::fs::read(path).map_err(|e| self.io(path, e))?;
        from_bytes(&bytes, self.classes).map_err(|r| self.damaged(path, r))
    }

    /// The chunks at `paths`, in order; they must tile `0..end` without a gap.
    fn chunks(&self, paths: &[PathBuf]) -> Result<Vec<Chunk>, PartialError> {
        let mut chunks: Vec<Chunk> = Vec::with_capacity(paths.len());
        for path in paths {
            let c = self.read_chunk(path)?;
            let expected = chunks.last().map_or(0, |p| p.end);
            if c.start != expected {
                return Err(self.damaged(
                    path,
                    format!(
                        "covers samples from {} but the chunks before end at {expected}",
                        c.start
                    ),
                ));
            }
            chunks.push(c);
        }
        Ok(chunks)
    }

    fn io(&self, path: &Path, e: std::io::Error) -> PartialError {
        PartialError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    fn damaged(&self, path: &Path, reason: String) -> PartialError {
        PartialError::Damaged {
            path: path.display().to_string(),
            dir: self.dir.display().to_string(),
            reason,
        }
    }
}

fn to_bytes(c: &Chunk, classes: usize) -> Result<Vec<u8>, String> {
    let n = c.index.len();
    let lb: Vec<u8> = c.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let yb: Vec<u8> = c.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let ib: Vec<u8> = c
        .index
        .iter()
        .flat_map(|&v| (v as i64).to_le_bytes())
        .collect();
    let err = |e: safetensors::SafeTensorError| e.to_string();
    let views = vec![
        (
            "logits",
            TensorView::new(Dtype::F32, vec![n, classes], &lb).map_err(err)?,
        ),
        (
            "labels",
            TensorView::new(Dtype::I64, vec![n], &yb).map_err(err)?,
        ),
        (
            "index",
            TensorView::new(Dtype::I64, vec![n], &ib).map_err(err)?,
        ),
    ];
    let meta = [
        ("start", c.start.to_string()),
        ("end", c.end.to_string()),
        (
            "failed",
            serde_json::to_string(&c.failed).unwrap_or_default(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    safetensors::serialize(views, Some(meta)).map_err(err)
}

/// A chunk, checked: shapes, the class count, indices increasing inside `start..end`.
fn from_bytes(bytes: &[u8], classes: usize) -> Result<Chunk, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let md = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        md.get(k)
            .ok_or_else(|| format!("metadata '{k}' is missing"))
    };
    let num = |k: &str| {
        get(k)?
            .parse::<usize>()
            .map_err(|_| format!("metadata '{k}' is not a count"))
    };
    let (start, end) = (num("start")?, num("end")?);
    let mut failed: Vec<(usize, String)> = serde_json::from_str(get("failed")?)
        .map_err(|e| format!("metadata 'failed' is not [[index, reason], ...]: {e}"))?;
    failed.sort_by_key(|f| f.0);
    let tensor = |name: &str, dtype: Dtype, shape: &[usize]| {
        let t = st.tensor(name).map_err(|_| format!("no tensor '{name}'"))?;
        if t.dtype() != dtype || t.shape() != shape {
            return Err(format!(
                "'{name}' is {:?} {:?}, expected {dtype:?} {shape:?}",
                t.dtype(),
                t.shape()
            ));
        }
        Ok(t.data().to_vec())
    };
    let n = st
        .tensor("labels")
        .map_err(|_| "no tensor 'labels'".to_string())?
        .shape()
        .first()
        .copied()
        .unwrap_or(0);
    let logits: Vec<f32> = tensor("logits", Dtype::F32, &[n, classes])?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let i64s = |b: Vec<u8>| -> Vec<i64> {
        b.chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect()
    };
    let labels = i64s(tensor("labels", Dtype::I64, &[n])?);
    let index = i64s(tensor("index", Dtype::I64, &[n])?);
    if let Some(l) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
        return Err(format!("label {l} is outside 0..{classes}"));
    }
    let mut seen: Vec<usize> = index
        .iter()
        .map(|&i| usize::try_from(i).unwrap_or(usize::MAX))
        .chain(failed.iter().map(|f| f.0))
        .collect();
    seen.sort_unstable();
    if start > end || seen.len() != end - start || seen.iter().zip(start..).any(|(&a, b)| a != b) {
        return Err(format!(
            "its rows and failures do not cover samples {start}..{end} once each"
        ));
    }
    if index.windows(2).any(|w| w[0] >= w[1]) {
        return Err("its rows are not in sample order".into());
    }
    Ok(Chunk {
        start,
        end,
        index: index.iter().map(|&i| i as usize).collect(),
        labels,
        logits,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(start: usize, end: usize, failed: &[usize]) -> Chunk {
        let mut c = Chunk {
            start,
            end,
            ..Chunk::default()
        };
        for i in start..end {
            if failed.contains(&i) {
                c.failed.push((i, format!("bad {i}")));
            } else {
                c.index.push(i);
                c.labels.push((i % 2) as i64);
                c.logits.extend([i as f32, -(i as f32)]);
            }
        }
        c
    }

    #[test]
    fn chunks_come_back_in_order_and_a_resume_must_be_the_same_run() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("out.safetensors");
        let run = serde_json::json!({"model": "m", "batch": 4});
        let (p, old) = Partial::begin(&target, &run, 2, false).unwrap();
        assert!(old.is_empty());
        assert_eq!(p.dir(), d.path().join("out.safetensors.partial"));
        let (a, b) = (chunk(0, 4, &[]), chunk(4, 8, &[5]));
        p.append(&a).unwrap();
        p.append(&b).unwrap();

        // Without --resume the progress is never overwritten.
        let e = Partial::begin(&target, &run, 2, false).unwrap_err();
        assert!(e.to_string().contains("8 images done"), "{e}");
        assert!(e.to_string().contains("--resume"), "{e}");
        // Another batch size is another run, named by its field.
        let other = serde_json::json!({"model": "m", "batch": 8});
        let e = Partial::begin(&target, &other, 2, true).unwrap_err();
        assert!(e.to_string().contains("batch was 4, now 8"), "{e}");
        let (p, got) = Partial::begin(&target, &run, 2, true).unwrap();
        assert_eq!(got, vec![a, b]);
        p.finish().unwrap();
        assert!(!d.path().join("out.safetensors.partial").exists());
    }

    #[test]
    fn a_gap_or_a_damaged_chunk_is_refused_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("out.safetensors");
        let run = serde_json::json!({});
        let (p, _) = Partial::begin(&target, &run, 2, false).unwrap();
        p.append(&chunk(0, 4, &[])).unwrap();
        p.append(&chunk(8, 12, &[])).unwrap();
        let e = Partial::begin(&target, &run, 2, true).unwrap_err();
        assert!(e.to_string().contains("chunk-000000000008"), "{e}");
        assert!(e.to_string().contains("end at 4"), "{e}");

        std::fs::write(p.dir().join("chunk-000000000008.safetensors"), b"junk").unwrap();
        let e = Partial::begin(&target, &run, 2, true).unwrap_err();
        assert!(e.to_string().contains("not a safetensors file"), "{e}");

        // A chunk whose rows do not account for its range.
        let mut c = chunk(4, 8, &[]);
        c.failed.push((5, "twice".into()));
        std::fs::remove_file(p.dir().join("chunk-000000000008.safetensors")).unwrap();
        p.append(&c).unwrap();
        let e = Partial::begin(&target, &run, 2, true).unwrap_err();
        assert!(e.to_string().contains("once each"), "{e}");
    }
}
