//! Reproducible synthetic manifests at the scale of real networks, for benchmarks and examples.
//!
//! It owns generating manifests (and fleets) from a seed; nothing it makes is read back from disk.
//!
//! Layer shapes, MACs and ties follow the real ImageNet ResNets (torchvision, 224x224 input);
//! traces and perturbations are drawn from a seeded generator, so the same seed gives the same
//! manifest on every machine.

use crate::problem::manifest::{Manifest, DEFAULT_BITS as BITS};
use serde_json::{json, Value};

/// SplitMix64: tiny, seedable, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

struct Builder {
    rng: Rng,
    layers: Vec<Value>,
}

impl Builder {
    /// The ImageNet ResNet stem: a 7x7 stride-2 conv, pinned to 8 bits.
    fn resnet_stem(seed: u64) -> Builder {
        let mut b = Builder {
            rng: Rng::new(seed),
            layers: Vec::new(),
        };
        b.conv("conv1".into(), 3, 64, 7, 112, None, Some(8));
        b
    }

    fn layer(
        &mut self,
        name: String,
        params: u64,
        macs: u64,
        tie: Option<String>,
        pin: Option<u8>,
    ) {
        // Trace per weight spans ~3 decades; squared error per weight ~ 4^-b with per-layer and
        // per-bit jitter, the way measured Double Rounding errors scatter around the proxy.
        let tpp = 10f64.powf(self.rng.range(-4.0, -1.0));
        let scale = self.rng.range(0.2, 2.0) * 1e-2;
        let mut perturbation = serde_json::Map::new();
        for b in BITS {
            let jitter = self.rng.range(0.8, 1.25);
            perturbation.insert(
                b.to_string(),
                json!(params as f64 * scale * 0.25f64.powi(i32::from(b)) * 4096.0 * jitter),
            );
        }
        let mut l = json!({"name": name, "params": params, "macs": macs, "hessian_trace": tpp * params as f64, "perturbation": perturbation});
        if let Some(t) = tie {
            l["tie"] = json!(t);
        }
        if let Some(p) = pin {
            l["pin"] = json!(p);
        }
        self.layers.push(l);
    }

    #[allow(clippy::too_many_arguments)] // one argument per shape field reads best at the call sites
    fn conv(
        &mut self,
        name: String,
        cin: u64,
        cout: u64,
        k: u64,
        hw_out: u64,
        tie: Option<String>,
        pin: Option<u8>,
    ) {
        let params = cin * cout * k * k;
        self.layer(name, params, params * hw_out * hw_out, tie, pin);
    }

    /// A residual block's last conv (`name`, from `width` channels, `k`x`k`) to `cout` channels
    /// and, when the block is tied (it changes shape), its 1x1 downsample from `cin`: both write
    /// the block's output, so they share the tie.
    fn block_output(
        &mut self,
        prefix: &str,
        (name, width, k): (&str, u64, u64),
        cin: u64,
        cout: u64,
        h: u64,
        out_tie: Option<String>,
    ) {
        let tied = out_tie.is_some();
        self.conv(
            format!("{prefix}.{name}"),
            width,
            cout,
            k,
            h,
            out_tie.clone(),
            None,
        );
        if tied {
            self.conv(
                format!("{prefix}.downsample"),
                cin,
                cout,
                1,
                h,
                out_tie,
                None,
            );
        }
    }

    fn finish(self, name: &str) -> Manifest {
        let doc =
            json!({"name": name, "bits": BITS, "activation_bits": "same", "layers": self.layers});
        Manifest::from_value(doc).expect("synthetic manifests are valid")
    }
}

/// ResNet-18 (21 weighted layers, 3 downsample ties, first and last layer pinned to 8 bits).
pub fn resnet18(seed: u64) -> Manifest {
    let mut b = Builder::resnet_stem(seed);
    let widths = [64u64, 128, 256, 512];
    let hw = [56u64, 28, 14, 7];
    let mut cin = 64;
    for (s, (&w, &h)) in widths.iter().zip(&hw).enumerate() {
        for u in 0..2 {
            let out_tie = (s > 0 && u == 0).then(|| format!("layer{}.{u}.out", s + 1));
            b.conv(
                format!("layer{}.{u}.conv1", s + 1),
                cin,
                w,
                3,
                h,
                None,
                None,
            );
            let prefix = format!("layer{}.{u}", s + 1);
            b.block_output(&prefix, ("conv2", w, 3), cin, w, h, out_tie);
            cin = w;
        }
    }
    b.layer("fc".into(), 512 * 1000, 512 * 1000, None, Some(8));
    b.finish("resnet18-synthetic")
}

