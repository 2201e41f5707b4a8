//! Reading ONNX models: the weighted layers of a graph, their weight tensors and layouts.
//!
//! It owns reading and linking a model's weights; it runs nothing (sessions are the runtime's).
//!
//! Weights are found as initializers or Constant nodes, in fp32 or as int8 behind a
//! DequantizeLinear (a model already stored at its highest bit-width). Each weighted op knows its
//! output-channel axis: Conv `[out, in/g, kh, kw]` (axis 0), ConvTranspose `[in, out/g, kh, kw]`
//! (axis 1), Gemm `B` `[N, K]` with `transB=1` (axis 0) or `[K, N]` without (axis 1), MatMul with a
//! constant right operand `[.., in, out]` (last axis).

use crate::error::{Error, Result};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The generated ONNX protobuf types.
#[allow(missing_debug_implementations, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

const WHAT: &str = "ONNX model";

/// A parsed ONNX model.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    pub proto: pb::ModelProto,
    /// The folder the model was read from, which its external data locations are relative to
    /// (`None` for a model read from bytes alone).
    pub folder: Option<PathBuf>,
}

/// How a weight tensor is stored in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightSource {
    Initializer,
    /// The output of a Constant node.
    Constant,
    /// Integer weights dequantized by a DequantizeLinear node whose output the op consumes.
    Dequantized {
        node: String,
        integer: String,
    },
}

/// One layer whose weights bitplan can quantize.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedLayer {
    /// The node's name (its first output's name when unnamed).
    pub node: String,
    pub op_type: String,
    /// Name of the weight tensor the op consumes.
    pub weight: String,
    pub shape: Vec<usize>,
    /// The output-channel axis of the weight.
    pub axis: usize,
    /// Number of output channels and elements per channel step: element `i` is in channel
    /// `(i / inner) % channels`.
    pub channels: usize,
    pub inner: usize,
    pub source: WeightSource,
}

impl WeightedLayer {
    pub fn params(&self) -> usize {
        self.shape.iter().product()
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn node_name(node: &pb::NodeProto) -> String {
    node.name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| node.output.first().cloned().unwrap_or_default())
}

/// A weighted op's output-channel axis, its channel count and the weights per channel after that
/// axis (see the module docs); an error naming the rank the op needs.
fn channel_layout(
    node: &pb::NodeProto,
    shape: &[usize],
) -> std::result::Result<(usize, usize, usize), String> {
    let op = node.op_type.as_deref().unwrap_or("");
    let axis = match op {
        "ConvTranspose" => 1,
        "Gemm" if attr(node, "transB").and_then(|a| a.i).unwrap_or(0) != 0 => 0,
        "Gemm" => 1,
        "MatMul" => shape.len().saturating_sub(1),
        _ => 0,
    };
    let fits = match op {
        "Conv" | "ConvTranspose" => shape.len() >= 3,
        "Gemm" => shape.len() == 2,
        _ => shape.len() >= 2,
    };
    if !fits {
        let want = match op {
            "Conv" | "ConvTranspose" => "rank >= 3",
            "Gemm" => "rank 2",
            _ => "rank >= 2",
        };
        return Err(format!("has shape {shape:?}, expected {want}"));
    }
    Ok((axis, shape[axis], shape[axis + 1..].iter().product()))
}

mod tensors;
mod topology;

pub use tensors::{data_type_name, declared_dims, declared_elem_type, int_attribute};
use tensors::{stored_len, tensor_values, weight_shape};

impl OnnxModel {
    /// Decodes an ONNX file's bytes and checks the graph's wiring (no cycle, no missing tensor).
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxModel> {
        let proto = pb::ModelProto::decode(bytes).map_err(|e| {
            Error::invalid(
                WHAT,
                "",
                format!("not an ONNX model (protobuf decoding failed: {e})"),
            )
        })?;
        let Some(graph) = proto.graph.as_ref().filter(|g| !g.node.is_empty()) else {
            return Err(Error::invalid(
                WHAT,
                "graph",
                "the model has no graph nodes (is this an ONNX file?)",
            ));
        };
        topology::check(graph)?;
        Ok(OnnxModel {
            proto,
            folder: None,
        })
    }

