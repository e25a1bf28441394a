//! A strict parser of what a role's `/metrics` answers: the Prometheus text format 0.0.4 and
//! OpenMetrics 1.0 text.
//!
//! Strict where a lenient parser would hide a broken exposition: every line must parse (no
//! line is skipped), a label value may hold any character (`,`, `=`, `}` included, escapes
//! decoded), a sample must be named as its family's type allows (a counter family `foo` has
//! samples `foo_total` in OpenMetrics; a histogram `_bucket` with `le`, `_sum`, `_count`), a
//! family appears in one block and a series once, a histogram's buckets rise to `+Inf` and
//! match its `_count`, and OpenMetrics ends with `# EOF`. Exemplars, and the `info`,
//! `stateset` and `gaugehistogram` types, are refused: no role emits them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Which text format the exposition is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Prometheus,
    OpenMetrics,
}

impl Flavor {
    /// The flavor of a response with this `Content-Type`.
    pub fn from_content_type(content_type: &str) -> Option<Flavor> {
        let media = content_type.split(';').next()?.trim();
        match media {
            "text/plain" => Some(Flavor::Prometheus),
            "application/openmetrics-text" => Some(Flavor::OpenMetrics),
            _ => None,
        }
    }
}

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    /// `untyped` (Prometheus), `unknown` (OpenMetrics), or no `# TYPE` line.
    Untyped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether the sample carries every `(name, value)` of `labels` (and maybe more).
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

/// A parsed exposition: its families in the order they came.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub families: Vec<Family>,
}

impl Exposition {
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The samples named `name` that carry `labels` (and maybe more), from any family.
    pub fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|s| s.name == name && s.has_labels(labels))
            .collect()
    }

    /// The family holding samples named `sample`, whatever their labels.
    pub fn family_of(&self, sample: &str) -> Option<&Family> {
        self.families
            .iter()
            .find(|f| f.samples.iter().any(|s| s.name == sample))
    }
}

/// Where and why an exposition is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based; 0 for a problem with the whole text (no `# EOF`, a histogram's totals).
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.problem),
            n => write!(f, "line {n}: {}", self.problem),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses `text` as `flavor`, refusing anything malformed (see the module docs).
pub fn parse(text: &str, flavor: Flavor) -> Result<Exposition, ParseError> {
    let mut p = Parser {
        flavor,
        families: Vec::new(),
        by_name: HashMap::new(),
        series: HashSet::new(),
        typed: HashSet::new(),
        eof: false,
    };
    for (i, line) in text.split_terminator('\n').enumerate() {
        p.line(line)
            .map_err(|problem| ParseError { line: i + 1, problem })?;
    }
    if flavor == Flavor::OpenMetrics && !p.eof {
        return Err(whole("OpenMetrics text must end with \"# EOF\""));
    }
    for f in &p.families {
        if f.kind == Kind::Histogram {
            check_histogram(f).map_err(whole)?;
        }
    }
    Ok(Exposition { families: p.families })
}

fn whole(problem: impl Into<String>) -> ParseError {
    ParseError {
        line: 0,
        problem: problem.into(),
    }
}

struct Parser {
    flavor: Flavor,
    families: Vec<Family>,
    by_name: HashMap<String, usize>,
    series: HashSet<(String, Vec<(String, String)>)>,
    /// Families that had their `# TYPE` line.
    typed: HashSet<String>,
    eof: bool,
}

impl Parser {
    fn line(&mut self, line: &str) -> Result<(), String> {
        let om = self.flavor == Flavor::OpenMetrics;
        if self.eof {
            return Err("text after \"# EOF\"".into());
        }
        if line.is_empty() {
            return if om { Err("empty line".into()) } else { Ok(()) };
        }
        if let Some(comment) = line.strip_prefix('#') {
            return self.comment(comment);
        }
        self.sample(line)
    }

