//! A model with two int64 inputs and an embedding output (generated: `synth_model::text_encoder`):
//! the npz binds by input name, the ids pass through as integers, the mask read after the first
//! planned layer is fed to the segment that reads it, the scored output is the one the manifest
//! names, and every figure matches the whole candidate run in one session.

mod common;
use common::{max_rel_diff, ort_lib, whole_model_with_one_layer};
use planner::eval::ingest::{
    derive_manifest, mac_sample, measure_sensitivity, SensitivityOptions, Source,
};
use planner::eval::npz::{InputValues, ValidationSet};
use planner::eval::onnx::OnnxModel;
use planner::eval::ort_backend::OrtBackend;
use planner::eval::synth_model::{text_encoder, EMBED, HIDDEN, OUT, TOKENS};
use planner::eval::{Backend, EvalOptions, Evaluator, Session};
use planner::{Divergence, Manifest};

fn setup() -> (OrtBackend, OnnxModel, ValidationSet, Manifest) {
    let generated = text_encoder(3, 40);
    let model = OnnxModel::from_bytes(&generated.model).unwrap();
    let data = ValidationSet::from_npz(&generated.npz).unwrap();
    let backend = OrtBackend::new(&ort_lib(), 1).unwrap();
    let (sample, warnings) = mac_sample(&model, None, Some(&data)).unwrap();
    assert!(warnings.is_empty());
    let manifest = derive_manifest(
        &backend,
        &Source {
            model: &model,
            name: "text",
            traces: None,
            sample: &sample,
            output: Some("embedding"),
            bits: &[8, 6, 4, 2],
        },
    )
    .unwrap();
    (backend, model, data, manifest)
}

/// The model's `output` over the whole set, from one session of `model_bytes`.
fn run_whole(
    backend: &OrtBackend,
    model_bytes: &[u8],
    model: &OnnxModel,
    data: &ValidationSet,
    output: usize,
) -> Vec<f32> {
    backend
        .session(model_bytes, Default::default())
        .unwrap()
        .run(&data.bind(model).unwrap().feeds(0, data.len()))
        .unwrap()
        .swap_remove(output)
        .data
}

#[test]
fn integer_inputs_bind_by_name_and_evaluation_matches_one_session() {
    let (backend, model, data, manifest) = setup();
    let bound = data.bind(&model).unwrap();
    let names: Vec<&str> = bound.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask"], "the model's order");
    assert!(matches!(bound.inputs[0].values, InputValues::I64(_)));

    // MACs at the calibration shape: every token meets proj; the pooled vector meets head.
    assert_eq!(manifest.output.as_deref(), Some("embedding"));
    let macs: Vec<u64> = manifest.layers.iter().map(|l| l.macs).collect();
    assert_eq!(
        macs,
        [(TOKENS * HIDDEN * EMBED) as u64, (OUT * HIDDEN) as u64]
    );

    let mut ev = Evaluator::new(
        &backend,
        &model,
        &manifest,
        data.clone(),
        EvalOptions {
            batch_size: 16,
            ..EvalOptions::default()
        },
    )
    .unwrap();
    // The mask is read after the first planned layer, so cutting there must feed it again.
    assert_eq!(ev.segments(), 3, "cuts before proj and before head");

    let fp32 = run_whole(
        &backend,
        &prost::Message::encode_to_vec(&model.proto),
        &model,
        &data,
        1,
    );
    for bits in [[8u8, 8], [4, 2], [2, 6], [6, 4]] {
        let qdq = planner::eval::export::export_qdq(&model, &manifest, &bits).unwrap();
        let want = run_whole(&backend, &qdq, &model, &data, 1);
        let got = ev.logits(&bits).unwrap();
        assert_eq!(got.shape, [data.len(), OUT]);
        let worst = max_rel_diff(&got.data, &want);
        assert!(
            worst <= 1e-5,
            "{bits:?}: segments differ from one session by {worst}"
        );

        // Closeness against fp32, computed here from the two outputs.
        let m = ev.evaluate(&bits).unwrap();
        let (mut cos_sum, mut cos_min, mut diff2, mut ref2) = (0.0, f64::INFINITY, 0.0, 0.0);
        for (r, o) in fp32.chunks(OUT).zip(want.chunks(OUT)) {
            let dot: f64 = r
                .iter()
                .zip(o)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let nr: f64 = r.iter().map(|&a| f64::from(a).powi(2)).sum();
            let no: f64 = o.iter().map(|&b| f64::from(b).powi(2)).sum();
            let cos = dot / (nr.sqrt() * no.sqrt());
            cos_sum += cos;
            cos_min = f64::min(cos_min, cos);
            diff2 += r
                .iter()
                .zip(o)
                .map(|(&a, &b)| f64::from(a - b).powi(2))
                .sum::<f64>();
            ref2 += nr;
        }
        let n = data.len() as f64;
        assert!((m.cosine_mean - cos_sum / n).abs() < 1e-5, "{bits:?}");
        assert!((m.cosine_min - cos_min).abs() < 1e-5, "{bits:?}");
        assert!((m.rel_l2 - (diff2 / ref2).sqrt()).abs() < 1e-4, "{bits:?}");
        assert_eq!(m.samples, data.len());
        if bits != [8, 8] {
            assert!(m.rel_l2 > 0.0, "{bits:?}: quantization left no trace");
        }
    }
}

