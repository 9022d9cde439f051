//! Pareto plots in the papers' style: singles as dots, ensembles as squares, cascades as stars,
//! the overall front as a line, each point labelled with its members (`b0+b2+b4`).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

#[derive(Clone)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: String,
}

const SINGLE: RGBColor = RGBColor(31, 119, 180);
const ENSEMBLE: RGBColor = RGBColor(44, 160, 44);
const CASCADE: RGBColor = RGBColor(214, 39, 40);

fn star(size: i32) -> Vec<(i32, i32)> {
    (0..10)
        .map(|i| {
            let r = if i % 2 == 0 {
                size as f64
            } else {
                size as f64 * 0.45
            };
            let a = std::f64::consts::PI * (i as f64 / 5.0 - 0.5);
            ((r * a.cos()).round() as i32, (r * a.sin()).round() as i32)
        })
        .collect()
}

/// At most `max` points (evenly spaced along the front), each label only where it changes
/// and the point is not crowded by the previously labelled one (`span`: data ranges).
fn tidy(v: &[Point], max: usize, span: (f64, f64)) -> Vec<Point> {
    let mut out: Vec<Point> = if v.len() > max {
        (0..max).map(|i| v[i * v.len() / max].clone()).collect()
    } else {
        v.to_vec()
    };
    let mut last = String::new();
    let mut at = (f64::MIN, f64::MIN);
    for p in &mut out {
        let far = (p.x - at.0).abs() > 0.06 * span.0 || (p.y - at.1).abs() > 0.04 * span.1;
        if p.label == last || !far {
            p.label.clear();
        } else {
            last = p.label.clone();
            at = (p.x, p.y);
        }
    }
    out
}

/// Writes the plot to `path` (SVG), atomically.
pub fn pareto(
    path: &Path,
    title: &str,
    singles: &[Point],
    ensembles: &[Point],
    cascades: &[Point],
    front: &[Point],
    chosen: &[Point],
) -> Result<()> {
    let all = singles.iter().chain(ensembles).chain(cascades);
    let (x0, x1, y0, y1) = bounds(all.map(|p| (p.x, p.y)));
    let span = (x1 - x0, y1 - y0);
    let (ensembles, cascades) = (
        &tidy(ensembles, 40, span)[..],
        &tidy(cascades, 60, span)[..],
    );
    let (xr, yr) = with_margins(x0, x1, y0, y1);
    write_svg(path, |root| {
        draw(
            root, title, xr, yr, singles, ensembles, cascades, front, chosen,
        )
    })
}

/// The data's bounds (x0, x1, y0, y1), or a default frame when there are no points.
fn bounds(points: impl Iterator<Item = (f64, f64)>) -> (f64, f64, f64, f64) {
    let (x0, x1, y0, y1) = points.fold((f64::MAX, f64::MIN, f64::MAX, f64::MIN), |b, (x, y)| {
        (b.0.min(x), b.1.max(x), b.2.min(y), b.3.max(y))
    });
    if x0 > x1 {
        (0.0, 1.0, 0.0, 100.0)
    } else {
        (x0, x1, y0, y1)
    }
}

/// Axis ranges: the bounds plus 8 % on each side (x never below 0).
fn with_margins(
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (dx, dy) = ((x1 - x0).max(1e-6) * 0.08, (y1 - y0).max(0.1) * 0.08);
    ((x0 - dx).max(0.0)..x1 + dx, y0 - dy..y1 + dy)
}

