//! Prometheus metrics at `GET /metrics`, in the text exposition format.
//!
//! The headline figure is what the gateway adds to each call: `ferryman_overhead_seconds`, the
//! time from a request's arrival to its settlement minus the time spent waiting for the
//! upstream (for a stream, the time until the upstream was asked). It is the number the
//! benchmark harness measures from outside, so production users can watch the same one. The
//! metrics carry no tenant labels: nothing here names a key, a team or a customer.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the overhead histogram's buckets, in seconds.
const BOUNDS: [f64; 14] =
    [0.000_025, 0.000_05, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0];

/// A fixed-bucket histogram updated with relaxed atomics (no lock on the hot path).
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len()],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// What the gateway added to whole (non-streamed) calls.
pub static OVERHEAD_CALL: Histogram = Histogram::new();
/// What the gateway added before a stream's upstream was asked.
pub static OVERHEAD_STREAM: Histogram = Histogram::new();
/// MCP tool calls and their spend, by server, tool and outcome. The labels are registered
/// names (servers and their tools), never a tenant.
static MCP_CALLS: std::sync::Mutex<std::collections::BTreeMap<McpLabels, (u64, i64)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// (server, tool, outcome).
type McpLabels = (String, String, &'static str);

/// Counts a settled MCP tool call.
pub fn mcp_tool_call(server: &str, tool: &str, status: &'static str, cost: crate::pricing::Nanos) {
    if let Ok(mut m) = MCP_CALLS.lock() {
        let e = m.entry((server.to_owned(), tool.to_owned(), status)).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(cost.0);
    }
}

static CALLS_OK: AtomicU64 = AtomicU64::new(0);
static CALLS_FAILED: AtomicU64 = AtomicU64::new(0);

/// Counts a settled call.
pub fn call_settled(failed: bool) {
    let counter = if failed { &CALLS_FAILED } else { &CALLS_OK };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Every metric, in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP ferryman_overhead_seconds Time the gateway adds to a call, upstream time excluded.\n");
    out.push_str("# TYPE ferryman_overhead_seconds histogram\n");
    OVERHEAD_CALL.render(&mut out, "ferryman_overhead_seconds", "kind=\"call\"");
    OVERHEAD_STREAM.render(&mut out, "ferryman_overhead_seconds", "kind=\"stream\"");
    out.push_str("# HELP ferryman_calls_total Calls settled, by outcome.\n");
    out.push_str("# TYPE ferryman_calls_total counter\n");
    let _ = writeln!(out, "ferryman_calls_total{{status=\"success\"}} {}", CALLS_OK.load(Ordering::Relaxed));
    let _ = writeln!(out, "ferryman_calls_total{{status=\"failure\"}} {}", CALLS_FAILED.load(Ordering::Relaxed));
    if let Ok(m) = MCP_CALLS.lock() {
        out.push_str("# HELP ferryman_mcp_tool_calls_total MCP tool calls, by server, tool and outcome.\n");
        out.push_str("# TYPE ferryman_mcp_tool_calls_total counter\n");
        for ((server, tool, status), (n, _)) in m.iter() {
            let _ = writeln!(
                out,
                "ferryman_mcp_tool_calls_total{{server=\"{}\",tool=\"{}\",status=\"{status}\"}} {n}",
                escape(server),
                escape(tool)
            );
        }
        out.push_str("# HELP ferryman_mcp_tool_spend_usd_total What MCP tool calls cost, by server and tool.\n");
        out.push_str("# TYPE ferryman_mcp_tool_spend_usd_total counter\n");
        let mut spend: std::collections::BTreeMap<(&str, &str), i64> = std::collections::BTreeMap::new();
        for ((server, tool, _), (_, nanos)) in m.iter() {
            *spend.entry((server, tool)).or_default() += nanos;
        }
        for ((server, tool), nanos) in spend {
            let _ = writeln!(
                out,
                "ferryman_mcp_tool_spend_usd_total{{server=\"{}\",tool=\"{}\"}} {}",
                escape(server),
                escape(tool),
                crate::pricing::Nanos(nanos)
            );
        }
    }
    out
}

/// `ferryman_mcp_server_up`: 1 for each registered MCP server whose last contact worked, 0 for
/// one marked unhealthy (the gauge to alert on, beside the `alert=mcp_server_unhealthy` log).
pub fn render_mcp_servers(out: &mut String, servers: &[(String, bool)]) {
    if servers.is_empty() {
        return;
    }
    out.push_str("# HELP ferryman_mcp_server_up Whether each MCP server answered the last time it was used.\n");
    out.push_str("# TYPE ferryman_mcp_server_up gauge\n");
    for (server, up) in servers {
        let _ = writeln!(out, "ferryman_mcp_server_up{{server=\"{}\"}} {}", escape(server), u8::from(*up));
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_counted() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(20));
        h.observe(Duration::from_micros(120));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x", "kind=\"call\"");
        assert!(out.contains("x_bucket{kind=\"call\",le=\"0.000025\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{kind=\"call\",le=\"0.00015\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{kind=\"call\",le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{kind=\"call\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{kind=\"call\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{kind=\"call\"} 5.00014\n"), "{out}");
    }
}
