//! Rendering plans for people (table) and for tools (JSON, CSV).
//!
//! It owns the CLI's text, JSON and CSV forms; it formats what it is given and computes nothing.

use clap::ValueEnum;
use planner::eval::{Metrics, Timings};
use planner::{fmt_num, Infeasibility, Plan, PlanStatus, Problem, Source};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

pub fn render_plan(problem: &Problem, plan: &Plan, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(&plan.to_json(problem)).expect("JSON") + "\n",
        Format::Csv => csv(problem, plan),
        Format::Table => table(problem, plan),
    }
}

fn sources(s: &[Source]) -> String {
    s.iter()
        .map(|s| match s {
            Source::Optimal => "optimal",
            Source::Pareto => "pareto",
            Source::Paper => "paper",
            Source::Sweep => "sweep",
        })
        .collect::<Vec<_>>()
        .join("+")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(problem: &Problem, plan: &Plan) -> String {
    let latency = problem.has_latency();
    let mut out = String::from("rank,status,sources,omega,size_bytes,bops,avg_bits");
    if latency {
        out.push_str(",latency_ms");
    }
    for l in &problem.manifest.layers {
        out.push(',');
        out.push_str(&csv_field(&l.name));
    }
    out.push('\n');
    for (i, c) in plan.candidates.iter().enumerate() {
        let k = &c.candidate;
        let _ = write!(
            out,
            "{},{},{},{},{},{},{}",
            i + 1,
            plan.status.as_str(),
            sources(&c.sources),
            k.omega,
            k.size_bytes,
            k.bops,
            k.avg_bits
        );
        if let Some(l) = k.latency_ms {
            let _ = write!(out, ",{l}");
        }
        for b in &k.bits {
            let _ = write!(out, ",{b}");
        }
        out.push('\n');
    }
    out
}

fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{} {}", fmt_num((v * 8.0).round() / 8.0), UNITS[0])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn human_count(n: f64) -> String {
    let (v, s) = if n >= 1e12 {
        (n / 1e12, "T")
    } else if n >= 1e9 {
        (n / 1e9, "G")
    } else if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e3 {
        (n / 1e3, "k")
    } else {
        (n, "")
    };
    format!("{v:.2}{s}")
}

/// Bits as one character per layer when all fit in a digit, else space-separated.
fn compact_bits(bits: &[u8]) -> String {
    if bits.iter().all(|&b| b < 10) {
        bits.iter().map(|b| char::from(b'0' + b)).collect()
    } else {
        bits.iter().map(u8::to_string).collect::<Vec<_>>().join(" ")
    }
}

fn table(problem: &Problem, plan: &Plan) -> String {
    let mut out = plan_summary(problem, plan);
    if let Some(inf) = &plan.infeasibility {
        out.push_str(&infeasibility_report(inf));
        return out;
    }
    let rows = candidate_rows(problem, plan);
    let cols = rows[0].len();
    out.push_str(&aligned(&rows, |j| j == 0 || (1..cols - 2).contains(&j)));
    out.push_str(stopped_early_note(&plan.status));
    out
}

/// The lines above the table: the manifest, how it was solved, a measured objective, and the
/// layers planned on the trace-only proxy.
fn plan_summary(problem: &Problem, plan: &Plan) -> String {
    let m = &problem.manifest;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} layers, bits {:?}{} - status {}, {} candidate(s), {} solve(s) in {:.3} ms ({})",
        m.name,
        m.layers.len(),
        m.bits,
        problem
            .device
            .as_ref()
            .map(|d| format!(", device {d}"))
            .unwrap_or_default(),
        plan.status.as_str(),
        plan.candidates.len(),
        plan.solves,
        plan.solve_time_ms,
        plan.engine
    );
    if plan.objective != "hessian" {
        let _ = writeln!(
            out,
            "objective: measured {}",
            plan.objective.replace('_', " ")
        );
    }
    if !plan.proxy_layers.is_empty() {
        let _ = writeln!(
            out,
            "trace-only proxy Omega for {} of {} layers (no measured perturbation)",
            plan.proxy_layers.len(),
            m.layers.len()
        );
    }
    out
}

/// Why the budgets cannot be met: each budget with its limit and the smallest achievable values.
fn infeasibility_report(inf: &Infeasibility) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "infeasible: {}", inf.message);
    for b in &inf.budgets {
        let _ = writeln!(
            out,
            "  {:<15} limit {:>14}  smallest achievable {:>14}  under the other budgets {}",
            b.budget,
            fmt_num(b.limit),
            fmt_num(b.min_achievable),
            b.min_under_other_budgets.map_or("-".to_string(), fmt_num)
        );
    }
    out
}

