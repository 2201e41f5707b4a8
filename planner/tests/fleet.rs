//! Fleet plans against independent single-device plans, and their error and sharing behaviour.

use planner::problem::synth;
use planner::solve::fleet::{plan_fleet, Fleet, FleetOptions};
use planner::{plan, Budgets, CostKind, DeviceProfile, Manifest, PlanRequest, PlanStatus, Problem};
use serde_json::json;

/// Plans one device alone, as a user would: its own manifest restricted to what it runs, its
/// own profile, its own budgets, the planner's default engines (no shared front or cache).
fn alone(manifest: &Manifest, device: &serde_json::Value) -> (PlanStatus, Option<f64>) {
    let Some(m) = restricted(manifest, device) else {
        return (PlanStatus::Infeasible, None);
    };
    let mut doc = serde_json::Map::new();
    for k in ["name", "roofline", "latency_ms"] {
        if let Some(v) = device.get(k) {
            doc.insert(k.into(), v.clone());
        }
    }
    let profile = DeviceProfile::from_json(&serde_json::Value::Object(doc).to_string()).unwrap();
    let p = Problem::new(&m, Some(&profile)).unwrap();
    let budgets: Budgets = serde_json::from_value(device["budgets"].clone()).unwrap_or_default();
    let r = plan(
        &p,
        &PlanRequest {
            budgets,
            ..PlanRequest::default()
        },
    )
    .unwrap();
    (r.status, r.candidates.first().map(|c| c.candidate.omega))
}

/// The manifest a user would write for one device, from the fleet document's own words: each
/// layer keeps the bit-widths the device lists in `weight_bits` (the model runs activations at its
/// weights' bits, and these devices list no `activation_bits`); a `high_bit_layers` layer is
/// pinned to its highest. `None` when a layer is left with nothing it may take.
fn restricted(manifest: &Manifest, device: &serde_json::Value) -> Option<Manifest> {
    assert!(device.get("activation_bits").is_none(), "{device}");
    let supported: Vec<u8> = serde_json::from_value(device["weight_bits"].clone()).unwrap();
    let high: Vec<String> = device
        .get("high_bit_layers")
        .map_or_else(Vec::new, |v| serde_json::from_value(v.clone()).unwrap());
    let keep = |bits: &[u8]| -> Vec<u8> {
        bits.iter()
            .copied()
            .filter(|b| supported.contains(b))
            .collect()
    };
    let mut doc = manifest.to_json();
    doc["bits"] = json!(keep(&manifest.bits));
    for (i, layer) in manifest.layers.iter().enumerate() {
        let bits = keep(&layer.bits);
        let highest = *bits.iter().max()?;
        let entry = &mut doc["layers"][i];
        match layer.pin {
            Some(p) if !bits.contains(&p) => return None,
            None if high.contains(&layer.name) => entry["pin"] = json!(highest),
            _ => {}
        }
        if let Some(per_bit) = entry
            .get_mut("perturbation")
            .and_then(|v| v.as_object_mut())
        {
            per_bit.retain(|k, _| bits.contains(&k.parse::<u8>().unwrap()));
        }
        entry["bits"] = json!(bits);
    }
    Manifest::from_value(doc).ok()
}

