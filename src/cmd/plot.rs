//! Pareto plots in the papers' style: singles as dots, ensembles as squares, cascades as stars,
//! the overall front as a line, each point labelled with its members (`b0+b2+b4`).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
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
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in all {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.y);
        y1 = y1.max(p.y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 100.0);
    }
    let (dx, dy) = ((x1 - x0).max(1e-6) * 0.08, (y1 - y0).max(0.1) * 0.08);
    let span = (x1 - x0, y1 - y0);
    let (ensembles, cascades) = (
        &tidy(ensembles, 40, span)[..],
        &tidy(cascades, 60, span)[..],
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        draw(
            &root,
            title,
            (x0 - dx).max(0.0)..x1 + dx,
            y0 - dy..y1 + dy,
            singles,
            ensembles,
            cascades,
            front,
            chosen,
        )
        .map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    }
    crate::util::write_atomic(path, svg.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn draw(
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    xr: std::ops::Range<f64>,
    yr: std::ops::Range<f64>,
    singles: &[Point],
    ensembles: &[Point],
    cascades: &[Point],
    front: &[Point],
    chosen: &[Point],
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(xr, yr)?;
    chart
        .configure_mesh()
        .x_desc("average GMACs per image")
        .y_desc("top-1 (%)")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .draw()?;
    Ok(())
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
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.x), b.max(p.x)));
    let lows = series.iter().flat_map(|s| s.ranges.iter().map(|r| r.0));
    let highs = series.iter().flat_map(|s| s.ranges.iter().map(|r| r.1));
    let (y0, y1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.y), b.max(p.y)));
    let (y0, y1) = (lows.fold(y0, f64::min), highs.fold(y1, f64::max));
    let (x0, x1, y0, y1) = if x0 > x1 {
        (0.0, 1.0, 0.0, 100.0)
    } else {
        (x0, x1, y0, y1)
    };
    let (dx, dy) = ((x1 - x0).max(1e-6) * 0.08, (y1 - y0).max(0.1) * 0.08);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        draw_lines(
            &root,
            title,
            (x0 - dx).max(0.0)..x1 + dx,
            y0 - dy..y1 + dy,
            series,
        )
        .map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    }
    crate::util::write_atomic(path, svg.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn draw_lines(
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    xr: std::ops::Range<f64>,
    yr: std::ops::Range<f64>,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    const COLORS: [RGBColor; 6] = [
        SINGLE,
        ENSEMBLE,
        CASCADE,
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
    ];
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(xr, yr)?;
    chart
        .configure_mesh()
        .x_desc("GMACs per image")
        .y_desc("top-1 (%)")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.5))
        .draw()?;
    Ok(())
}
