//! `triaged data import-images`: a folder or `.tar.gz` of PNG/JPEG images plus a
//! CSV of labels (per-class counts, or annotator columns) becomes an image data
//! set (`u8 [N,H,W,C]`, RGB). Images are resized to the requested size unless
//! `--no-resize`; unreadable images, missing files, wrong sizes and labels out of
//! range fail with the CSV line and the image path.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::ImageFormat;

use super::csv_import::{read_labeled, CsvImport, ImportError};
use super::{Dataset, Inputs};

/// Channels of every imported image (RGB).
pub const CHANNELS: usize = 3;

#[derive(Debug, Clone)]
pub struct ImageImport {
    /// A folder, or a `.tar.gz` / `.tgz` archive; CSV paths are relative to it.
    pub images: PathBuf,
    /// Labels; `image_column` must be set.
    pub labels: CsvImport,
    pub height: usize,
    pub width: usize,
    /// Resize images of another size (else: an error).
    pub resize: bool,
}

/// Largest accepted image side, in pixels: a small compressed file can declare a
/// huge canvas, and decoding it would allocate gigabytes.
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// Why encoded bytes cannot become an `H×W` RGB image. Each message completes a
/// sentence that starts with the image's name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    #[error("is not a PNG or JPEG image")]
    UnknownFormat,
    #[error("is a {0} image; only PNG and JPEG are accepted")]
    UnsupportedFormat(String),
    #[error("is {height}x{width} (HxW); images may have at most {MAX_IMAGE_SIDE} pixels a side")]
    TooLarge { height: u32, width: u32 },
    #[error("is unreadable: {0}")]
    Unreadable(String),
    #[error("is {height}x{width} (HxW), expected {expected_height}x{expected_width}")]
    WrongSize {
        height: u32,
        width: u32,
        expected_height: usize,
        expected_width: usize,
    },
}

/// Decodes a PNG or JPEG into `height × width` RGB pixels (row-major HWC), the
/// layout of image data sets and of the CNN's input. Grey or alpha images become
/// RGB; another size is resized (triangle filter) when `resize`, else refused.
pub fn decode_rgb(
    data: &[u8],
    height: usize,
    width: usize,
    resize: bool,
) -> Result<Vec<u8>, ImageError> {
    dimensions(data)?;
    let format = checked_format(data)?;
    let mut reader = image::io::Reader::with_format(Cursor::new(data), format);
    reader.limits(decoder_limits());
    let img = reader
        .decode()
        .map_err(|e| ImageError::Unreadable(e.to_string()))?
        .to_rgb8();
    let img = if (img.height() as usize, img.width() as usize) == (height, width) {
        img
    } else if resize {
        image::imageops::resize(&img, width as u32, height as u32, FilterType::Triangle)
    } else {
        return Err(ImageError::WrongSize {
            height: img.height(),
            width: img.width(),
            expected_height: height,
            expected_width: width,
        });
    };
    Ok(img.into_raw())
}

/// The `(height, width)` an encoded PNG/JPEG declares, read from its header
/// alone (nothing is decoded), checked against [`MAX_IMAGE_SIDE`].
pub fn dimensions(data: &[u8]) -> Result<(u32, u32), ImageError> {
    let format = checked_format(data)?;
    let (w, h) = image::io::Reader::with_format(Cursor::new(data), format)
        .into_dimensions()
        .map_err(|e| ImageError::Unreadable(e.to_string()))?;
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(ImageError::TooLarge {
            height: h,
            width: w,
        });
    }
    Ok((h, w))
}

/// PNG or JPEG whose header declares at most [`MAX_IMAGE_SIDE`] a side.
fn checked_format(data: &[u8]) -> Result<ImageFormat, ImageError> {
    let format = image::guess_format(data).map_err(|_| ImageError::UnknownFormat)?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(ImageError::UnsupportedFormat(
            format!("{format:?}").to_uppercase(),
        ));
    }
    Ok(format)
}

/// Most memory one decoder may allocate: a 4096² RGBA image at 16 bits per
/// channel (128 MiB) plus slack. The header check comes first; this bounds a
/// decoder that allocates more than the header implies.
pub const MAX_DECODER_ALLOC: u64 = 160 * 1024 * 1024;

fn decoder_limits() -> image::io::Limits {
    let mut limits = image::io::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    limits
}

