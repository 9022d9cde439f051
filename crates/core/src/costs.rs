//! Measured time as the search's cost: tables from `committee bench --json`.
//!
//! A cost table is what `committee bench --model A,B --batch 1,2,4,8,16,32 --json` prints: one
//! row per (model, img_size, backend, batch) with its median batch time `p50_ms` (and the
//! `device`, `threads` and `dtype` it ran with). Several files merge into one table. The
//! search matches a cache to rows by model and img_size, and to the run by backend, threads and
//! dtype (a row without one is f32, as every table before `--dtype` was).
//!
//! Why time and not GMACs: on a CPU, depthwise layers run at a fraction of a dense
//! convolution's GMAC/s, and a cascade's later stages see smaller batches (only the undecided
//! images reach them), which cost more per image; GMACs see neither.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CostError {
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("cannot read the cost table {file}: {reason}")]
    Io { file: String, reason: String },
    #[error(
        "the cost table has no row for {model} at {img_size} px{on} (it has: {have}); run `committee bench --model {model} --img-size {img_size} --batch 1,2,4,8,16,32 --json` and add its output"
    )]
    Missing {
        model: String,
        img_size: usize,
        on: String,
        have: String,
    },
    #[error(
        "the cost table has two rows for {model} at {img_size} px, batch {batch}{on}: give the tables of one device (or pick one with --cost-backend / --cost-threads / --cost-dtype)"
    )]
    Duplicate {
        model: String,
        img_size: usize,
        batch: usize,
        on: String,
    },
}

/// One measured row.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    pub model: String,
    pub img_size: usize,
    pub backend: String,
    pub device: String,
    pub threads: Option<usize>,
    /// The precision the row ran in (`f32`, `bf16`): the first word of bench's `dtype`
    /// (`bf16 (amx)`), `f32` when the row has none.
    pub dtype: String,
    pub batch: usize,
    /// Median time of one batch.
    pub p50_ms: f64,
}

/// Every row of the cost files given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostTable {
    pub rows: Vec<CostRow>,
}

/// Which rows apply to this run: a backend, a thread count and a precision, when given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOn {
    pub backend: Option<String>,
    pub threads: Option<usize>,
    pub dtype: Option<String>,
}

impl RunOn {
    fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(b) = &self.backend {
            s += &format!(" on {b}");
        }
        if let Some(t) = self.threads {
            s += &format!(" with {t} threads");
        }
        if let Some(d) = &self.dtype {
            s += &format!(" in {d}");
        }
        s
    }
}

