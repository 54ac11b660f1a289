//! Times `Predictor::predict` at several batch sizes, one thread, in-process (no
//! HTTP): `cargo run --release --example forward_timing -- models/cifar10-cnn/2`.
//! `B=1,32` picks the batch sizes, `T=2` candle's CPU threads. Numbers move by
//! ±20% between runs on the shared 2-core machines; benches/run is the reference.
use std::time::Instant;
#[global_allocator]
static G: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    triaged::model::device::pin_cpu_threads(
        std::env::var("T")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    );
    let dir = std::env::args().nth(1).unwrap();
    let p = triaged::model::Predictor::load(std::path::Path::new(&dir), &candle_core::Device::Cpu)
        .unwrap();
    let dim = p.manifest().input_dim();
    let sizes: Vec<usize> = std::env::var("B")
        .map(|s| s.split(",").map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![1, 2, 4, 8, 16, 32, 64]);
    for b in sizes {
        let rows: Vec<f32> = (0..b * dim).map(|i| ((i * 7919) % 255) as f32).collect();
        for _ in 0..3 {
            p.predict(&rows).unwrap();
        }
        let n = (2000 / b).max(20);
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(p.predict(&rows).unwrap());
        }
        let per_call = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "batch {b:3}: {:9.1} us/call {:8.2} us/case",
            per_call * 1e6,
            per_call * 1e6 / b as f64
        );
    }
}
