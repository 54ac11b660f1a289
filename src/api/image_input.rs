//! Image inputs of the API: a base64 PNG/JPEG in a `/v1` instance, or on `/v2` a
//! BYTES tensor of encoded images or a UINT8 `[B,H,W,C]` pixel tensor. Everything
//! becomes the predictor's rows (NHWC pixel values 0–255 as f32) here, so the
//! handlers and the batcher never see an unchecked image.
//!
//! Decoding has a budget ([`ImageBudget`]): the pixels a request's images
//! declare are summed from their headers before anything is decoded and refused
//! past a per-request limit; decodes run on the blocking pool, at most a fixed
//! number at once, each under the decoder's memory limit; and waiting for a
//! decode slot or decoding counts against the request's deadline.

use std::sync::Arc;
use std::time::Instant;

use actix_web::web;
use base64::Engine;
use tokio::sync::Semaphore;

use super::problem::ApiError;
use crate::data::images::{decode_rgb, dimensions, CHANNELS};

/// One encoded image of a request, named for its errors.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// Base64 text (a `/v1` instance, a JSON BYTES element).
    Base64 { what: String, text: String },
    /// Raw bytes (a binary BYTES element).
    Bytes { what: String, bytes: Vec<u8> },
}

impl ImageSource {
    fn into_bytes(self) -> Result<(String, Vec<u8>), ApiError> {
        match self {
            ImageSource::Base64 { what, text } => {
                let bytes = decode_base64(&text, &what)?;
                Ok((what, bytes))
            }
            ImageSource::Bytes { what, bytes } => Ok((what, bytes)),
        }
    }
}

/// The server-wide budget for decoding images (see the module doc).
pub struct ImageBudget {
    slots: Arc<Semaphore>,
    max_pixels: u64,
}

impl ImageBudget {
    /// `concurrent` decodes at once; `max_pixels` decoded pixels per request.
    pub fn new(concurrent: usize, max_pixels: u64) -> ImageBudget {
        ImageBudget {
            slots: Arc::new(Semaphore::new(concurrent.max(1))),
            max_pixels,
        }
    }

    /// Decodes `images` into the model's rows within the budget and `deadline`.
    pub async fn decode(
        &self,
        images: Vec<ImageSource>,
        size: ImageSize,
        deadline: Instant,
    ) -> Result<Vec<f32>, ApiError> {
        let max_pixels = self.max_pixels;
        // Headers first: cheap, and a request over budget is refused before any
        // pixel is decoded.
        let encoded = blocking(move || {
            let encoded = images
                .into_iter()
                .map(ImageSource::into_bytes)
                .collect::<Result<Vec<_>, _>>()?;
            let mut pixels = 0u64;
            for (what, bytes) in &encoded {
                if bytes.is_empty() {
                    return Err(ApiError::Unprocessable(format!("{what} is empty")));
                }
                let (h, w) =
                    dimensions(bytes).map_err(|e| ApiError::Unprocessable(format!("{what} {e}")))?;
                pixels += u64::from(h) * u64::from(w);
            }
            if pixels > max_pixels {
                return Err(ApiError::Unprocessable(format!(
                    "the request's images hold {pixels} pixels; at most {max_pixels} are decoded per request: send fewer or smaller images"
                )));
            }
            Ok(encoded)
        })
        .await?;
        let slot = tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                ApiError::Unavailable(
                    "every image decoder was busy until the request's deadline".into(),
                )
            })?
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
        blocking(move || {
            let _slot = slot;
            let mut rows = Vec::with_capacity(encoded.len() * size.values());
            for (what, bytes) in &encoded {
                if Instant::now() >= deadline {
                    return Err(ApiError::Unavailable(
                        "the request's deadline passed while its images were decoded".into(),
                    ));
                }
                push_encoded(bytes, size, what, &mut rows)?;
            }
            Ok(rows)
        })
        .await
    }
}

/// Runs CPU work on actix's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f)
        .await
        .map_err(|e| ApiError::Internal(format!("decoding images: {e}")))?
}

