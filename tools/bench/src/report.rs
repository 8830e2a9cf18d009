//! The benchmark's figures.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

pub(crate) struct Report {
    lang: String,
    script: String,
    count: usize,
    concurrency: usize,
    submitted_in: Duration,
    pub(crate) rejected: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    completed: usize,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        lang: &str,
        script: &str,
        count: usize,
        concurrency: usize,
        submitted_in: Duration,
        accepted: &[(String, Instant)],
        stored: &HashMap<String, (Instant, u32)>,
        started: Instant,
    ) -> Self {
        let mut latencies_ms = Vec::new();
        let mut lost = 0;
        let mut duplicated = 0;
        let mut last = started;
        for (id, sent) in accepted {
            match stored.get(id) {
                Some((at, times)) => {
                    latencies_ms.push(at.duration_since(*sent).as_secs_f64() * 1000.0);
                    last = last.max(*at);
                    if *times > 1 {
                        duplicated += 1;
                    }
                }
                None => lost += 1,
            }
        }
        latencies_ms.sort_by(f64::total_cmp);
        Self {
            lang: lang.to_owned(),
            script: script.to_owned(),
            count,
            concurrency,
            submitted_in,
            rejected: count - accepted.len(),
            lost,
            duplicated,
            completed: latencies_ms.len(),
            elapsed: last.duration_since(started),
            latencies_ms,
        }
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies_ms.len() - 1) as f64).round() as usize;
        self.latencies_ms[rank]
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64().max(f64::EPSILON);
        writeln!(
            f,
            "kiln-bench: {} x {} {:?}, concurrency {}",
            self.count, self.lang, self.script, self.concurrency
        )?;
        writeln!(
            f,
            "  submitted in      {:.2} s",
            self.submitted_in.as_secs_f64()
        )?;
        writeln!(
            f,
            "  completed         {} ({} rejected, {} lost, {} duplicated)",
            self.completed, self.rejected, self.lost, self.duplicated
        )?;
        writeln!(
            f,
            "  throughput        {:.1} executions/s (first submit to last stored result: {:.2} s)",
            self.completed as f64 / seconds,
            seconds
        )?;
        write!(
            f,
            "  latency (submit -> stored result)  p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            self.percentile(50.0),
            self.percentile(95.0),
            self.percentile(99.0),
            self.latencies_ms.last().copied().unwrap_or(f64::NAN)
        )
    }
}
