//! Rendering a [`CompareReport`]: terminal table, Markdown, JSON and an SVG plot.
//!
//! Pure formatting: this module never measures anything and never touches the network.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{CompareReport, ScenarioResult};

fn opt_f(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn row(s: &ScenarioResult) -> [String; 9] {
    [
        s.stack.clone(),
        s.variant.clone(),
        s.outcome.name().to_string(),
        s.errno.clone().unwrap_or_else(|| "-".into()),
        s.completed.to_string(),
        opt_f(s.conns_per_sec, 0),
        opt_f(s.time_to_first_failure_ms, 0),
        s.time_wait_client.to_string(),
        s.time_wait_server.to_string(),
    ]
}

const HEADERS: [&str; 9] = [
    "stack",
    "variant",
    "outcome",
    "errno",
    "done",
    "conn/s",
    "1st fail ms",
    "TW client",
    "TW server",
];

/// A plain-text table for a terminal.
pub fn table(r: &CompareReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "sysctls in the namespaces:");
    for (k, v) in &r.sysctls {
        let _ = writeln!(out, "  {k} = {v}");
    }
    for sc in &r.scenarios {
        let _ = writeln!(out, "\n{} {}", sc.id, sc.name);
        let rows: Vec<[String; 9]> = sc.results.iter().map(row).collect();
        let mut widths = HEADERS.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cells: &[String]| {
            let mut l = String::from(" ");
            for (c, w) in cells.iter().zip(widths.iter()) {
                let _ = write!(l, " {c:<w$}");
            }
            l.trim_end().to_string()
        };
        let _ = writeln!(out, "{}", line(&HEADERS.map(String::from)));
        for r in &rows {
            let _ = writeln!(out, "{}", line(r));
        }
        for res in &sc.results {
            if !res.detail.is_empty() && res.outcome != super::Outcome::Ok {
                let _ = writeln!(out, "    {} {}: {}", res.stack, res.variant, res.detail);
            }
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "\nnote: {n}");
    }
    let _ = writeln!(out, "\ncompleted in {:.1} s", r.elapsed_sec);
    out
}

/// Markdown for the README's results section.
pub fn markdown(r: &CompareReport) -> String {
    let mut out = String::new();
    let sys: Vec<String> = r
        .sysctls
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect();
    let _ = writeln!(out, "Sysctls: {}\n", sys.join(", "));
    let _ = writeln!(out, "| scenario | {} |", HEADERS.join(" | "));
    let _ = writeln!(out, "|---{}|", "|---".repeat(HEADERS.len()));
    for sc in &r.scenarios {
        for res in &sc.results {
            let _ = writeln!(out, "| {} {} | {} |", sc.id, sc.name, row(res).join(" | "));
        }
    }
    for n in &r.notes {
        let _ = writeln!(out, "\n_Note: {n}_");
    }
    out
}

/// The JSON document of DESIGN.md / issue #4.
pub fn json(r: &CompareReport) -> Value {
    let sysctls: serde_json::Map<String, Value> = r
        .sysctls
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let scenarios: Vec<Value> = r
        .scenarios
        .iter()
        .map(|sc| {
            json!({
                "id": sc.id,
                "name": sc.name,
                "results": sc.results.iter().map(|s| json!({
                    "stack": s.stack,
                    "variant": s.variant,
                    "outcome": s.outcome.name(),
                    "errno": s.errno,
                    "detail": s.detail,
                    "completed": s.completed,
                    "failures": s.failures,
                    "conns_per_sec": s.conns_per_sec,
                    "time_to_first_failure_ms": s.time_to_first_failure_ms,
                    "time_wait_client": s.time_wait_client,
                    "time_wait_server": s.time_wait_server,
                    "series": s.series.iter().map(|p| json!({
                        "t_ms": p.t_ms,
                        "completed": p.completed,
                        "failures": p.failures,
                        "time_wait": p.time_wait,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "sysctls": sysctls,
        "scenarios": scenarios,
        "notes": r.notes,
        "elapsed_sec": r.elapsed_sec,
    })
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// An SVG with, per churn scenario, connections/s and TIME_WAIT entries over time for
/// every stack that ran it.
pub fn svg(r: &CompareReport) -> String {
    let churn: Vec<_> = r
        .scenarios
        .iter()
        .filter(|s| s.results.iter().any(|x| x.series.len() > 1))
        .collect();
    let (pw, ph, pad) = (420.0f64, 220.0f64, 50.0f64);
    let width = pad + 2.0 * (pw + pad);
    let height = pad + churn.len().max(1) as f64 * (ph + pad);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, sc) in churn.iter().enumerate() {
        let y0 = pad + i as f64 * (ph + pad);
        for (panel, title) in ["connections/s", "TIME_WAIT entries"].iter().enumerate() {
            let x0 = pad + panel as f64 * (pw + pad);
            let series: Vec<(String, Vec<(f64, f64)>)> = sc
                .results
                .iter()
                .filter(|s| s.series.len() > 1)
                .map(|s| {
                    let pts = s
                        .series
                        .windows(2)
                        .map(|w| {
                            let (a, b) = (w[0], w[1]);
                            let dt = (b.t_ms.saturating_sub(a.t_ms)).max(1) as f64 / 1000.0;
                            let y = if panel == 0 {
                                (b.completed - a.completed) as f64 / dt
                            } else {
                                b.time_wait as f64
                            };
                            (b.t_ms as f64 / 1000.0, y)
                        })
                        .collect();
                    (format!("{} {}", s.stack, s.variant), pts)
                })
                .collect();
            let xmax = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.0))
                .fold(0.1, f64::max);
            let ymax = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| q.1))
                .fold(1.0, f64::max);
            let _ = writeln!(
                out,
                r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
            );
            let _ = writeln!(
                out,
                r#"<text x="{x0}" y="{}">{} {}: {title} (max {ymax:.0}, {xmax:.1} s)</text>"#,
                y0 - 6.0,
                sc.id,
                sc.name
            );
            for (k, (label, pts)) in series.iter().enumerate() {
                let color = COLORS[k % COLORS.len()];
                let path: Vec<String> = pts
                    .iter()
                    .map(|(x, y)| {
                        format!(
                            "{:.1},{:.1}",
                            x0 + x / xmax * pw,
                            y0 + ph - y / ymax * (ph - 10.0)
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    path.join(" ")
                );
                let _ = writeln!(
                    out,
                    r#"<text x="{}" y="{}" fill="{color}">{label}</text>"#,
                    x0 + 6.0,
                    y0 + 14.0 + 13.0 * k as f64
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}