    fn comment(&mut self, comment: &str) -> Result<(), String> {
        let om = self.flavor == Flavor::OpenMetrics;
        if comment == " EOF" {
            return if om {
                self.eof = true;
                Ok(())
            } else {
                Err("\"# EOF\" belongs to OpenMetrics, not the Prometheus text format".into())
            };
        }
        let mut parts = comment.strip_prefix(' ').unwrap_or("").splitn(3, ' ');
        let keyword = parts.next().unwrap_or("");
        if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
            return if om {
                Err(format!("OpenMetrics allows no comment #{comment}"))
            } else {
                Ok(())
            };
        }
        let name = parts.next().unwrap_or("");
        if !is_metric_name(name) {
            return Err(format!("# {keyword}: {name:?} is no metric name"));
        }
        let rest = parts.next();
        if keyword == "TYPE" && !self.typed.insert(name.to_string()) {
            return Err(format!("a second # TYPE for {name}"));
        }
        let f = self.metadata_family(name)?;
        match keyword {
            "HELP" => {
                if f.help.is_some() {
                    return Err(format!("a second # HELP for {name}"));
                }
                f.help = Some(rest.unwrap_or("").to_string());
            }
            "TYPE" => {
                if !f.samples.is_empty() {
                    return Err(format!("# TYPE for {name} after its samples"));
                }
                let kind = match (rest.unwrap_or(""), om) {
                    ("counter", _) => Kind::Counter,
                    ("gauge", _) => Kind::Gauge,
                    ("histogram", _) => Kind::Histogram,
                    ("summary", _) => Kind::Summary,
                    ("untyped", false) | ("unknown", true) => Kind::Untyped,
                    (other, _) => return Err(format!("# TYPE {name}: unsupported type {other:?}")),
                };
                if om && kind == Kind::Counter && name.ends_with("_total") {
                    return Err(format!(
                        "OpenMetrics counter family {name} must not end in _total"
                    ));
                }
                f.kind = kind;
            }
            _ => {
                if !om {
                    return Err("# UNIT belongs to OpenMetrics, not the Prometheus text format".into());
                }
                if f.unit.is_some() {
                    return Err(format!("a second # UNIT for {name}"));
                }
                let unit = rest.unwrap_or("");
                if unit.is_empty() || !name.ends_with(&format!("_{unit}")) {
                    return Err(format!("# UNIT {unit:?}: family {name} must end in _{unit}"));
                }
                f.unit = Some(unit.to_string());
            }
        }
        Ok(())
    }

    /// The family metadata for `name` goes to: the current one, or a new one.
    fn metadata_family(&mut self, name: &str) -> Result<&mut Family, String> {
        let current = self.families.last().is_some_and(|f| f.name == name);
        if !current {
            self.start_family(name, Kind::Untyped)?;
        }
        Ok(self.families.last_mut().expect("just ensured"))
    }

    fn start_family(&mut self, name: &str, kind: Kind) -> Result<(), String> {
        if self.by_name.contains_key(name) {
            return Err(format!("family {name} appears twice (a family is one block)"));
        }
        self.by_name.insert(name.to_string(), self.families.len());
        self.families.push(Family {
            name: name.to_string(),
            kind,
            help: None,
            unit: None,
            samples: Vec::new(),
        });
        Ok(())
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let om = self.flavor == Flavor::OpenMetrics;
        let sample = parse_sample(line, self.flavor)?;
        let fits = self
            .families
            .last()
            .is_some_and(|f| sample_fits(f, &sample, self.flavor));
        if !fits {
            if let Some(f) = self.families.last() {
                if f.kind != Kind::Untyped && sample.name.starts_with(&f.name) {
                    return Err(format!(
                        "sample {} does not belong to {:?} family {}",
                        sample.name, f.kind, f.name
                    ));
                }
            }
            // A sample without metadata: a family of its own, untyped.
            self.start_family(&sample.name, Kind::Untyped)?;
        }
        let f = self.families.last_mut().expect("a family");
        if f.kind == Kind::Counter && (sample.value.is_nan() || sample.value < 0.0) {
            return Err(format!(
                "counter {} is {} (must be >= 0)",
                sample.name, sample.value
            ));
        }
        if f.kind == Kind::Histogram && sample.name.ends_with("_bucket") {
            let le = sample
                .labels
                .get("le")
                .ok_or_else(|| format!("bucket {} has no le label", sample.name))?;
            parse_value(le, om).map_err(|e| format!("le={le:?}: {e}"))?;
        }
        let key = (
            sample.name.clone(),
            sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        if !self.series.insert(key) {
            return Err(format!("series {} with these labels appears twice", sample.name));
        }
        f.samples.push(sample);
        Ok(())
    }
}

