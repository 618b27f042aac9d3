//! The charts (SVG, through `plotters`): per program, smallarena / other for each other
//! allocator, as horizontal bars on a log axis from the 1.0 line (left = smallarena better), with
//! min-max whiskers over the rounds and the value printed beside each bar.

use crate::summary::{wrap, Metric, Report, Spread};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// Colours of the other allocators, in `ALLOCATORS` order after smallarena.
const COLORS: [RGBColor; 4] = [
    RGBColor(117, 112, 179), // glibc
    RGBColor(217, 95, 2),    // jemalloc
    RGBColor(27, 158, 119),  // mimalloc
    RGBColor(231, 41, 138),  // tcmalloc
];

const WIDTH: u32 = 1100;
const FONT: &str = "sans-serif";
/// Width of one character of the label font (13, written as 10.5 px), a little above the
/// average of common sans-serif fonts, so that labels fit.
const CHAR_PX: f64 = 6.6;

/// Writes the wall-time and peak-RSS charts into `dir`; their paths.
pub fn write_all(dir: &Path, report: &Report) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (m, file) in [(Metric::Wall, "time.svg"), (Metric::Rss, "rss.svg")] {
        let path = dir.join(file);
        match draw(&path, report, m) {
            Ok(()) => out.push(path),
            Err(e) => eprintln!("compare: cannot draw {}: {e}", path.display()),
        }
    }
    out
}

/// One row of the chart: a label and, per other allocator, its ratio (or none).
struct Line {
    label: String,
    bars: Vec<Option<Spread>>,
    /// Whether a separator goes above this row (a new group starts).
    rule: bool,
}

fn lines(report: &Report, m: Metric, others: &[&'static str]) -> Vec<Line> {
    let mut out = Vec::new();
    let mut last = None;
    for r in &report.rows {
        out.push(Line {
            label: format!("{} ({})", r.label, r.lang.group()),
            bars: others
                .iter()
                .map(|a| {
                    r.cells
                        .iter()
                        .find(|c| c.allocator == *a)
                        .and_then(|c| c.ratio)
                        .map(|x| x.get(m))
                })
                .collect(),
            rule: last.is_some_and(|l| l != r.lang),
        });
        last = Some(r.lang);
    }
    for (i, g) in report.groups().into_iter().enumerate() {
        out.push(Line {
            label: format!("geometric mean, {g}"),
            bars: others
                .iter()
                .map(|a| report.geomean(g, a).map(|x| x.ratio.get(m)))
                .collect(),
            rule: i == 0,
        });
    }
    out
}

/// The chart's title (one sentence of what it shows) and the line under it (how to read it).
fn title(report: &Report, m: Metric) -> (String, String) {
    let what = match m {
        Metric::Wall => "wall time",
        Metric::Rss => "peak RSS",
        Metric::Cpu => "CPU time",
    };
    (
        format!(
            "smallarena's {what} divided by each other allocator's, per program: \
             left of the 1.0 line, smallarena is better."
        ),
        format!(
            "Bar: median over {} round(s) of the ratio within a round; whiskers: min-max over the \
             rounds; log scale. {}, load average at start {}.",
            report.rounds, report.date, report.load.text
        ),
    )
}

/// Ticks on the log axis: the "nice" ratios inside the range.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    [
        0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0, 20.0,
    ]
    .into_iter()
    .filter(|t| *t >= lo && *t <= hi)
    .collect()
}

