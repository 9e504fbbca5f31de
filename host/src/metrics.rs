//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! Kept dependency-free and small: counters and histograms behind one mutex each, keyed by
//! their label values. The hot path takes a lock for a few map operations per request, which
//! is noise next to an inference.

use crate::nn::batch::BatchRun;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets in seconds, from sub-millisecond host paths to slow CPU models.
const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Batch-size buckets.
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// A family of histograms sharing a name, one per label set.
struct Family {
    bounds: &'static [f64],
    series: Mutex<BTreeMap<Vec<(&'static str, String)>, Histogram>>,
}

impl Family {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn observe(&self, labels: Vec<(&'static str, String)>, v: f64) {
        if let Ok(mut s) = self.series.lock() {
            s.entry(labels)
                .or_insert_with(|| Histogram::new(self.bounds))
                .observe(v);
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let Ok(series) = self.series.lock() else { return };
        for (labels, h) in series.iter() {
            for (b, c) in h.bounds.iter().zip(&h.counts) {
                let le = format!("{b}");
                let _ = writeln!(out, "{name}_bucket{} {c}", fmt_labels(labels, Some(&le)));
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                fmt_labels(labels, Some("+Inf")),
                h.count
            );
            let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count);
        }
    }
}

/// A family of counters sharing a name, one per label set.
#[derive(Default)]
struct Counters {
    series: Mutex<BTreeMap<Vec<(&'static str, String)>, u64>>,
}

impl Counters {
    fn add(&self, labels: Vec<(&'static str, String)>, n: u64) {
        if let Ok(mut s) = self.series.lock() {
            *s.entry(labels).or_insert(0) += n;
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "counter");
        let Ok(series) = self.series.lock() else { return };
        for (labels, n) in series.iter() {
            let _ = writeln!(out, "{name}{} {n}", fmt_labels(labels, None));
        }
    }
}

/// Every metric the host exports.
pub struct Metrics {
    requests: Counters,
    request_seconds: Family,
    inference_seconds: Family,
    batch_size: Family,
    /// Zero rows that batches were padded with, by model: with `scoria_batch_size_sum`, the
    /// share of the accelerator's work that computed nothing.
    padding_rows: Counters,
    queue_delay_seconds: Family,
}

/// Per-function gauges sampled when `/metrics` is rendered.
pub struct FunctionGauges {
    pub function: String,
    pub in_use: usize,
    pub queued: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Counters::default(),
            request_seconds: Family::new(LATENCY),
            inference_seconds: Family::new(LATENCY),
            batch_size: Family::new(BATCH),
            padding_rows: Counters::default(),
            queue_delay_seconds: Family::new(LATENCY),
        }
    }
}

impl Metrics {
    /// One finished request to a function route.
    pub fn request(&self, function: &str, status: u16, elapsed: Duration) {
        self.requests.add(
            vec![("function", function.to_string()), ("status", status.to_string())],
            1,
        );
        self.request_seconds
            .observe(vec![("function", function.to_string())], elapsed.as_secs_f64());
    }

    /// One `compute` on a model: how long it waited for its backend run to start. The run's
    /// own time and size count once per run (by its leader), not once per merged caller.
    pub fn inference(&self, model: &str, backend: &str, run: &BatchRun) {
        let m = || vec![("model", model.to_string())];
        self.queue_delay_seconds.observe(m(), run.queued.as_secs_f64());
        if run.leader {
            self.inference_seconds.observe(
                vec![("backend", backend.to_string()), ("model", model.to_string())],
                run.ran.as_secs_f64(),
            );
            self.batch_size.observe(m(), f64::from(run.items));
            self.padding_rows
                .add(m(), u64::from(run.rows.saturating_sub(run.items)));
        }
    }

    /// The text exposition format.
    pub fn render(&self, ready: bool, gauges: &[FunctionGauges]) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "scoria_ready",
            "1 when every function is compiled and every model loaded.",
            "gauge",
        );
        let _ = writeln!(out, "scoria_ready {}", u8::from(ready));
        self.requests.render(
            &mut out,
            "scoria_requests_total",
            "Requests to function routes, by function and status.",
        );
        self.request_seconds.render(
            &mut out,
            "scoria_request_duration_seconds",
            "End-to-end request latency, by function.",
        );
        self.inference_seconds.render(
            &mut out,
            "scoria_inference_duration_seconds",
            "Time in the backend per run (a merged batch counts once), by model and backend.",
        );
        self.batch_size.render(
            &mut out,
            "scoria_batch_size",
            "Items per backend run, by model; above 1 when computes were merged or a guest sent a batch.",
        );
        self.padding_rows.render(
            &mut out,
            "scoria_batch_padding_rows_total",
            "Zero rows that padded batches to a warmed size, by model (padding computes nothing).",
        );
        self.queue_delay_seconds.render(
            &mut out,
            "scoria_batch_queue_delay_seconds",
            "Time a compute call waited for its backend run to start (thread or batch), by model.",
        );
        header(
            &mut out,
            "scoria_instances_in_use",
            "Component instances serving requests, by function.",
            "gauge",
        );
        for g in gauges {
            let _ = writeln!(
                out,
                "scoria_instances_in_use{{function=\"{}\"}} {}",
                escape(&g.function),
                g.in_use
            );
        }
        header(
            &mut out,
            "scoria_queue_depth",
            "Requests waiting for a free instance slot, by function.",
            "gauge",
        );
        for g in gauges {
            let _ = writeln!(
                out,
                "scoria_queue_depth{{function=\"{}\"}} {}",
                escape(&g.function),
                g.queued
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn fmt_labels(labels: &[(&'static str, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.request("f", 200, Duration::from_millis(3));
        m.request("f", 200, Duration::from_millis(30));
        m.request("f", 500, Duration::from_millis(30));
        let text = m.render(
            true,
            &[FunctionGauges {
                function: "f".into(),
                in_use: 2,
                queued: 1,
            }],
        );
        assert!(
            text.contains("scoria_requests_total{function=\"f\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("scoria_request_duration_seconds_bucket{function=\"f\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("scoria_request_duration_seconds_bucket{function=\"f\",le=\"0.05\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("scoria_request_duration_seconds_bucket{function=\"f\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("scoria_instances_in_use{function=\"f\"} 2"),
            "{text}"
        );
        assert!(text.contains("scoria_queue_depth{function=\"f\"} 1"), "{text}");
    }

    #[test]
    fn padding_rows_count_once_per_run() {
        let m = Metrics::default();
        let run = |items, rows, leader| BatchRun {
            queued: Duration::ZERO,
            ran: Duration::from_millis(5),
            items,
            rows,
            leader,
        };
        // A run of 3 items padded to 4, seen by its three callers; then an unpadded one.
        for leader in [true, false, false] {
            m.inference("resnet", "onnxruntime", &run(3, 4, leader));
        }
        m.inference("resnet", "onnxruntime", &run(2, 2, true));
        let text = m.render(true, &[]);
        assert!(
            text.contains("scoria_batch_padding_rows_total{model=\"resnet\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("scoria_batch_size_sum{model=\"resnet\"} 5"),
            "{text}"
        );
    }
}