/// ResNet-50 (54 weighted layers, 4 downsample ties, first and last layer pinned to 8 bits).
pub fn resnet50(seed: u64) -> Manifest {
    let mut b = Builder::resnet_stem(seed);
    let blocks = [3usize, 4, 6, 3];
    let widths = [64u64, 128, 256, 512];
    let hw = [56u64, 28, 14, 7];
    let mut cin = 64;
    for s in 0..4 {
        let (w, h) = (widths[s], hw[s]);
        for u in 0..blocks[s] {
            let out_tie = (u == 0).then(|| format!("layer{}.{u}.out", s + 1));
            b.conv(
                format!("layer{}.{u}.conv1", s + 1),
                cin,
                w,
                1,
                if u == 0 && s > 0 { h * 2 } else { h },
                None,
                None,
            );
            b.conv(format!("layer{}.{u}.conv2", s + 1), w, w, 3, h, None, None);
            let prefix = format!("layer{}.{u}", s + 1);
            b.block_output(&prefix, ("conv3", w, 1), cin, 4 * w, h, out_tie);
            cin = 4 * w;
        }
    }
    b.layer("fc".into(), 2048 * 1000, 2048 * 1000, None, Some(8));
    b.finish("resnet50-synthetic")
}

/// `n` layers of random sizes (10^3 to 3*10^6 weights), every 25th pair tied, ends pinned to 8.
pub fn random(n: usize, seed: u64) -> Manifest {
    let mut b = Builder {
        rng: Rng::new(seed),
        layers: Vec::new(),
    };
    for i in 0..n {
        let params = 10f64.powf(b.rng.range(3.0, 6.5)).round() as u64;
        let spatial = [1u64, 7, 14, 28, 56][b.rng.below(5) as usize];
        let tie = (i % 25 == 1 || i % 25 == 2).then(|| format!("tie{}", i / 25));
        let pin = (i == 0 || i + 1 == n).then_some(8);
        b.layer(
            format!("layer{i:04}"),
            params,
            params * spatial * spatial,
            tie,
            pin,
        );
    }
    b.finish(&format!("random-{n}"))
}

/// A roofline device for synthetic manifests (an edge accelerator with 8/4/2-bit units).
pub fn roofline_device_json() -> &'static str {
    r#"{"name": "edge-npu", "roofline": {"peak_gmac_per_s": {"8": 2000, "4": 4000, "2": 8000}, "bandwidth_gb_per_s": 25, "layer_overhead_ms": 0.01}}"#
}

/// A reproducible fleet of `n` roofline devices for `manifest`: speeds spanning three decades,
/// supported weight bits from four families, and budgets that bind: half on latency alone, a
/// quarter on average bits alone, a quarter on both; some devices keep the first layer high-bit.
/// Budgets are set between the device's cheapest and dearest configuration, so most devices are
/// feasible and a few (the tightest draws) are not.
pub fn fleet_json(manifest: &Manifest, n: usize, seed: u64) -> serde_json::Value {
    let mut rng = Rng::new(seed);
    let families: [&[u8]; 4] = [&[8, 6, 5, 4, 3, 2], &[8, 4], &[8, 6, 4], &[8, 4, 2]];
    let devices: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let scale = 10f64.powf(rng.range(0.0, 3.0));
            let roofline = serde_json::json!({
                "peak_gmac_per_s": {"8": 20.0 * scale, "4": 40.0 * scale, "2": 80.0 * scale},
                "bandwidth_gb_per_s": 0.5 * scale.sqrt() * 10.0,
                "layer_overhead_ms": 0.01,
            });
            let bits = families[rng.below(families.len() as u64) as usize];
            let device = crate::DeviceProfile::from_json(
                &serde_json::json!({"name": "d", "roofline": roofline.clone()}).to_string(),
            )
            .expect("a valid roofline");
            // The latency range of this device: all layers at the lowest and the highest bits.
            let lat = |b: u8| -> f64 {
                manifest
                    .layers
                    .iter()
                    .map(|l| device.layer_latency_ms(l, b, b).unwrap_or(0.0))
                    .sum()
            };
            let (lo, hi) = (lat(*bits.last().expect("bits")), lat(bits[0]));
            let latency = lo + (hi - lo) * rng.range(0.05, 0.8);
            let avg_bits = rng.range(2.5, 6.5);
            let budgets = match i % 4 {
                0 | 1 => serde_json::json!({"max_latency_ms": latency}),
                2 => serde_json::json!({"max_avg_bits": avg_bits}),
                _ => serde_json::json!({"max_latency_ms": latency, "max_avg_bits": avg_bits}),
            };
            let mut d = serde_json::json!({
                "name": format!("device-{i:02}"),
                "roofline": roofline,
                "budgets": budgets,
                "weight_bits": bits,
            });
            if rng.below(3) == 0 {
                d["high_bit_layers"] = serde_json::json!([manifest.layers[0].name]);
            }
            d
        })
        .collect();
    serde_json::json!({"name": format!("synthetic-{n}"), "devices": devices})
}
