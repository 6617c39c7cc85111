//! `--plot-dir DIR`: one PNG per benchmark that ran, `bench-<name>.png`: Parley's bars
//! next to the baseline's (http_read, messages), the delivery latency by percentile, the
//! node's memory as the idle sockets opened, and the users resumed over time after the
//! kill with the database's load beside it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::BenchReport;
use crate::failover::register_font;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 600;
const PARLEY_COLOR: RGBColor = RGBColor(30, 90, 200);
const BASELINE_COLOR: RGBColor = RGBColor(150, 150, 150);
const TARGET_COLOR: RGBColor = RGBColor(200, 30, 30);

type Area<'file> = DrawingArea<BitMapBackend<'file>, Shift>;

/// Writes the plots of the benchmarks in `report` into `directory` (created if needed);
/// returns their paths.
pub fn write_plots(report: &BenchReport, directory: &Path) -> anyhow::Result<Vec<PathBuf>> {
    register_font()?;
    std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
    let mut written = Vec::new();
    let mut plot = |name: &str, draw: &dyn Fn(&Area<'_>) -> anyhow::Result<()>| -> anyhow::Result<()> {
        let path = directory.join(format!("bench-{name}.png"));
        {
            let root = BitMapBackend::new(&path, (WIDTH, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).context("drawing the background")?;
            draw(&root)?;
            root.present().context("writing the plot")?;
        }
        written.push(path);
        Ok(())
    };
    if let Some(http_read) = &report.http_read {
        let bars: Vec<(String, f64, f64)> = http_read
            .by_concurrency
            .iter()
            .map(|(concurrency, comparison)| (concurrency.clone(), comparison.parley, comparison.baseline))
            .collect();
        plot("http_read", &|root| {
            draw_bars(
                root,
                "http_read: get-by-email through nginx vs the bare query",
                "requests/s",
                &bars,
            )
        })?;
    }
    if let Some(messages) = &report.messages {
        let bars = vec![("20 senders".to_owned(), messages.parley_per_s, messages.baseline_per_s)];
        plot("messages", &|root| {
            draw_bars(root, "messages: delivered vs single-row INSERTs", "messages/s", &bars)
        })?;
    }
    if let Some(latency) = &report.latency {
        plot("latency", &|root| {
            let caption = format!("latency at {:.0} msg/s: send → recipient", latency.offered_per_s);
            let points: Vec<(f64, f64)> = latency.percentiles_ms.clone();
            let target = latency.target_p99_ms;
            draw_line(
                root,
                &caption,
                ("percentile", "ms"),
                &points,
                Some(("target p99", TargetLine::Level(target))),
            )
        })?;
    }
    if let Some(memory) = &report.memory {
        plot("memory", &|root| {
            let mebibytes = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
            let points: Vec<(f64, f64)> = memory
                .rss_by_connections
                .iter()
                .map(|sample| (sample.connections as f64, mebibytes(sample.rss_bytes)))
                .collect();
            let target_end = mebibytes(memory.rss_before_bytes)
                + memory.connections as f64 * memory.target_bytes_per_conn / (1024.0 * 1024.0);
            let target_label = format!("target: {:.0} KiB each", memory.target_bytes_per_conn / 1024.0);
            let caption = format!(
                "memory: node-1 RSS with idle websockets ({:.0} bytes each)",
                memory.bytes_per_conn
            );
            draw_line(
                root,
                &caption,
                ("idle websockets", "RSS MiB"),
                &points,
                Some((
                    target_label.as_str(),
                    TargetLine::Slope {
                        from: (0.0, mebibytes(memory.rss_before_bytes)),
                        to: (memory.connections as f64, target_end),
                    },
                )),
            )
        })?;
    }
    if let Some(storm) = &report.storm {
        plot("storm", &|root| {
            let (left, right) = root.split_horizontally(WIDTH / 2);
            let resumed: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
                .chain(
                    storm
                        .resumed_after_s
                        .iter()
                        .enumerate()
                        .map(|(index, seconds)| (*seconds, (index + 1) as f64)),
                )
                .collect();
            let caption = format!("storm: {} users resumed after the kill", storm.users);
            draw_line(
                &left,
                &caption,
                ("seconds after the kill", "users resumed"),
                &resumed,
                Some(("target", TargetLine::Deadline(storm.target_all_resumed_s))),
            )?;
            let load: Vec<(f64, f64)> = storm
                .db_queries_per_s
                .iter()
                .map(|sample| (sample.at_s, sample.per_second))
                .collect();
            draw_line(
                &right,
                "database statements/s (master + replicas)",
                ("seconds after the kill", "statements/s"),
                &load,
                None,
            )
        })?;
    }
    Ok(written)
}

/// Pairs of bars per group: Parley's and the baseline's.
fn draw_bars(root: &Area<'_>, caption: &str, unit: &str, groups: &[(String, f64, f64)]) -> anyhow::Result<()> {
    let highest = groups
        .iter()
        .map(|(_, parley, baseline)| parley.max(*baseline))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(root)
        .margin(15)
        .caption(caption, ("sans-serif", 20))
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..highest * 1.15)
        .context("laying out a bar chart")?;
    let labels: Vec<String> = groups.iter().map(|(label, _, _)| label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let index = x.floor() as usize;
            if (x - index as f64 - 0.5).abs() < 0.01 {
                labels.get(index).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .draw()
        .context("drawing the axes")?;
    for (series, color, offset) in [("parley", PARLEY_COLOR, 0.15), ("baseline", BASELINE_COLOR, 0.5)] {
        let bars = groups.iter().enumerate().map(|(index, (_, parley, baseline))| {
            let value = if series == "parley" { *parley } else { *baseline };
            let left = index as f64 + offset;
            Rectangle::new([(left, 0.0), (left + 0.35, value)], color.filled())
        });
        chart
            .draw_series(bars)
            .context("drawing bars")?
            .label(series)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .context("drawing the legend")?;
    Ok(())
}

/// How a target is drawn.
enum TargetLine {
    /// A bound on y (a p99).
    Level(f64),
    /// A bound on x (resumed by then).
    Deadline(f64),
    /// A budget growing with x (memory per connection).
    Slope { from: (f64, f64), to: (f64, f64) },
}

/// One line, and optionally its target.
fn draw_line(
    root: &Area<'_>,
    caption: &str,
    (x_unit, y_unit): (&str, &str),
    points: &[(f64, f64)],
    target: Option<(&str, TargetLine)>,
) -> anyhow::Result<()> {
    let target_corner = match &target {
        Some((_, TargetLine::Level(y))) => (0.0, *y),
        Some((_, TargetLine::Deadline(x))) => (*x, 0.0),
        Some((_, TargetLine::Slope { to, .. })) => *to,
        None => (0.0, 0.0),
    };
    let (x_end, y_end) = points
        .iter()
        .chain(std::iter::once(&target_corner))
        .fold((1e-9_f64, 1e-9_f64), |(x_end, y_end), &(x, y)| {
            (x_end.max(x), y_end.max(y))
        });
    let (x_end, y_end) = (x_end * 1.05, y_end * 1.1);
    let mut chart = ChartBuilder::on(root)
        .margin(15)
        .caption(caption, ("sans-serif", 18))
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..y_end)
        .context("laying out a line chart")?;
    chart
        .configure_mesh()
        .x_desc(x_unit)
        .y_desc(y_unit)
        .draw()
        .context("drawing the axes")?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), PARLEY_COLOR.stroke_width(2)))
        .context("drawing a line")?
        .label("parley")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PARLEY_COLOR.stroke_width(2)));
    if let Some((label, target)) = target {
        let line = match target {
            TargetLine::Level(y) => vec![(0.0, y), (x_end, y)],
            TargetLine::Deadline(x) => vec![(x, 0.0), (x, y_end)],
            TargetLine::Slope { from, to } => vec![from, to],
        };
        chart
            .draw_series(std::iter::once(PathElement::new(line, TARGET_COLOR.stroke_width(1))))
            .context("drawing the target")?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TARGET_COLOR.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .context("drawing the legend")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{ByConcurrency, Comparison, HttpReadFigures, LatencyFigures, MessageFigures};

    #[test]
    fn draws_one_png_per_benchmark_in_the_report() {
        let comparison = Comparison::new(900.0, 1000.0, 0.7);
        let mut by_concurrency = ByConcurrency::new();
        by_concurrency.insert("c10".into(), comparison.clone());
        by_concurrency.insert("c64".into(), Comparison::new(1500.0, 1400.0, 0.7));
        let report = BenchReport {
            http_read: Some(HttpReadFigures {
                parley_rps: 900.0,
                baseline_rps: 1000.0,
                ratio: 0.9,
                by_concurrency,
            }),
            messages: Some(MessageFigures {
                parley_per_s: 900.0,
                baseline_per_s: 1000.0,
                ratio: 0.9,
                comparison,
                lost: 0,
                duplicates: 0,
            }),
            latency: Some(LatencyFigures {
                p50_ms: 2.0,
                p99_ms: 8.0,
                max_ms: 12.0,
                offered_per_s: 450.0,
                baseline_commit_p50_ms: 1.0,
                baseline_commit_p99_ms: 3.0,
                target_p99_ms: 10.0,
                hops: None,
                fixed_rate: None,
                percentiles_ms: (1..=100).map(|p| (f64::from(p), f64::from(p) / 10.0)).collect(),
            }),
            ..BenchReport::default()
        };
        let directory = tempfile::tempdir().unwrap();
        let written = write_plots(&report, directory.path()).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["bench-http_read.png", "bench-messages.png", "bench-latency.png"]
        );
        for path in written {
            assert!(std::fs::metadata(&path).unwrap().len() > 1000, "{}", path.display());
        }
    }
}
