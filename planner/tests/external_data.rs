//! ONNX models whose weights live in a file beside them (how every model over 2 GB is saved):
//! read from `location`/`offset`/`length` relative to the model's folder, equal to the same model
//! stored inline, never handed to a session inside one protobuf, and locations outside the
//! folder refused.

mod common;

use common::{digits, ort_lib, repo};
use planner::eval::onnx::{pb, OnnxModel};
use planner::eval::ort_backend::OrtBackend;
use planner::eval::{Backend, EvalOptions, Evaluator, External};
use prost::Message;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// ONNX Runtime, recording the size of every model it is handed.
#[derive(Clone)]
struct Recording {
    ort: OrtBackend,
    sizes: Arc<Mutex<Vec<usize>>>,
}

impl Backend for Recording {
    type Session = <OrtBackend as Backend>::Session;
    fn session(&self, model: &[u8], external: External) -> planner::Result<Self::Session> {
        self.sizes.lock().unwrap().push(model.len());
        self.ort.session(model, external)
    }
}

fn inline() -> OnnxModel {
    OnnxModel::from_path(&repo().join("testdata/digits-cnn/digits_cnn.onnx")).unwrap()
}

/// A fresh folder of its own under the system's temporary directory.
fn folder(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bitplan-external-{name}-"))
        .tempdir()
        .unwrap()
}

fn entry(key: &str, value: String) -> pb::StringStringEntryProto {
    pb::StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value),
    }
}

/// Writes the digits model with every initializer's bytes in `weights.bin` (each at an offset
/// aligned to 64, after some padding, as onnx's converter lays them out) and `location` as
/// given; returns the model's path.
fn write_external(dir: &std::path::Path, location: impl Fn(usize) -> String) -> PathBuf {
    let mut proto = inline().proto;
    let g = proto.graph.as_mut().unwrap();
    let mut blob = vec![7u8; 13];
    for (i, t) in g.initializer.iter_mut().enumerate() {
        let raw = t
            .raw_data
            .take()
            .unwrap_or_else(|| t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect());
        t.float_data.clear();
        blob.resize(blob.len().div_ceil(64) * 64, 0);
        let offset = blob.len();
        blob.extend_from_slice(&raw);
        t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        t.external_data = vec![
            entry("location", location(i)),
            entry("offset", offset.to_string()),
            entry("length", raw.len().to_string()),
        ];
    }
    std::fs::write(dir.join("weights.bin"), blob).unwrap();
    let path = dir.join("model.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    path
}

#[test]
fn external_weights_read_evaluate_and_match_the_inline_model() {
    let tmp = folder("match");
    let dir = tmp.path();
    let path = write_external(dir, |_| "weights.bin".into());
    let external = OnnxModel::from_path(&path).unwrap();
    let inline = inline();
    let (a, b) = (
        inline.weighted_layers().unwrap(),
        external.weighted_layers().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            inline.weight_values(x).unwrap(),
            external.weight_values(y).unwrap()
        );
    }
    // Read from bytes alone, the file beside it cannot be found: said, not guessed.
    let err = OnnxModel::from_bytes(&std::fs::read(&path).unwrap())
        .unwrap()
        .weight_values(&b[0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("external file"), "{err}");

    let (_, manifest, data) = digits();
    let backend = OrtBackend::new(&ort_lib(), 1).unwrap();
    let mut from_inline = Evaluator::new(
        &backend,
        &inline,
        &manifest,
        data.clone(),
        EvalOptions::default(),
    )
    .unwrap();
    let recording = Recording {
        ort: backend.clone(),
        sizes: Default::default(),
    };
    let mut from_external = Evaluator::new(
        &recording,
        &external,
        &manifest,
        data,
        EvalOptions::default(),
    )
    .unwrap();
    let bits: Vec<u8> = manifest
        .layers
        .iter()
        .map(|l| *l.choices().last().unwrap())
        .collect();
    let (x, y) = (
        from_inline.evaluate(&bits).unwrap(),
        from_external.evaluate(&bits).unwrap(),
    );
    assert_eq!(x.kl_fp32, y.kl_fp32);
    assert_eq!(x.accuracy, y.accuracy);
    assert!(x.kl_fp32 > 0.0, "the lowest bits move the output: {x:?}");
    // No session was handed the weights in its model's bytes: ONNX Runtime read them from the
    // file, or was given the planned ones in memory.
    let weights = std::fs::metadata(dir.join("weights.bin")).unwrap().len() as usize;
    let sizes = recording.sizes.lock().unwrap().clone();
    assert!(sizes.len() >= 2, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n < weights / 20),
        "{sizes:?} bytes handed to sessions, with {weights} bytes of weights"
    );
}

