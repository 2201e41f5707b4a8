//! The wire shapes of stored rows (the schemas of openapi.yaml): one `to_json` per row type, used
//! by the API's handlers and by the jobs that embed rows in the documents they store.

use crate::store::{
    json_column, rfc3339, CandidateRow, DeviceRow, FleetPlanRow, FleetRow, JobRow, MetricsRow,
    PlanRow, SearchRow, SupernetRow,
};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

impl SupernetRow {
    /// The API body; `detail` adds the manifest.
    pub fn to_json(&self, detail: bool) -> Value {
        let blob = |hash: &Option<String>, bytes: Option<i64>| {
            hash.as_ref()
                .map(|h| json!({"sha256": h, "bytes": bytes.unwrap_or(0)}))
        };
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "layers": self.layers,
            "params": self.params,
            "model": blob(&self.model_hash, self.model_bytes),
            "validation": blob(&self.data_hash, self.data_bytes).map(|mut b| {
                b["samples"] = json!(self.data_samples);
                b
            }),
            "plans": self.plans,
            "created_at": rfc3339(self.created_at),
        });
        if detail {
            v["manifest"] = json_column(&self.manifest);
        }
        v
    }
}

impl JobRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": self.work.kind(),
            "status": self.status,
            "supernet_id": self.supernet_id,
            "plan_id": self.plan_id,
            "progress": {"done": self.progress_done, "total": self.progress_total, "message": self.message},
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "crashes": self.crashes,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "created_at": rfc3339(self.created_at),
            "started_at": self.started_at.map(rfc3339),
            "finished_at": self.finished_at.map(rfc3339),
            "updated_at": rfc3339(self.updated_at),
            "deadline_at": self.deadline_at.map(rfc3339),
            "worker": self.lease_owner,
        })
    }
}

impl PlanRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "supernet_id": self.supernet_id,
            "status": self.status,
            "request": json_column(&self.request),
            "job_id": self.job_id,
            "candidate_count": self.candidates,
            "chosen_candidate_id": self.chosen_candidate_id,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            // The solver's summary: status, timings, engine, warnings, infeasibility.
            "result": self.result.as_deref().map(json_column),
        })
    }
}

impl CandidateRow {
    /// The API body: `bits` maps layer names to bit-widths (given the manifest's layer names).
    pub fn to_json(&self, layer_names: &[String]) -> Value {
        let bits = planner::bits_json(layer_names.iter().map(String::as_str), &self.bit_list());
        serde_json::to_value(self.body(bits)).expect("JSON")
    }

    /// The API body with `bits` as given (by name, or a list in manifest order), to serialize
    /// as it is: a page of ten thousand candidates builds no map per candidate.
    pub fn body<B: Serialize>(&self, bits: B) -> CandidateBody<'_, B> {
        let c = &self.fields;
        fn raw(text: &str) -> &RawValue {
            serde_json::from_str(text).unwrap_or(RawValue::NULL)
        }
        CandidateBody {
            id: &c.id,
            plan_id: &self.plan_id,
            supernet_id: &self.supernet_id,
            rank: c.position,
            bits,
            omega: c.omega,
            size_bytes: c.size_bytes,
            bops: c.bops,
            avg_bits: c.avg_bits,
            latency_ms: c.latency_ms,
            sources: raw(&c.sources),
            solve: raw(&c.solve),
            metrics: self.measurement().map(|m| m.to_json()),
        }
    }
}

/// A candidate as the API spells it (openapi.yaml's `Candidate`).
#[derive(Debug, Serialize)]
pub struct CandidateBody<'a, B> {
    id: &'a str,
    plan_id: &'a str,
    supernet_id: &'a str,
    rank: i64,
    bits: B,
    omega: f64,
    size_bytes: f64,
    bops: f64,
    avg_bits: f64,
    latency_ms: Option<f64>,
    sources: &'a RawValue,
    solve: &'a RawValue,
    metrics: Option<Value>,
}

impl MetricsRow {
    /// The API's `Metrics` object.
    pub fn to_json(&self) -> Value {
        json!({
            "accuracy": self.accuracy,
            "agreement_fp32": self.agreement_fp32,
            "kl_fp32": self.kl_fp32,
            "agreement_highest": self.agreement_highest,
            "kl_highest": self.kl_highest,
            "sqnr_db": self.sqnr_db,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "rel_l2": self.rel_l2,
            "latency_ms": self.latency_ms,
            "samples": self.samples,
            "batch_size": self.batch_size,
            "quantize_activations": self.quantize_activations != 0,
            "evaluated_at": rfc3339(self.created_at),
        })
    }
}

impl DeviceRow {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "spec": json_column(&self.spec),
            "created_at": rfc3339(self.created_at),
        })
    }
}

impl FleetRow {
    /// The fleet document (`{"name", "devices": [device documents]}`) the planner reads.
    pub fn document(&self) -> Value {
        let devices: Vec<Value> = self.devices.iter().map(|d| json_column(&d.spec)).collect();
        json!({"name": self.name, "devices": devices})
    }

    pub fn to_json(&self) -> Value {
        let devices: Vec<Value> = self
            .devices
            .iter()
            .map(|d| {
                let spec = json_column(&d.spec);
                json!({"id": d.id, "name": spec["name"], "spec": spec})
            })
            .collect();
        json!({
            "id": self.id,
            "name": self.name,
            "devices": devices,
            "created_at": rfc3339(self.created_at),
        })
    }
}

impl SearchRow {
    /// As [`SearchRow::to_json`], the result without its points and predicted front, which grow
    /// with the measurements: a list of searches stays light.
    pub fn to_summary_json(&self) -> Value {
        let mut v = self.to_json();
        if let Some(result) = v["result"].as_object_mut() {
            for heavy in ["points", "predicted_front"] {
                result.remove(heavy);
            }
        }
        v
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "supernet_id": self.supernet_id,
            "status": self.status,
            "request": json_column(&self.request),
            "job_id": self.job_id,
            "result": self.result.as_deref().map(json_column),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

impl FleetPlanRow {
    pub fn to_json(&self) -> Value {
        let result = self.result.as_deref().map(json_column);
        let passed = result.as_ref().map(crate::fleet::all_pass);
        json!({
            "id": self.id,
            "supernet_id": self.supernet_id,
            "fleet_id": self.fleet_id,
            "fleet": json_column(&self.fleet)["name"],
            "status": self.status,
            "request": json_column(&self.options),
            "job_id": self.job_id,
            "passed": passed,
            "result": result,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}