impl CostTable {
    /// The table of every file given (each `bench --json` output), merged.
    pub fn read(paths: &[std::path::PathBuf]) -> Result<Self, CostError> {
        let mut table = Self::default();
        for p in paths {
            let file = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| CostError::Io {
                file: file.clone(),
                reason: e.to_string(),
            })?;
            table.add_json(&text, &file)?;
        }
        Ok(table)
    }

    /// Adds the rows of one file: a JSON array of `bench --json` rows. Rows of other modes
    /// (training steps) are left out; every used field is checked.
    pub fn add_json(&mut self, text: &str, source: &str) -> Result<(), CostError> {
        let bad = |reason: String| CostError::Invalid {
            file: source.to_string(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let rows = v
            .as_array()
            .ok_or_else(|| bad("not a JSON array of `committee bench --json` rows".into()))?;
        for (i, r) in rows.iter().enumerate() {
            if r.get("mode")
                .and_then(|m| m.as_str())
                .is_some_and(|m| m != "forward")
            {
                continue;
            }
            let field = |k: &str| r.get(k).ok_or_else(|| bad(format!("row {i}: no '{k}'")));
            let text = |k: &str| -> Result<String, CostError> {
                field(k)?
                    .as_str()
                    .map(String::from)
                    .ok_or_else(|| bad(format!("row {i}: '{k}' is not a string")))
            };
            let count = |k: &str| -> Result<usize, CostError> {
                field(k)?
                    .as_u64()
                    .filter(|&n| n >= 1)
                    .map(|n| n as usize)
                    .ok_or_else(|| bad(format!("row {i}: '{k}' is not a whole number >= 1")))
            };
            let p50_ms = field("p50_ms")?
                .as_f64()
                .filter(|t| t.is_finite() && *t > 0.0)
                .ok_or_else(|| bad(format!("row {i}: 'p50_ms' is not a time above 0")))?;
            self.rows.push(CostRow {
                model: text("model")?,
                img_size: count("img_size")?,
                backend: text("backend")?,
                device: r
                    .get("device")
                    .and_then(|d| d.as_str())
                    .unwrap_or("")
                    .into(),
                threads: match r.get("threads") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(_) => Some(count("threads")?),
                },
                dtype: match r.get("dtype") {
                    None | Some(serde_json::Value::Null) => "f32".into(),
                    Some(_) => text("dtype")?
                        .split_whitespace()
                        .next()
                        .ok_or_else(|| bad(format!("row {i}: 'dtype' is empty")))?
                        .to_string(),
                },
                batch: count("batch")?,
                p50_ms,
            });
        }
        Ok(())
    }

    /// The time curve of `model` at `img_size` on the run `on` selects.
    pub fn curve(&self, model: &str, img_size: usize, on: &RunOn) -> Result<TimeCurve, CostError> {
        let rows: Vec<&CostRow> = self
            .rows
            .iter()
            .filter(|r| r.model == model && r.img_size == img_size)
            .filter(|r| on.backend.as_ref().is_none_or(|b| *b == r.backend))
            // Rows that do not say (older tables, GPUs) match any thread count.
            .filter(|r| {
                on.threads
                    .is_none_or(|t| r.threads.is_none_or(|rt| rt == t))
            })
            .filter(|r| on.dtype.as_ref().is_none_or(|d| *d == r.dtype))
            .collect();
        if rows.is_empty() {
            let mut have: Vec<String> = self
                .rows
                .iter()
                .map(|r| format!("{}@{} {} {}", r.model, r.img_size, r.backend, r.dtype))
                .collect();
            have.sort();
            have.dedup();
            return Err(CostError::Missing {
                model: model.into(),
                img_size,
                on: on.describe(),
                have: if have.is_empty() {
                    "nothing".into()
                } else {
                    have.join(", ")
                },
            });
        }
        let mut points: Vec<(usize, f64)> = rows.iter().map(|r| (r.batch, r.p50_ms)).collect();
        points.sort_by_key(|p| p.0);
        if let Some(w) = points.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(CostError::Duplicate {
                model: model.into(),
                img_size,
                batch: w[0].0,
                on: on.describe(),
            });
        }
        Ok(TimeCurve { points })
    }
}

/// Measured batch times of one model: `(batch, ms per batch)`, by batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeCurve {
    pub points: Vec<(usize, f64)>,
}

impl TimeCurve {
    /// Milliseconds per image at a (possibly fractional) batch size `b`: the batch time is
    /// interpolated linearly between the measured batch sizes (exact when a batch costs a fixed
    /// overhead plus a per-image time), then divided by `b`. Outside the measured range the
    /// per-image time of the nearest end is used (measure from batch 1 to the largest batch).
    pub fn ms_per_img(&self, b: f64) -> f64 {
        let (first, last) = (self.points[0], self.points[self.points.len() - 1]);
        if b <= first.0 as f64 {
            return first.1 / first.0 as f64;
        }
        if b >= last.0 as f64 {
            return last.1 / last.0 as f64;
        }
        let k = self.points.partition_point(|p| (p.0 as f64) <= b);
        let ((b0, t0), (b1, t1)) = (self.points[k - 1], self.points[k]);
        let t = t0 + (b - b0 as f64) * (t1 - t0) / (b1 - b0) as f64;
        t / b
    }

    /// Milliseconds of one call at batch `b` (0 for no call).
    fn call_ms(&self, b: usize) -> f64 {
        if b == 0 {
            0.0
        } else {
            self.ms_per_img(b as f64) * b as f64
        }
    }