/// The candidate table's cells: a header row, then one row per candidate in rank order.
fn candidate_rows(problem: &Problem, plan: &Plan) -> Vec<Vec<String>> {
    let latency = problem.has_latency();
    let mut header = vec![
        "#".to_string(),
        "omega".into(),
        "size".into(),
        "bops".into(),
        "avg_bits".into(),
    ];
    if latency {
        header.push("latency_ms".into());
    }
    header.push("from".into());
    header.push(format!(
        "bits ({})",
        if problem.manifest.bits.iter().all(|&b| b < 10) {
            "one digit per layer, manifest order"
        } else {
            "manifest order"
        }
    ));
    let mut rows = vec![header];
    for (i, c) in plan.candidates.iter().enumerate() {
        let k = &c.candidate;
        let mut row = vec![
            (i + 1).to_string(),
            format!("{:.6e}", k.omega),
            human_bytes(k.size_bytes),
            human_count(k.bops),
            format!("{:.3}", k.avg_bits),
        ];
        if let Some(l) = k.latency_ms {
            row.push(format!("{l:.4}"));
        }
        row.push(sources(&c.sources));
        row.push(compact_bits(&k.bits));
        rows.push(row);
    }
    rows
}

/// The note under the table when some solves stopped before proving their optimum.
fn stopped_early_note(status: &PlanStatus) -> &'static str {
    match status {
        PlanStatus::TimeLimit => {
            "some solves stopped at the time limit; their gap is in --format json\n"
        }
        PlanStatus::WithinGap => {
            "some solves stopped within --mip-gap of the optimum; their gap is in --format json\n"
        }
        _ => "",
    }
}

/// Rows as columns padded to their widest cell; `right(j)` right-aligns column j; the last column
/// is never padded.
fn aligned(rows: &[Vec<String>], right: impl Fn(usize) -> bool) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|j| rows.iter().map(|r| r[j].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (j, cell) in r.iter().enumerate() {
            let w = widths[j];
            if j + 1 == cols {
                line.push_str(cell);
            } else if right(j) {
                let _ = write!(line, "{cell:>w$}  ");
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bit-widths of a JSON `bits` object (manifest order), compact.
fn compact_bits_json(bits: &serde_json::Value) -> String {
    let list: Vec<u8> = bits
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_u64())
                .map(|b| b as u8)
                .collect()
        })
        .unwrap_or_default();
    compact_bits(&list)
}

/// A fleet plan document (`bitplan fleet --format json`, the service's fleet plan result) as a
/// table for people or CSV for tools: one row per device.
pub fn render_fleet(doc: &serde_json::Value, format: Format) -> String {
    let devices = doc["devices"].as_array().cloned().unwrap_or_default();
    match format {
        Format::Json => serde_json::to_string_pretty(doc).expect("JSON") + "\n",
        Format::Csv => fleet_csv(&devices),
        Format::Table => fleet_table(doc, &devices),
    }
}

/// A JSON number through `f`; empty when the value is not a number.
fn num(v: &serde_json::Value, f: &dyn Fn(f64) -> String) -> String {
    v.as_f64().map_or(String::new(), f)
}

/// A device's chosen bits, compact; `absent` when it has none.
fn device_bits(d: &serde_json::Value, absent: &str) -> String {
    if d["bits"].is_object() {
        compact_bits_json(&d["bits"])
    } else {
        absent.into()
    }
}

fn fleet_csv(devices: &[serde_json::Value]) -> String {
    let mut out = String::from(
        "device,status,bits,size_bytes,bops,latency_ms,omega,avg_bits,accuracy,agreement_fp32,meets_gate\n",
    );
    for d in devices {
        let m = &d["metrics"];
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(d["device"].as_str().unwrap_or("")),
            d["status"].as_str().unwrap_or(""),
            device_bits(d, ""),
            num(&d["size_bytes"], &|v| v.to_string()),
            num(&d["bops"], &|v| v.to_string()),
            num(&d["latency_ms"], &|v| v.to_string()),
            num(&d["omega"], &|v| v.to_string()),
            num(&d["avg_bits"], &|v| v.to_string()),
            num(&m["accuracy"], &|v| v.to_string()),
            num(&m["agreement_fp32"], &|v| v.to_string()),
            d["meets_gate"]
                .as_bool()
                .map_or(String::new(), |b| b.to_string()),
        );
    }
    out
}

