//! One way to load a member for inference and to run a batch through it, shared by `eval`,
//! `predict` and the live committees.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use committee_data::transform::EvalTransform;
use committee_zoo::Model;
use committee_zoo::weights::{LoadOptions, Loaded, load};

/// A member as the CLI names it: `NAME:WEIGHTS[@RES]` (`@RES` evaluates at another crop size).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberArg {
    pub model: String,
    pub weights: PathBuf,
    pub res: Option<usize>,
    /// The weights' SHA-256 a spec recorded: loading other weights is refused.
    pub sha256: Option<String>,
}

impl std::str::FromStr for MemberArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (model, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}': expected NAME:WEIGHTS[@RES]"))?;
        let (weights, res) = match rest.rsplit_once('@') {
            Some((w, r)) if !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()) => {
                let r = r
                    .parse::<usize>()
                    .map_err(|_| format!("'{s}': bad resolution '{r}'"))?;
                (w, Some(r))
            }
            _ => (rest, None),
        };
        if model.is_empty() || weights.is_empty() {
            return Err(format!("'{s}': expected NAME:WEIGHTS[@RES]"));
        }
        Ok(Self {
            model: model.to_string(),
            weights: PathBuf::from(weights),
            res,
            sha256: None,
        })
    }
}

impl std::fmt::Display for MemberArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.model, self.weights.display())?;
        match self.res {
            Some(r) => write!(f, "@{r}"),
            None => Ok(()),
        }
    }
}

/// A member loaded for inference (BatchNorm folded), with its preprocessing and cost.
pub struct Member {
    /// `model`, or `model@res` when evaluated at another resolution.
    pub name: String,
    pub model: Model,
    pub transform: EvalTransform,
    pub chans: usize,
    pub classes: usize,
    /// At the transform's resolution, with the checkpoint's channels and classes.
    pub gmacs: f64,
}

/// Loads `arg`: registry entry, the checkpoint's stored eval config (else timm's default),
/// `adjust` over that transform (command-line overrides), weights at the transform's
/// resolution, GMACs.
pub fn load_member(
    arg: &MemberArg,
    adjust: impl FnOnce(EvalTransform) -> EvalTransform,
    dev: &Device,
) -> Result<Member> {
    let spec = committee_zoo::registry::get(&arg.model)
        .with_context(|| format!("unknown model '{}'", arg.model))?;
    if let Some(want) = &arg.sha256 {
        let got = crate::util::sha256_file(&arg.weights)?;
        if &got != want {
            anyhow::bail!(
                "{}: these are not the weights the spec was made with (SHA-256 {got}, the spec records {want})",
                arg.weights.display()
            );
        }
    }
    let eval = committee_zoo::export::eval_config(&arg.weights)
        .map_err(|e| anyhow::anyhow!("{}: {e}", arg.weights.display()))?
        .unwrap_or(spec.eval);
    let mut t = adjust(EvalTransform::from(&eval));
    if let Some(r) = arg.res {
        t.img_size = r;
    }
    let opts = LoadOptions {
        img_size: Some([t.img_size; 2]),
        fold_bn: true,
        ..Default::default()
    };
    let l = load_weights(&arg.model, &arg.weights, &opts, dev)?;
    let (chans, classes) = (l.options.in_chans, l.options.num_classes);
    if chans != 1 && chans != 3 {
        anyhow::bail!(
            "{}: the checkpoint takes {chans} input channels, but images give 3 (RGB) or 1 (gray)",
            arg.weights.display()
        );
    }
    Ok(Member {
        name: match arg.res {
            Some(r) => format!("{}@{r}", arg.model),
            None => arg.model.clone(),
        },
        gmacs: l.spec.arch.macs([t.img_size; 2], chans, classes) as f64 / 1e9,
        model: l.model,
        transform: t,
        chans,
        classes,
    })
}

/// [`load`] with the CLI's context on failure.
pub fn load_weights(
    model: &str,
    weights: &Path,
    opts: &LoadOptions,
    dev: &Device,
) -> Result<Loaded> {
    load(model, weights, opts, dev)
        .with_context(|| format!("loading {} into {model}", weights.display()))
}

impl Member {
    /// Logits rows (`classes` floats each) of preprocessed inputs, one batch.
    pub fn logits(&self, inputs: &[&[f32]], dev: &Device) -> Result<Vec<f32>> {
        let s = self.transform.img_size;
        let data: Vec<f32> = inputs.iter().flat_map(|v| v.iter().copied()).collect();
        let x =
            Tensor::<4>::from_data(TensorData::new(data, [inputs.len(), self.chans, s, s]), dev);
        Ok(self.model.forward(x).into_data().try_to_vec::<f32>()?)
    }
}

/// Decoding threads by default: one per core.
pub fn num_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A run in which no image could be evaluated fails, never reports an empty success.
pub fn ensure_evaluated(evaluated: usize, data: &Path, failed: usize, total: usize) -> Result<()> {
    if evaluated == 0 {
        anyhow::bail!(
            "no image of {} could be evaluated ({failed} of {total} failed to decode)",
            data.display()
        );
    }
    Ok(())
}

/// NaN or infinite logits never count as correct; say how many images got them.
pub fn warn_nonfinite(n: usize, of: usize) {
    if n > 0 {
        eprintln!(
            "warning: {n} of {of} images got NaN or infinite logits (counted as wrong): the weights or the input are broken"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_args_parse_and_print_back() {
        let m: MemberArg = "resnet50:w/r50.safetensors@288".parse().unwrap();
        assert_eq!(
            (m.model.as_str(), m.weights.to_str(), m.res),
            ("resnet50", Some("w/r50.safetensors"), Some(288))
        );
        assert_eq!(m.to_string(), "resnet50:w/r50.safetensors@288");
        // An '@' that is not followed by digits belongs to the path.
        let m: MemberArg = "vit_base_patch16_224:a@b.safetensors".parse().unwrap();
        assert_eq!((m.weights.to_str(), m.res), (Some("a@b.safetensors"), None));
        for bad in [
            "resnet50",
            ":w",
            "resnet50:",
            "resnet50:w@99999999999999999999999",
        ] {
            assert!(bad.parse::<MemberArg>().is_err(), "{bad}");
        }
    }
}