    /// The model's serialized bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Reads an ONNX file and checks the external data its tensors name (`location`, `offset`,
    /// `length`, relative to the model's folder): absolute locations and locations that leave the
    /// folder (`..`) are refused, as are files that do not open and ranges past their end. The
    /// bytes stay in their file until a tensor's values are needed.
    pub fn from_path(path: &Path) -> Result<OnnxModel> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::invalid(WHAT, "", format!("cannot read {}: {e}", path.display()))
        })?;
        let mut model = OnnxModel::from_bytes(&bytes)?;
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let g = model.proto.graph.as_mut().expect("checked on load");
        for t in crate::eval::external::tensors_mut(g) {
            if crate::eval::external::is_external(t) {
                crate::eval::external::locate(t, &folder)?;
            }
        }
        model.folder = Some(folder);
        Ok(model)
    }

    /// The values of one of the model's tensors as f32, read from its external file when it has
    /// one.
    pub fn tensor_values(&self, t: &pb::TensorProto) -> Result<Vec<f32>> {
        match &self.folder {
            Some(folder) if crate::eval::external::is_external(t) => {
                tensor_values(&pb::TensorProto {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    data_type: t.data_type,
                    raw_data: Some(crate::eval::external::read(t, folder)?),
                    ..Default::default()
                })
            }
            _ => tensor_values(t),
        }
    }

    /// Refuses the model when its tensors keep their bytes beside it and it has no folder to read
    /// them from (see [`crate::eval::external::require_folder`]).
    pub fn require_external_data(&self) -> Result<()> {
        crate::eval::external::require_folder(self.graph(), self.folder.as_deref())
    }

    /// Reads every external tensor's bytes into the model, which then stands alone (as a file of
    /// its own it would be as large as its weights).
    pub fn inline_external_data(&mut self) -> Result<()> {
        self.require_external_data()?;
        let Some(folder) = self.folder.clone() else {
            return Ok(());
        };
        let g = self.proto.graph.as_mut().expect("checked on load");
        for t in crate::eval::external::tensors_mut(g) {
            if crate::eval::external::is_external(t) {
                t.raw_data = Some(crate::eval::external::read(t, &folder)?);
                t.external_data.clear();
                t.data_location = Some(pb::tensor_proto::DataLocation::Default as i32);
            }
        }
        Ok(())
    }

    pub fn graph(&self) -> &pb::GraphProto {
        self.proto.graph.as_ref().expect("checked on load")
    }

    /// The node of that name (or, unnamed, of that first output), which listing layers found.
    fn node_named(&self, name: &str) -> &pb::NodeProto {
        self.graph()
            .node
            .iter()
            .find(|n| node_name(n) == name)
            .expect("found when listing layers")
    }

    /// The graph's data inputs (inputs that are not initializers), in graph order; a model with
    /// none is refused.
    pub fn data_inputs(&self) -> Result<Vec<&pb::ValueInfoProto>> {
        let g = self.graph();
        let initializers: std::collections::HashSet<&str> = g
            .initializer
            .iter()
            .filter_map(|t| t.name.as_deref())
            .collect();
        let inputs: Vec<&pb::ValueInfoProto> = g
            .input
            .iter()
            .filter(|i| !i.name.as_deref().is_some_and(|n| initializers.contains(n)))
            .collect();
        if inputs.is_empty() {
            return Err(Error::invalid(
                WHAT,
                "graph.input",
                "the model has no data input (every input is an initializer)",
            ));
        }
        Ok(inputs)
    }

    /// The output bitplan scores: the one named `output`, else the graph's first.
    pub fn scored_output(&self, output: Option<&str>) -> Result<&pb::ValueInfoProto> {
        let outputs = &self.graph().output;
        let found = match output {
            None => outputs.first(),
            Some(name) => outputs.iter().find(|o| o.name.as_deref() == Some(name)),
        };
        found.ok_or_else(|| {
            let names: Vec<String> = outputs
                .iter()
                .map(|o| format!("{:?}", o.name.clone().unwrap_or_default()))
                .collect();
            Error::invalid(
                "manifest",
                "output",
                match output {
                    Some(name) => format!(
                        "the model has no output {name:?} (its outputs: {})",
                        names.join(", ")
                    ),
                    None => "the model has no output".into(),
                },
            )
        })
    }

    /// Every constant tensor by name: initializers and Constant node outputs.
    pub fn constants(&self) -> HashMap<&str, (&pb::TensorProto, WeightSource)> {
        let g = self.graph();
        let mut out = HashMap::new();
        for t in &g.initializer {
            if let Some(n) = t.name.as_deref() {
                out.insert(n, (t, WeightSource::Initializer));
            }
        }
        for node in &g.node {
            if node.op_type.as_deref() == Some("Constant") {
                if let (Some(t), Some(o)) = (
                    attr(node, "value").and_then(|a| a.t.as_ref()),
                    node.output.first(),
                ) {
                    out.insert(o.as_str(), (t, WeightSource::Constant));
                }
            }
        }
        out
    }

    /// The weighted layers, in graph order.
    pub fn weighted_layers(&self) -> Result<Vec<WeightedLayer>> {
        let g = self.graph();
        let constants = self.constants();
        // DequantizeLinear outputs fed by a constant integer tensor: name -> (node, integer input)
        let mut dequantized: HashMap<&str, (&pb::NodeProto, &str)> = HashMap::new();
        for node in &g.node {
            if node.op_type.as_deref() == Some("DequantizeLinear") {
                if let (Some(x), Some(o)) = (node.input.first(), node.output.first()) {
                    if constants.contains_key(x.as_str()) {
                        dequantized.insert(o.as_str(), (node, x.as_str()));
                    }
                }
            }
        }
        let mut layers = Vec::new();
        for node in &g.node {
            let op = node.op_type.as_deref().unwrap_or("");
            let weight_input = match op {
                "Conv" | "ConvTranspose" | "Gemm" => node.input.get(1),
                "MatMul" => node.input.get(1).filter(|i| {
                    constants.contains_key(i.as_str()) || dequantized.contains_key(i.as_str())
                }),
                _ => None,
            };
            let Some(weight) = weight_input else { continue };
            let (tensor, source) = if let Some((t, src)) = constants.get(weight.as_str()) {
                (*t, src.clone())
            } else if let Some((dq, integer)) = dequantized.get(weight.as_str()) {
                (
                    constants[integer].0,
                    WeightSource::Dequantized {
                        node: node_name(dq),
                        integer: integer.to_string(),
                    },
                )
            } else {
                continue; // weights computed at run time: nothing to quantize ahead of time
            };
            let name = node_name(node);
            let invalid = |reason: String| {
                Error::invalid(
                    WHAT,
                    format!("graph.node[{name}]"),
                    format!("{op} weight {weight:?} {reason}"),
                )
            };
            let shape = weight_shape(&tensor.dims).map_err(invalid)?;
            let declared: usize = shape.iter().product();
            if let Some(held) = stored_len(tensor).filter(|&n| n != declared) {
                return Err(invalid(format!(
                    "has shape {shape:?} ({declared} values) but holds {held} values"
                )));
            }
            let (axis, channels, inner) = channel_layout(node, &shape).map_err(invalid)?;
            layers.push(WeightedLayer {
                node: name,
                op_type: op.to_string(),
                weight: weight.clone(),
                shape,
                axis,
                channels,
                inner,
                source,
            });
        }
        Ok(layers)
    }

    /// The fp32 values of a layer's weight (dequantized when stored as integers).
    pub fn weight_values(&self, layer: &WeightedLayer) -> Result<Vec<f32>> {
        let constants = self.constants();
        match &layer.source {
            WeightSource::Initializer | WeightSource::Constant => {
                self.tensor_values(constants[layer.weight.as_str()].0)
            }
            WeightSource::Dequantized { node, integer } => {
                let dq = self.node_named(node);
                let q = self.tensor_values(constants[integer.as_str()].0)?;
                let value_of = |i: usize| -> Result<Vec<f32>> {
                    match dq.input.get(i).filter(|s| !s.is_empty()) {
                        None => Ok(vec![0.0]),
                        Some(n) => constants.get(n.as_str()).map_or_else(
                            || {
                                Err(Error::invalid(
                                    WHAT,
                                    format!("graph.node[{node}]"),
                                    format!("DequantizeLinear input {n:?} is not a constant"),
                                ))
                            },
                            |(t, _)| self.tensor_values(t),
                        ),
                    }
                };
                let (scale, zero) = (value_of(1)?, value_of(2)?);
                let rank = layer.shape.len() as i64;
                let axis = attr(dq, "axis").and_then(|a| a.i).unwrap_or(1);
                let axis = if axis < 0 { axis + rank } else { axis } as usize;
                let inner: usize = layer
                    .shape
                    .get(axis + 1..)
                    .map_or(1, |s| s.iter().product());
                let per = scale.len();
                Ok(q.iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = if per == 1 { 0 } else { (i / inner) % per };
                        (v - zero[if zero.len() == 1 { 0 } else { c }]) * scale[c]
                    })
                    .collect())
            }
        }
    }
}