/// The fleet as a summary line, one aligned row per device, then a note per device that cannot
/// run the model or has no feasible plan.
fn fleet_table(doc: &serde_json::Value, devices: &[serde_json::Value]) -> String {
    let gated = devices.iter().any(|d| d["metrics"].is_object());
    let mut header: Vec<String> = [
        "device",
        "status",
        "cost",
        "omega",
        "size",
        "bops",
        "avg_bits",
        "latency_ms",
    ]
    .map(String::from)
    .to_vec();
    if gated {
        header.extend(["accuracy".to_string(), "gate".to_string()]);
    }
    header.push("bits (manifest order)".into());
    let mut rows = vec![header];
    rows.extend(devices.iter().map(|d| fleet_row(d, gated)));
    let mut out = format!(
        "fleet {}: {} devices, {} distinct problems, {} solves in {:.1} ms\n",
        doc["fleet"].as_str().unwrap_or(""),
        devices.len(),
        doc["problems"],
        doc["solves"],
        doc["time_ms"].as_f64().unwrap_or(0.0)
    );
    let cols = rows[0].len();
    out.push_str(&aligned(&rows, |j| (3..cols - 1).contains(&j)));
    for d in devices {
        out.push_str(&device_notes(d));
    }
    out
}

/// One device's cells of the fleet table; `gated` adds its accuracy and gate.
fn fleet_row(d: &serde_json::Value, gated: bool) -> Vec<String> {
    let mut row = vec![
        d["device"].as_str().unwrap_or("").to_string(),
        d["status"].as_str().unwrap_or("").to_string(),
        d["cost"].as_str().unwrap_or("").to_string(),
        num(&d["omega"], &|v| format!("{v:.6e}")),
        num(&d["size_bytes"], &human_bytes),
        num(&d["bops"], &human_count),
        num(&d["avg_bits"], &|v| format!("{v:.3}")),
        num(&d["latency_ms"], &|v| format!("{v:.4}")),
    ];
    if gated {
        row.push(num(&d["metrics"]["accuracy"], &|v| format!("{v:.4}")));
        row.push(
            d["meets_gate"]
                .as_bool()
                .map_or(String::new(), |b| if b { "pass" } else { "FAIL" }.into()),
        );
    }
    row.push(device_bits(d, "-"));
    row
}

/// Lines under the fleet table for a device: why it cannot run the model, why its budgets
/// cannot be met.
fn device_notes(d: &serde_json::Value) -> String {
    let name = d["device"].as_str().unwrap_or("");
    let mut out = String::new();
    if let Some(r) = d["reason"].as_str() {
        let _ = writeln!(out, "{name}: cannot run the model: {r}");
    }
    if let Some(m) = d["infeasible"]["message"].as_str() {
        let _ = writeln!(out, "{name}: {m}");
    }
    out
}

/// A candidate's measured metrics: JSON for tools (`accuracy`, `agreement_fp32`, `kl_fp32`,
/// `sqnr_db`, `latency_ms`, ...) or a short report for people.
pub fn render_metrics(
    problem: &Problem,
    bits: &[u8],
    m: &Metrics,
    t: &Timings,
    format: Format,
) -> String {
    match format {
        Format::Json => {
            let mut v = serde_json::to_value(m).expect("JSON");
            v["bits"] = problem.manifest.bits_json(bits);
            v["timings"] = serde_json::to_value(t).expect("JSON");
            serde_json::to_string_pretty(&v).expect("JSON") + "\n"
        }
        Format::Csv => {
            let acc = m.accuracy.map_or(String::new(), |a| a.to_string());
            format!(
                "accuracy,agreement_fp32,kl_fp32,agreement_highest,kl_highest,sqnr_db,latency_ms,samples\n{acc},{},{},{},{},{},{},{}\n",
                m.agreement_fp32, m.kl_fp32, m.agreement_highest, m.kl_highest, m.sqnr_db, m.latency_ms, m.samples
            )
        }
        Format::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{}: bits {} ({} samples, batches of {})",
                problem.manifest.name,
                compact_bits(bits),
                m.samples,
                m.batch_size
            );
            if let Some(a) = m.accuracy {
                let _ = writeln!(out, "  accuracy           {:.4}", a);
            }
            let _ = writeln!(
                out,
                "  agreement fp32     {:.4}   KL {:.3e}",
                m.agreement_fp32, m.kl_fp32
            );
            let _ = writeln!(
                out,
                "  agreement highest  {:.4}   KL {:.3e}",
                m.agreement_highest, m.kl_highest
            );
            let _ = writeln!(out, "  output SQNR        {:.2} dB", m.sqnr_db);
            let _ = writeln!(
                out,
                "  latency            {:.3} ms per batch (median)",
                m.latency_ms
            );
            out
        }
    }
}
