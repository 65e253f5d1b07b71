//! The one figure writer: a plotters drawing written as `<stem>.svg` and `<stem>.png`.
//!
//! A figure is drawn once per backend by a backend-generic [`Figure::draw`]; both renderings are made
//! in memory and written durably (`crossfeed-fsio`), so a reader never sees half a plot. The font is
//! the bundled DejaVu Sans (ab_glyph has no system fonts) and the PNG is encoded by the `png` crate
//! from plotters' RGB buffer, so the binary carries no image codec library. Depends on no crossfeed
//! crate but `fsio`: the loop's and the theory's figures say what to draw, this crate how to write it.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, DrawingBackend, IntoDrawingArea, SVGBackend};
use plotters::style::FontStyle;

/// A figure that can be drawn on any plotters backend.
pub trait Figure {
    /// Draws the whole figure on `root` (including its background and `present`).
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static;
}

/// Why a figure was not written.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("drawing {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error(transparent)]
    Io(#[from] crossfeed_fsio::FsError),
}

static FONT: Once = Once::new();

/// Registers the bundled DejaVu Sans as "sans-serif", once per process.
fn ensure_font() {
    FONT.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Writes `<stem>.svg` and `<stem>.png` (`stem` is a path without extension) of a `w`×`h` figure;
/// returns the two paths.
pub fn write_svg_png(stem: &Path, size: (u32, u32), figure: &impl Figure) -> Result<[PathBuf; 2], FigureError> {
    ensure_font();
    let (svg_path, png_path) = (with_ext(stem, "svg"), with_ext(stem, "png"));
    let mut svg = String::new();
    figure.draw(SVGBackend::with_string(&mut svg, size).into_drawing_area()).map_err(|message| FigureError::Draw { path: svg_path.clone(), message })?;
    crossfeed_fsio::write_atomic(&svg_path, svg.as_bytes())?;
    let png = render_png(size, figure).map_err(|message| FigureError::Draw { path: png_path.clone(), message })?;
    crossfeed_fsio::write_atomic(&png_path, &png)?;
    Ok([svg_path, png_path])
}

/// `stem` + `.ext`, keeping any dots already in the file name (`Path::with_extension` would replace
/// what follows the last one).
fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The figure drawn into an RGB buffer and encoded as PNG bytes.
fn render_png(size: (u32, u32), figure: &impl Figure) -> Result<Vec<u8>, String> {
    let (w, h) = size;
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    figure.draw(BitMapBackend::with_buffer(&mut buf, size).into_drawing_area())?;
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut out = enc.write_header().map_err(|e| e.to_string())?;
    out.write_image_data(&buf).map_err(|e| e.to_string())?;
    out.finish().map_err(|e| e.to_string())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::prelude::*;

    struct Line;

    impl Figure for Line {
        fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>
        where
            DB::ErrorType: 'static,
        {
            root.fill(&WHITE).map_err(|e| format!("{e:?}"))?;
            let mut chart = ChartBuilder::on(&root).caption("a line", ("sans-serif", 16)).x_label_area_size(30).y_label_area_size(30).build_cartesian_2d(0.0..1.0, 0.0..1.0).map_err(|e| format!("{e:?}"))?;
            chart.configure_mesh().draw().map_err(|e| format!("{e:?}"))?;
            chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], &RED)).map_err(|e| format!("{e:?}"))?;
            root.present().map_err(|e| format!("{e:?}"))
        }
    }

    /// The in-memory SVG is byte for byte what plotters writes to a file (the loop and theory wrote
    /// through `SVGBackend::new(path)` before this crate), and nothing but the two figures is left.
    #[test]
    fn svg_equals_plotters_file_output_and_png_decodes() {
        ensure_font();
        let dir = tempfile::tempdir().unwrap();
        let [svg, png] = write_svg_png(&dir.path().join("fig.v1"), (300, 200), &Line).unwrap();
        assert_eq!(svg, dir.path().join("fig.v1.svg"));
        let direct = dir.path().join("direct.svg");
        Line.draw(SVGBackend::new(&direct, (300, 200)).into_drawing_area()).unwrap();
        assert_eq!(std::fs::read(&svg).unwrap(), std::fs::read(&direct).unwrap());
        let bytes = std::fs::read(&png).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
        assert_eq!((dec.info().width, dec.info().height), (300, 200));
        let mut names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        names.sort();
        assert_eq!(names, ["direct.svg", "fig.v1.png", "fig.v1.svg"]);
    }
}
