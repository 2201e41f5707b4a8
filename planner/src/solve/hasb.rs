//! Hessian-aware sampling probabilities for supernet training (the paper's "weighted probability").
//!
//! The paper samples each layer's bit-width with `random.choices(bits, weights=...)` so that
//! sensitive layers lean to high bits and insensitive ones to low bits, without publishing the
//! exact weights. bitplan's rule, deterministic and scale-free:
//! 1. sensitivity `s_i` in `[0, 1]`: the rank percentile of the layer's trace per weight, or of
//!    its measured sensitivity at its lowest bit-width when the manifest has measured sensitivity
//!    (ties share their mean rank; a lone layer gets 0.5). Ranks ignore the traces' absolute scale
//!    and their heavy tail, so one huge trace does not flatten the others;
//! 2. the layer's allowed bits, lowest first, sit at positions `u_j = j / (m - 1)` in `[0, 1]`;
//! 3. weight `w_j = exp(-(u_j - s_i)^2 / (2 sigma^2))`, then `p_j = (1 - floor) * w_j / sum(w)
//!    + floor / m`, so every allowed bit keeps at least `floor / m` (the supernet must still train
//!    every bit of every layer). Defaults: `sigma = 0.3`, `floor = 0.1`.
//!
//! Pinned layers get probability 1 on the pin. Tied layers share one distribution (from their most
//! sensitive member) and must be sampled jointly.

use crate::error::Result;
use crate::problem::manifest::Manifest;
use crate::problem::Problem;
use serde::Serialize;

/// The rule's two knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HasbParams {
    /// Width of the preference around the layer's sensitivity, in units of the bit range.
    pub sigma: f64,
    /// Total probability spread uniformly over the allowed bits.
    pub floor: f64,
}

impl Default for HasbParams {
    fn default() -> Self {
        HasbParams {
            sigma: 0.3,
            floor: 0.1,
        }
    }
}

/// Sampling probabilities of one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerProbabilities {
    pub layer: String,
    /// Rank percentile of the trace per weight, in `[0, 1]`.
    pub sensitivity: f64,
    /// `(bits, probability)`, highest bits first; sums to 1.
    pub probabilities: Vec<(u8, f64)>,
}

/// Per-layer bit sampling probabilities (see the module docs for the rule).
/// Fails on a manifest without an objective (structure only).
pub fn sampling_probabilities(
    manifest: &Manifest,
    params: HasbParams,
) -> Result<Vec<LayerProbabilities>> {
    let problem = Problem::new(manifest, None)?;
    let n = manifest.layers.len();
    // What the ranks order: the divergence at the manifest's lowest bit-width, or trace per weight.
    let lowest = *manifest.bits.last().expect("a manifest has bits");
    let tpp: Vec<f64> = manifest
        .layers
        .iter()
        .map(|l| match &l.sensitivity {
            // A pinned layer is measured at its pin only: rank it at the lowest bit-width
            // measured on every other layer, or not above them when it has no such value.
            Some(s) => s
                .get(&lowest)
                .or_else(|| s.values().next().filter(|_| l.pin.is_none()))
                .copied()
                .unwrap_or(0.0),
            None => l.trace_per_param(),
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| tpp[a].total_cmp(&tpp[b]));
    let mut rank = vec![0.0; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && tpp[order[j + 1]] == tpp[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0;
        for &o in &order[i..=j] {
            rank[o] = if n == 1 { 0.5 } else { mean / (n - 1) as f64 };
        }
        i = j + 1;
    }

    let mut out = Vec::with_capacity(n);
    for (li, layer) in manifest.layers.iter().enumerate() {
        let g = &problem.groups[problem.layer_group[li]];
        let s = g.layers.iter().map(|&m| rank[m]).fold(0.0, f64::max);
        let mut bits: Vec<u8> = g.choices.iter().map(|c| c.bits).collect();
        bits.sort_unstable();
        let m = bits.len();
        let weights: Vec<f64> = (0..m)
            .map(|j| {
                let u = if m == 1 { s } else { j as f64 / (m - 1) as f64 };
                (-(u - s).powi(2) / (2.0 * params.sigma * params.sigma)).exp()
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut probabilities: Vec<(u8, f64)> = bits
            .iter()
            .zip(&weights)
            .map(|(&b, &w)| {
                (
                    b,
                    (1.0 - params.floor) * w / total + params.floor / m as f64,
                )
            })
            .collect();
        probabilities.reverse();
        out.push(LayerProbabilities {
            layer: layer.name.clone(),
            sensitivity: s,
            probabilities,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_layers_lean_high_and_every_bit_keeps_mass() {
        let m = Manifest::from_json(
            r#"{"name":"m","bits":[8,6,4,2],"layers":[
              {"name":"flat","params":100,"macs":1,"hessian_trace":0.01},
              {"name":"mid","params":100,"macs":1,"hessian_trace":1},
              {"name":"sharp","params":100,"macs":1,"hessian_trace":100},
              {"name":"pinned","params":100,"macs":1,"hessian_trace":5,"pin":8}]}"#,
        )
        .unwrap();
        let p = sampling_probabilities(&m, HasbParams::default()).unwrap();
        for lp in &p {
            let sum: f64 = lp.probabilities.iter().map(|x| x.1).sum();
            assert!((sum - 1.0).abs() < 1e-12, "{lp:?}");
        }
        let prob = |layer: usize, bits: u8| {
            p[layer]
                .probabilities
                .iter()
                .find(|x| x.0 == bits)
                .unwrap()
                .1
        };
        assert!(
            prob(0, 2) > prob(0, 8),
            "insensitive layer leans low: {:?}",
            p[0]
        );
        assert!(
            prob(2, 8) > prob(2, 2),
            "sensitive layer leans high: {:?}",
            p[2]
        );
        assert!(prob(2, 8) > prob(1, 8) && prob(1, 8) > prob(0, 8));
        assert!(p[..3]
            .iter()
            .all(|lp| lp.probabilities.iter().all(|x| x.1 >= 0.1 / 4.0 - 1e-12)));
        assert_eq!(p[3].probabilities, vec![(8, 1.0)]);
    }

    #[test]
    fn measured_sensitivity_ranks_layers_when_present() {
        // Traces say the opposite of the measurements: the measurements rank.
        let m = Manifest::from_json(
            r#"{"name":"m","bits":[8,4,2],"sensitivity_metric":"kl","layers":[
              {"name":"a","params":100,"macs":1,"hessian_trace":100,"sensitivity":{"8":0,"4":0.001,"2":0.01}},
              {"name":"b","params":100,"macs":1,"hessian_trace":0.01,"sensitivity":{"8":0,"4":0.1,"2":2}},
              {"name":"p","params":100,"macs":1,"pin":8,"sensitivity":{"8":0.5}}]}"#,
        )
        .unwrap();
        let p = sampling_probabilities(&m, HasbParams::default()).unwrap();
        assert!(p[1].sensitivity > p[0].sensitivity, "{p:?}");
        assert_eq!(
            p[0].sensitivity, 0.5,
            "the pinned layer ranks lowest: {p:?}"
        );
        assert_eq!(p[2].probabilities, vec![(8, 1.0)]);
    }
}