/// Whether `sample` is named as family `f`'s type allows.
fn sample_fits(f: &Family, sample: &Sample, flavor: Flavor) -> bool {
    let om = flavor == Flavor::OpenMetrics;
    let suffix = match sample.name.strip_prefix(&f.name) {
        Some(s) => s,
        None => return false,
    };
    match f.kind {
        Kind::Gauge | Kind::Untyped => suffix.is_empty(),
        Kind::Counter if om => matches!(suffix, "_total" | "_created"),
        Kind::Counter => suffix.is_empty(),
        Kind::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count") || (om && suffix == "_created"),
        Kind::Summary => matches!(suffix, "" | "_sum" | "_count") || (om && suffix == "_created"),
    }
}

fn parse_sample(line: &str, flavor: Flavor) -> Result<Sample, String> {
    let om = flavor == Flavor::OpenMetrics;
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("{name:?} is no metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let fields: Vec<&str> = if om {
        let Some(fields) = rest.strip_prefix(' ') else {
            return Err(format!("{name}: expected one space before the value"));
        };
        let fields: Vec<&str> = fields.split(' ').collect();
        if fields.contains(&"") {
            return Err(format!("{name}: fields must be separated by single spaces"));
        }
        fields
    } else {
        rest.split([' ', '\t']).filter(|s| !s.is_empty()).collect()
    };
    let (value, timestamp) = match fields.as_slice() {
        [v] => (*v, None),
        [v, t] => (*v, Some(*t)),
        [_, _, "#", ..] | [_, "#", ..] => return Err(format!("{name}: exemplars are not supported")),
        _ => {
            return Err(format!(
                "{name}: expected a value and at most a timestamp, got {rest:?}"
            ))
        }
    };
    let value = parse_value(value, om).map_err(|e| format!("{name}: {e}"))?;
    if let Some(t) = timestamp {
        let ok = if om {
            parse_value(t, om).is_ok_and(f64::is_finite)
        } else {
            t.parse::<i64>().is_ok()
        };
        if !ok {
            return Err(format!("{name}: timestamp {t:?} is not a number"));
        }
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads `name="value",…}`; what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str, String> {
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("a label without =")?;
        let key = &s[..eq];
        if !is_label_name(key) {
            return Err(format!("{key:?} is no label name"));
        }
        let Some(mut chars) = s[eq + 1..].strip_prefix('"').map(str::char_indices) else {
            return Err(format!("label {key}: the value must be quoted"));
        };
        let start = eq + 2;
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {key}: unterminated value")),
                Some((i, '"')) => break start + i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("label {key}: bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err(format!("label {key}: raw newline in the value")),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} given twice"));
        }
        s = &s[end..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("after label {key}: expected , or }}"));
        }
    }
}

