//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` once per metric,
//! then one line per sample, `name{label="value",…} value`.

use std::fmt::Write;

use super::series::HistogramSnapshot;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

pub type Labels<'a> = &'a [(&'a str, &'a str)];

#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric: its help text and type. Its samples follow.
    pub fn metric(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "metric name {name}");
        let _ = writeln!(self.out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// A counter or gauge with its samples.
    pub fn family<'a, const N: usize>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        samples: impl IntoIterator<Item = ([(&'a str, &'a str); N], f64)>,
    ) {
        self.metric(name, kind, help);
        for (labels, value) in samples {
            self.sample(name, &labels, value);
        }
    }

    /// A histogram metric with its series.
    pub fn histograms<'a, const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = ([(&'a str, &'a str); N], HistogramSnapshot)>,
    ) {
        self.metric(name, Kind::Histogram, help);
        for (labels, h) in series {
            self.histogram(name, &labels, &h);
        }
    }

    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        self.out.push_str(&number(value));
        self.out.push('\n');
    }

    /// `_bucket` lines (cumulative, `le` last), then `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, h: &HistogramSnapshot) {
        for (bound, count) in &h.cumulative {
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(*bound));
            let _ = writeln!(self.out, " {count}");
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count() as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: Labels<'_>, le: Option<f64>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(number);
        let all = labels
            .iter()
            .copied()
            .chain(le.as_deref().map(|le| ("le", le)));
        for (i, (name, value)) in all.enumerate() {
            debug_assert!(valid_name(name), "label name {name}");
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{name}=\"{}\"", escape(value, true));
        }
        self.out.push('}');
    }
}

/// Label values escape `\`, `"` and newlines; help texts only `\` and newlines.
fn escape(text: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\\', '\n', '"']) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            other => out.push(other),
        }
    }
    out.into()
}

/// Go's float syntax, as Prometheus parses it: `+Inf`, `-Inf`, `NaN`, else the shortest form.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_has_help_type_and_samples() {
        let mut e = Exposition::default();
        e.metric("odm_things_total", Kind::Counter, "Things done.");
        e.sample("odm_things_total", &[("kind", "a"), ("code", "200")], 3.0);
        e.sample("odm_things_total", &[], 0.5);
        assert_eq!(
            e.finish(),
            "# HELP odm_things_total Things done.\n\
             # TYPE odm_things_total counter\n\
             odm_things_total{kind=\"a\",code=\"200\"} 3\n\
             odm_things_total 0.5\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::default();
        e.metric("m", Kind::Gauge, "a \\ b\nc \"quoted\"");
        e.sample("m", &[("v", "back\\slash \"q\"\nline")], 1.0);
        assert_eq!(
            e.finish(),
            "# HELP m a \\\\ b\\nc \"quoted\"\n\
             # TYPE m gauge\n\
             m{v=\"back\\\\slash \\\"q\\\"\\nline\"} 1\n"
        );
    }

    #[test]
    fn special_values_use_prometheus_spelling() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.0025), "0.0025");
        assert_eq!(number(1e6), "1000000");
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_then_sum_and_count() {
        let h = HistogramSnapshot {
            cumulative: vec![(0.005, 1), (0.1, 4), (f64::INFINITY, 5)],
            sum: 2.25,
        };
        let mut e = Exposition::default();
        e.metric("d_seconds", Kind::Histogram, "Durations.");
        e.histogram("d_seconds", &[("step", "dispatch")], &h);
        assert_eq!(
            e.finish(),
            "# HELP d_seconds Durations.\n\
             # TYPE d_seconds histogram\n\
             d_seconds_bucket{step=\"dispatch\",le=\"0.005\"} 1\n\
             d_seconds_bucket{step=\"dispatch\",le=\"0.1\"} 4\n\
             d_seconds_bucket{step=\"dispatch\",le=\"+Inf\"} 5\n\
             d_seconds_sum{step=\"dispatch\"} 2.25\n\
             d_seconds_count{step=\"dispatch\"} 5\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("odm_devops_http_requests_total"));
        assert!(!valid_name("9lives") && !valid_name("a-b") && !valid_name(""));
    }
}