    /// Total milliseconds of a stage that `reach` of `n` images reach, run in batches of
    /// `batch`: each batch hands it `X` images, `X ~ Binomial(batch, reach / n)`, and a call
    /// costs what a batch of `X` costs (nothing when `X` is 0), so the stage costs
    /// `n / batch * E[t(X)]`. Why the distribution and not its mean: on a CPU whose kernels
    /// split a batch by images, 3 images cost what 4 do (MobileNetV2 at 56 px on 2 threads:
    /// 2.44 ms at batch 3, 2.40 at 4, 1.35 at 2), so a table with every batch size and the
    /// spread of `X` predict what the mean alone underestimates.
    pub fn stage_ms(&self, batch: usize, reach: usize, n: usize) -> f64 {
        if reach == 0 || n == 0 || batch == 0 {
            return 0.0;
        }
        let p = (reach as f64 / n as f64).min(1.0);
        let batches = n as f64 / batch as f64;
        if p >= 1.0 {
            return batches * self.call_ms(batch);
        }
        // ln C(batch, x) built up term by term; pmf(x) in logs (no underflow of (1-p)^batch).
        let (lp, lq) = (p.ln(), (1.0 - p).ln());
        let mut ln_choose = 0.0;
        let mut expected = 0.0;
        for x in 1..=batch {
            ln_choose += ((batch - x + 1) as f64).ln() - (x as f64).ln();
            let pmf = (ln_choose + x as f64 * lp + (batch - x) as f64 * lq).exp();
            expected += pmf * self.call_ms(x);
        }
        batches * expected
    }
}

/// Total cost of a cascade whose stage `j` saw `exits[j]` images leave there: the sum over
/// stages of `stage(j, r_j)`, `r_j` the images that reached stage `j`.
pub fn cascade_total(exits: &[usize], mut stage: impl FnMut(usize, usize) -> f64) -> f64 {
    let mut reach: usize = exits.iter().sum();
    let mut total = 0.0;
    for (j, &e) in exits.iter().enumerate() {
        total += stage(j, reach);
        reach -= e;
    }
    total
}