#[test]
fn sensitivity_of_a_two_input_model_equals_single_layer_evaluations() {
    let (backend, model, data, manifest) = setup();
    let options = SensitivityOptions {
        metric: Divergence::Mse,
        batch_size: 16,
    };
    let (measured, _) =
        measure_sensitivity(&backend, &model, &manifest, data.clone(), options, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(measured.objective(), "sensitivity_mse");
    assert_eq!(measured.output.as_deref(), Some("embedding"), "kept");

    // Oracle: the whole model with one weight replaced, in one session; MSE written here.
    let fp32 = run_whole(
        &backend,
        &prost::Message::encode_to_vec(&model.proto),
        &model,
        &data,
        1,
    );
    let ref2: f64 = fp32.iter().map(|&a| f64::from(a).powi(2)).sum();
    for (l, layer) in measured.layers.iter().enumerate() {
        let s = layer.sensitivity.as_ref().unwrap();
        assert_eq!(s.len(), 4, "{}", layer.name);
        for (&b, &got) in s {
            let y = whole_model_with_one_layer(&backend, &model, &manifest, &data, l, b, 1);
            let diff2: f64 = fp32
                .iter()
                .zip(&y)
                .map(|(&a, &b)| f64::from(a - b).powi(2))
                .sum();
            let want = diff2 / ref2;
            assert!(want > 0.0, "{} at {b} bits changed nothing", layer.name);
            assert!(
                (got - want).abs() <= 1e-9 + 1e-4 * want,
                "{} at {b} bits: {got} vs {want}",
                layer.name
            );
        }
    }
}

#[test]
fn a_set_that_does_not_fit_the_inputs_is_refused_naming_each_array() {
    use planner::eval::npz::{to_npz, Array, Values};
    let model = OnnxModel::from_bytes(&text_encoder(3, 4).model).unwrap();
    let ints = |n: usize| Array {
        shape: vec![n, TOKENS],
        values: Values::Int(vec![1; n * TOKENS]),
    };
    let floats = Array {
        shape: vec![4, TOKENS],
        values: Values::Float(vec![1.0; 4 * TOKENS]),
    };
    let refused = |arrays: &[(&str, &Array)]| -> Vec<(String, String)> {
        let set = ValidationSet::from_npz(&to_npz(arrays)).unwrap();
        match set.bind(&model).unwrap_err() {
            planner::Error::Invalid { errors, .. } => {
                errors.into_iter().map(|e| (e.path, e.reason)).collect()
            }
            other => panic!("{other}"),
        }
    };

    let errors = refused(&[("input_ids", &ints(4)), ("attention_msk", &ints(4))]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "attention_mask");
    assert!(
        errors[0].1.contains("no array of that name") && errors[0].1.contains("attention_msk"),
        "{errors:?}"
    );

    let errors = refused(&[("input_ids", &floats), ("attention_mask", &ints(4))]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, "input_ids");
    assert!(
        errors[0].1.contains("holds floats") && errors[0].1.contains("INT64"),
        "{errors:?}"
    );

    let wrong_width = Array {
        shape: vec![4, TOKENS + 1],
        values: Values::Int(vec![1; 4 * (TOKENS + 1)]),
    };
    let errors = refused(&[("input_ids", &wrong_width), ("attention_mask", &ints(4))]);
    assert_eq!(errors[0].0, "input_ids");
    assert!(errors[0].1.contains("does not fit"), "{errors:?}");

    // Inputs must agree on the number of samples.
    let errors = refused(&[("input_ids", &ints(4)), ("attention_mask", &ints(3))]);
    assert_eq!(errors[0].0, "attention_mask");
    assert!(
        errors[0].1.contains("has 3 samples but input_ids has 4"),
        "{errors:?}"
    );
}

#[test]
fn an_integer_output_of_one_value_per_sample_is_scored_as_numbers() {
    let (backend, model, data, mut manifest) = setup();
    manifest.output = Some("length".into());
    let mut ev = Evaluator::new(
        &backend,
        &model,
        &manifest,
        data.clone(),
        EvalOptions::default(),
    )
    .unwrap();
    // Oracle: the tokens each mask row marks.
    let bound = data.bind(&model).unwrap();
    let InputValues::I64(mask) = &bound.input("attention_mask").unwrap().values else {
        panic!("the mask is int64");
    };
    let want: Vec<f32> = mask
        .chunks(TOKENS)
        .map(|r| r.iter().sum::<i64>() as f32)
        .collect();
    let got = ev.logits(&[2, 2]).unwrap();
    assert_eq!(got.data, want);
    // Weights do not touch it: no distance at any bits.
    let m = ev.evaluate(&[2, 2]).unwrap();
    assert_eq!((m.rel_l2, m.cosine_min), (0.0, 1.0));
    // One value per sample is no distribution: KL sensitivity is refused, naming the metric.
    let err = ev
        .sensitivity(&manifest, Divergence::Kl, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("metric") && err.contains("1 column"), "{err}");
}
