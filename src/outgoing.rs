//! What every outgoing HTTP call (webhooks, the FHIR server) shares: a client
//! that never follows a redirect, answers read only up to a bound, and errors
//! told without the URL (which may carry credentials).
//!
//! Redirects: a FHIR server or webhook target answering 307/308 would make a
//! following client re-send the whole Task (patient identifier included) or the
//! signed event to whatever host the `Location` names, and count it as
//! delivered. A 3xx is a refusal here, never followed.

use std::time::Duration;

/// Longest answer read from an outgoing call; the rest is refused unread.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A client builder with redirects off and the given timeouts.
pub fn client_builder(
    connect_timeout: Duration,
    request_timeout: Duration,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
}

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the answer is larger than {limit} bytes (refused unread)")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Transport(String),
}

/// Reads the answer's body, at most `limit` bytes: a declared or streamed
/// length above it fails without reading (or keeping) the rest, so a hostile or
/// broken server cannot grow this process's memory.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge { limit });
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ReadError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(ReadError::Transport(error_chain(&e.without_url()))),
        }
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
