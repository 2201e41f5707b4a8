//! Device profiles: how long a layer takes on a device at a given bit-width.
//!
//! It owns checking a profile and pricing a layer on it; what a device may run and afford in a
//! fleet is `solve::fleet`'s.
//!
//! Two latency models:
//! - a lookup table measured on the device: `latency_ms[layer][bits]`;
//! - a roofline: a layer at weight bits `w` and activation bits `a` runs its MACs at the device's
//!   peak rate for precision `p = max(w, a)` (or, when `p` is not listed, the narrowest listed
//!   precision wider than `p`: a 3-bit op runs on the 4-bit unit), and streams its weights
//!   (`params * w / 8` bytes) at the memory bandwidth; the layer takes the longer of the two, plus a
//!   fixed per-layer overhead: `max(macs / peak(p), bytes / bandwidth) + layer_overhead_ms`.

use crate::error::{parse_json, Error, FieldError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const WHAT: &str = "device profile";

/// A device's roofline parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roofline {
    /// Peak multiply-accumulates per second, in units of 10^9, keyed by precision (bits).
    pub peak_gmac_per_s: BTreeMap<String, f64>,
    /// Memory bandwidth for weights, in 10^9 bytes per second.
    pub bandwidth_gb_per_s: f64,
    /// Fixed cost of launching one layer, in milliseconds.
    #[serde(default)]
    pub layer_overhead_ms: f64,
}

/// How a device's per-layer latency is obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum LatencyModel {
    /// Measured milliseconds per layer name per weight bit-width.
    Table(BTreeMap<String, BTreeMap<u8, f64>>),
    /// Peak throughput per precision, in MAC/s, and bandwidth in bytes/s.
    Roofline {
        peak_mac_per_s: BTreeMap<u8, f64>,
        bandwidth_bytes_per_s: f64,
        layer_overhead_ms: f64,
    },
}

/// A checked device profile.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    pub name: String,
    pub latency: LatencyModel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: String,
    #[serde(default)]
    latency_ms: Option<BTreeMap<String, BTreeMap<String, f64>>>,
    #[serde(default)]
    roofline: Option<Roofline>,
}

fn parse_bits_key(key: &str, path: &str, errors: &mut Vec<FieldError>) -> Option<u8> {
    match key.trim().parse::<u8>() {
        Ok(b) if (1..=crate::problem::manifest::MAX_BITS).contains(&b) => Some(b),
        _ => {
            errors.push(FieldError::new(
                path,
                format!("key {key:?} is not a bit-width"),
            ));
            None
        }
    }
}

fn check_positive(v: f64, path: &str, errors: &mut Vec<FieldError>) -> bool {
    let ok = v.is_finite() && v > 0.0;
    if !ok {
        errors.push(FieldError::new(
            path,
            format!("must be a positive finite number, not {v}"),
        ));
    }
    ok
}

impl DeviceProfile {
    /// Parses and checks a device profile document.
    pub fn from_json(text: &str) -> Result<DeviceProfile> {
        let raw: RawDevice = parse_json(WHAT, text)?;
        let mut errors = Vec::new();
        if raw.name.trim().is_empty() {
            errors.push(FieldError::new("name", "must not be empty"));
        }
        let latency = match (raw.latency_ms, raw.roofline) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    "latency_ms",
                    "give latency_ms or roofline, not both",
                ));
                None
            }
            (None, None) => {
                errors.push(FieldError::new(
                    "latency_ms",
                    "missing: give a latency_ms table or a roofline",
                ));
                None
            }
            (Some(table), None) => Some(check_table(table, &mut errors)),
            (None, Some(r)) => Some(check_roofline(&r, &mut errors)),
        };
        match latency {
            Some(latency) if errors.is_empty() => Ok(DeviceProfile {
                name: raw.name,
                latency,
            }),
            _ => Err(Error::Invalid { what: WHAT, errors }),
        }
    }

    /// Milliseconds for `layer` at weight bits `w_bits` and activation bits `a_bits`.
    /// The error names the device, the layer and the missing entry.
    pub fn layer_latency_ms(&self, layer: &crate::Layer, w_bits: u8, a_bits: u8) -> Result<f64> {
        match &self.latency {
            LatencyModel::Table(table) => {
                let row = table.get(&layer.name).ok_or_else(|| {
                    Error::invalid(
                        WHAT,
                        format!("latency_ms.{}", layer.name),
                        format!(
                            "device {:?} has no latency entry for layer {:?}",
                            self.name, layer.name
                        ),
                    )
                })?;
                row.get(&w_bits).copied().ok_or_else(|| {
                    Error::invalid(
                        WHAT,
                        format!("latency_ms.{}.{w_bits}", layer.name),
                        format!(
                            "device {:?} has no latency for layer {:?} at {w_bits} bits",
                            self.name, layer.name
                        ),
                    )
                })
            }
            LatencyModel::Roofline {
                peak_mac_per_s,
                bandwidth_bytes_per_s,
                layer_overhead_ms,
            } => {
                let p = w_bits.max(a_bits);
                let (_, peak) = peak_mac_per_s.range(p..).next().ok_or_else(|| {
                    Error::invalid(
                        WHAT,
                        "roofline.peak_gmac_per_s",
                        format!("device {:?} lists no precision of {p} bits or wider (needed by layer {:?})", self.name, layer.name),
                    )
                })?;
                let compute_ms = layer.macs as f64 / peak * 1e3;
                let memory_ms =
                    layer.params as f64 * f64::from(w_bits) / 8.0 / bandwidth_bytes_per_s * 1e3;
                Ok(compute_ms.max(memory_ms) + layer_overhead_ms)
            }
        }
    }
}

