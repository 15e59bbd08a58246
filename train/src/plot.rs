//! Training curves as one PNG per run: a panel per loss, plus the learning rate and the gradient
//! norm. Skipped (non-finite) values are left out of the lines.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::checkpoint::RunDir;
use crate::metrics::{read_metrics, MetricsRecord};
use crate::{Error, Result};

/// DejaVu Sans (Bitstream Vera license, see assets/DejaVuSans.LICENSE): ab_glyph needs a font
/// file and CI machines may have none installed.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const PANEL: (u32, u32) = (560, 340);
const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Msg("embedded plot font is not a valid TTF".into()))
    }
}

struct Panel {
    title: String,
    /// Runs of finite points; a non-finite value (a skipped step) breaks the line.
    segments: Vec<Vec<(f64, f64)>>,
    scientific: bool,
}

impl Panel {
    fn points(&self) -> impl Iterator<Item = &(f64, f64)> {
        self.segments.iter().flatten()
    }
}

fn segments(
    records: &[MetricsRecord],
    value: impl Fn(&MetricsRecord) -> Option<f64>,
) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for r in records {
        match value(r) {
            None => {}
            Some(v) if v.is_finite() => out.last_mut().expect("non-empty").push((r.step as f64, v)),
            Some(_) => out.push(Vec::new()),
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn panels(records: &[MetricsRecord]) -> Vec<Panel> {
    let mut names: Vec<&String> = records.iter().flat_map(|r| r.losses.keys()).collect();
    names.sort();
    names.dedup();
    // The total first, then the parts in name order.
    names.sort_by_key(|n| !matches!(n.as_str(), "total" | "loss"));
    let mut out: Vec<Panel> = names
        .into_iter()
        .map(|name| Panel {
            title: format!("loss: {name}"),
            segments: segments(records, |r| r.losses.get(name).copied()),
            scientific: false,
        })
        .collect();
    out.push(Panel {
        title: "learning rate".into(),
        segments: segments(records, |r| Some(r.lr)),
        scientific: true,
    });
    let norms = segments(records, |r| r.grad_norm);
    if !norms.is_empty() {
        out.push(Panel {
            title: "gradient norm (before clipping)".into(),
            segments: norms,
            scientific: false,
        });
    }
    out
}

/// Tick label with as many decimals as the axis span needs.
fn tick_label(y: f64, span: f64, scientific: bool) -> String {
    if scientific {
        return format!("{y:.1e}");
    }
    let decimals = (2.0 - span.max(1e-12).log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{y:.decimals$}")
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1e-12) * 0.1 };
    (lo - pad, hi + pad)
}

/// Reads `RUN_DIR/metrics.jsonl` and draws `RUN_DIR/curves.png`.
pub fn plot_run(run: &RunDir, title: &str) -> Result<()> {
    let records = read_metrics(&run.metrics_path())?;
    plot_metrics(&records, &run.plot_path(), title)
}

/// Draws `records` into `path` (PNG), titled `title`.
pub fn plot_metrics(records: &[MetricsRecord], path: &Path, title: &str) -> Result<()> {
    register_font()?;
    let err = |e: String| Error::Msg(format!("{}: cannot draw plot: {e}", path.display()));
    let panels = panels(records);
    let cols = if panels.len() > 1 { 2 } else { 1 };
    let rows = panels.len().div_ceil(cols);
    let size = (PANEL.0 * cols as u32, PANEL.1 * rows as u32 + 50);
    // Draw into memory and encode with the `image` crate the workspace already builds (plotters'
    // own encoder would pull a second, older `image` into every build).
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let body = root.titled(title, (FAMILY, 26)).map_err(|e| err(e.to_string()))?;
        for (i, (area, panel)) in body.split_evenly((rows, cols)).iter().zip(&panels).enumerate() {
            let (x0, x1) = range(panel.points().map(|p| p.0));
            let (y0, y1) = range(panel.points().map(|p| p.1));
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, (FAMILY, 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(72)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| err(e.to_string()))?;
            let sci = panel.scientific;
            chart
                .configure_mesh()
                .x_desc("step")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| tick_label(*y, y1 - y0, sci))
                .label_style((FAMILY, 14))
                .bold_line_style(RGBColor(225, 225, 225))
                .light_line_style(WHITE)
                .draw()
                .map_err(|e| err(e.to_string()))?;
            let color = COLORS[i % COLORS.len()];
            for seg in &panel.segments {
                chart
                    .draw_series(LineSeries::new(seg.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| err(e.to_string()))?;
            }
            if panel.points().count() <= 40 {
                chart
                    .draw_series(panel.points().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    // Write next to the target and rename, so a crash never leaves a half-written PNG.
    let tmp = path.with_extension("png.tmp");
    image::save_buffer_with_format(
        &tmp,
        &pixels,
        size.0,
        size.1,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<MetricsRecord> {
        (0..60u64)
            .map(|s| {
                let mut r = MetricsRecord::new(
                    s,
                    0,
                    1e-4 * (s as f64 / 60.0 * std::f64::consts::PI).cos().abs(),
                );
                let t = s as f64;
                r.losses.insert("itc".into(), 4.0 * (-t / 20.0).exp() + 0.5);
                r.losses.insert("itm".into(), 0.69 * (-t / 40.0).exp() + 0.2);
                r.losses.insert("lm".into(), if s == 30 { f64::NAN } else { 9.0 - t * 0.05 });
                r.losses.insert("total".into(), r.losses.values().sum());
                r.grad_norm = Some(1.0 + (t / 5.0).sin().abs());
                r
            })
            .collect()
    }

    #[test]
    fn panels_per_loss_plus_lr_and_norm() {
        let p = panels(&records());
        let titles: Vec<&str> = p.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            vec![
                "loss: total",
                "loss: itc",
                "loss: itm",
                "loss: lm",
                "learning rate",
                "gradient norm (before clipping)"
            ]
        );
        assert_eq!(p[3].points().count(), 59, "the NaN step is left out");
        assert_eq!(p[3].segments.len(), 2, "and breaks the line");
        assert_eq!(p[1].segments.len(), 1);
        assert_eq!(tick_label(12.5, 8.0, false), "12.50");
        assert_eq!(tick_label(0.4567, 0.5, false), "0.457");
        assert_eq!(tick_label(1234.0, 300.0, false), "1234");
    }

    #[test]
    fn plot_run_reads_the_metrics_log() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let mut log = crate::metrics::MetricsLog::open(&run.metrics_path()).unwrap();
        for r in records().iter().take(5) {
            log.append(r).unwrap();
        }
        plot_run(&run, "run").unwrap();
        assert!(std::fs::metadata(run.plot_path()).unwrap().len() > 1000);
        let missing = RunDir { root: dir.path().join("nope") };
        assert!(plot_run(&missing, "x").unwrap_err().to_string().contains("metrics.jsonl"));
    }

    #[test]
    fn writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        plot_metrics(&records(), &path, "tiny run").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        if let Ok(keep) = std::env::var("BLIP2_KEEP_PLOT") {
            std::fs::copy(&path, keep).unwrap();
        }
    }
}