#[test]
fn locations_outside_the_models_folder_and_short_files_are_refused() {
    for (case, location, want) in [
        ("parent", "../weights.bin", "inside the model's folder"),
        ("absolute", "/etc/passwd", "inside the model's folder"),
        (
            "nested",
            "sub/../../weights.bin",
            "inside the model's folder",
        ),
        ("missing", "other.bin", "cannot open"),
    ] {
        let tmp = folder(case);
        let dir = tmp.path();
        let path = write_external(dir, |_| location.to_string());
        let err = OnnxModel::from_path(&path).unwrap_err().to_string();
        assert!(err.contains(want), "{case}: {err}");
        assert!(
            err.contains(".external_data"),
            "{case}: names the tensor: {err}"
        );
    }
    let tmp = folder("short");
    let dir = tmp.path();
    let path = write_external(dir, |_| "weights.bin".into());
    let full = std::fs::read(dir.join("weights.bin")).unwrap();
    std::fs::write(dir.join("weights.bin"), &full[..full.len() - 1]).unwrap();
    let err = OnnxModel::from_path(&path).unwrap_err().to_string();
    assert!(err.contains("past the end"), "{err}");
}

/// Deterministic weights in [-scale, scale) (xorshift).
fn weights(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A model over 2 GB, as such models are saved: one protobuf cannot hold its weights, so they are
/// in a file beside it. It is read, evaluated and measured without ever being one protobuf: the
/// fp32 output equals the matrix products computed here, and each layer's measured sensitivity
/// equals the whole model run with that layer alone quantized.
#[test]
fn a_model_over_two_gigabytes_evaluates_and_is_measured_from_its_external_data() {
    use planner::eval::npz::ValidationSet;
    use planner::{Divergence, Manifest};
    use std::io::Write;
    // x [2, 4096] -> MatMul 4096x49152 -> Relu -> 49152x4096 -> Relu -> 4096x49152 -> Relu ->
    // 49152x16: 2.25 GiB of weights.
    let dims = [4096usize, 49152, 4096, 49152, 16];
    let samples = 2;
    let tmp = folder("large");
    let dir = tmp.path();
    let mut blob = std::io::BufWriter::new(std::fs::File::create(dir.join("weights.bin")).unwrap());
    let x = weights(99, samples * dims[0], 1.0);
    let mut h: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let (mut nodes, mut initializers, mut offset) = (Vec::new(), Vec::new(), 0usize);
    for l in 0..4 {
        let (k, n) = (dims[l], dims[l + 1]);
        let w = weights(l as u64 + 1, k * n, (3.0 / k as f32).sqrt());
        // The oracle, in f64: h <- relu(h @ w) (no relu after the last layer).
        let mut next = vec![0f64; samples * n];
        for s in 0..samples {
            for i in 0..k {
                let a = h[s * k + i];
                let row = &w[i * n..(i + 1) * n];
                for (o, &b) in next[s * n..(s + 1) * n].iter_mut().zip(row) {
                    *o += a * f64::from(b);
                }
            }
        }
        if l < 3 {
            next.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        h = next;
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        blob.write_all(&bytes).unwrap();
        let mut t = pb::TensorProto {
            name: Some(format!("w{l}")),
            dims: vec![k as i64, n as i64],
            data_type: Some(pb::tensor_proto::DataType::Float as i32),
            ..Default::default()
        };
        planner::eval::external::mark(&mut t, "weights.bin", offset, bytes.len());
        offset += bytes.len();
        initializers.push(t);
        let input = if l == 0 {
            "x".to_string()
        } else {
            format!("a{}", l - 1)
        };
        let out = if l == 3 {
            "y".to_string()
        } else {
            format!("m{l}")
        };
        nodes.push(pb::NodeProto {
            name: Some(format!("l{l}")),
            op_type: Some("MatMul".into()),
            input: vec![input, format!("w{l}")],
            output: vec![out.clone()],
            ..Default::default()
        });
        if l < 3 {
            nodes.push(pb::NodeProto {
                name: Some(format!("relu{l}")),
                op_type: Some("Relu".into()),
                input: vec![out],
                output: vec![format!("a{l}")],
                ..Default::default()
            });
        }
    }
    blob.flush().unwrap();
    drop(blob);
    assert!(
        offset > 1 << 31,
        "{offset} bytes of weights: more than one protobuf can hold"
    );
    let value = |name: &str, width: i64| pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(pb::tensor_proto::DataType::Float as i32),
                shape: Some(pb::TensorShapeProto {
                    dim: [None, Some(width)]
                        .into_iter()
                        .map(|d| pb::tensor_shape_proto::Dimension {
                            value: d.map(pb::tensor_shape_proto::dimension::Value::DimValue),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(pb::GraphProto {
            name: Some("large".into()),
            node: nodes,
            initializer: initializers,
            input: vec![value("x", dims[0] as i64)],
            output: vec![value("y", dims[4] as i64)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join("model.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 4096);

    let model = OnnxModel::from_path(&path).unwrap();
    let layers: Vec<serde_json::Value> = (0..4)
        .map(|l| {
            serde_json::json!({"name": format!("l{l}"), "weight": format!("w{l}"),
                               "params": dims[l] * dims[l + 1], "macs": dims[l] * dims[l + 1]})
        })
        .collect();
    let manifest = Manifest::from_json(
        &serde_json::json!({"name": "large", "bits": [8, 4], "layers": layers}).to_string(),
    )
    .unwrap();
    let data = ValidationSet::single(x, vec![samples, dims[0]], None);
    let backend = OrtBackend::new(&ort_lib(), 2).unwrap();
    let mut evaluator = Evaluator::new(
        &backend,
        &model,
        &manifest,
        data.clone(),
        EvalOptions::default(),
    )
    .unwrap();
    let fp32 = evaluator
        .logits(&[planner::eval::FULL_PRECISION; 4])
        .unwrap();
    let want: Vec<f32> = h.iter().map(|&v| v as f32).collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = fp32
        .data
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "fp32 output off by {worst} (scale {scale})"
    );

    let measured = evaluator
        .sensitivity(&manifest, Divergence::Mse, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    drop(evaluator);
    let ref2: f64 = fp32.data.iter().map(|&a| f64::from(a).powi(2)).sum();
    for (l, s) in measured.iter().enumerate() {
        let four = s[&4];
        assert!(four > s[&8], "l{l}: {s:?}");
        // The oracle for one of them (each whole-model session reads 2.25 GiB).
        if l == 1 {
            let y = common::whole_model_with_one_layer(&backend, &model, &manifest, &data, l, 4, 0);
            let diff2: f64 = fp32
                .data
                .iter()
                .zip(&y)
                .map(|(&a, &b)| f64::from(a - b).powi(2))
                .sum();
            let want = diff2 / ref2;
            assert!((four - want).abs() <= 1e-4 * want, "{four} vs {want}");
        }
    }
}