/// Predicted milliseconds per image of a cascade run in batches of `batch` whose stage `j`
/// (curve `curves[j]`) saw `exits[j]` images leave there: each stage costs
/// [`TimeCurve::stage_ms`] for the images that reached it.
pub fn cascade_ms_per_img(curves: &[TimeCurve], batch: usize, exits: &[usize]) -> f64 {
    let n: usize = exits.iter().sum();
    cascade_total(exits, |j, reach| curves[j].stage_ms(batch, reach, n)) / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CostTable {
        let mut t = CostTable::default();
        let rows = r#"[
          {"model": "a", "img_size": 224, "backend": "flex", "device": "cpu", "threads": 2,
           "batch": 1, "p50_ms": 10.0, "mode": "forward"},
          {"model": "a", "img_size": 224, "backend": "flex", "device": "cpu", "threads": 2,
           "batch": 4, "p50_ms": 16.0, "mode": "forward"},
          {"model": "a", "img_size": 224, "backend": "flex", "device": "cpu", "threads": 2,
           "batch": 4, "p50_ms": 99.0, "mode": "train"},
          {"model": "a", "img_size": 224, "backend": "wgpu", "device": "H100",
           "batch": 4, "p50_ms": 1.0},
          {"model": "a", "img_size": 224, "backend": "flex", "device": "cpu", "threads": 2,
           "dtype": "bf16 (amx)", "batch": 4, "p50_ms": 8.0, "mode": "forward"}
        ]"#;
        t.add_json(rows, "costs.json").unwrap();
        t
    }

    /// Batch time interpolated linearly: 10 ms at 1, 16 ms at 4, so 12 ms at 2 (6 per image),
    /// 14 ms at 3; outside, the nearest end's per-image time.
    #[test]
    fn per_image_time_between_and_beyond_the_measured_batches() {
        let on = RunOn {
            backend: Some("flex".into()),
            threads: Some(2),
            dtype: Some("f32".into()),
        };
        let c = table().curve("a", 224, &on).unwrap();
        assert_eq!(c.points, vec![(1, 10.0), (4, 16.0)]);
        assert_eq!(c.ms_per_img(1.0), 10.0);
        assert_eq!(c.ms_per_img(2.0), 6.0);
        assert_eq!(c.ms_per_img(3.0), 14.0 / 3.0);
        assert_eq!(c.ms_per_img(4.0), 4.0);
        assert_eq!(c.ms_per_img(32.0), 4.0);
        assert_eq!(c.ms_per_img(0.5), 10.0);
        // A stage reached by 100 of 400 images in batches of 2 (200 batches): a batch hands
        // it 1 image with probability 2 (1/4)(3/4) = 3/8 (10 ms) and 2 with 1/16 (12 ms),
        // none otherwise: 200 x (3.75 + 0.75) ms.
        assert!((c.stage_ms(2, 100, 400) - 900.0).abs() < 1e-9);
        // Reached by all: every batch is full, 100 x 16 ms; by none: nothing.
        assert!((c.stage_ms(4, 400, 400) - 1600.0).abs() < 1e-9);
        assert_eq!(c.stage_ms(8, 0, 400), 0.0);
        // Batches of one: a call for each image that reaches it, 10 x 10 ms.
        assert!((c.stage_ms(1, 10, 400) - 100.0).abs() < 1e-9);
        // A large batch and a stage nearly every image reaches: finite, just under full.
        let near = c.stage_ms(256, 49_999, 50_000);
        assert!(
            near.is_finite() && near <= c.stage_ms(256, 50_000, 50_000) + 1e-6,
            "{near}"
        );
    }

    /// Two stages at batch 2 over 400 images: 300 exit at the first (curve `a`, reached by
    /// all: 200 batches of 2 at 12 ms), 100 reach the second (900 ms, as above).
    #[test]
    fn a_cascade_from_its_exits() {
        let on = RunOn {
            backend: Some("flex".into()),
            threads: None,
            dtype: Some("f32".into()),
        };
        let a = table().curve("a", 224, &on).unwrap();
        let ms = cascade_ms_per_img(&[a.clone(), a], 2, &[300, 100]);
        assert!((ms - (2400.0 + 900.0) / 400.0).abs() < 1e-12, "{ms}");
    }

    #[test]
    fn rows_are_picked_by_backend_threads_and_dtype_and_missing_ones_named() {
        let t = table();
        let gpu = RunOn {
            backend: Some("wgpu".into()),
            threads: None,
            dtype: None,
        };
        assert_eq!(t.curve("a", 224, &gpu).unwrap().points, vec![(4, 1.0)]);
        // Without a backend, flex's batch 4 and wgpu's collide.
        let e = t.curve("a", 224, &RunOn::default()).unwrap_err();
        assert!(
            e.to_string().contains("two rows for a at 224 px, batch 4"),
            "{e}"
        );
        let e = t.curve("b", 224, &gpu).unwrap_err();
        assert!(
            e.to_string().contains("no row for b at 224 px on wgpu"),
            "{e}"
        );
        assert!(e.to_string().contains("a@224 flex"), "{e}");
        let e = t
            .curve(
                "a",
                224,
                &RunOn {
                    backend: Some("flex".into()),
                    threads: Some(16),
                    dtype: None,
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("with 16 threads"), "{e}");
        // f32 and bf16 rows of one model and batch: apart by dtype, together a collision.
        let flex = |dtype: Option<&str>| RunOn {
            backend: Some("flex".into()),
            threads: Some(2),
            dtype: dtype.map(String::from),
        };
        let bf16 = t.curve("a", 224, &flex(Some("bf16"))).unwrap();
        assert_eq!(bf16.points, vec![(4, 8.0)]);
        let f32 = t.curve("a", 224, &flex(Some("f32"))).unwrap();
        assert_eq!(f32.points, vec![(1, 10.0), (4, 16.0)]);
        let e = t.curve("a", 224, &flex(None)).unwrap_err();
        assert!(e.to_string().contains("--cost-dtype"), "{e}");
        let e = t.curve("a", 224, &flex(Some("f16"))).unwrap_err();
        assert!(e.to_string().contains("in f16"), "{e}");
    }

    #[test]
    fn damaged_tables_are_errors_naming_the_row() {
        let mut t = CostTable::default();
        let e = t.add_json("{}", "c.json").unwrap_err();
        assert!(e.to_string().starts_with("c.json: not a JSON array"), "{e}");
        let e = t
            .add_json(
                r#"[{"model": "a", "img_size": 224, "backend": "flex", "batch": 0, "p50_ms": 1}]"#,
                "c.json",
            )
            .unwrap_err();
        assert!(e.to_string().contains("row 0: 'batch'"), "{e}");
        let e = t
            .add_json(
                r#"[{"model": "a", "img_size": 224, "backend": "flex", "batch": 1, "p50_ms": -1}]"#,
                "c.json",
            )
            .unwrap_err();
        assert!(e.to_string().contains("'p50_ms' is not a time"), "{e}");
    }
}
