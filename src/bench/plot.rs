//! `--plot FILE`: completed jobs per second over the e2e run, as an SVG.
//!
//! SVG rather than a bitmap: the text is SVG text, so no font has to be found and loaded, and
//! plotters' SVG backend needs no image or font crates (they were a tenth of a cold build's
//! work outside the AWS SDK).

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use plotters::prelude::*;

use super::scenarios::Samples;

/// `--plot`'s file must be named `.svg`: the chart is SVG, and a `.png` holding SVG would
/// mislead every viewer that trusts the extension.
pub fn check_path(path: &Path) -> anyhow::Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => Ok(()),
        _ => bail!(
            "--plot {}: the chart is written as SVG; name the file .svg",
            path.display()
        ),
    }
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
    check_path(path)?;
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

    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .caption(
            format!(
                "flotilla bench e2e: /bin/true jobs completed per second ({:.0} jobs)",
                samples.last().map_or(0.0, |s| s.1)
            ),
            ("sans-serif", 22),
        )
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| plot_err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the compute environment was enabled")
        .y_desc("jobs completed per second")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| plot_err(&e))?;

    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(|e| plot_err(&e))?
        .label("Flotilla (sampled every 500 ms from /metrics)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if let Some(b) = baseline {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, b), (x_max, b)],
                RED.stroke_width(2),
            ))
            .map_err(|e| plot_err(&e))?
            .label(format!(
                "the machine: /bin/true spawned directly ({b:.0}/s)"
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, b * 0.66), (x_max, b * 0.66)],
                RED.mix(0.5).stroke_width(2),
            ))
            .map_err(|e| plot_err(&e))?
            .label("target: 66% of the machine")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], RED.mix(0.5).stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| plot_err(&e))?;
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

    #[test]
    fn the_chart_is_svg_with_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("e2e.png");
        let err = draw(&png, &vec![(0.0, 0.0), (1.0, 10.0)], None).unwrap_err();
        assert!(err.to_string().contains("name the file .svg"), "{err}");
        assert!(!png.exists());

        let svg = dir.path().join("e2e.svg");
        let samples = vec![(0.0, 0.0), (0.5, 100.0), (1.0, 300.0)];
        draw(&svg, &samples, Some(500.0)).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..80.min(text.len())]);
        for label in [
            "jobs completed per second (300 jobs)",
            "the machine: /bin/true spawned directly (500/s)",
            "target: 66% of the machine",
        ] {
            assert!(text.contains(label), "{label} missing from the chart");
        }
    }
}