/// A latency table: per layer, milliseconds per bit-width (finite, non-negative).
fn check_table(
    table: BTreeMap<String, BTreeMap<String, f64>>,
    errors: &mut Vec<FieldError>,
) -> LatencyModel {
    let mut out = BTreeMap::new();
    for (layer, per_bit) in table {
        let mut row = BTreeMap::new();
        for (key, ms) in per_bit {
            let path = format!("latency_ms.{layer}.{key}");
            if let Some(b) = parse_bits_key(&key, &path, errors) {
                if ms.is_finite() && ms >= 0.0 {
                    row.insert(b, ms);
                } else {
                    errors.push(FieldError::new(
                        path,
                        format!("must be a finite, non-negative time, not {ms}"),
                    ));
                }
            }
        }
        out.insert(layer, row);
    }
    LatencyModel::Table(out)
}

/// A roofline: a positive peak per precision and bandwidth, a non-negative per-layer overhead;
/// stored in MAC/s and bytes/s.
fn check_roofline(r: &Roofline, errors: &mut Vec<FieldError>) -> LatencyModel {
    let mut peak = BTreeMap::new();
    if r.peak_gmac_per_s.is_empty() {
        errors.push(FieldError::new(
            "roofline.peak_gmac_per_s",
            "must list at least one precision",
        ));
    }
    for (key, g) in &r.peak_gmac_per_s {
        let path = format!("roofline.peak_gmac_per_s.{key}");
        if let Some(b) = parse_bits_key(key, &path, errors) {
            if check_positive(*g, &path, errors) {
                peak.insert(b, g * 1e9);
            }
        }
    }
    check_positive(r.bandwidth_gb_per_s, "roofline.bandwidth_gb_per_s", errors);
    if !(r.layer_overhead_ms.is_finite() && r.layer_overhead_ms >= 0.0) {
        errors.push(FieldError::new(
            "roofline.layer_overhead_ms",
            "must be a finite, non-negative time",
        ));
    }
    LatencyModel::Roofline {
        peak_mac_per_s: peak,
        bandwidth_bytes_per_s: r.bandwidth_gb_per_s * 1e9,
        layer_overhead_ms: r.layer_overhead_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(params: u64, macs: u64) -> crate::Layer {
        crate::Layer {
            name: "conv".into(),
            params,
            macs,
            hessian_trace: Some(1.0),
            hessian_trace_stderr: None,
            objective_trace: 1.0,
            perturbation: None,
            sensitivity: None,
            bits: vec![8, 4],
            tie: None,
            pin: None,
            weight: None,
        }
    }

    #[test]
    fn roofline_takes_the_slower_of_compute_and_memory() {
        let d = DeviceProfile::from_json(
            r#"{"name":"edge","roofline":{"peak_gmac_per_s":{"8":1,"4":2},"bandwidth_gb_per_s":0.001,"layer_overhead_ms":0.5}}"#,
        )
        .unwrap();
        // compute-bound: 1e6 MACs at 1e9/s = 1 ms; memory: 1000 B at 1e6 B/s = 1 ms at 8 bits
        let l = layer(1000, 2_000_000);
        assert!((d.layer_latency_ms(&l, 8, 8).unwrap() - (2.0 + 0.5)).abs() < 1e-12);
        assert!((d.layer_latency_ms(&l, 4, 4).unwrap() - (1.0 + 0.5)).abs() < 1e-12);
        // 3-bit ops run on the 4-bit unit; 8-bit activations force the 8-bit unit
        assert_eq!(
            d.layer_latency_ms(&l, 3, 3).unwrap(),
            d.layer_latency_ms(&l, 4, 4).unwrap()
        );
        assert_eq!(
            d.layer_latency_ms(&l, 4, 8).unwrap(),
            d.layer_latency_ms(&l, 8, 8).unwrap()
        );
        // memory-bound layer
        let m = layer(1_000_000, 10);
        assert!((d.layer_latency_ms(&m, 8, 8).unwrap() - (1000.0 + 0.5)).abs() < 1e-9);
    }

    #[test]
    fn table_misses_name_device_and_layer() {
        let d =
            DeviceProfile::from_json(r#"{"name":"t4","latency_ms":{"conv":{"8":0.36}}}"#).unwrap();
        let l = layer(10, 10);
        assert_eq!(d.layer_latency_ms(&l, 8, 8).unwrap(), 0.36);
        let e = d.layer_latency_ms(&l, 4, 4).unwrap_err().to_string();
        assert!(
            e.contains("\"t4\" has no latency for layer \"conv\" at 4 bits"),
            "{e}"
        );
        let mut other = l.clone();
        other.name = "fc".into();
        let e = d.layer_latency_ms(&other, 8, 8).unwrap_err().to_string();
        assert!(
            e.contains("latency_ms.fc")
                && e.contains("\"t4\" has no latency entry for layer \"fc\""),
            "{e}"
        );
    }

    #[test]
    fn bad_profiles_are_refused_with_paths() {
        let e = DeviceProfile::from_json(r#"{"name":"x"}"#).unwrap_err();
        assert_eq!(e.field_errors()[0].path, "latency_ms");
        let e = DeviceProfile::from_json(
            r#"{"name":"x","roofline":{"peak_gmac_per_s":{"8":-1},"bandwidth_gb_per_s":0}}"#,
        )
        .unwrap_err();
        let paths: Vec<_> = e.field_errors().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["roofline.peak_gmac_per_s.8", "roofline.bandwidth_gb_per_s"]
        );
        let e =
            DeviceProfile::from_json(r#"{"name":"x","latency_ms":{"a":{"eight":1}}}"#).unwrap_err();
        assert_eq!(e.field_errors()[0].path, "latency_ms.a.eight");
    }
}
