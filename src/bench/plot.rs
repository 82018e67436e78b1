//! `--plot FILE`: completed jobs per second over the e2e run, as a PNG.
//!
//! Text needs a TrueType font, and plotters' `ab_glyph` backend takes one as bytes rather than
//! asking the system (font-kit would pull in fontconfig). The font is read from
//! `FLOTILLA_PLOT_FONT` or the usual system paths; without one the chart is drawn without text.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use super::scenarios::Samples;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a system font as plotters' "sans-serif"; false when none could be loaded.
fn load_font() -> bool {
    let from_env = std::env::var("FLOTILLA_PLOT_FONT").ok();
    let candidates = from_env
        .iter()
        .map(String::as_str)
        .chain(FONT_PATHS.iter().copied());
    for path in candidates {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps fonts for the life of the process; this runs once per bench.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Jobs finished per second between consecutive samples, at each interval's end.
pub fn rates(samples: &Samples) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0)))
        .collect()
}

pub fn draw(path: &Path, samples: &Samples, baseline: Option<f64>) -> anyhow::Result<()> {
    let text = load_font();
    if !text {
        eprintln!(
            "bench: no TrueType font found (set FLOTILLA_PLOT_FONT); drawing the plot without text"
        );
    }
    let points = rates(samples);
    let x_max = samples.last().map_or(1.0, |s| s.0).max(1.0);
    let y_max = points
        .iter()
        .map(|p| p.1)
        .chain(baseline)
        .fold(1.0_f64, f64::max)
        // Head room above the highest line for the legend.
        * 1.45;
    let plot_err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());

    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(
                format!(
                    "flotilla bench e2e: /bin/true jobs completed per second ({:.0} jobs)",
                    samples.last().map_or(0.0, |s| s.1)
                ),
                ("sans-serif", 22),
            )
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| plot_err(&e))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("seconds since the compute environment was enabled")
            .y_desc("jobs completed per second")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 15));
    } else {
        mesh.disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0);
    }
    mesh.draw().map_err(|e| plot_err(&e))?;

    let series = chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(|e| plot_err(&e))?;
    if text {
        series
            .label("Flotilla (sampled every 500 ms from /metrics)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    }
    if let Some(b) = baseline {
        let line = chart
            .draw_series(LineSeries::new(
                vec![(0.0, b), (x_max, b)],
                RED.stroke_width(2),
            ))
            .map_err(|e| plot_err(&e))?;
        if text {
            line.label(format!(
                "the machine: /bin/true spawned directly ({b:.0}/s)"
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        }
        let target = chart
            .draw_series(LineSeries::new(
                vec![(0.0, b * 0.66), (x_max, b * 0.66)],
                RED.mix(0.5).stroke_width(2),
            ))
            .map_err(|e| plot_err(&e))?;
        if text {
            target.label("target: 66% of the machine").legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], RED.mix(0.5).stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| plot_err(&e))?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_interval() {
        let s = vec![(0.0, 0.0), (0.5, 100.0), (1.0, 100.0), (1.5, 400.0)];
        assert_eq!(rates(&s), vec![(0.5, 200.0), (1.0, 0.0), (1.5, 600.0)]);
    }
}