/// A sample value: a decimal or scientific number, `+Inf`/`-Inf`, `NaN` (Prometheus also
/// takes `Inf`), nothing looser (`inf`, `infinity`, hex).
fn parse_value(s: &str, om: bool) -> Result<f64, String> {
    match s {
        "+Inf" => return Ok(f64::INFINITY),
        "Inf" if !om => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    let numeric = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    match s.parse::<f64>() {
        Ok(v) if numeric => Ok(v),
        _ => Err(format!("{s:?} is not a number")),
    }
}

/// Per label set: buckets in rising `le` with rising counts, ending at `+Inf` equal to
/// `_count`.
fn check_histogram(f: &Family) -> Result<(), String> {
    type Series = Vec<(String, String)>;
    let mut buckets: BTreeMap<Series, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<Series, f64> = BTreeMap::new();
    let without_le = |s: &Sample| -> Series {
        s.labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    for s in &f.samples {
        if s.name.ends_with("_bucket") {
            let le = parse_value(&s.labels["le"], false).expect("checked when read");
            buckets.entry(without_le(s)).or_default().push((le, s.value));
        } else if s.name.ends_with("_count") {
            counts.insert(without_le(s), s.value);
        }
    }
    for (series, b) in &buckets {
        let rising = b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        if !rising {
            return Err(format!(
                "histogram {} {series:?}: buckets do not rise: {b:?}",
                f.name
            ));
        }
        let last = b.last().expect("a bucket");
        if last.0 != f64::INFINITY {
            return Err(format!("histogram {} {series:?}: no +Inf bucket", f.name));
        }
        match counts.get(series) {
            Some(c) if *c == last.1 => {}
            other => {
                return Err(format!(
                    "histogram {} {series:?}: _count {other:?} is not the +Inf bucket {}",
                    f.name, last.1
                ))
            }
        }
    }
    Ok(())
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS: &str = r#"# HELP LockHeld 1 while the lock is held.
# TYPE LockHeld gauge
LockHeld 1
# HELP bbs_requests_total HTTP requests.
# TYPE bbs_requests_total counter
bbs_requests_total{method="GET",route="/a,b=c}",status="200"} 3
bbs_requests_total{method="GET",route="say \"hi\"\\\n",status="404"} 1
# a plain comment
# TYPE bbs_request_duration_seconds histogram
bbs_request_duration_seconds_bucket{route="/x",le="0.5"} 1
bbs_request_duration_seconds_bucket{route="/x",le="+Inf"} 2
bbs_request_duration_seconds_sum{route="/x"} 0.75
bbs_request_duration_seconds_count{route="/x"} 2
no_metadata 4.5e-3 1700000000000
"#;

    const OPENMETRICS: &str = r#"# HELP bbs_requests HTTP requests.
# TYPE bbs_requests counter
bbs_requests_total{route="/v1/tasks"} 3
# HELP bbs_request_duration_seconds Latency.
# TYPE bbs_request_duration_seconds histogram
# UNIT bbs_request_duration_seconds seconds
bbs_request_duration_seconds_sum 0.5
bbs_request_duration_seconds_count 1
bbs_request_duration_seconds_bucket{le="0.1"} 0
bbs_request_duration_seconds_bucket{le="1.0"} 1
bbs_request_duration_seconds_bucket{le="+Inf"} 1
# TYPE up gauge
up NaN
# EOF
"#;

    #[test]
    fn both_flavors_parse_with_labels_decoded() {
        let p = parse(PROMETHEUS, Flavor::Prometheus).unwrap();
        assert_eq!(p.family("LockHeld").unwrap().kind, Kind::Gauge);
        let odd = p.samples("bbs_requests_total", &[("status", "200")]);
        assert_eq!(odd.len(), 1);
        assert_eq!(odd[0].labels["route"], "/a,b=c}");
        assert_eq!(odd[0].value, 3.0);
        let escaped = p.samples("bbs_requests_total", &[("status", "404")]);
        assert_eq!(escaped[0].labels["route"], "say \"hi\"\\\n");
        assert_eq!(
            p.family_of("bbs_request_duration_seconds_sum").unwrap().kind,
            Kind::Histogram
        );
        assert_eq!(p.family("no_metadata").unwrap().kind, Kind::Untyped);
        assert_eq!(p.samples("no_metadata", &[])[0].value, 0.0045);

        let o = parse(OPENMETRICS, Flavor::OpenMetrics).unwrap();
        let counter = o.family_of("bbs_requests_total").unwrap();
        assert_eq!(
            (counter.name.as_str(), counter.kind),
            ("bbs_requests", Kind::Counter)
        );
        let h = o.family("bbs_request_duration_seconds").unwrap();
        assert_eq!(h.unit.as_deref(), Some("seconds"));
        assert_eq!(h.samples.len(), 5);
        assert!(o.samples("up", &[])[0].value.is_nan());
    }

    #[test]
    fn malformed_expositions_are_refused_with_the_line() {
        let om = Flavor::OpenMetrics;
        let prom = Flavor::Prometheus;
        for (text, flavor, line, problem) in [
            ("garbage here\n", prom, 1, "not a number"),
            ("x 1 2 3\n", prom, 1, "expected a value and at most a timestamp"),
            ("x 1 soon\n", prom, 1, "timestamp"),
            ("x{a=\"1\" 2\n", prom, 1, "expected , or }"),
            ("x{a=1} 2\n", prom, 1, "must be quoted"),
            ("x{a=\"\\t\"} 2\n", prom, 1, "bad escape"),
            ("x{a=\"1\",a=\"2\"} 2\n", prom, 1, "given twice"),
            ("x{1a=\"1\"} 2\n", prom, 1, "no label name"),
            ("x inf\n", prom, 1, "not a number"),
            ("x 0x10\n", prom, 1, "not a number"),
            ("x 1\nx 2\n", prom, 2, "appears twice"),
            ("x 1\ny 1\nx{a=\"b\"} 1\n", prom, 3, "appears twice"),
            ("# TYPE c counter\nc -1\n", prom, 2, "must be >= 0"),
            ("# TYPE g gauge\ng_total 1\n", prom, 2, "does not belong"),
            ("# TYPE h histogram\nh_bucket 1\n", prom, 2, "no le label"),
            ("x 1\n# TYPE x gauge\n", prom, 2, "after its samples"),
            ("# TYPE x gauge\n# TYPE x gauge\n", prom, 2, "a second # TYPE"),
            (
                "# TYPE x gauge\nx 1\n# TYPE y gauge\n# TYPE x gauge\n",
                prom,
                4,
                "a second # TYPE",
            ),
            ("# HELP x a\n# HELP x b\n", prom, 2, "second # HELP"),
            ("# TYPE x enum\n", prom, 1, "unsupported type"),
            ("# UNIT x_seconds seconds\n", prom, 1, "belongs to OpenMetrics"),
            ("x 1\n# EOF\n", prom, 2, "belongs to OpenMetrics"),
            ("x 1\n", om, 0, "must end with \"# EOF\""),
            ("x 1\n# EOF\nx 2\n", om, 3, "after \"# EOF\""),
            ("x 1\n\n# EOF\n", om, 2, "empty line"),
            ("# comment\n# EOF\n", om, 1, "allows no comment"),
            ("x  1\n# EOF\n", om, 1, "single spaces"),
            ("# TYPE c_total counter\n# EOF\n", om, 1, "must not end in _total"),
            ("# TYPE c counter\nc 1\n# EOF\n", om, 2, "does not belong"),
            (
                "# TYPE x_bytes gauge\n# UNIT x_bytes seconds\n# EOF\n",
                om,
                2,
                "must end in _seconds",
            ),
            ("x 1 # {a=\"b\"} 1\n# EOF\n", om, 1, "exemplars"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
                prom,
                0,
                "do not rise",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_count 2\n",
                prom,
                0,
                "no +Inf bucket",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
                prom,
                0,
                "is not the +Inf bucket",
            ),
        ] {
            let e = parse(text, flavor).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.problem.contains(problem), "{text:?}: {e}");
        }
    }

    #[test]
    fn content_types_name_the_flavor() {
        for (content_type, flavor) in [
            (
                "text/plain; version=0.0.4; charset=utf-8",
                Some(Flavor::Prometheus),
            ),
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                Some(Flavor::OpenMetrics),
            ),
            ("application/json", None),
        ] {
            assert_eq!(Flavor::from_content_type(content_type), flavor, "{content_type}");
        }
    }
}
