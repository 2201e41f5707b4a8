//! Measured sensitivity on the digits fixture, against an oracle that shares the quantizer but not
//! the pass: the whole model with one weight replaced, in one ONNX Runtime session (no segments, no
//! cached activations), compared by a KL written here with the fixture's own fp32 logits.

mod common;
use common::{digits, ort_lib, repo, whole_model_with_one_layer};
use planner::eval::npz::ValidationSet;
use planner::eval::onnx::OnnxModel;
use planner::eval::ort_backend::OrtBackend;
use planner::eval::{EvalOptions, Evaluator};
use planner::{Divergence, Manifest};
use std::ops::ControlFlow;

/// An evaluator of the fixture, with the backend and the fixture itself.
fn evaluator(
    options: EvalOptions,
) -> (
    Evaluator<OrtBackend>,
    OrtBackend,
    OnnxModel,
    Manifest,
    ValidationSet,
) {
    let (model, manifest, data) = digits();
    let backend = OrtBackend::new(&ort_lib(), 1).unwrap();
    let ev = Evaluator::new(&backend, &model, &manifest, data.clone(), options).unwrap();
    (ev, backend, model, manifest, data)
}

/// The fixture's fp32 logits, [540, 10], as the training framework's export wrote them.
fn fixture_logits() -> Vec<f32> {
    std::fs::read(repo().join("testdata/digits-cnn/digits_val_logits_fp32.bin"))
        .unwrap()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn softmax(z: &[f32]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn mean_kl(reference: &[f32], out: &[f32], width: usize) -> f64 {
    let rows = reference.len() / width;
    let mut total = 0.0;
    for r in 0..rows {
        let p = softmax(&reference[r * width..(r + 1) * width]);
        let q = softmax(&out[r * width..(r + 1) * width]);
        total += p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum::<f64>();
    }
    total / rows as f64
}

#[test]
fn each_layers_sensitivity_equals_the_whole_model_with_that_layer_alone_quantized() {
    let (mut ev, backend, model, manifest, data) = evaluator(EvalOptions::default());
    let mut seen = Vec::new();
    let measured = ev
        .sensitivity(&manifest, Divergence::Kl, |p| {
            seen.push((p.done, p.layer, p.bits));
            ControlFlow::Continue(())
        })
        .unwrap();
    // conv1 is pinned to 8 bits: it is measured there only.
    assert_eq!(manifest.layers[0].pin, Some(8));
    let total: usize = manifest.layers.iter().map(|l| l.choices().len()).sum();
    assert_eq!(total, 1 + 3 * 6);
    assert_eq!(seen.len(), total);
    assert_eq!(seen.last().unwrap().0, total);

    let reference = fixture_logits();
    for (l, layer) in manifest.layers.iter().enumerate() {
        assert_eq!(
            measured[l].keys().rev().copied().collect::<Vec<_>>(),
            layer.choices(),
            "{}",
            layer.name
        );
        for (&b, &got) in &measured[l] {
            let out = whole_model_with_one_layer(&backend, &model, &manifest, &data, l, b, 0);
            let want = mean_kl(&reference, &out, 10);
            assert!(
                (got - want).abs() <= 1e-6 + 1e-3 * want,
                "{} at {b} bits: pass {got:e}, whole model {want:e}",
                layer.name
            );
        }
        // Fewer bits move the output more: 2 bits against 8.
        if layer.pin.is_none() {
            assert!(measured[l][&2] > 10.0 * measured[l][&8], "{}", layer.name);
        }
    }
}

#[test]
fn relative_mse_is_measured_the_same_way() {
    let (mut ev, backend, model, manifest, data) = evaluator(EvalOptions::default());
    let measured = ev
        .sensitivity(&manifest, Divergence::Mse, |_| ControlFlow::Continue(()))
        .unwrap();
    let reference = fixture_logits();
    let out = whole_model_with_one_layer(&backend, &model, &manifest, &data, 1, 3, 0);
    let (num, den) = reference
        .iter()
        .zip(&out)
        .fold((0.0f64, 0.0f64), |(n, d), (&r, &o)| {
            (n + ((o - r) as f64).powi(2), d + (r as f64).powi(2))
        });
    let want = num / den;
    let got = measured[1][&3];
    assert!((got - want).abs() <= 1e-3 * want, "{got:e} vs {want:e}");
}

#[test]
fn activation_quantization_is_refused_by_the_pass() {
    let (mut ev, _, _, manifest, _) = evaluator(EvalOptions {
        quantize_activations: true,
        ..EvalOptions::default()
    });
    let err = ev
        .sensitivity(&manifest, Divergence::Kl, |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.to_string().contains("quantize_activations"), "{err}");
}

/// The changes the pass keeps for the output objective, against the whole model with one layer
/// quantized, whitened here by its own softmax: `sqrt(p / 2) * (d - p.d)` per sample.
#[test]
fn each_kept_output_change_is_the_whole_models_whitened_change() {
    let (mut ev, backend, model, manifest, data) = evaluator(EvalOptions::default());
    let changes = ev
        .output_changes(&manifest, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(changes.rows, 540);
    let reference = fixture_logits();
    for (l, b) in [(1, 2), (2, 4), (3, 8)] {
        let out = whole_model_with_one_layer(&backend, &model, &manifest, &data, l, b, 0);
        let got = &changes.layers[l][&b];
        assert_eq!(got.len(), 5400);
        for r in 0..540 {
            let p = softmax(&reference[r * 10..(r + 1) * 10]);
            let q = softmax(&out[r * 10..(r + 1) * 10]);
            let d: Vec<f64> = p.iter().zip(&q).map(|(p, q)| q.ln() - p.ln()).collect();
            let mean: f64 = p.iter().zip(&d).map(|(p, d)| p * d).sum();
            for c in 0..10 {
                let want = (p[c] / 2.0).sqrt() * (d[c] - mean);
                let got = f64::from(got[r * 10 + c]);
                assert!(
                    (got - want).abs() <= 1e-4 + 1e-3 * want.abs(),
                    "{l} at {b}: {got} vs {want}"
                );
            }
        }
    }
}
