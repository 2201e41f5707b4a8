//! A fleet's devices as given: each device's profile, budgets, the bit-widths it runs and the
//! layers it keeps at high precision, checked against the manifest; and the manifest restricted
//! to what a device can run. Planning them is the parent module's.

use crate::error::{Error, FieldError, Result};
use crate::problem::budget::Budgets;
use crate::problem::cost::CostKind;
use crate::problem::device::DeviceProfile;
use crate::problem::manifest::{ActivationBits, Manifest};
use crate::problem::Problem;
use serde::Deserialize;
use serde_json::{json, Map, Value};

const WHAT: &str = "fleet";

/// Most devices a fleet may list.
pub const MAX_DEVICES: usize = 1000;

/// A device of a fleet: its profile (name, latency model) plus what it can run and afford.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub profile: DeviceProfile,
    pub budgets: Budgets,
    /// Weight bit-widths the device runs (all when `None`).
    pub weight_bits: Option<Vec<u8>>,
    /// Activation bit-widths the device runs (all when `None`).
    pub activation_bits: Option<Vec<u8>>,
    /// Layers that must stay at the highest bit-width the device allows them.
    pub high_bit_layers: Vec<String>,
    /// The latency model as given, to recognise devices that share it.
    pub(super) latency_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtras {
    #[serde(default)]
    budgets: Budgets,
    #[serde(default)]
    weight_bits: Option<Vec<u8>>,
    #[serde(default)]
    activation_bits: Option<Vec<u8>>,
    #[serde(default)]
    high_bit_layers: Vec<String>,
}

/// Keys of a device document that belong to the profile rather than the fleet extras.
const PROFILE_KEYS: [&str; 3] = ["name", "latency_ms", "roofline"];

fn prefixed(e: Error, prefix: &str) -> Vec<FieldError> {
    match e {
        Error::Invalid { errors, .. } => errors
            .into_iter()
            .map(|f| {
                FieldError::new(
                    if f.path.is_empty() {
                        prefix.trim_end_matches('.').to_string()
                    } else {
                        format!("{prefix}{}", f.path)
                    },
                    f.reason,
                )
            })
            .collect(),
        other => vec![FieldError::new(
            prefix.trim_end_matches('.'),
            other.to_string(),
        )],
    }
}

impl DeviceSpec {
    /// Parses one device document: a device profile plus `budgets`, `weight_bits`,
    /// `activation_bits` and `high_bit_layers`. Errors carry `prefix` on their paths.
    pub fn from_value(
        value: Value,
        prefix: &str,
    ) -> std::result::Result<DeviceSpec, Vec<FieldError>> {
        let Value::Object(map) = value else {
            return Err(vec![FieldError::new(
                prefix.trim_end_matches('.'),
                "must be an object",
            )]);
        };
        let (profile_part, extra_part): (Map<String, Value>, Map<String, Value>) = map
            .into_iter()
            .partition(|(k, _)| PROFILE_KEYS.contains(&k.as_str()));
        let latency_key =
            json!([profile_part.get("latency_ms"), profile_part.get("roofline")]).to_string();
        let mut errors = Vec::new();
        let profile = DeviceProfile::from_json(&Value::Object(profile_part).to_string())
            .map_err(|e| errors.extend(prefixed(e, prefix)))
            .ok();
        let extras: Option<RawExtras> =
            crate::error::parse_json::<RawExtras>(WHAT, &Value::Object(extra_part).to_string())
                .map_err(|e| errors.extend(prefixed(e, prefix)))
                .ok();
        if let Some(x) = &extras {
            for (field, list) in [
                ("weight_bits", &x.weight_bits),
                ("activation_bits", &x.activation_bits),
            ] {
                if let Some(l) = list {
                    if l.is_empty() {
                        errors.push(FieldError::new(
                            format!("{prefix}{field}"),
                            "must list at least one bit-width",
                        ));
                    }
                    for (i, b) in l.iter().enumerate() {
                        if !(1..=crate::MAX_BITS).contains(b) {
                            errors.push(FieldError::new(
                                format!("{prefix}{field}[{i}]"),
                                format!("{b} is not a bit-width"),
                            ));
                        }
                    }
                }
            }
            if let Err(e) = x.budgets.check_values() {
                errors.extend(prefixed(e, &format!("{prefix}budgets.")));
            }
        }
        match (profile, extras) {
            (Some(profile), Some(x)) if errors.is_empty() => Ok(DeviceSpec {
                profile,
                budgets: x.budgets,
                weight_bits: x.weight_bits,
                activation_bits: x.activation_bits,
                high_bit_layers: x.high_bit_layers,
                latency_key,
            }),
            _ => Err(errors),
        }
    }

    pub fn name(&self) -> &str {
        &self.profile.name
    }

    /// The cost this device is planned along: latency when it has a latency budget, else size
    /// (size or average bits), else BOPs; size without budgets.
    pub fn primary_cost(&self) -> CostKind {
        let b = &self.budgets;
        if b.max_latency_ms.is_some() {
            CostKind::Latency
        } else if b.max_size_bytes.is_some() || b.max_avg_bits.is_some() || b.max_bops.is_none() {
            CostKind::Size
        } else {
            CostKind::Bops
        }
    }

