//! `--plot FILE`: the run's timeline as a PNG or SVG (by the file's extension), one
//! panel per figure (HTTP requests/s, HTTP failures, HTTP p99, websocket messages/s) over
//! the same seconds, with every fault drawn as a labelled vertical line so a dip can be
//! read against its cause, and every promotion (another server taking writes) as one of
//! its own colour.
//!
//! Text is laid out here for either format (plotters measures it with ab_glyph), so both
//! need a font: DejaVu Sans (Debian's `fonts-dejavu-core`), loaded once.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{FailoverReport, TimelineSecond};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 1100;
const FAULT_COLOR: RGBColor = RGBColor(200, 30, 30);
const PROMOTION_COLOR: RGBColor = RGBColor(20, 140, 60);
const SERIES_COLOR: RGBColor = RGBColor(30, 90, 200);
const NON_2XX_COLOR: RGBColor = RGBColor(230, 140, 0);
/// Faults closer together than this share a label (kill replica-1 and node-1 at once).
const SAME_MOMENT_S: f64 = 0.5;

struct PanelSeries {
    label: &'static str,
    color: RGBColor,
    value_of: fn(&TimelineSecond) -> f64,
}

struct Panel {
    caption: &'static str,
    unit: &'static str,
    /// Whole numbers on the y axis, and at least 0 to 5 (so a flat zero reads as zero).
    counts: bool,
    series: Vec<PanelSeries>,
}

/// Faults of one moment, or a promotion: where the line goes, what it says, its colour.
struct FaultMark {
    at_s: f64,
    label: String,
    color: RGBColor,
}

/// Where Debian's `fonts-dejavu-core` puts the one font the plots use.
const DEJAVU_SANS: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Writes the plot as PNG if `path` ends in `.png`, else as SVG.
pub fn write_timeline_plot(report: &FailoverReport, path: &Path) -> anyhow::Result<()> {
    let is_png = path
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("png"));
    register_font()?;
    if is_png {
        let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
        draw_timeline(root, report)
    } else {
        let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
        draw_timeline(root, report)
    }
    .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(DEJAVU_SANS)
                .map_err(|error| format!("reading {DEJAVU_SANS} (install fonts-dejavu-core): {error}"))?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{DEJAVU_SANS} is not a font plotters can read"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

fn draw_timeline<Backend>(root: DrawingArea<Backend, Shift>, report: &FailoverReport) -> anyhow::Result<()>
where
    Backend: DrawingBackend,
    Backend::ErrorType: 'static,
{
    root.fill(&WHITE).context("drawing the plot background")?;
    let title = format!(
        "parley-sim failover: {} s, {} http connections, {} chat pairs",
        report.experiment.duration_s,
        report.experiment.http_connections + report.experiment.http_post_connections,
        report.experiment.pairs
    );
    let root = root
        .titled(&title, ("sans-serif", 22))
        .context("drawing the plot title")?;
    let marks = fault_marks(report);
    // The seconds after the load hold only the tail of in-flight requests and the wait
    // for stragglers; drawn, they would look like a collapse.
    let load_seconds = report.experiment.duration_s.ceil() as usize;
    let timeline = &report.timeline[..report.timeline.len().min(load_seconds)];
    let panels = panels();
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(&panels) {
        draw_panel(area, panel, timeline, &marks)?;
    }
    root.present().context("writing the plot")
}

fn panels() -> Vec<Panel> {
    vec![
        Panel {
            caption: "http requests through nginx",
            counts: true,
            unit: "requests/s",
            series: vec![PanelSeries {
                label: "requests/s",
                color: SERIES_COLOR,
                value_of: |second| second.http_rps as f64,
            }],
        },
        Panel {
            caption: "http failures",
            counts: true,
            unit: "per second",
            series: vec![
                PanelSeries {
                    label: "connection errors",
                    color: FAULT_COLOR,
                    value_of: |second| second.http_errors as f64,
                },
                PanelSeries {
                    label: "non-2xx",
                    color: NON_2XX_COLOR,
                    value_of: |second| second.http_non_2xx as f64,
                },
            ],
        },
        Panel {
            caption: "http latency p99",
            counts: false,
            unit: "ms",
            series: vec![PanelSeries {
                label: "p99",
                color: SERIES_COLOR,
                value_of: |second| second.http_p99_ms,
            }],
        },
        Panel {
            caption: "websocket messages delivered",
            counts: true,
            unit: "messages/s",
            series: vec![PanelSeries {
                label: "delivered/s",
                color: SERIES_COLOR,
                value_of: |second| second.ws_delivered as f64,
            }],
        },
    ]
}

