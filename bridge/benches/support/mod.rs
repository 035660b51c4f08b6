//! What both benchmark binaries share: the results table (one row per metric, with its
//! target and the TypeScript original's figure), percentiles, and where results go.
//!
//! Invariants: every row is written as numbers too (`data`), so the JSON can be compared
//! across runs; `met` is `None` where a metric has no target or was not measured. Results go
//! to `<target dir>/bench/`, the target directory being the one the bridge binary was built
//! into (so `CARGO_TARGET_DIR` is respected).
#![allow(dead_code)] // each bench binary uses a different part

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One line of the results table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// What was measured, and how often.
    pub metric: String,
    /// The figure, with its unit.
    pub value: String,
    /// The target, or "—".
    pub target: String,
    /// Whether the target is met; `None` when there is none or nothing was measured.
    pub met: Option<bool>,
    /// The TypeScript original's figure, or "—".
    pub original: String,
    /// The same figures as numbers (milliseconds, bytes, …, named by their keys).
    pub data: Map<String, Value>,
}

impl Row {
    /// A row with no target and no original figure yet.
    pub fn new(metric: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            metric: metric.into(),
            value: value.into(),
            target: "—".into(),
            met: None,
            original: "—".into(),
            data: Map::new(),
        }
    }

    /// Sets the target and whether it is met.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }

    /// Sets the target of a metric that could not be judged.
    pub fn target_unjudged(mut self, target: impl Into<String>) -> Row {
        self.target = target.into();
        self.met = None;
        self
    }

    /// Sets the original's figure.
    pub fn original(mut self, original: impl Into<String>) -> Row {
        self.original = original.into();
        self
    }

    /// Adds a number to `data`.
    pub fn num(mut self, key: &str, value: f64) -> Row {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.data.insert(key.to_string(), value);
        self
    }

    /// Adds any JSON value to `data`.
    pub fn json(mut self, key: &str, value: Value) -> Row {
        self.data.insert(key.to_string(), value);
        self
    }

    fn met_text(&self) -> &'static str {
        match self.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "—",
        }
    }
}

/// Percentiles of a sample (nearest rank), in the sample's unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many values.
    pub n: usize,
    /// The median.
    pub p50: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest value.
    pub max: f64,
    /// The arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = (q * sorted.len() as f64).ceil() as usize;
            sorted[i.clamp(1, sorted.len()) - 1]
        };
        Some(Summary {
            n: sorted.len(),
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        })
    }
}

/// The cargo target directory: the bridge binary lives in `<target>/<profile>/`.
pub fn target_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_second-brain-bridge"));
    exe.parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
}

/// `<target>/bench`, created.
pub fn out_dir() -> PathBuf {
    let dir = target_dir().join("bench");
    if let Err(err) = std::fs::create_dir_all(&dir) {
        eprintln!("bench: cannot create {}: {err}", dir.display());
    }
    dir
}

/// Where the micro-benchmarks leave their rows for the end-to-end driver to merge.
pub fn micro_rows_path() -> PathBuf {
    out_dir().join("micro.json")
}

/// Formats milliseconds: three significant digits, or whole milliseconds above 100.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// Formats microseconds.
pub fn us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.2} µs")
    }
}

/// Formats a byte count in KB (1 KB = 1,000 bytes) or MB.
pub fn kb(bytes: f64) -> String {
    if bytes >= 1_000_000.0 {
        format!("{:.1} MB", bytes / 1e6)
    } else {
        format!("{:.1} KB", bytes / 1e3)
    }
}

/// The rows as a plain-text table with aligned columns.
pub fn render_text(rows: &[Row]) -> String {
    let header = ["metric", "value", "target", "met?", "TS original"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.clone(),
                r.value.clone(),
                r.target.clone(),
                r.met_text().to_string(),
                r.original.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &[&str]| {
        for (i, (cell, w)) in cols.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            let sep = if i + 1 == cols.len() { "\n" } else { " │ " };
            let _ = write!(out, "{cell}{}{sep}", " ".repeat(pad));
        }
    };
    line(&mut out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
    let _ = writeln!(out, "{}", rule.join("─┼─"));
    for row in &cells {
        let cols: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&mut out, &cols);
    }
    out
}

/// The rows as a Markdown table (for the README).
pub fn render_markdown(rows: &[Row]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = String::from("| metric | value | target | met? | TS original |\n");
    out.push_str("|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            esc(&r.metric),
            esc(&r.value),
            esc(&r.target),
            r.met_text(),
            esc(&r.original)
        );
    }
    out
}

/// Writes `value` as pretty JSON to `path`, reporting (not failing on) an error.
pub fn write_json(path: &Path, value: &impl Serialize) {
    let written = serde_json::to_vec_pretty(value)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(path, bytes));
    if let Err(err) = written {
        eprintln!("bench: cannot write {}: {err}", path.display());
    }
}

/// Prints `rows` under `heading` (followed by the machine's load averages) and writes them to
/// `<out>/<name>.json` and `<name>.md`, reporting (not failing on) an error.
pub fn publish(name: &str, heading: &str, rows: &[Row]) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!("\n{heading}; load {load})\n\n{}", render_text(rows));
    let out = out_dir();
    write_json(&out.join(format!("{name}.json")), &rows);
    let md = out.join(format!("{name}.md"));
    if let Err(err) = std::fs::write(&md, render_markdown(rows)) {
        eprintln!("bench: cannot write {}: {err}", md.display());
    }
}