impl OnnxModel {
    /// The layer's highest-bit integer store at `bits`. Integer weights behind a DequantizeLinear
    /// are taken as they are when they already are that store (int8 at 8 bits, zero points 0,
    /// scales per tensor or per output channel); otherwise the fp32 values are quantized.
    pub fn high_bit_weights(
        &self,
        wl: &WeightedLayer,
        bits: u8,
    ) -> Result<crate::eval::quant::HighBitWeights> {
        if let Some(stored) = self.stored_high_bit_weights(wl, bits)? {
            return Ok(stored);
        }
        let w = self.weight_values(wl)?;
        Ok(crate::eval::quant::HighBitWeights::quantize(
            &w,
            wl.channels,
            wl.inner,
            bits,
        ))
    }

    /// The layer's integer weights when they already are its highest-bit store at `bits` (see
    /// [`OnnxModel::high_bit_weights`]); `None` when the fp32 values are to be quantized.
    pub fn stored_high_bit_weights(
        &self,
        wl: &WeightedLayer,
        bits: u8,
    ) -> Result<Option<crate::eval::quant::HighBitWeights>> {
        if let (WeightSource::Dequantized { node, integer }, 8) = (&wl.source, bits) {
            let constants = self.constants();
            let dq = self.node_named(node);
            let (q_t, _) = constants[integer.as_str()];
            let get = |i: usize| {
                dq.input
                    .get(i)
                    .filter(|s| !s.is_empty())
                    .and_then(|n| constants.get(n.as_str()))
                    .map(|(t, _)| *t)
            };
            let is_int8 = q_t.data_type == Some(pb::tensor_proto::DataType::Int8 as i32);
            let axis = attr(dq, "axis").and_then(|a| a.i).unwrap_or(1);
            let axis = if axis < 0 {
                axis + wl.shape.len() as i64
            } else {
                axis
            } as usize;
            if let (true, Some(scale_t)) = (is_int8, get(1)) {
                let scales = self.tensor_values(scale_t)?;
                let zero = match get(2) {
                    Some(z) => self.tensor_values(z)?,
                    None => vec![0.0],
                };
                let per_channel_ok =
                    scales.len() == 1 || (axis == wl.axis && scales.len() == wl.channels);
                if zero.iter().all(|&z| z == 0.0) && per_channel_ok {
                    let q: Vec<i32> = self.tensor_values(q_t)?.iter().map(|&v| v as i32).collect();
                    if q.iter().all(|v| v.abs() <= 127) {
                        let scales = if scales.len() == 1 {
                            vec![scales[0]; wl.channels]
                        } else {
                            scales
                        };
                        return Ok(Some(crate::eval::quant::HighBitWeights {
                            bits,
                            q,
                            scales,
                            inner: wl.inner,
                        }));
                    }
                }
            }
        }
        Ok(None)
    }

    /// For each manifest layer, the model layer its `weight` links to (by weight tensor or node
    /// name); `None` for unlinked layers. Every broken link is reported with its JSON path.
    pub fn link_layers(&self, manifest: &crate::Manifest) -> Result<Vec<Option<WeightedLayer>>> {
        let layers = self.weighted_layers()?;
        let mut out = Vec::with_capacity(manifest.layers.len());
        let mut errors = Vec::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            let Some(link) = &layer.weight else {
                out.push(None);
                continue;
            };
            match layers
                .iter()
                .find(|l| &l.weight == link)
                .or_else(|| layers.iter().find(|l| &l.node == link))
            {
                Some(wl) => out.push(Some(wl.clone())),
                None => {
                    errors.push(crate::FieldError::new(
                        format!("layers[{i}].weight"),
                        format!("layer {:?} links weight {link:?}, which is not the weight of any Conv/ConvTranspose/Gemm/MatMul in the model", layer.name),
                    ));
                    out.push(None);
                }
            }
        }
        Error::check("manifest", errors)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