#[test]
fn each_device_gets_what_it_would_get_alone() {
    for (manifest, n, seed) in [(synth::resnet18(4), 24, 1), (synth::resnet50(6), 12, 2)] {
        let doc = synth::fleet_json(&manifest, n, seed);
        let fleet = Fleet::from_value(doc.clone()).unwrap();
        let result = plan_fleet(&manifest, &fleet, &FleetOptions::default()).unwrap();
        let mut feasible = 0;
        for (d, row) in doc["devices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&result.devices)
        {
            let (status, omega) = alone(&manifest, d);
            assert_eq!(row.status, status, "{}", row.device);
            match (omega, &row.best) {
                (Some(w), Some(g)) => {
                    feasible += 1;
                    assert!(
                        (g.omega - w).abs() <= 1e-9 * w.abs().max(1e-300),
                        "{}: {} vs {w}",
                        row.device,
                        g.omega
                    );
                    // Neighbours: tighter budgets cost Omega, looser ones save it.
                    for nb in &row.neighbours {
                        if let Some(c) = &nb.candidate {
                            if nb.scale < 1.0 {
                                // Anything within a tighter budget is within this one.
                                assert!(c.omega >= g.omega * (1.0 - 1e-9), "{}", row.device);
                            } else if nb.solve == Some(planner::SolveStatus::Optimal) {
                                assert!(c.omega <= g.omega * (1.0 + 1e-9), "{}", row.device);
                            }
                        }
                    }
                }
                (None, None) => assert!(row.infeasibility.is_some() || row.unsupported.is_some()),
                other => panic!("{}: {other:?}", row.device),
            }
        }
        assert!(feasible >= n / 2, "{feasible} of {n} feasible");
        assert!(
            feasible < n,
            "the fleet should include an infeasible device"
        );
    }
}

#[test]
fn infeasible_and_unsupported_devices_do_not_stop_the_others() {
    let manifest = synth::resnet18(4);
    let roofline = json!({"peak_gmac_per_s": {"8": 100}, "bandwidth_gb_per_s": 10});
    let doc = json!({"name": "mixed", "devices": [
        {"name": "tiny", "roofline": roofline, "budgets": {"max_size_bytes": 10}},
        {"name": "three-bit-only", "roofline": roofline, "weight_bits": [3], "budgets": {"max_avg_bits": 4}},
        {"name": "fine", "roofline": roofline, "budgets": {"max_avg_bits": 4}},
    ]});
    let r = plan_fleet(
        &manifest,
        &Fleet::from_value(doc).unwrap(),
        &FleetOptions::default(),
    )
    .unwrap();
    assert_eq!(r.devices[0].status, PlanStatus::Infeasible);
    let inf = r.devices[0].infeasibility.as_ref().unwrap();
    assert_eq!(inf.budgets[0].budget, "max_size_bytes");
    let p = Problem::new(&manifest, None).unwrap();
    assert!((inf.budgets[0].min_achievable - p.min_cost(CostKind::Size)).abs() < 1e-6);
    // conv1 is pinned to 8 bits in the synthetic ResNet: a 3-bit-only device cannot run it.
    assert!(
        r.devices[1].unsupported.as_ref().unwrap().contains("conv1"),
        "{:?}",
        r.devices[1].unsupported
    );
    assert_eq!(r.devices[2].status, PlanStatus::Optimal);
    assert!(r.devices[2].best.as_ref().unwrap().avg_bits <= 4.0 + 1e-9);
}

#[test]
fn a_lookup_table_missing_a_layer_names_the_device_and_the_layer() {
    let manifest = synth::resnet18(4);
    let mut table = serde_json::Map::new();
    for l in manifest
        .layers
        .iter()
        .filter(|l| l.name != "layer2.0.conv1")
    {
        table.insert(
            l.name.clone(),
            json!({"8": 0.1, "6": 0.1, "5": 0.1, "4": 0.05, "3": 0.05, "2": 0.05}),
        );
    }
    let doc = json!({"name": "f", "devices": [
        {"name": "ok", "roofline": {"peak_gmac_per_s": {"8": 100}, "bandwidth_gb_per_s": 10}},
        {"name": "phone", "latency_ms": table, "budgets": {"max_latency_ms": 1.0}},
    ]});
    let err = plan_fleet(
        &manifest,
        &Fleet::from_value(doc).unwrap(),
        &FleetOptions::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("phone") && text.contains("layer2.0.conv1"),
        "{text}"
    );
    assert_eq!(
        err.field_errors()[0].path,
        "devices[1].latency_ms.layer2.0.conv1"
    );
}

#[test]
fn fleet_documents_are_checked_with_paths() {
    let err = Fleet::from_value(json!({"name": "f", "colour": 1, "devices": [
        {"name": "a", "roofline": {"peak_gmac_per_s": {"8": 100}, "bandwidth_gb_per_s": 10}, "weight_bits": [], "budgets": {"max_bops": -1}},
        {"name": "a", "roofline": {"peak_gmac_per_s": {"8": 100}, "bandwidth_gb_per_s": 10}, "speed": 3},
    ]}))
    .unwrap_err();
    let paths: Vec<&str> = err.field_errors().iter().map(|f| f.path.as_str()).collect();
    for want in [
        "colour",
        "devices[0].weight_bits",
        "devices[0].budgets.max_bops",
        "devices[1]",
    ] {
        assert!(
            paths.iter().any(|p| p.starts_with(want)),
            "{want} not in {paths:?}"
        );
    }
    let manifest = synth::resnet18(4);
    let doc = json!({"name": "f", "devices": [{"name": "a", "roofline": {"peak_gmac_per_s": {"8": 100}, "bandwidth_gb_per_s": 10}, "high_bit_layers": ["nope"]}]});
    let err = plan_fleet(
        &manifest,
        &Fleet::from_value(doc).unwrap(),
        &FleetOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.field_errors()[0].path, "devices[0].high_bit_layers[0]");
}

#[test]
fn identical_devices_share_their_problem_and_solves() {
    let manifest = synth::resnet18(4);
    let device = |name: &str| json!({"name": name, "roofline": {"peak_gmac_per_s": {"8": 100, "4": 200}, "bandwidth_gb_per_s": 10}, "budgets": {"max_avg_bits": 4.2}});
    let one = plan_fleet(
        &manifest,
        &Fleet::from_value(json!({"name": "1", "devices": [device("a")]})).unwrap(),
        &FleetOptions::default(),
    )
    .unwrap();
    let many = plan_fleet(
        &manifest,
        &Fleet::from_value(json!({"name": "5", "devices": (0..5).map(|i| device(&format!("d{i}"))).collect::<Vec<_>>()})).unwrap(),
        &FleetOptions::default(),
    )
    .unwrap();
    assert_eq!((many.problems, many.solves), (one.problems, one.solves));
    assert_eq!(one.solves, 5, "the choice and 2 + 2 neighbours");
    let omegas: Vec<f64> = many
        .devices
        .iter()
        .map(|d| d.best.as_ref().unwrap().omega)
        .collect();
    assert!(omegas.iter().all(|&o| o == omegas[0]));
}

/// A fleet planned with a `mip_gap` gives each device a plan no further from its exact one than
/// the gap the device's solve reports, itself within the gap asked; bad options are refused with
/// every option named.
#[test]
fn a_fleet_with_a_mip_gap_plans_each_device_within_it() {
    let manifest = synth::resnet50(6);
    // 30 devices: one of them (two budgets) stops within the gap, the others are proven optimal.
    let fleet = Fleet::from_value(synth::fleet_json(&manifest, 30, 5)).unwrap();
    let exact = plan_fleet(&manifest, &fleet, &FleetOptions::default()).unwrap();
    let mip_gap = 0.1;
    let gapped = plan_fleet(
        &manifest,
        &fleet,
        &FleetOptions {
            mip_gap,
            ..FleetOptions::default()
        },
    )
    .unwrap();
    for (e, g) in exact.devices.iter().zip(&gapped.devices) {
        match (&e.best, &g.best, g.solve) {
            (Some(e_best), Some(g_best), Some(solve)) => {
                let off = (g_best.omega - e_best.omega) / g_best.omega;
                let gap = match solve {
                    planner::SolveStatus::Optimal => 1e-9,
                    planner::SolveStatus::WithinGap { gap } => {
                        assert_eq!(g.status, PlanStatus::WithinGap, "{}", g.device);
                        gap
                    }
                    other => panic!("{}: {other:?}", g.device),
                };
                assert!(gap <= mip_gap, "{}: reported {gap}", g.device);
                assert!(off <= gap + 1e-12, "{}: {off} from the optimum", g.device);
            }
            (None, None, _) => assert_eq!(e.status, g.status, "{}", g.device),
            other => panic!("{}: {other:?}", g.device),
        }
    }

    let bad = FleetOptions {
        step: 1.5,
        time_limit_s: 0.0,
        mip_gap: 1.0,
        ..FleetOptions::default()
    };
    let err = plan_fleet(&manifest, &fleet, &bad).unwrap_err();
    let paths: Vec<&str> = err.field_errors().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["step", "time_limit_s", "mip_gap"]);
}