    /// The manifest as this device can run it: each layer's bits narrowed to the supported ones,
    /// high-bit layers pinned to their highest. `Err` says why the device cannot run the model.
    pub fn restrict(&self, manifest: &Manifest) -> std::result::Result<Manifest, String> {
        let supported = |b: &u8| {
            self.weight_bits.as_ref().is_none_or(|w| w.contains(b))
                && (manifest.activation_bits != ActivationBits::Same
                    || self.activation_bits.as_ref().is_none_or(|a| a.contains(b)))
        };
        if let (ActivationBits::Fixed(a), Some(list)) =
            (manifest.activation_bits, &self.activation_bits)
        {
            if !list.contains(&a) {
                return Err(format!(
                    "the model runs activations at {a} bits; the device supports {list:?}"
                ));
            }
        }
        let mut doc = manifest.to_json();
        let global: Vec<u8> = manifest.bits.iter().copied().filter(supported).collect();
        doc["bits"] = json!(global);
        for (i, layer) in manifest.layers.iter().enumerate() {
            let bits: Vec<u8> = layer.bits.iter().copied().filter(supported).collect();
            if bits.is_empty() {
                return Err(format!(
                    "layer {:?}: none of its bit-widths {:?} is supported by the device",
                    layer.name, layer.bits
                ));
            }
            if let Some(p) = layer.pin {
                if !bits.contains(&p) {
                    return Err(format!(
                        "layer {:?} is pinned to {p} bits, which the device does not support",
                        layer.name
                    ));
                }
            }
            let entry = &mut doc["layers"][i];
            if self.high_bit_layers.contains(&layer.name) && layer.pin.is_none() {
                entry["pin"] = json!(bits.iter().max());
            }
            if let Some(per_bit) = entry.get_mut("perturbation").and_then(Value::as_object_mut) {
                per_bit.retain(|k, _| k.parse::<u8>().is_ok_and(|b| bits.contains(&b)));
            }
            entry["bits"] = json!(bits);
        }
        Manifest::from_value(doc).map_err(|e| match e {
            Error::Invalid { errors, .. } => format!(
                "the model's constraints cannot be met on the device's bit-widths: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            other => other.to_string(),
        })
    }
}

/// A named set of devices.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub name: String,
    pub devices: Vec<DeviceSpec>,
}

impl Fleet {
    /// Parses `{"name": ..., "devices": [device, ...]}`; every problem is listed with its path.
    pub fn from_json(text: &str) -> Result<Fleet> {
        let value: Value = crate::error::parse_json(WHAT, text)?;
        Fleet::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Fleet> {
        let mut errors = Vec::new();
        let name = match value.get("name").and_then(Value::as_str) {
            Some(n) if !n.trim().is_empty() => n.to_string(),
            _ => {
                errors.push(FieldError::new("name", "must be a non-empty string"));
                String::new()
            }
        };
        if let Some(obj) = value.as_object() {
            for k in obj.keys().filter(|k| *k != "name" && *k != "devices") {
                errors.push(FieldError::new(
                    k.clone(),
                    "unknown field; expected name, devices",
                ));
            }
        }
        let mut devices = Vec::new();
        match value.get("devices").and_then(Value::as_array) {
            Some(list) if list.len() > MAX_DEVICES => errors.push(FieldError::new(
                "devices",
                format!(
                    "lists {} devices, more than the {MAX_DEVICES} a fleet may hold",
                    list.len()
                ),
            )),
            Some(list) if !list.is_empty() => {
                for (i, d) in list.iter().enumerate() {
                    match DeviceSpec::from_value(d.clone(), &format!("devices[{i}].")) {
                        Ok(spec) => {
                            if devices.iter().any(|o: &DeviceSpec| o.name() == spec.name()) {
                                errors.push(FieldError::new(
                                    format!("devices[{i}].name"),
                                    format!("duplicate device name {:?}", spec.name()),
                                ));
                            }
                            devices.push(spec);
                        }
                        Err(e) => errors.extend(e),
                    }
                }
            }
            _ => errors.push(FieldError::new(
                "devices",
                "must be a non-empty list of devices",
            )),
        }
        Error::check(WHAT, errors)?;
        Ok(Fleet { name, devices })
    }

    /// Checks the fleet against a manifest: high-bit layers exist, lookup tables cover every
    /// layer and bit-width the device may run (errors name the device and the layer).
    pub fn check(&self, manifest: &Manifest) -> Result<()> {
        let mut errors = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            for (j, l) in d.high_bit_layers.iter().enumerate() {
                if manifest.layer_index(l).is_none() {
                    errors.push(FieldError::new(
                        format!("devices[{i}].high_bit_layers[{j}]"),
                        format!(
                            "device {:?}: no layer {l:?} in manifest {:?}",
                            d.name(),
                            manifest.name
                        ),
                    ));
                }
            }
            if let Ok(m) = d.restrict(manifest) {
                if let Err(e) = Problem::new(&m, Some(&d.profile)) {
                    errors.extend(prefixed(e, &format!("devices[{i}].")));
                }
            }
        }
        Error::check(WHAT, errors)
    }
}
