//! `committee predict`: top-K classes for images, or logits for a tensor file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use committee_data::transform::EvalTransform;
use committee_data::{decode, labels};
use committee_ops::backend::BackendKind;
use committee_zoo::weights::{LoadOptions, parse_safetensors};
use serde_json::json;

use crate::cmd::members::load_weights;
use crate::util::{device, write_atomic};

#[derive(clap::Args)]
pub struct Args {
    /// Registry name (see `committee models`).
    #[arg(long)]
    model: String,
    /// Checkpoint: timm or torchvision, .safetensors or .pth.
    #[arg(long)]
    weights: PathBuf,
    /// auto, flex, ndarray, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    backend: BackendKind,
    /// Precision: f32; bf16 on flex (the dense convolutions' and linear layers' products with
    /// bf16 operands and f32 accumulation, on AMX or AVX512-BF16; f32 where the CPU has
    /// neither); f16 on GPU backends (the whole model in half precision, logits f32).
    #[arg(long, default_value = "f32")]
    dtype: committee_ops::precision::Dtype,
    /// Number of classes to show per image.
    #[arg(long, default_value_t = 5, value_parser = crate::cmd::args::positive)]
    top: usize,
    /// Head size, when it should differ from the checkpoint's.
    #[arg(long)]
    num_classes: Option<usize>,
    #[arg(long)]
    json: bool,
    /// Read tensor `input` [N,C,H,W] (f32) from this safetensors file instead of images.
    #[arg(long, requires = "tensor_out")]
    tensor_in: Option<PathBuf>,
    /// Write `logits` and `features` here.
    #[arg(long, requires = "tensor_in")]
    tensor_out: Option<PathBuf>,
    /// Images to classify.
    images: Vec<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let sel = device(a.backend)?;
    crate::util::precision(a.dtype, &sel, false)?;
    if let (Some(input), Some(output)) = (&a.tensor_in, &a.tensor_out) {
        return tensor_mode(&a, input, output, &sel.device);
    }
    if a.images.is_empty() {
        bail!("no images given (or use --tensor-in/--tensor-out)");
    }
    let opts = LoadOptions {
        num_classes: a.num_classes,
        fold_bn: true,
        ..Default::default()
    };
    let loaded = load_weights(&a.model, &a.weights, &opts, &sel.device)?;
    let t = EvalTransform::from(&loaded.spec.eval);
    let classes = loaded.options.num_classes;
    let mut results = Vec::new();
    for path in &a.images {
        let img = decode(path)?;
        let x = Tensor::<4>::from_data(
            TensorData::new(
                t.apply_channels(&img, loaded.options.in_chans),
                [1, loaded.options.in_chans, t.img_size, t.img_size],
            ),
            &sel.device,
        );
        let probs = softmax(loaded.model.forward(x), 1)
            .into_data()
            .try_to_vec::<f32>()?;
        let mut idx: Vec<usize> = (0..probs.len()).collect();
        idx.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        let top: Vec<_> = idx
            .into_iter()
            .take(a.top)
            .map(|i| {
                let label = if classes == 1000 {
                    labels::imagenet_name(i).unwrap_or("")
                } else {
                    ""
                };
                (i, label.to_string(), probs[i])
            })
            .collect();
        results.push((path.clone(), top));
    }
    if a.json {
        let v: Vec<_> = results
            .iter()
            .map(|(p, top)| {
                json!({"image": p, "top": top.iter().map(|(i, l, pr)| json!({"class": i, "label": l, "prob": pr})).collect::<Vec<_>>()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (p, top) in results {
            println!("{}", p.display());
            for (i, l, pr) in top {
                println!("  {:>6.2}%  {:>4}  {}", pr * 100.0, i, l);
            }
        }
    }
    Ok(())
}

fn tensor_mode(a: &Args, input: &Path, output: &Path, dev: &burn::tensor::Device) -> Result<()> {
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let ck = parse_safetensors(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    let x = ck
        .tensors
        .get("input")
        .with_context(|| format!("{}: no tensor named 'input'", input.display()))?;
    let [n, c, h, w]: [usize; 4] = x.shape.clone().try_into().map_err(|_| {
        anyhow::anyhow!(
            "{}: 'input' must be [N,C,H,W], got {:?}",
            input.display(),
            x.shape
        )
    })?;
    let opts = LoadOptions {
        num_classes: a.num_classes,
        img_size: Some([h, w]),
        fold_bn: true,
        ..Default::default()
    };
    let loaded = load_weights(&a.model, &a.weights, &opts, dev)?;
    if loaded.options.in_chans != c {
        bail!(
            "{}: input has {c} channels, the model takes {}",
            input.display(),
            loaded.options.in_chans
        );
    }
    if let Some((from, to)) = loaded.pos_embed_resampled {
        eprintln!("pos_embed resampled from {from:?} to {to:?} (antialiased bicubic, as timm)");
    }
    let xt = Tensor::<4>::from_data(TensorData::new(x.data.clone(), [n, c, h, w]), dev);
    let feats = loaded.model.forward_features(xt);
    let logits = loaded.model.forward_head(feats.clone());
    let to_vec = |t: Tensor<2>| -> Result<(Vec<usize>, Vec<u8>)> {
        let shape = t.dims().to_vec();
        let data = t.into_data().try_to_vec::<f32>()?;
        Ok((shape, data.iter().flat_map(|v| v.to_le_bytes()).collect()))
    };
    let (ls, lb) = to_vec(logits)?;
    let (fs, fb) = to_vec(feats)?;
    let views = vec![
        (
            "logits",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, ls, &lb)?,
        ),
        (
            "features",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, fs, &fb)?,
        ),
    ];
    let meta: HashMap<String, String> = [("model".to_string(), a.model.clone())].into();
    let bytes = safetensors::serialize(views, Some(meta))?;
    write_atomic(output, &bytes)?;
    eprintln!("wrote {} ({} rows)", output.display(), n);
    Ok(())
}