/// An image model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl ImageSize {
    /// Values per image.
    pub fn values(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Refuses models the decoder cannot feed (it always produces RGB).
    pub fn check_decodable(&self, model: &str) -> Result<(), ApiError> {
        if self.channels == CHANNELS {
            return Ok(());
        }
        Err(ApiError::Unprocessable(format!(
            "model '{model}' takes {}-channel images; encoded images are decoded to RGB, \
             so send its pixels as a UINT8 tensor on /v2",
            self.channels
        )))
    }
}

/// Decodes one encoded image (PNG or JPEG, any size up to the decoder's limit;
/// resized to the model's input like `data import-images`) and appends its
/// pixels to `rows`. `what` names the image in the error.
pub fn push_encoded(
    bytes: &[u8],
    size: ImageSize,
    what: &str,
    rows: &mut Vec<f32>,
) -> Result<(), ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::Unprocessable(format!("{what} is empty")));
    }
    let pixels = decode_rgb(bytes, size.height, size.width, true)
        .map_err(|e| ApiError::Unprocessable(format!("{what} {e}")))?;
    rows.extend(pixels.into_iter().map(f32::from));
    Ok(())
}

/// Base64 text (standard alphabet, padding optional, line breaks ignored, a
/// `data:image/...;base64,` prefix allowed) to bytes.
pub fn decode_base64(text: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    let body = match text.strip_prefix("data:") {
        Some(url) => url.split_once(";base64,").map(|(_, b)| b).ok_or_else(|| {
            ApiError::Unprocessable(format!("{what} is a data URL without ';base64,'"))
        })?,
        None => text,
    };
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(compact.as_bytes())
        .map_err(|e| ApiError::Unprocessable(format!("{what} is not valid base64: {e}")))
}

/// Pixel values of a UINT8 tensor sent as JSON numbers: each must be an integer
/// in 0..=255.
pub fn check_pixels(values: &[f32], name: &str) -> Result<(), ApiError> {
    match values
        .iter()
        .position(|v| !(v.fract() == 0.0 && (0.0..=255.0).contains(v)))
    {
        None => Ok(()),
        Some(i) => Err(ApiError::BadRequest(format!(
            "input '{name}' value {i} is {}; UINT8 pixels are integers 0 to 255",
            values[i]
        ))),
    }
}

/// Elements of a BYTES tensor in Triton's binary layout: each a 4-byte
/// little-endian length followed by that many bytes.
pub fn split_bytes_elements<'a>(mut data: &'a [u8], name: &str) -> Result<Vec<&'a [u8]>, ApiError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let truncated = || {
            ApiError::BadRequest(format!(
                "input '{name}': BYTES element {} is truncated (each is a 4-byte length, then the bytes)",
                out.len()
            ))
        };
        let (len, rest) = data.split_at_checked(4).ok_or_else(truncated)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (element, rest) = rest.split_at_checked(len).ok_or_else(truncated)?;
        out.push(element);
        data = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_accepts_data_urls_line_breaks_and_missing_padding() {
        let want = b"hello!!".to_vec();
        for text in [
            "aGVsbG8hIQ==",
            "aGVsbG8hIQ",
            "aGVs\nbG8h\r\nIQ==",
            "data:image/png;base64,aGVsbG8hIQ==",
        ] {
            assert_eq!(decode_base64(text, "x").unwrap(), want, "{text:?}");
        }
        assert!(decode_base64("not base64!", "x").is_err());
        assert!(decode_base64("data:image/png,abc", "x").is_err());
    }

    #[test]
    fn bytes_elements_follow_tritons_length_prefixes() {
        let mut data = Vec::new();
        for e in [&b"ab"[..], b"", b"xyz"] {
            data.extend_from_slice(&(e.len() as u32).to_le_bytes());
            data.extend_from_slice(e);
        }
        let got = split_bytes_elements(&data, "image").unwrap();
        assert_eq!(got, vec![&b"ab"[..], b"", b"xyz"]);
        assert!(split_bytes_elements(&data[..data.len() - 1], "image").is_err());
        assert!(split_bytes_elements(&[1, 0], "image").is_err());
    }

    #[test]
    fn pixels_must_be_bytes() {
        assert!(check_pixels(&[0.0, 17.0, 255.0], "image").is_ok());
        for bad in [256.0, -1.0, 0.5, f32::NAN] {
            assert!(check_pixels(&[bad], "image").is_err(), "{bad}");
        }
    }
}