pub fn import_images(opts: &ImageImport) -> Result<Dataset, ImportError> {
    let csv = &opts.labels.csv;
    let column = opts
        .labels
        .image_column
        .clone()
        .unwrap_or_else(|| "image".into());
    let err = |line: Option<u64>, message: String| ImportError {
        file: csv.clone(),
        line,
        column: Some(column.clone()),
        message,
    };
    if opts.height == 0 || opts.width == 0 {
        return Err(err(None, "the image size must be positive".into()));
    }
    let labeled = read_labeled(&opts.labels)?;
    let cases = labeled.images.clone().unwrap_or_default();
    let mut bytes = load_bytes(&opts.images, &cases).map_err(|(line, m)| err(line, m))?;
    let (h, w) = (opts.height, opts.width);
    let mut pixels = Vec::with_capacity(cases.len() * h * w * CHANNELS);
    for (path, line) in &cases {
        let data = bytes
            .remove(path.as_str())
            .or_else(|| bytes.get(path.as_str()).cloned())
            .ok_or_else(|| {
                err(
                    Some(*line),
                    format!("image '{path}' not found in {}", opts.images.display()),
                )
            })?;
        let rgb = decode_rgb(&data, h, w, opts.resize)
            .map_err(|e| err(Some(*line), format!("image '{path}' {e}")))?;
        pixels.extend_from_slice(&rgb);
    }
    Dataset::new(
        Inputs::Images {
            height: h,
            width: w,
            channels: CHANNELS,
            pixels,
        },
        labeled.class_names,
        labeled.counts,
        labeled.reference,
        labeled.split,
        format!(
            "import-images {} + {}",
            opts.images.display(),
            csv.display()
        ),
    )
    .map_err(|e| err(None, format!("{e:#}")))
}

/// Largest image file accepted from a folder or archive: an archive header can
/// claim any size, so nothing is allocated or read past this.
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads at most [`MAX_IMAGE_FILE_BYTES`], refusing a longer file.
fn read_bounded(reader: impl Read) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    reader
        .take(MAX_IMAGE_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(format!(
            "larger than {} MiB; image files are refused past that",
            MAX_IMAGE_FILE_BYTES / (1024 * 1024)
        ));
    }
    Ok(data)
}

/// A CSV image path must stay inside the images folder or archive: relative, and
/// without `..` (or any other non-plain) component.
fn check_relative(path: &str, line: u64) -> Result<(), (Option<u64>, String)> {
    use std::path::Component;
    let plain = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if plain {
        Ok(())
    } else {
        Err((
            Some(line),
            format!("image path '{path}' must be relative to --images, without '..'"),
        ))
    }
}

/// Bytes of every image the CSV names (a path the CSV repeats is read once).
fn load_bytes(
    source: &Path,
    cases: &[(String, u64)],
) -> Result<HashMap<String, Vec<u8>>, (Option<u64>, String)> {
    let name = source.to_string_lossy();
    for (path, line) in cases {
        check_relative(path, *line)?;
    }
    if source.is_dir() {
        let mut out = HashMap::new();
        for (path, line) in cases {
            if out.contains_key(path) {
                continue;
            }
            let full = source.join(path);
            let cannot = |e: String| {
                (
                    Some(*line),
                    format!("image '{}' cannot be read: {e}", full.display()),
                )
            };
            let file = std::fs::File::open(&full).map_err(|e| cannot(e.to_string()))?;
            let data = read_bounded(file).map_err(cannot)?;
            out.insert(path.clone(), data);
        }
        return Ok(out);
    }
    if !(name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
        return Err((
            None,
            format!("--images {name}: not a folder or a .tar.gz/.tgz archive"),
        ));
    }
    let wanted: HashSet<&str> = cases.iter().map(|(p, _)| p.as_str()).collect();
    let file = std::fs::File::open(source).map_err(|e| (None, format!("opening {name}: {e}")))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = HashMap::new();
    let entries = archive
        .entries()
        .map_err(|e| (None, format!("reading {name}: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| (None, format!("reading {name}: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| (None, format!("reading {name}: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if wanted.contains(path.as_str()) {
            // The header's size is a claim, not a fact: read at most the limit.
            let data = read_bounded(&mut entry)
                .map_err(|e| (None, format!("reading '{path}' from {name}: {e}")))?;
            out.insert(path, data);
        }
    }
    Ok(out)
}