fn fault_marks(report: &FailoverReport) -> Vec<FaultMark> {
    let mut marks: Vec<FaultMark> = Vec::new();
    for fault in &report.faults {
        let what = format!("{} {}", fault.action, fault.name);
        match marks.last_mut() {
            Some(mark) if (fault.executed_at_s - mark.at_s).abs() < SAME_MOMENT_S => {
                mark.label = format!("{}, {what}", mark.label);
            }
            _ => marks.push(FaultMark {
                at_s: fault.executed_at_s,
                label: what,
                color: FAULT_COLOR,
            }),
        }
    }
    for change in &report.writes.master_changes {
        marks.push(FaultMark {
            at_s: change.at_s,
            label: format!("{} promoted", change.master),
            color: PROMOTION_COLOR,
        });
    }
    marks.sort_by(|left, right| left.at_s.total_cmp(&right.at_s));
    marks
}

fn draw_panel<Backend>(
    area: &DrawingArea<Backend, Shift>,
    panel: &Panel,
    timeline: &[TimelineSecond],
    marks: &[FaultMark],
) -> anyhow::Result<()>
where
    Backend: DrawingBackend,
    Backend::ErrorType: 'static,
{
    let x_end = (timeline.len().max(1)) as f64;
    let highest = panel
        .series
        .iter()
        .flat_map(|series| timeline.iter().map(series.value_of))
        .fold(0.0_f64, f64::max);
    // Headroom for the fault labels; a flat zero line still gets an axis.
    let y_end = (highest * 1.25).max(if panel.counts { 5.0 } else { 1.0 });
    let decimals = if panel.counts { 0 } else { 1 };
    // Whole-number labels closer than 1 apart would repeat (0, 0, 1, 1, …).
    let y_labels = if panel.counts {
        (y_end as usize).clamp(2, 10) + 1
    } else {
        10
    };
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .caption(panel.caption, ("sans-serif", 16))
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_end, 0.0..y_end)
        .with_context(|| format!("laying out the {} panel", panel.caption))?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start of the load")
        .y_desc(panel.unit)
        .y_labels(y_labels)
        .x_label_formatter(&|seconds| format!("{seconds:.0}"))
        .y_label_formatter(&|value| format!("{value:.decimals$}"))
        .draw()
        .context("drawing the axes")?;
    for series in &panel.series {
        // Each second's figure sits in the middle of its second.
        let points = timeline
            .iter()
            .map(|second| (second.second as f64 + 0.5, (series.value_of)(second)));
        let color = series.color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .context("drawing a series")?
            .label(series.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    for (index, mark) in marks.iter().enumerate() {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(mark.at_s, 0.0), (mark.at_s, y_end)],
                mark.color.stroke_width(1),
            )))
            .context("drawing a fault line")?;
        // Neighbouring labels alternate in height so they do not overlap.
        let label_height = y_end * if index % 2 == 0 { 0.95 } else { 0.85 };
        chart
            .draw_series(std::iter::once(Text::new(
                mark.label.clone(),
                (mark.at_s + x_end * 0.005, label_height),
                ("sans-serif", 13).into_font().color(&mark.color),
            )))
            .context("drawing a fault label")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::report::{ExperimentSettings, HttpSummary, WebsocketSummary, WritesSummary};
    use crate::failover::{ChatPlacement, FaultRecord};

    fn report_with_faults() -> FailoverReport {
        let timeline = (0..10)
            .map(|second| TimelineSecond {
                second,
                http_rps: if second == 5 { 200 } else { 1500 },
                http_errors: u64::from(second == 5),
                http_non_2xx: 0,
                http_p99_ms: 4.0,
                ws_delivered: 40,
            })
            .collect();
        let fault = |name: &str, at_s: f64| FaultRecord {
            at_s,
            action: "kill".into(),
            name: name.into(),
            executed_at_s: at_s,
            completed_at_s: at_s,
            error: None,
        };
        FailoverReport {
            experiment: ExperimentSettings {
                duration_s: 10.0,
                http_connections: 4,
                http_post_connections: 0,
                pairs: 2,
                message_rate_per_pair: 2.0,
                nodes: vec!["node-1".into(), "node-2".into()],
                cpu_cores: 2,
                run_tag: "test".into(),
                placement: ChatPlacement::default(),
            },
            http: HttpSummary {
                requests: 0,
                rps: 0.0,
                avg_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
                non_2xx: 0,
                errors: 1,
                responses_by_node: Default::default(),
                responses_by_request: Default::default(),
                non_2xx_by_method: Default::default(),
                problems: Vec::new(),
            },
            ws: WebsocketSummary {
                sent: 0,
                acked: 0,
                refused: 0,
                unacked: 0,
                delivered: 0,
                lost: 0,
                duplicates: 0,
                redeliveries_absorbed: 0,
                sequence_conflicts: 0,
                reconnects: 0,
                connect_failures: 0,
                resumes: 0,
                resume_p50_ms: 0.0,
                resume_p99_ms: 0.0,
                resume_max_ms: 0.0,
                delivery_p50_ms: 0.0,
                delivery_p99_ms: 0.0,
                delivery_max_ms: 0.0,
                settled: true,
                lost_messages: Vec::new(),
                duplicate_deliveries: Vec::new(),
            },
            writes: WritesSummary {
                unavailable_s: Some(1.5),
                recovered: true,
                master_changes: vec![crate::failover::MasterChange {
                    at_s: 6.5,
                    master: "replica-1".into(),
                }],
            },
            faults: vec![fault("replica-1", 5.0), fault("node-1", 5.02), fault("node-2", 8.0)],
            timeline,
            failures: 1,
        }
    }

    #[test]
    fn the_svg_has_four_panels_and_labels_each_fault_moment_once() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("timeline.svg");
        write_timeline_plot(&report_with_faults(), &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        for caption in [
            "requests/s",
            "http failures",
            "http latency p99",
            "websocket messages delivered",
        ] {
            assert!(svg.contains(caption), "missing {caption}");
        }
        assert_eq!(
            svg.matches("kill replica-1, kill node-1").count(),
            4,
            "one joint label per panel"
        );
        assert_eq!(svg.matches("kill node-2").count(), 4);
        assert_eq!(
            svg.matches("replica-1 promoted").count(),
            4,
            "the promotion in every panel"
        );
        assert!(svg.matches("<polyline").count() >= 5, "a line per series");
    }

    #[test]
    fn the_png_draws_a_red_line_through_every_panel_at_each_fault_moment() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("timeline.png");
        write_timeline_plot(&report_with_faults(), &path).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
        let fault_color = [FAULT_COLOR.0, FAULT_COLOR.1, FAULT_COLOR.2];
        // A fault line crosses all four panels; the labels and the error series are red
        // too, but short.
        let line_columns: Vec<u32> = (0..WIDTH)
            .filter(|&x| (0..HEIGHT).filter(|&y| image.get_pixel(x, y).0 == fault_color).count() > 400)
            .collect();
        let separate_lines = line_columns.windows(2).filter(|pair| pair[1] - pair[0] > 5).count() + 1;
        assert_eq!(
            separate_lines, 2,
            "two fault moments (5 s, 8 s) drawn as lines; red columns at {line_columns:?}"
        );
        let at_five = line_columns[0] as f64;
        let at_eight = *line_columns.last().unwrap() as f64;
        // Where these two lines put second 0 and second 10: the axis must start in the
        // left margin (past the y labels) and end inside the image.
        let pixels_per_second = (at_eight - at_five) / 3.0;
        let second_zero = at_five - 5.0 * pixels_per_second;
        let second_ten = second_zero + 10.0 * pixels_per_second;
        assert!(
            (40.0..150.0).contains(&second_zero) && second_ten <= WIDTH as f64,
            "the lines are not at 5 s and 8 s of a 0-10 s axis: {line_columns:?}"
        );
        // The promotion at 6.5 s: a line of its own colour through every panel, half way
        // between the two fault lines.
        let promotion_color = [PROMOTION_COLOR.0, PROMOTION_COLOR.1, PROMOTION_COLOR.2];
        let promotion_columns: Vec<u32> = (0..WIDTH)
            .filter(|&x| {
                (0..HEIGHT)
                    .filter(|&y| image.get_pixel(x, y).0 == promotion_color)
                    .count()
                    > 400
            })
            .collect();
        let expected = second_zero + 6.5 * pixels_per_second;
        assert!(
            !promotion_columns.is_empty()
                && promotion_columns
                    .iter()
                    .all(|&x| (f64::from(x) - expected).abs() < pixels_per_second * 0.2),
            "the promotion line is not at 6.5 s ({expected:.0} px): {promotion_columns:?}"
        );
    }
}