fn draw(path: &Path, report: &Report, m: Metric) -> Result<(), Box<dyn std::error::Error>> {
    let others: Vec<&'static str> = report.allocators().into_iter().skip(1).collect();
    let rows = lines(report, m, &others);
    if rows.is_empty() || others.is_empty() {
        return Err("nothing to draw".into());
    }
    let k = others.len();
    let row_px = 14 * k as u32 + 14;
    let (title, subtitle) = title(report, m);
    // (text, font size) per line; sizes as plotters' SVG backend writes them (x 1/1.24).
    let mut title_lines: Vec<(String, u32)> = wrap(&title, (WIDTH as f64 / 9.0) as usize)
        .lines()
        .map(|l| (l.to_string(), 19))
        .collect();
    title_lines.extend(
        wrap(&subtitle, (WIDTH as f64 / 7.0) as usize)
            .lines()
            .map(|l| (l.to_string(), 14)),
    );
    let head_px = 20 * title_lines.len() as u32 + 40;
    let height = head_px + row_px * rows.len() as u32 + 70;
    let label_px = rows
        .iter()
        .map(|l| l.label.chars().count())
        .max()
        .unwrap_or(10) as f64
        * CHAR_PX
        + 16.0;

    // The axis covers every whisker and 1.0, with room on both sides for the values (log scale:
    // the room is a factor).
    let (mut lo, mut hi) = (1.0f64, 1.0f64);
    for l in &rows {
        for s in l.bars.iter().flatten() {
            lo = lo.min(s.min);
            hi = hi.max(s.max);
        }
    }
    let (lo, hi) = (lo / 1.45, hi * 1.45);
    let n = rows.len() as f64;

    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(head_px);
    for (i, (t, size)) in title_lines.iter().enumerate() {
        head.draw(&Text::new(
            t.clone(),
            (12, 10 + 20 * i as i32),
            (FONT, *size).into_font().color(&BLACK),
        ))?;
    }
    // The legend, on a line of its own under the title.
    let ly = 14 + 20 * title_lines.len() as i32;
    let mut lx = label_px as i32;
    head.draw(&Text::new(
        "smallarena /",
        (lx - 90, ly),
        (FONT, 13).into_font().color(&BLACK),
    ))?;
    for (i, a) in others.iter().enumerate() {
        head.draw(&Rectangle::new(
            [(lx, ly), (lx + 14, ly + 12)],
            COLORS[i % COLORS.len()].filled(),
        ))?;
        head.draw(&Text::new(
            a.to_string(),
            (lx + 19, ly),
            (FONT, 13).into_font().color(&BLACK),
        ))?;
        lx += 40 + (a.len() as f64 * CHAR_PX) as i32;
    }

    // The y axis counts hundredths of a row (integers, whose labels plotters can format),
    // the first row at the top.
    let cy = |v: f64| (v * 100.0).round() as i32;
    let centers: Vec<i32> = (0..rows.len()).map(|i| cy(n - i as f64 - 0.5)).collect();
    let mut chart = ChartBuilder::on(&body)
        .margin_left(8)
        .margin_right(24)
        .margin_top(6)
        .x_label_area_size(46)
        .y_label_area_size(label_px as u32)
        .build_cartesian_2d(
            (lo..hi).log_scale().with_key_points(ticks(lo, hi)),
            (0..cy(n)).with_key_points(centers),
        )?;
    let label_of = |y: &i32| {
        let i = (n - f64::from(*y) / 100.0 - 0.5).round();
        if i >= 0.0 && (i as usize) < rows.len() {
            rows[i as usize].label.clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len())
        .x_labels(20)
        .y_label_formatter(&label_of)
        .x_label_formatter(&|x| format!("{x}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .x_desc("smallarena / other (log scale): below 1 = smallarena better")
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()?;

    // Group separators.
    for (i, l) in rows.iter().enumerate() {
        if l.rule {
            let y = n - i as f64;
            chart.draw_series(LineSeries::new(
                [(lo, cy(y)), (hi, cy(y))],
                RGBColor(150, 150, 150).stroke_width(1),
            ))?;
        }
    }
    let band = 0.8 / k as f64;
    for (j, a) in others.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        let mut values = Vec::new();
        for (i, l) in rows.iter().enumerate() {
            let Some(s) = l.bars[j] else { continue };
            let top = n - i as f64 - 0.1 - band * j as f64;
            let (y0, y1) = (top - band * 0.85, top);
            let yc = (y0 + y1) / 2.0;
            bars.push(Rectangle::new(
                [(1.0, cy(y0)), (s.median, cy(y1))],
                color.filled(),
            ));
            if s.max > s.min {
                whiskers.push(ErrorBar::new_horizontal(
                    cy(yc),
                    s.min,
                    s.median,
                    s.max,
                    BLACK.stroke_width(1),
                    6,
                ));
            }
            let (x, pos) = if s.median < 1.0 {
                (s.min / 1.03, Pos::new(HPos::Right, VPos::Center))
            } else {
                (s.max * 1.03, Pos::new(HPos::Left, VPos::Center))
            };
            values.push(Text::new(
                format!("{:.2}", s.median),
                (x, cy(yc)),
                (FONT, 11).into_font().color(&BLACK).pos(pos),
            ));
        }
        chart
            .draw_series(bars)?
            .label(a.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart.draw_series(whiskers)?;
        chart.draw_series(values)?;
    }
    // The 1.0 line, on top of the bars.
    chart.draw_series(DashedLineSeries::new(
        [(1.0, 0), (1.0, cy(n))],
        6,
        4,
        BLACK.stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}
