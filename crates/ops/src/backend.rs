//! Choosing a device by name. `Device::default()` prefers any GPU, even a software one, so
//! the zoo always chooses explicitly.

use burn::tensor::Device;

/// Backend names accepted by `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Auto,
    Flex,
    Ndarray,
    Wgpu,
    Cuda,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "flex" => Self::Flex,
            "ndarray" => Self::Ndarray,
            "wgpu" => Self::Wgpu,
            "cuda" => Self::Cuda,
            _ => {
                return Err(format!(
                    "unknown backend '{s}' (auto, flex, ndarray, wgpu, cuda)"
                ));
            }
        })
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

/// A chosen device and how to describe it to a user.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    pub kind: BackendKind,
    /// Adapter name for GPU backends, "cpu" otherwise.
    pub adapter: String,
    /// True for software GPU adapters (llvmpipe, lavapipe, SwiftShader).
    pub software: bool,
}

#[derive(Debug, thiserror::Error)]
/// Why a backend could not be used, for the CLI to report.
pub enum BackendError {
    #[error("backend '{0}' is not compiled into this build (enable the cargo feature '{0}')")]
    NotCompiled(BackendKind),
    #[error("backend '{0}' could not start: {1}")]
    Unavailable(BackendKind, String),
}

/// Resolves `kind` to a device. `auto` takes a hardware GPU through wgpu when there is one,
/// else flex.
pub fn select(kind: BackendKind) -> Result<Selected, BackendError> {
    match kind {
        BackendKind::Auto => {
            #[cfg(feature = "wgpu")]
            if let Some(sel) = hardware_wgpu() {
                return Ok(sel);
            }
            select(BackendKind::Flex)
        }
        BackendKind::Flex => Ok(cpu(Device::flex(), kind)),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)] // kept on purpose, for comparison with flex
        BackendKind::Ndarray => Ok(cpu(Device::ndarray(), kind)),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
            describe_gpu(device, kind)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => describe_gpu(Device::cuda(0usize), kind),
        #[allow(unreachable_patterns)]
        other => Err(BackendError::NotCompiled(other)),
    }
}

/// The `index`-th device of a GPU backend (`--devices`): for wgpu the `index`-th hardware GPU
/// in the order `Device::enumerate_physical` lists them, for cuda CUDA's ordinal.
pub fn select_index(kind: BackendKind, index: usize) -> Result<Selected, BackendError> {
    match kind {
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu | BackendKind::Auto => {
            let gpus = std::panic::catch_unwind(Device::enumerate_physical)
                .map_err(|e| BackendError::Unavailable(BackendKind::Wgpu, panic_text(&e)))?;
            let n = gpus.len();
            let missing = || {
                BackendError::Unavailable(
                    BackendKind::Wgpu,
                    format!("no GPU {index}: {n} hardware GPU(s) found"),
                )
            };
            let gpu = gpus.into_iter().nth(index).ok_or_else(missing)?;
            let device = gpu.devices.into_vec().into_iter().next().ok_or_else(missing)?;
            Ok(Selected {
                device,
                kind: BackendKind::Wgpu,
                adapter: gpu.name,
                software: false,
            })
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => describe_gpu(Device::cuda(index), kind),
        other => Err(BackendError::Unavailable(
            other,
            "has no numbered devices (use --devices with wgpu or cuda, or with a CPU backend for thread slots)"
                .into(),
        )),
    }
}

impl Selected {
    /// Which shader compiler a GPU device's kernels go through, and what that means for
    /// tensor cores: the `vulkan` build compiles to SPIR-V on Vulkan adapters (cooperative
    /// matrices, so f16/bf16 products can use tensor cores where the driver offers them),
    /// the default build to WGSL (no tensor cores). `None` for CPU backends.
    pub fn compiler(&self) -> Option<&'static str> {
        match self.kind {
            BackendKind::Wgpu if cfg!(feature = "vulkan") => Some(
                "SPIR-V on Vulkan adapters (cooperative matrices: tensor cores for f16 where the driver has them)",
            ),
            BackendKind::Wgpu => {
                Some("WGSL (no tensor cores; the `vulkan` build compiles to SPIR-V)")
            }
            BackendKind::Cuda => Some("CUDA"),
            _ => None,
        }
    }
}

fn cpu(device: Device, kind: BackendKind) -> Selected {
    Selected {
        device,
        kind,
        adapter: "cpu".into(),
        software: false,
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn describe_gpu(device: Device, kind: BackendKind) -> Result<Selected, BackendError> {
    // Opening a device with no adapter panics inside the runtime; report it instead.
    let d = device.clone();
    let identity = std::panic::catch_unwind(move || d.identity())
        .map_err(|e| BackendError::Unavailable(kind, panic_text(&e)))?;
    let (adapter, software) = match identity {
        Some(id) => (id.name.clone(), id.physical.is_none()),
        None => ("unknown".into(), false),
    };
    Ok(Selected {
        device,
        kind,
        adapter,
        software,
    })
}

#[cfg(feature = "wgpu")]
fn hardware_wgpu() -> Option<Selected> {
    let gpus = std::panic::catch_unwind(Device::enumerate_physical).ok()?;
    let gpu = gpus.into_iter().next()?;
    let device = gpu.devices.into_vec().into_iter().next()?;
    Some(Selected {
        device,
        kind: BackendKind::Wgpu,
        adapter: gpu.name,
        software: false,
    })
}

#[allow(dead_code)]
fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown error".into())
}

/// The CPU this process runs on and what committee's CPU kernels use of it, as `committee
/// bench` reports it with every row: "AMD EPYC (avx512; bf16: avx512-bf16)", the model name
/// from `/proc/cpuinfo` (the architecture where there is none), the instruction set chosen
/// (capped by `COMMITTEE_ISA`) and the bf16 kernel (`amx`, `avx512-bf16` or `none`). Why:
/// the hosts behind one machine name change from run to run, and a speed without its host
/// compares with nothing. Read once per process (every bench row carries it).
pub fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(read_host)
}

fn read_host() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == "model name")
                .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let isa = crate::cpu::isa::Isa::get().name();
    let bf16 = crate::cpu::bf16::Bf16Kernel::detect().map_or("none", |k| k.name());
    format!("{model} ({isa}; bf16: {bf16})")
}

/// A CPU device for work that must not touch a GPU (manifests, lazy builds).
pub fn cpu_device() -> Device {
    Device::flex()
}

/// True for the CPU backends (flex, ndarray), with or without autodiff: the devices that
/// take committee's CPU kernels rather than its GPU paths.
pub fn is_cpu(device: &Device) -> bool {
    let d = device.clone().without_autodiff();
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if d == Device::ndarray() {
        return true;
    }
    d == Device::flex()
}
