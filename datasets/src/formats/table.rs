//! img2dataset parquet / CSV / TSV tables (`url`, `caption`, `key`, `status`, ...) read
//! through polars. Rows whose `status` is not `success` are skipped and counted.

use std::path::Path;

use polars::prelude::*;

use crate::error::{DataError, Result};

/// One successful table row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    pub key: Option<String>,
    pub url: Option<String>,
    pub caption: String,
}

/// The kept rows and how many were skipped (by status value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRead {
    pub rows: Vec<TableRow>,
    pub skipped: std::collections::BTreeMap<String, usize>,
}

impl TableRead {
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }
}

fn load_frame(path: &Path) -> std::result::Result<DataFrame, PolarsError> {
    let ext =
        path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if ext == "parquet" {
        let file = std::fs::File::open(path)?;
        return ParquetReader::new(file).finish();
    }
    let sep = if ext == "tsv" { b'\t' } else { b',' };
    CsvReadOptions::default()
        .with_has_header(true)
        .with_parse_options(CsvParseOptions::default().with_separator(sep))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))?
        .finish()
}

fn string_column(
    df: &DataFrame,
    name: &str,
) -> std::result::Result<Option<Vec<Option<String>>>, PolarsError> {
    let Ok(col) = df.column(name) else {
        return Ok(None);
    };
    let series = col.as_materialized_series().cast(&DataType::String)?;
    Ok(Some(series.str()?.into_iter().map(|v| v.map(str::to_string)).collect()))
}

/// Read a table with a `caption_col` (default `caption`) and optional `url`, `key`, `status`.
pub fn read_table(path: &Path, caption_col: &str) -> Result<TableRead> {
    let table_err = |message: String| DataError::Table { path: path.to_path_buf(), message };
    let df = load_frame(path).map_err(|e| table_err(e.to_string()))?;
    let col = |name: &str| string_column(&df, name).map_err(|e| table_err(e.to_string()));
    let captions =
        col(caption_col)?.ok_or_else(|| DataError::field(path, caption_col, "column not found"))?;
    let urls = col("url")?;
    let keys = col("key")?;
    let status = col("status")?;
    let mut out = TableRead::default();
    for i in 0..df.height() {
        if let Some(s) = &status {
            let st = s[i].clone().unwrap_or_else(|| "null".to_string());
            if st != "success" {
                *out.skipped.entry(st).or_default() += 1;
                continue;
            }
        }
        let Some(caption) = captions[i].clone() else {
            *out.skipped.entry("null caption".to_string()).or_default() += 1;
            continue;
        };
        out.rows.push(TableRow {
            key: keys.as_ref().and_then(|k| k[i].clone()),
            url: urls.as_ref().and_then(|u| u[i].clone()),
            caption,
        });
    }
    Ok(out)
}

/// A users' own CSV / TSV / parquet of `image` (or `image_path`) and `caption` columns, image
/// paths relative to `image_root`; each distinct path is one image. A row with an empty cell
/// is an error naming its line.
pub fn read_pairs_table(path: &Path, image_root: &Path) -> Result<Vec<crate::ImageTextItem>> {
    let table_err = |message: String| DataError::Table { path: path.to_path_buf(), message };
    let df = load_frame(path).map_err(|e| table_err(e.to_string()))?;
    let col = |name: &str| string_column(&df, name).map_err(|e| table_err(e.to_string()));
    let images = match col("image")? {
        Some(c) => c,
        None => col("image_path")?
            .ok_or_else(|| DataError::field(path, "image", "column not found (nor image_path)"))?,
    };
    let captions =
        col("caption")?.ok_or_else(|| DataError::field(path, "caption", "column not found"))?;
    let mut ids = std::collections::HashMap::new();
    let mut items = Vec::with_capacity(images.len());
    for (i, (image, caption)) in images.into_iter().zip(captions).enumerate() {
        let (Some(image), Some(caption)) = (image, caption) else {
            // Line 1 is the header.
            return Err(DataError::field(
                path,
                format!("line {}", i + 2),
                "empty image or caption",
            ));
        };
        let next = ids.len() as u64;
        let image_id = *ids.entry(image.clone()).or_insert(next);
        items.push(crate::ImageTextItem {
            key: image.clone(),
            image: crate::ImageSource::Path(image_root.join(&image)),
            caption,
            image_id,
        });
    }
    Ok(items)
}
