//! Command-line arguments shared by several commands, parsed and checked once.

use committee_data::eval_config::Interpolation;
use committee_data::transform::EvalTransform;

/// Preprocessing overrides shared by the commands that read images.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PreprocessArgs {
    /// Crop size (default: the model's eval size).
    #[arg(long, value_parser = positive)]
    pub img_size: Option<usize>,
    /// Resize the shorter side to floor(img_size / crop_pct); in (0, 1].
    #[arg(long, value_parser = crop_pct)]
    pub crop_pct: Option<f64>,
    /// bicubic or bilinear.
    #[arg(long)]
    pub interpolation: Option<Interpolation>,
    /// Three comma-separated values, e.g. 0.5,0.5,0.5.
    #[arg(long, value_parser = mean)]
    pub mean: Option<[f64; 3]>,
    /// Three comma-separated values, each above 0.
    #[arg(long, value_parser = std_dev)]
    pub std: Option<[f64; 3]>,
    /// torchvision style: resize the shorter side to exactly this (then crop img_size).
    #[arg(long, value_parser = positive)]
    pub resize_size: Option<usize>,
}

// One parser per kind of flag, so every command checks a value the same way.

/// A count that must be at least 1 (batch sizes, workers, image sizes, epochs).
pub fn positive(s: &str) -> Result<usize, String> {
    positive_u64(s).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
}

/// A large count that must be at least 1 (pixel limits).
pub fn positive_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// `K/N` with `0 <= K < N` (`eval --shard`).
pub fn shard(s: &str) -> Result<[usize; 2], String> {
    committee_data::folder::parse_shard(s)
        .map(|(k, n)| [k, n])
        .map_err(|e| e.to_string())
}

/// A finite number.
fn finite(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a finite number")),
    }
}

/// A finite number for which `ok` holds; else "`v` `rule`".
fn finite_where(s: &str, ok: impl Fn(f64) -> bool, rule: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if ok(v) {
        Ok(v)
    } else {
        Err(format!("{v} {rule}"))
    }
}

/// A finite number above 0 (GMACs budgets). Training's own values (lr, weight decay, ...) are
/// checked by `TrainConfig::validate`, which also checks config files.
pub fn positive_f64(s: &str) -> Result<f64, String> {
    finite_where(s, |v| v > 0.0, "must be above 0")
}

/// A fraction in [0, 1] (cascade thresholds).
pub fn unit(s: &str) -> Result<f64, String> {
    finite_where(s, |v| (0.0..=1.0).contains(&v), "is outside [0, 1]")
}

/// A top-1 target in percent: [0, 100].
pub fn percent(s: &str) -> Result<f64, String> {
    finite_where(s, |v| (0.0..=100.0).contains(&v), "is not in [0, 100]")
}

/// timm's crop fraction: in (0, 1].
pub fn crop_pct(s: &str) -> Result<f64, String> {
    finite_where(s, |v| v > 0.0 && v <= 1.0, "is not in (0, 1]")
}

/// Three comma-separated finite numbers.
fn triple(s: &str) -> Result<[f64; 3], String> {
    let v = s.split(',').map(finite).collect::<Result<Vec<_>, _>>()?;
    <[f64; 3]>::try_from(v.as_slice())
        .map_err(|_| format!("'{s}': give three comma-separated values"))
}

/// Three comma-separated means (any finite values).
pub fn mean(s: &str) -> Result<[f64; 3], String> {
    triple(s)
}

/// Three comma-separated standard deviations, each above 0 (the transform divides by them).
pub fn std_dev(s: &str) -> Result<[f64; 3], String> {
    let v = triple(s)?;
    if v.iter().all(|&x| x > 0.0) {
        Ok(v)
    } else {
        Err(format!("'{s}': every std must be above 0"))
    }
}

impl PreprocessArgs {
    /// The model's transform with the flags given on top.
    pub fn apply(&self, mut t: EvalTransform) -> EvalTransform {
        if let Some(s) = self.img_size {
            t.img_size = s;
        }
        if let Some(c) = self.crop_pct {
            t.crop_pct = c;
        }
        if let Some(i) = self.interpolation {
            t.interpolation = i;
        }
        if let Some(m) = self.mean {
            t.mean = m;
        }
        if let Some(s) = self.std {
            t.std = s;
        }
        if self.resize_size.is_some() {
            t.resize = self.resize_size;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_are_checked_by_kind() {
        assert_eq!(positive("8"), Ok(8));
        assert!(positive("0").is_err() && positive("-1").is_err() && positive("x").is_err());
        assert_eq!(crop_pct("1"), Ok(1.0));
        for bad in ["0", "-0.5", "1.01", "nan", "inf"] {
            assert!(crop_pct(bad).is_err(), "{bad}");
        }
        assert_eq!(mean("0.5,0.5,0.5"), Ok([0.5; 3]));
        assert_eq!(std_dev("0.229, 0.224, 0.225"), Ok([0.229, 0.224, 0.225]));
        for bad in ["0.5,0.5", "0.5,0.5,0.5,0.5", "a,b,c", "0.5,nan,0.5"] {
            assert!(mean(bad).is_err(), "{bad}");
        }
        assert!(std_dev("0.2,0,0.2").is_err() && std_dev("0.2,-1,0.2").is_err());
        assert!(positive_f64("0").is_err() && positive_f64("1e-3") == Ok(1e-3));
        assert!(unit("1.5").is_err() && unit("-0.1").is_err() && unit("0.83") == Ok(0.83));
        assert!(percent("100.5").is_err() && percent("76.1") == Ok(76.1));
    }
}
