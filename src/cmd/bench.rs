//! `committee bench`: forward-pass latency and throughput per (model, backend, batch), with
//! random weights (speed does not depend on the values).

use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::{Distribution, Tensor};
use committee_ops::backend::BackendKind;
use committee_zoo::CommonOptions;
use committee_zoo::registry;
use committee_zoo::weights::{LoadOptions, load, random_model};
use serde_json::json;

use crate::util::device;

#[derive(clap::Args)]
pub struct Args {
    /// Comma-separated registry names.
    #[arg(long, value_delimiter = ',', required = true)]
    model: Vec<String>,
    /// Comma-separated backends.
    #[arg(long, value_delimiter = ',', default_value = "flex")]
    backend: Vec<BackendKind>,
    /// Comma-separated precisions (f32; bf16 on flex; f16 on GPU backends): each row is
    /// timed in each, side by side (see `committee eval --help`).
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    dtype: Vec<committee_ops::precision::Dtype>,
    /// Comma-separated batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Input resolution (default: the model's eval size).
    #[arg(long)]
    img_size: Option<usize>,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// CPU threads for flex/ndarray (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Optional checkpoint (else random weights).
    #[arg(long)]
    weights: Option<std::path::PathBuf>,
    /// Keep BatchNorm as separate layers (by default it is folded into the convolutions).
    #[arg(long)]
    no_fold_bn: bool,
    /// committee's flex kernels to use, in place of Burn's ops: any of act, depthwise, gemm
    /// (dense convolutions), linear, attention (ViT), maxpool, train (depthwise, 1x1 and
    /// dense convolutions, BatchNorm, linear layers, LayerNorm, attention, squeeze-excite and
    /// max pooling with their own backward, for --train), batch (a model's
    /// batch split over the threads, one part per thread), or all, or none (to measure what
    /// each changes).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    flex_kernels: Vec<String>,
    /// Time a training step instead (forward, backward, SGD momentum update; BN in train mode).
    #[arg(long)]
    train: bool,
    /// Input channels (1 for grayscale data such as Fashion-MNIST).
    #[arg(long, default_value_t = 3)]
    in_chans: usize,
    /// Classifier outputs.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Also break the forward time down by kind of layer (extra passes, after the timed ones);
    /// with `--train`, the step: each kind's forward, the backward passes of committee's
    /// training ops by kind, and the optimiser step.
    #[arg(long)]
    profile: bool,
    /// Time the models in turn, one call each per round (A, B, C, A, B, ...), as the stages
    /// of a live cascade run: each call finds the caches holding the other models' weights and
    /// activations, not its own. For cost tables of cascades of small models, where that
    /// difference shows (docs/committees.md, "Small models").
    #[arg(long, conflicts_with_all = ["train", "profile"])]
    interleave: bool,
    /// Drive the kernels from the main thread, as before every command ran on a pool worker
    /// (to time what that change buys; see `util::on_pool`).
    #[arg(long)]
    from_main_thread: bool,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    #[arg(long)]
    csv: bool,
}

/// Peak resident memory of this process in MiB (Linux), the CPU backends' peak.
fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// MiB the device's allocator holds (GPU backends; `None` where the backend does not say).
/// Its pools keep pages for reuse, so after a row it is that row's high-water mark.
fn device_mem_mb(device: &burn::tensor::Device) -> Option<f64> {
    device
        .memory_pool_usage()
        .map(|u| u.bytes_reserved as f64 / (1024.0 * 1024.0))
}

