//! Milliseconds per step of a function's request, for its `Server-Timing` header (the host
//! adds its own `queue`, `instance`, `inference` and `total`), so that a client and the
//! benchmarks see where a request's time goes inside the guest.

use std::time::Instant;

/// The steps timed so far, in order.
#[derive(Default)]
pub struct Timing(Vec<(&'static str, f64)>);

impl Timing {
    /// Run `f` as the step `step`.
    pub fn time<T>(&mut self, step: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.0.push((step, t.elapsed().as_secs_f64() * 1e3));
        out
    }

    /// The header value: `step;dur=ms` entries joined by commas.
    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, ms)| format!("{n};dur={ms:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Add the header to `response`.
    pub fn add_to<B>(&self, response: &mut spin_sdk::http::Response<B>) {
        if let Ok(v) = self.header().parse() {
            response.headers_mut().insert("server-timing", v);
        }
    }
}
