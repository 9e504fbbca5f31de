//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! The metrics live in a registry of the `prometheus` crate: counters and histograms are
//! updated on the request path (atomics, and a read lock to find a label set's series), and
//! the per-function gauges are sampled from the admission gates when `/metrics` is scraped.

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::time::Duration;

/// What a compute learns about the backend run it was part of (alone, or merged into a
/// batch), for the metrics. The inference code reports it; this module only records it.
#[derive(Debug, Clone, Copy)]
pub struct InferenceRun {
    /// From queueing to the start of the run.
    pub queued: Duration,
    /// The backend run itself.
    pub ran: Duration,
    /// Items in the whole run.
    pub items: u32,
    /// Rows the run computed: `items`, plus the zero rows it was padded with.
    pub rows: u32,
    /// True for exactly one caller per run, so per-run metrics are counted once.
    pub leader: bool,
}

/// Latency buckets in seconds, from sub-millisecond host paths to slow CPU models.
const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Batch-size buckets.
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    ready: IntGauge,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    inference_seconds: HistogramVec,
    batch_size: HistogramVec,
    /// Zero rows that batches were padded with, by model: with `scoria_batch_size_sum`, the
    /// share of the accelerator's work that computed nothing.
    padding_rows: IntCounterVec,
    queue_delay_seconds: HistogramVec,
    instances_in_use: IntGaugeVec,
    queue_depth: IntGaugeVec,
    open_connections: IntGauge,
    connections_shed: IntCounter,
    memory_reserved: IntGauge,
    memory_budget: IntGauge,
}

/// Host-wide gauges sampled when `/metrics` is rendered.
#[derive(Default)]
pub struct HostGauges {
    /// Connections open now, past the cap included.
    pub open_connections: usize,
    /// Bytes held against the memory budget now.
    pub memory_reserved: usize,
    /// The memory budget.
    pub memory_budget: usize,
}

/// Per-function gauges sampled when `/metrics` is rendered.
pub struct FunctionGauges {
    pub function: String,
    pub in_use: usize,
    pub queued: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        // Names, help texts and buckets are constants: registering them cannot fail.
        fn add<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
            registry
                .register(Box::new(m.clone()))
                .expect("metric names are unique and valid");
            m
        }
        let histogram = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            add(
                &registry,
                HistogramVec::new(opts, labels).expect("valid histogram"),
            )
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            add(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        let gauge = |name: &str, help: &str| {
            add(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), &["function"]).expect("valid gauge"),
            )
        };
        let host_gauge =
            |name: &str, help: &str| add(&registry, IntGauge::new(name, help).expect("valid gauge"));
        Self {
            open_connections: host_gauge(
                "scoria_open_connections",
                "Client connections open now, those past --max-connections included.",
            ),
            connections_shed: add(
                &registry,
                IntCounter::new(
                    "scoria_connections_shed_total",
                    "Connections past --max-connections closed to make room in the probe reserve.",
                )
                .expect("valid counter"),
            ),
            memory_reserved: host_gauge(
                "scoria_memory_reserved_bytes",
                "Bytes of request bodies and guest memories held against the memory budget.",
            ),
            memory_budget: host_gauge(
                "scoria_memory_budget_bytes",
                "The memory budget (--memory-budget-mib).",
            ),
            ready: add(
                &registry,
                IntGauge::new(
                    "scoria_ready",
                    "1 when every function is compiled and every model loaded.",
                )
                .expect("valid gauge"),
            ),
            requests: counter(
                "scoria_requests_total",
                "Requests to function routes, by function and status.",
                &["function", "status"],
            ),
            request_seconds: histogram(
                "scoria_request_duration_seconds",
                "End-to-end request latency, by function.",
                LATENCY,
                &["function"],
            ),
            inference_seconds: histogram(
                "scoria_inference_duration_seconds",
                "Time in the backend per run (a merged batch counts once), by model and backend.",
                LATENCY,
                &["backend", "model"],
            ),
            batch_size: histogram(
                "scoria_batch_size",
                "Items per backend run, by model; above 1 when computes were merged or a guest sent a batch.",
                BATCH,
                &["model"],
            ),
            padding_rows: counter(
                "scoria_batch_padding_rows_total",
                "Zero rows that padded batches to a warmed size, by model (padding computes nothing).",
                &["model"],
            ),
            queue_delay_seconds: histogram(
                "scoria_batch_queue_delay_seconds",
                "Time a compute call waited for its backend run to start (thread or batch), by model.",
                LATENCY,
                &["model"],
            ),
            instances_in_use: gauge(
                "scoria_instances_in_use",
                "Component instances serving requests, by function.",
            ),
            queue_depth: gauge(
                "scoria_queue_depth",
                "Requests waiting for a free instance slot, by function.",
            ),
            registry,
        }
    }
}

impl Metrics {
    /// One finished request to a function route.
    pub fn request(&self, function: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[function, &status.to_string()])
            .inc();
        self.request_seconds
            .with_label_values(&[function])
            .observe(elapsed.as_secs_f64());
    }

    /// One connection of the probe reserve closed to make room for a newer one.
    pub fn connection_shed(&self) {
        self.connections_shed.inc();
    }

    /// One `compute` on a model: how long it waited for its backend run to start. The run's
    /// own time and size count once per run (by its leader), not once per merged caller.
    pub fn inference(&self, model: &str, backend: &str, run: &InferenceRun) {
        self.queue_delay_seconds
            .with_label_values(&[model])
            .observe(run.queued.as_secs_f64());
        if run.leader {
            self.inference_seconds
                .with_label_values(&[backend, model])
                .observe(run.ran.as_secs_f64());
            self.batch_size
                .with_label_values(&[model])
                .observe(f64::from(run.items));
            self.padding_rows
                .with_label_values(&[model])
                .inc_by(u64::from(run.rows.saturating_sub(run.items)));
        }
    }

    /// The text exposition format, with `ready` and the per-function `gauges` as they are now.
    pub fn render(&self, ready: bool, host: &HostGauges, gauges: &[FunctionGauges]) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.ready.set(i64::from(ready));
        self.open_connections.set(gauge(host.open_connections));
        self.memory_reserved.set(gauge(host.memory_reserved));
        self.memory_budget.set(gauge(host.memory_budget));
        for g in gauges {
            self.instances_in_use
                .with_label_values(&[&g.function])
                .set(gauge(g.in_use));
            self.queue_depth
                .with_label_values(&[&g.function])
                .set(gauge(g.queued));
        }
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "rendering the metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
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
        let host = HostGauges {
            open_connections: 3,
            memory_reserved: 10,
            memory_budget: 100,
        };
        let text = m.render(
            true,
            &host,
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
        let run = |items, rows, leader| InferenceRun {
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
        let text = m.render(true, &HostGauges::default(), &[]);
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