type Root<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Renders `draw` on a 960x640 SVG and writes it to `path`, atomically.
fn write_svg(path: &Path, draw: impl FnOnce(&Root) -> Drawn) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        draw(&root).map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    }
    crate::util::write_atomic(path, svg.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A white chart with the title, top-1 on y and `x_desc` on x.
fn axes<'a, 'b>(
    root: &'a Root<'b>,
    title: &str,
    x_desc: &str,
    xr: std::ops::Range<f64>,
    yr: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(xr, yr)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("top-1 (%)")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    Ok(chart)
}

/// The legend, lower right.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Drawn {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .draw()?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn draw(
    root: &Root,
    title: &str,
    xr: std::ops::Range<f64>,
    yr: std::ops::Range<f64>,
    singles: &[Point],
    ensembles: &[Point],
    cascades: &[Point],
    front: &[Point],
    chosen: &[Point],
) -> Drawn {
    let mut chart = axes(root, title, "average GMACs per image", xr, yr)?;
    let label_style = ("sans-serif", 12).into_font().color(&BLACK.mix(0.8));
    chart
        .draw_series(LineSeries::new(
            front.iter().map(|p| (p.x, p.y)),
            BLACK.mix(0.35).stroke_width(1),
        ))?
        .label("Pareto front")
        .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], BLACK.mix(0.35)));
    chart
        .draw_series(singles.iter().map(|p| {
            EmptyElement::at((p.x, p.y))
                + Circle::new((0, 0), 5, SINGLE.filled())
                + Text::new(p.label.clone(), (7, -14), label_style.clone())
        }))?
        .label("single model")
        .legend(|(x, y)| Circle::new((x, y), 5, SINGLE.filled()));
    chart
        .draw_series(ensembles.iter().map(|p| {
            EmptyElement::at((p.x, p.y))
                + Rectangle::new([(-5, -5), (5, 5)], ENSEMBLE.filled())
                + Text::new(p.label.clone(), (7, 2), label_style.clone())
        }))?
        .label("ensemble")
        .legend(|(x, y)| Rectangle::new([(x - 5, y - 5), (x + 5, y + 5)], ENSEMBLE.filled()));
    chart
        .draw_series(cascades.iter().map(|p| {
            EmptyElement::at((p.x, p.y))
                + Polygon::new(star(8), CASCADE.filled())
                + Text::new(p.label.clone(), (8, 6), label_style.clone())
        }))?
        .label("cascade")
        .legend(|(x, y)| {
            Polygon::new(
                star(8)
                    .into_iter()
                    .map(|(a, b)| (x + a, y + b))
                    .collect::<Vec<_>>(),
                CASCADE.filled(),
            )
        });
    chart
        .draw_series(chosen.iter().map(|p| {
            EmptyElement::at((p.x, p.y)) + Circle::new((0, 0), 12, BLACK.stroke_width(2))
        }))?
        .label("chosen")
        .legend(|(x, y)| Circle::new((x, y), 6, BLACK.stroke_width(2)));
    legend(&mut chart)
}

/// One line of [`lines`]: its points and, per point, the range drawn as an error bar (e.g.
/// the lowest and highest seed; empty for none).
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
    pub ranges: Vec<(f64, f64)>,
}

/// Writes a line plot to `path` (SVG), atomically: one line with markers per series (x: GMACs
/// per image, y: top-1), each point labelled where its label is not empty, with its range as
/// a vertical bar. Kondratyuk et al.'s figures: single models as one line through the sizes,
/// ensembles of k as others.
pub fn lines(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    let points = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| (p.x, p.y)));
    // The bars' ends are drawn too: y spans them (at the same x as their points).
    let bars = series.iter().flat_map(|s| {
        s.points
            .iter()
            .zip(&s.ranges)
            .flat_map(|(p, r)| [(p.x, r.0), (p.x, r.1)])
    });
    let (x0, x1, y0, y1) = bounds(points.chain(bars));
    let (xr, yr) = with_margins(x0, x1, y0, y1);
    write_svg(path, |root| draw_lines(root, title, xr, yr, series))
}

fn draw_lines(
    root: &Root,
    title: &str,
    xr: std::ops::Range<f64>,
    yr: std::ops::Range<f64>,
    series: &[Series],
) -> Drawn {
    const COLORS: [RGBColor; 6] = [
        SINGLE,
        ENSEMBLE,
        CASCADE,
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
    ];
    let mut chart = axes(root, title, "GMACs per image", xr, yr)?;
    let label_style = ("sans-serif", 12).into_font().color(&BLACK.mix(0.8));
    for (
        i,
        Series {
            name,
            points: pts,
            ranges,
        },
    ) in series.iter().enumerate()
    {
        let c = COLORS[i % COLORS.len()];
        chart.draw_series(pts.iter().zip(ranges).map(|(p, &(lo, hi))| {
            PathElement::new(vec![(p.x, lo), (p.x, hi)], c.mix(0.6).stroke_width(1))
        }))?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.x, p.y)),
                c.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x - 8, y), (x + 8, y)], c.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|p| {
            EmptyElement::at((p.x, p.y))
                + Circle::new((0, 0), 4, c.filled())
                + Text::new(p.label.clone(), (7, -14), label_style.clone())
        }))?;
    }
    legend(&mut chart)
}
