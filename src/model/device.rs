//! Device selection and CPU thread setup, in one place (docs/architecture.md).

use candle_core::Device;

/// Which device to run candle on.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// The first CUDA GPU; needs a build with `--features cuda`.
    Cuda,
}

/// Returns the candle device for `choice`, or a clear error when this build has no
/// CUDA support.
pub fn select(choice: DeviceChoice) -> anyhow::Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                anyhow::bail!(
                    "--device cuda asked for, but this binary was built without the `cuda` feature \
                     (rebuild with `cargo build --release --features cuda`)"
                );
            }
            Device::new_cuda(0).map_err(|e| anyhow::anyhow!("opening CUDA device 0: {e}"))
        }
    }
}

/// Pins candle's CPU kernels to `threads` threads.
///
/// Must run before any candle call and before other threads exist: candle reads
/// `RAYON_NUM_THREADS` on every matmul, and when it is unset it re-reads
/// `/proc/cpuinfo` each time — measured ~7× slower for a small MLP (docs/architecture.md).
pub fn pin_cpu_threads(threads: usize) {
    let threads = threads.max(1);
    // SAFETY: called from `main` before the runtime, the inference thread or any
    // other thread is started, so no other thread can be reading the environment.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
}
