//! Evaluation with ONNX Runtime on the digits fixture: the fp32 and uniform-bit accuracies of its
//! README table are reproduced to within one image (1/540).

mod common;
use common::{max_rel_diff, ort_lib, repo};
use planner::eval::npz::ValidationSet;
use planner::eval::onnx::OnnxModel;
use planner::eval::ort_backend::OrtBackend;
use planner::eval::{EvalOptions, Evaluator, Scheme};
use planner::Manifest;

fn digits_model() -> OnnxModel {
    OnnxModel::from_bytes(
        &std::fs::read(repo().join("testdata/digits-cnn/digits_cnn.onnx")).unwrap(),
    )
    .unwrap()
}

fn digits_manifest() -> Manifest {
    Manifest::from_json(
        &std::fs::read_to_string(repo().join("examples/digits-cnn.manifest.json")).unwrap(),
    )
    .unwrap()
}

fn evaluator() -> Evaluator<OrtBackend> {
    evaluator_with(EvalOptions::default())
}

fn evaluator_with(options: EvalOptions) -> Evaluator<OrtBackend> {
    let backend = OrtBackend::new(&ort_lib(), 1).unwrap();
    let model = digits_model();
    let manifest = digits_manifest();
    let data = ValidationSet::from_npz(
        &std::fs::read(repo().join("testdata/digits-cnn/digits_val.npz")).unwrap(),
    )
    .unwrap();
    Evaluator::new(&backend, &model, &manifest, data, options).unwrap()
}

const ONE_IMAGE: f64 = 1.0 / 540.0 + 1e-9;

#[test]
fn uniform_bit_accuracies_match_the_fixture_table() {
    let mut ev = evaluator();
    assert!((ev.fp32_accuracy().unwrap() - 0.9852).abs() <= ONE_IMAGE);
    let bits = [8u8, 6, 5, 4, 3, 2];
    let double_rounding = [0.9870, 0.9852, 0.9870, 0.9870, 0.9778, 0.8870];
    let direct = [0.9870, 0.9852, 0.9852, 0.9852, 0.9648, 0.2259];
    for (i, &b) in bits.iter().enumerate() {
        let m = ev.evaluate_with(&[b; 4], Scheme::DoubleRounding).unwrap();
        assert!(
            (m.accuracy.unwrap() - double_rounding[i]).abs() <= ONE_IMAGE,
            "DR {b} bits: {} vs {}",
            m.accuracy.unwrap(),
            double_rounding[i]
        );
        let m = ev.evaluate_with(&[b; 4], Scheme::Direct).unwrap();
        assert!(
            (m.accuracy.unwrap() - direct[i]).abs() <= ONE_IMAGE,
            "direct {b} bits: {} vs {}",
            m.accuracy.unwrap(),
            direct[i]
        );
    }
}

#[test]
fn metrics_are_consistent_and_deterministic() {
    let mut ev = evaluator();
    let high = ev.evaluate(&[8, 8, 8, 8]).unwrap();
    assert_eq!(high.agreement_highest, 1.0);
    assert!(high.kl_highest.abs() < 1e-12, "{}", high.kl_highest);
    assert!(high.sqnr_db > 30.0, "8-bit SQNR {}", high.sqnr_db);
    let low = ev.evaluate(&[8, 2, 2, 3]).unwrap();
    assert!(low.sqnr_db < high.sqnr_db && low.kl_fp32 > high.kl_fp32);
    let again = ev.evaluate(&[8, 2, 2, 3]).unwrap();
    assert_eq!(
        (low.accuracy, low.agreement_fp32, low.kl_fp32, low.sqnr_db),
        (
            again.accuracy,
            again.agreement_fp32,
            again.kl_fp32,
            again.sqnr_db
        )
    );
    assert_eq!(ev.timings.candidates, 3);
}