/// One result row from the timings (ms) of the measured iterations.
#[allow(clippy::too_many_arguments)]
fn row(
    a: &Args,
    name: &str,
    b: usize,
    img: usize,
    gmacs: f64,
    mut times: Vec<f64>,
    first_ms: f64,
    sel: &committee_ops::backend::Selected,
    mode: &str,
) -> serde_json::Value {
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let (p50, p95) = (pct(0.5), pct(0.95));
    let backend = sel.kind;
    let row = json!({
        "model": name, "backend": backend.to_string(), "batch": b, "img_size": img,
        "dtype": committee_ops::precision::describe(),
        "mode": mode, "p50_ms": p50, "p95_ms": p95, "img_per_s": b as f64 / (p50 / 1e3),
        "gmacs_per_s": gmacs * b as f64 / (p50 / 1e3), "device": sel.adapter,
        "software_adapter": sel.software, "peak_rss_mb": peak_rss_mb(),
        "device_mem_mb": device_mem_mb(&sel.device),
        // The first call: kernel compilation and autotuning on wgpu/cuda (cached between runs).
        "first_ms": first_ms,
        // CPU threads (the run's rayon pool); a cost table matches rows to a run by it.
        "threads": committee_ops::backend::is_cpu(&sel.device).then(rayon::current_num_threads),
        // The host's CPU and the kernels chosen on it (`backend::host`): hosts change.
        "host": committee_ops::backend::host(),
    });
    if !a.json && !a.csv {
        eprintln!(
            "{name:24} {backend:8} {:14} {mode:7} b={b:<4} {img}px  p50 {p50:9.2} ms  p95 {p95:9.2} ms  {:8.2} img/s  {:8.2} GMAC/s",
            committee_ops::precision::describe(),
            row["img_per_s"].as_f64().unwrap_or(0.0),
            row["gmacs_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    row
}

/// Runs `step` `warmup` times and then until `iters` of its calls count, threading `state`
/// (a model being trained) through it: the milliseconds of the counted calls, of the very
/// first call (compilation and autotuning on GPU backends), how many timed calls did not
/// count, and the state after the last call. `step` says whether a call counts: an f16
/// training step the loss scale skipped is not a step (it costs a forward and backward but
/// updates nothing), so it is retaken, at most `iters + 8` times, rather than averaged into
/// the steps.
///
/// The clock is read after `device.sync()`: on wgpu, reading the logits back returned in a
/// few ms while the forward itself kept the H100 busy for 1.7 s (seen 2026-11-24: 100
/// iterations "at 4.6 ms" took 180 s), so without it the median times only the submission.
fn timed<S>(
    (warmup, iters): (usize, usize),
    device: &burn::tensor::Device,
    mut state: S,
    mut step: impl FnMut(S) -> (S, bool),
) -> (Vec<f64>, f64, usize, S) {
    let mut times = Vec::with_capacity(iters);
    let mut first_ms = 0.0;
    let mut uncounted = 0;
    let mut calls = 0;
    while times.len() < iters && uncounted < iters + 8 {
        let ((next, counts), ms) = time_once(device, || step(state));
        state = next;
        if calls == 0 {
            first_ms = ms;
        }
        if calls >= warmup {
            if counts {
                times.push(ms);
            } else {
                uncounted += 1;
            }
        }
        calls += 1;
    }
    (times, first_ms, uncounted, state)
}

/// `f()` and its milliseconds up to the device's `sync` (see [`timed`] for why the sync).
fn time_once<R>(device: &burn::tensor::Device, f: impl FnOnce() -> R) -> (R, f64) {
    let t0 = Instant::now();
    let r = f();
    // A failed sync means the device is gone; the next call reports it.
    let _ = device.sync();
    (r, t0.elapsed().as_secs_f64() * 1e3)
}

/// Times training steps: forward (BN in train mode), cross-entropy, backward, and an SGD
/// momentum update, as the trainer runs them. GMAC/s counts the forward MACs only.
fn train_row(
    a: &Args,
    name: &str,
    spec: &registry::ModelSpec,
    img: usize,
    b: usize,
    sel: &committee_ops::backend::Selected,
) -> Result<serde_json::Value> {
    use burn::tensor::{Int, TensorData};
    use committee_train::mixed::{self, LossScale};
    let ad = sel.device.clone().autodiff();
    let opts = CommonOptions {
        num_classes: a.num_classes,
        in_chans: a.in_chans,
        ..Default::default()
    };
    let model = random_model(spec, &opts, [img; 2], &ad);
    let mut optim = committee_train::trainer::timing_sgd();
    let x = Tensor::<4>::random(
        [b, a.in_chans, img, img],
        Distribution::Normal(0.0, 1.0),
        &ad,
    );
    let labels: Vec<i64> = (0..b).map(|i| (i % a.num_classes) as i64).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &ad);
    // `--dtype f16`: mixed precision as the trainer runs it (f16 view, loss scaling).
    let mut scale = committee_ops::precision::gpu_float(&ad).map(|_| LossScale::default());
    let mut one = |model: committee_zoo::Model, scale: &mut Option<LossScale>| {
        let logits = mixed::forward(&model, x.clone(), scale.as_ref());
        let loss = committee_train::loss::cross_entropy(logits, y.clone(), 0.0);
        let grads = mixed::grads(loss.clone(), &model, scale.as_mut());
        // Reading the loss back waits for the step to finish.
        let _ = loss.into_data();
        match grads {
            Some(grads) => {
                let step = || optim.step(0.01, model, grads);
                (committee_ops::profile::host("optimizer step", step), true)
            }
            None => (model, false),
        }
    };
    // f16: steps until the loss scale has come down far enough for one to be taken (each
    // overflow halves it from 2^16), so that the first timed steps are not all skipped ones.
    let mut model = model;
    if scale.is_some() {
        for _ in 0..24 {
            let (next, taken) = one(model, &mut scale);
            model = next;
            if taken {
                break;
            }
        }
    }
    // A step skipped later (the updated weights can overflow again) is retaken, not timed.
    let (times, first_ms, skipped, model) =
        timed((a.warmup, a.iters), &ad, model, |m| one(m, &mut scale));
    if times.is_empty() {
        anyhow::bail!(
            "{name} b={b}: no f16 step was taken: each overflowed f16 ({skipped} skipped by the loss scale, now {}); try --dtype f32",
            scale.map_or(0.0, |s| s.scale)
        );
    }
    if times.len() < a.iters {
        eprintln!(
            "warning: {name} b={b}: only {} of {} f16 steps were taken ({skipped} skipped by the loss scale, now {})",
            times.len(),
            a.iters,
            scale.map_or(0.0, |s| s.scale)
        );
    }
    let gmacs = spec.arch.macs([img; 2], a.in_chans, a.num_classes) as f64 / 1e9;
    let mut r = row(a, name, b, img, gmacs, times, first_ms, sel, "train");
    // Steps the loss scale skipped and the bench retook (f16 only).
    r["skipped_steps"] = skipped.into();
    if a.profile {
        // The steps `timed` counts, again, profiled (a step the loss scale skips counts too).
        let iters = a.iters.max(1);
        r["profile"] = profiled(a, iters, || {
            let mut model = model;
            for _ in 0..iters {
                model = one(model, &mut scale).0;
            }
        });
    }
    Ok(r)
}

/// Per-kind shares of the forward time, from `iters` profiled passes (see `zoo::profile`).
fn profile_forward(a: &Args, model: &committee_zoo::Model, x: &Tensor<4>) -> serde_json::Value {
    let iters = a.iters.max(1);
    profiled(a, iters, || {
        for _ in 0..iters {
            let _ = model.forward(x.clone()).into_data();
        }
    })
}

/// Per-kind shares of `run`'s time (`iters` passes or steps), printed unless `--json` or
/// `--csv`, and as JSON rows.
fn profiled(a: &Args, iters: usize, run: impl FnOnce()) -> serde_json::Value {
    use committee_ops::profile;
    profile::reset();
    profile::set_enabled(true);
    let t0 = Instant::now();
    run();
    let wall = t0.elapsed().as_secs_f64() / iters as f64;
    profile::set_enabled(false);
    let mut kinds: Vec<_> = profile::totals().into_iter().collect();
    kinds.sort_by(|x, y| y.1.secs.total_cmp(&x.1.secs));
    let tracked: f64 = kinds.iter().map(|(_, s)| s.secs).sum::<f64>() / iters as f64;
    let mut out = Vec::new();
    let mut push = |kind: &str, secs: f64, calls: u64, macs: u64| {
        let gmacs_per_s = (macs > 0 && secs > 0.0).then(|| macs as f64 / 1e9 / secs);
        if !a.json && !a.csv {
            eprintln!(
                "    {kind:32} {:5} calls {:9.2} ms {:5.1} %{}",
                calls,
                secs * 1e3,
                100.0 * secs / wall,
                gmacs_per_s
                    .map(|g| format!("  {g:7.1} GMAC/s"))
                    .unwrap_or_default()
            );
        }
        out.push(json!({
            "kind": kind, "calls": calls, "ms": secs * 1e3, "share": secs / wall,
            "macs": macs, "gmacs_per_s": gmacs_per_s,
        }));
    };
    let n = iters as u64;
    for (kind, s) in &kinds {
        push(kind, s.secs / iters as f64, s.calls / n, s.macs / n);
    }
    // Reshapes, the input copy and the read-back: whatever ran outside every span.
    push("other (outside spans)", (wall - tracked).max(0.0), 0, 0);
    json!(out)
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(a.iters >= 1, "--iters must be at least 1");
    anyhow::ensure!(!a.batch.contains(&0), "--batch sizes must be at least 1");
    if a.from_main_thread {
        return measure(a);
    }
    crate::util::on_pool(move || measure(a))
}

fn measure(a: Args) -> Result<()> {
    {
        use committee_ops::{Kernel, set_enabled};
        let mut on = Vec::new();
        for k in &a.flex_kernels {
            match k.as_str() {
                "all" => on.extend(Kernel::ALL),
                "none" => {}
                _ => on.push(
                    Kernel::ALL
                        .into_iter()
                        .find(|x| x.name() == k)
                        .with_context(|| {
                            let names: Vec<_> = Kernel::ALL.iter().map(|k| k.name()).collect();
                            format!(
                                "unknown flex kernel '{k}' ({}, all, none)",
                                names.join(", ")
                            )
                        })?,
                ),
            }
        }
        set_enabled(&on);
    }
    let mut rows = Vec::new();
    for backend in &a.backend {
        let sel = device(*backend)?;
        for &dtype in &a.dtype {
            crate::util::precision(dtype, &sel, a.train)?;
            rows.extend(backend_rows(&a, &sel)?);
        }
    }
    print_rows(&a, &rows)
}

/// The rows of every model and batch on one backend, at the precision set.
fn backend_rows(
    a: &Args,
    sel: &committee_ops::backend::Selected,
) -> Result<Vec<serde_json::Value>> {
    if a.interleave {
        return interleaved_rows(a, sel);
    }
    let mut rows = Vec::new();
    for name in &a.model {
        let spec = registry::get(name).with_context(|| format!("unknown model '{name}'"))?;
        let img = a.img_size.unwrap_or(spec.eval.img_size);
        if a.train {
            for &b in &a.batch {
                // Free the pages earlier rows left, so device_mem_mb is this row's.
                sel.device.memory_cleanup();
                rows.push(train_row(a, name, &spec, img, b, sel)?);
            }
            continue;
        }
        let model = bench_model(a, name, &spec, img, sel)?;
        let gmacs = spec.arch.macs([img; 2], a.in_chans, a.num_classes) as f64 / 1e9;
        for &b in &a.batch {
            sel.device.memory_cleanup();
            let x = Tensor::<4>::random(
                [b, a.in_chans, img, img],
                Distribution::Normal(0.0, 1.0),
                &sel.device,
            );
            // `timed` syncs the device after each call: the whole forward is timed.
            let (times, first_ms, _, ()) = timed((a.warmup, a.iters), &sel.device, (), |()| {
                let _ = model.forward(x.clone()).into_data();
                ((), true)
            });
            let mut r = row(a, name, b, img, gmacs, times, first_ms, sel, "forward");
            if a.profile {
                r["profile"] = profile_forward(a, &model, &x);
            }
            rows.push(r);
        }
    }
    Ok(rows)
}

/// `name` at `img` px as the rows time it: `--weights`, or random weights drawn as timm
/// draws them; BatchNorm folded unless `--no-fold-bn`.
fn bench_model(
    a: &Args,
    name: &str,
    spec: &registry::ModelSpec,
    img: usize,
    sel: &committee_ops::backend::Selected,
) -> Result<committee_zoo::Model> {
    Ok(match &a.weights {
        Some(w) => {
            let opts = LoadOptions {
                img_size: Some([img; 2]),
                fold_bn: !a.no_fold_bn,
                ..Default::default()
            };
            load(name, w, &opts, &sel.device)?.model
        }
        None => {
            let opts = CommonOptions {
                num_classes: a.num_classes,
                in_chans: a.in_chans,
                ..Default::default()
            };
            let m = random_model(spec, &opts, [img; 2], &sel.device);
            let m = if a.no_fold_bn { m } else { m.fold_batchnorm() };
            m.in_precision(&sel.device)
        }
    })
}

/// `--interleave`: per batch size, every model called once per round in the order given,
/// each call timed apart; one row per model and batch (marked `"interleaved": true`).
fn interleaved_rows(
    a: &Args,
    sel: &committee_ops::backend::Selected,
) -> Result<Vec<serde_json::Value>> {
    let mut models = Vec::new();
    for name in &a.model {
        let spec = registry::get(name).with_context(|| format!("unknown model '{name}'"))?;
        let img = a.img_size.unwrap_or(spec.eval.img_size);
        let gmacs = spec.arch.macs([img; 2], a.in_chans, a.num_classes) as f64 / 1e9;
        models.push((name, img, gmacs, bench_model(a, name, &spec, img, sel)?));
    }
    let mut rows = Vec::new();
    for &b in &a.batch {
        sel.device.memory_cleanup();
        let inputs: Vec<Tensor<4>> = models
            .iter()
            .map(|(_, img, _, _)| {
                let shape = [b, a.in_chans, *img, *img];
                Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &sel.device)
            })
            .collect();
        let mut times = vec![Vec::with_capacity(a.iters); models.len()];
        let mut first = vec![0.0; models.len()];
        for i in 0..a.warmup + a.iters {
            for (k, ((_, _, _, model), x)) in models.iter().zip(&inputs).enumerate() {
                let (_, ms) = time_once(&sel.device, || model.forward(x.clone()).into_data());
                if i == 0 {
                    first[k] = ms;
                }
                if i >= a.warmup {
                    times[k].push(ms);
                }
            }
        }
        for (k, (name, img, gmacs, _)) in models.iter().enumerate() {
            let t = std::mem::take(&mut times[k]);
            let mut r = row(a, name, b, *img, *gmacs, t, first[k], sel, "forward");
            r["interleaved"] = json!(true);
            rows.push(r);
        }
    }
    Ok(rows)
}

fn print_rows(a: &Args, rows: &[serde_json::Value]) -> Result<()> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else if a.csv {
        println!(
            "model,backend,dtype,batch,img_size,p50_ms,p95_ms,img_per_s,gmacs_per_s,device,host"
        );
        for r in rows {
            println!(
                "{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},\"{}\",\"{}\"",
                r["model"].as_str().unwrap_or(""),
                r["backend"].as_str().unwrap_or(""),
                r["dtype"].as_str().unwrap_or(""),
                r["batch"],
                r["img_size"],
                r["p50_ms"].as_f64().unwrap_or(0.0),
                r["p95_ms"].as_f64().unwrap_or(0.0),
                r["img_per_s"].as_f64().unwrap_or(0.0),
                r["gmacs_per_s"].as_f64().unwrap_or(0.0),
                r["device"].as_str().unwrap_or(""),
                r["host"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::timed;

    /// Calls that do not count (skipped f16 steps) are retaken after the warmup and never
    /// timed; a step that never counts gives up after `iters + 8` retakes.
    #[test]
    fn uncounted_calls_are_retaken_not_timed() {
        let device = committee_ops::backend::cpu_device();
        // Calls 0-1 warm up (call 1 does not count, and need not); 3 and 4 are retaken.
        let skip = [1, 3, 4];
        let (times, _, uncounted, _) =
            timed((2, 3), &device, 0usize, |i| (i + 1, !skip.contains(&i)));
        assert_eq!((times.len(), uncounted), (3, 2));
        let mut calls = 0;
        let (times, _, uncounted, ()) = timed((1, 3), &device, (), |()| {
            calls += 1;
            ((), false)
        });
        assert_eq!((times.len(), uncounted, calls), (0, 11, 12));
    }
}
