//! Prometheus text exposition: request counts and durations per route, solve and evaluation
//! times; the job queue depth is read from the database at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the histogram buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (c, le) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= le {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (c, le) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (method, route, status) → count.
    requests: BTreeMap<(String, String, u16), u64>,
    /// (method, route) → durations.
    durations: BTreeMap<(String, String), Histogram>,
    solve: Histogram,
    evaluation: Histogram,
    jobs_finished: BTreeMap<(String, String), u64>,
}

/// The process's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut m = self.inner.lock().expect("metrics lock");
        *m.requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        m.durations
            .entry((method.to_string(), route.to_string()))
            .or_default()
            .observe(seconds);
    }

    /// One plan's solver time (all solves of the plan).
    pub fn solve(&self, seconds: f64) {
        self.inner
            .lock()
            .expect("metrics lock")
            .solve
            .observe(seconds);
    }

    /// One candidate's evaluation time.
    pub fn evaluation(&self, seconds: f64) {
        self.inner
            .lock()
            .expect("metrics lock")
            .evaluation
            .observe(seconds);
    }

    pub fn job_finished(&self, kind: &str, status: &str) {
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .jobs_finished
            .entry((kind.to_string(), status.to_string()))
            .or_default() += 1;
    }

    /// The exposition text; `jobs` are the stored jobs counted by status.
    pub fn render(&self, jobs: &[(String, i64)]) -> String {
        let m = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        out.push_str(
            "# HELP bitplan_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE bitplan_http_requests_total counter\n");
        for ((method, route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "bitplan_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP bitplan_http_request_duration_seconds HTTP request durations.\n");
        out.push_str("# TYPE bitplan_http_request_duration_seconds histogram\n");
        for ((method, route), h) in &m.durations {
            h.render(
                &mut out,
                "bitplan_http_request_duration_seconds",
                &format!("method=\"{method}\",route=\"{route}\""),
            );
        }
        out.push_str("# HELP bitplan_jobs Stored jobs by status (queued = the queue depth).\n");
        out.push_str("# TYPE bitplan_jobs gauge\n");
        for status in ["queued", "running", "succeeded", "failed", "cancelled"] {
            let n = jobs
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "bitplan_jobs{{status=\"{status}\"}} {n}");
        }
        let queued = jobs
            .iter()
            .find(|(s, _)| s == "queued")
            .map_or(0, |(_, n)| *n);
        out.push_str("# HELP bitplan_job_queue_depth Jobs waiting to run.\n");
        out.push_str("# TYPE bitplan_job_queue_depth gauge\n");
        let _ = writeln!(out, "bitplan_job_queue_depth {queued}");
        out.push_str("# HELP bitplan_jobs_finished_total Jobs finished by this process, by kind and outcome.\n");
        out.push_str("# TYPE bitplan_jobs_finished_total counter\n");
        for ((kind, status), n) in &m.jobs_finished {
            let _ = writeln!(
                out,
                "bitplan_jobs_finished_total{{kind=\"{kind}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP bitplan_solve_duration_seconds Solver time per plan.\n");
        out.push_str("# TYPE bitplan_solve_duration_seconds histogram\n");
        m.solve
            .render(&mut out, "bitplan_solve_duration_seconds", "");
        out.push_str(
            "# HELP bitplan_evaluation_duration_seconds Time to evaluate one candidate.\n",
        );
        out.push_str("# TYPE bitplan_evaluation_duration_seconds histogram\n");
        m.evaluation
            .render(&mut out, "bitplan_evaluation_duration_seconds", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.solve(0.003);
        m.solve(2.0);
        let text = m.render(&[("queued".into(), 4)]);
        assert!(text.contains("bitplan_solve_duration_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("bitplan_solve_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("bitplan_solve_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("bitplan_solve_duration_seconds_count 2"));
        assert!(text.contains("bitplan_job_queue_depth 4"));
    }
}