/// Each device's best measured configuration, against brute force over the measurements from the
/// fleet document's own words (the widths a device lists, its average-bit budget, the weights per
/// layer): every configuration of the digits network measured with a made-up loss.
#[test]
fn each_device_gets_the_least_measured_loss_it_can_run_within_its_budgets() {
    let text = std::fs::read_to_string("../examples/digits-cnn.manifest.json").unwrap();
    let manifest = Manifest::from_json(&text).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let fleet_text = std::fs::read_to_string("../examples/fleets/roofline.fleet.json").unwrap();
    let fleet = Fleet::from_json(&fleet_text).unwrap();
    let fleet_doc: serde_json::Value = serde_json::from_str(&fleet_text).unwrap();
    let layers = doc["layers"].as_array().unwrap();
    let widths: Vec<u8> = serde_json::from_value(doc["bits"].clone()).unwrap();
    let mut measured: Vec<(Vec<u8>, f64)> = Vec::new();
    let mut rng = synth::Rng::new(5);
    let mut bits = vec![0usize; layers.len()];
    loop {
        let config: Vec<u8> = layers
            .iter()
            .zip(&bits)
            .map(|(l, &i)| l["pin"].as_u64().map_or(widths[i], |p| p as u8))
            .collect();
        if !measured.iter().any(|(b, _)| *b == config) {
            measured.push((config, rng.range(0.0, 1.0)));
        }
        // The next configuration, as an odometer over the widths.
        let Some(g) = (0..bits.len()).find(|&g| bits[g] + 1 < widths.len()) else {
            break;
        };
        bits[g] += 1;
        bits[..g].iter_mut().for_each(|b| *b = 0);
    }
    assert_eq!(measured.len(), 6 * 6 * 6);
    let params: Vec<f64> = layers
        .iter()
        .map(|l| l["params"].as_f64().unwrap())
        .collect();
    let avg_bits = |config: &[u8]| {
        config
            .iter()
            .zip(&params)
            .map(|(&b, p)| f64::from(b) * p)
            .sum::<f64>()
            / params.iter().sum::<f64>()
    };
    let chosen = planner::solve::fleet::best_measured(&manifest, &fleet, &measured).unwrap();
    for (device, choice) in fleet_doc["devices"].as_array().unwrap().iter().zip(&chosen) {
        let runs: Option<Vec<u8>> = serde_json::from_value(device["weight_bits"].clone()).ok();
        let budget = device["budgets"]["max_avg_bits"].as_f64().unwrap();
        let oracle = measured
            .iter()
            .enumerate()
            .filter(|(_, (config, _))| {
                runs.as_ref()
                    .is_none_or(|r| config.iter().all(|b| r.contains(b)))
                    && avg_bits(config) <= budget + 1e-9
            })
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1));
        match (oracle, choice) {
            (None, None) => {}
            (Some((i, (config, loss))), Some(c)) => {
                assert_eq!(c.index, i, "{}", device["name"]);
                assert_eq!(&c.candidate.bits, config);
                assert_eq!(c.loss, *loss);
                assert!((c.candidate.avg_bits - avg_bits(config)).abs() < 1e-9);
            }
            (o, c) => panic!("{}: oracle {o:?}, chosen {c:?}", device["name"]),
        }
    }
    // The 1.5-bit device fits nothing; the others each fit something.
    assert_eq!(chosen.iter().filter(|c| c.is_none()).count(), 1);
}
