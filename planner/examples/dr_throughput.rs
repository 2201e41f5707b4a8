//! Double Rounding throughput: deriving b-bit fp32 weights from the highest-bit store, in GB/s of
//! fp32 weights produced on one core (used by `scripts/bench`, beside the NumPy version).
//! Usage: dr_throughput [MILLION_WEIGHTS]

use planner::eval::quant::HighBitWeights;
use planner::problem::synth::Rng;
use planner::Rounding;
use std::time::Instant;

fn main() {
    let millions: usize = std::env::args()
        .nth(1)
        .map_or(16, |v| v.parse().expect("a count"));
    let n = millions << 20;
    let mut rng = Rng::new(1);
    let q: Vec<i32> = (0..n).map(|_| rng.below(255) as i32 - 127).collect();
    let mut results = serde_json::Map::new();
    for (layout, channels, inner) in [
        ("conv [out, in*kh*kw]", 2048usize, n / 2048),
        ("matmul [in, out]", 2048, 1),
    ] {
        let scales: Vec<f32> = (0..channels)
            .map(|_| rng.range(1e-3, 1e-1) as f32)
            .collect();
        let hb = HighBitWeights {
            bits: 8,
            q: q.clone(),
            scales,
            inner,
        };
        for rounding in [Rounding::HalfAwayFromZero, Rounding::HalfToEven] {
            let mut out = Vec::new();
            hb.dequantize_into(4, rounding, &mut out); // warm up, allocate
            let reps = 5;
            let t = Instant::now();
            for _ in 0..reps {
                hb.dequantize_into(4, rounding, &mut out);
            }
            let gbps = (reps * n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9;
            std::hint::black_box(&out);
            results.insert(format!("{layout} {rounding:?}"), serde_json::json!(gbps));
        }
    }
    println!("{}", serde_json::Value::Object(results));
}