#[test]
fn exported_qdq_model_runs_and_matches_the_fake_quant_evaluation() {
    use planner::eval::{Backend, Session};
    let mut ev = evaluator();
    let model = digits_model();
    let manifest = digits_manifest();
    let backend = OrtBackend::new(&ort_lib(), 1).unwrap();
    for bits in [[8u8, 3, 4, 8], [8, 2, 2, 2], [8, 8, 8, 8], [8, 5, 6, 3]] {
        let qdq = planner::eval::export::export_qdq(&model, &manifest, &bits).unwrap();
        // Integer weights, not fp32 copies, are what ships.
        let exported = OnnxModel::from_bytes(&qdq).unwrap();
        let g = exported.graph();
        assert_eq!(
            g.node
                .iter()
                .filter(|n| n.op_type.as_deref() == Some("DequantizeLinear"))
                .count(),
            4
        );
        assert!(
            g.initializer
                .iter()
                .all(|t| t.name.as_deref() != Some("conv2.weight")),
            "fp32 weight left behind"
        );

        let want = ev.logits(&bits).unwrap();
        let data = ev.data().clone();
        let mut session = backend.session(&qdq, Default::default()).unwrap();
        let got = session
            .run(&data.bind(&model).unwrap().feeds(0, data.len()))
            .unwrap()
            .swap_remove(0);
        assert_eq!(got.shape, want.shape);
        let worst = max_rel_diff(&got.data, &want.data);
        assert!(
            worst <= 1e-5,
            "{bits:?}: QDQ outputs differ from fake-quant by {worst}"
        );
    }
}

#[test]
fn activation_fake_quantization_follows_the_manifest_bits() {
    let mut weights_only = evaluator();
    let mut with_acts = evaluator_with(EvalOptions {
        quantize_activations: true,
        ..EvalOptions::default()
    });
    let w8 = weights_only.evaluate(&[8; 4]).unwrap();
    let a8 = with_acts.evaluate(&[8; 4]).unwrap();
    assert!(a8.activations_quantized && !w8.activations_quantized);
    // 8-bit activations cost at most a couple of images on this set, and cost some output SNR.
    assert!(
        (a8.accuracy.unwrap() - w8.accuracy.unwrap()).abs() <= 2.0 * ONE_IMAGE,
        "{a8:?} vs {w8:?}"
    );
    assert!(
        a8.sqnr_db < w8.sqnr_db && a8.sqnr_db > 20.0,
        "{} vs {}",
        a8.sqnr_db,
        w8.sqnr_db
    );
    // 2-bit activations ("same" as the weights) hurt on top of 2-bit weights.
    let w2 = weights_only.evaluate(&[8, 2, 2, 2]).unwrap();
    let a2 = with_acts.evaluate(&[8, 2, 2, 2]).unwrap();
    assert!(a2.sqnr_db < w2.sqnr_db, "{} vs {}", a2.sqnr_db, w2.sqnr_db);
    assert!(a2.accuracy.unwrap() < w2.accuracy.unwrap());
}

#[test]
fn reused_segments_give_the_same_outputs_as_the_whole_model() {
    use planner::eval::{Backend, Session};
    let mut shared = evaluator();
    // conv1 | conv2 | fc1 | fc2: cuts before conv2, fc1 and fc2 (a chain).
    assert_eq!(shared.segments(), 4);
    let model = digits_model();
    let manifest = digits_manifest();
    let backend = OrtBackend::new(&ort_lib(), 1).unwrap();
    let data = shared.data().clone();
    let mut acts = evaluator_with(EvalOptions {
        quantize_activations: true,
        ..EvalOptions::default()
    });
    let mut fresh_acts = evaluator_with(EvalOptions {
        quantize_activations: true,
        ..EvalOptions::default()
    });
    let configs: [[u8; 4]; 8] = [
        [8, 3, 4, 8],
        [8, 3, 4, 2],
        [8, 3, 6, 2],
        [8, 5, 6, 2],
        [8, 3, 4, 8],
        [8, 2, 2, 2],
        [8, 5, 6, 8],
        [8, 2, 4, 8],
    ];
    for bits in configs {
        // Oracle: the whole candidate as one model (the QDQ export), run in one session.
        let qdq = planner::eval::export::export_qdq(&model, &manifest, &bits).unwrap();
        let want = backend
            .session(&qdq, Default::default())
            .unwrap()
            .run(&data.bind(&model).unwrap().feeds(0, data.len()))
            .unwrap()
            .swap_remove(0);
        let got = shared.logits(&bits).unwrap();
        assert!(max_rel_diff(&got.data, &want.data) <= 1e-5, "{bits:?}");
        // With activation quantizers: against an evaluator with nothing cached.
        fresh_acts.clear_cache();
        assert_eq!(
            acts.logits(&bits).unwrap(),
            fresh_acts.logits(&bits).unwrap(),
            "activations {bits:?}"
        );
    }
    assert!(shared.timings.segment_hits >= 8, "{:?}", shared.timings);
}
