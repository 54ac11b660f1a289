//! Who is calling: bearer tokens (the scheme name in any case, RFC 7235) from config, stored as SHA-256 hashes, each with a
//! role (`client`, `reviewer`, `adjudicator`, `admin`) and a subject. Deny by default: every route
//! except health, metrics and the OpenAPI document needs a role. With no tokens
//! configured, a loopback bind is open (every caller is an admin, named by
//! `X-Triaged-Subject` or `anonymous`) and logs a warning; a non-loopback bind
//! refuses to start.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Reviewer,
    /// Settles cases whose reviewers held no strict majority.
    Adjudicator,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Reviewer => "reviewer",
            Role::Adjudicator => "adjudicator",
            Role::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub role: Role,
    pub subject: String,
}

impl TokenSpec {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.sha256.len() == 64 && self.sha256.chars().all(|c| c.is_ascii_hexdigit()),
            "auth.tokens: sha256 of subject '{}' is not 64 hex digits",
            self.subject
        );
        anyhow::ensure!(
            !self.subject.trim().is_empty(),
            "auth.tokens: a token needs a subject"
        );
        Ok(())
    }
}

/// Why a request may not go on: no (valid) credentials, or the wrong role.
/// The HTTP layer maps these to 401 and 403 (`api/problem.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller has one of `roles` (admins pass every check).
    pub fn require(&self, roles: &[Role]) -> Result<(), AuthError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            return Ok(());
        }
        let wanted: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        Err(AuthError::Forbidden(format!(
            "role '{}' may not do this (needs {})",
            self.role.name(),
            wanted.join(" or ")
        )))
    }
}

pub struct Auth {
    tokens: Vec<([u8; 32], Role, String)>,
}

impl Auth {
    /// Checks the tokens against the bind address (see the module doc).
    pub fn new(tokens: &[TokenSpec], bind: SocketAddr) -> anyhow::Result<Auth> {
        let mut parsed = Vec::with_capacity(tokens.len());
        for t in tokens {
            t.validate()?;
            let mut hash = [0u8; 32];
            hex::decode_to_slice(t.sha256.to_ascii_lowercase(), &mut hash)?;
            parsed.push((hash, t.role, t.subject.clone()));
        }
        if parsed.is_empty() {
            anyhow::ensure!(
                bind.ip().is_loopback(),
                "refusing to listen on {bind} without auth tokens: configure auth.tokens or bind to a loopback address"
            );
            tracing::warn!(%bind, "no auth tokens configured: the API is open to anyone on this machine");
        }
        Ok(Auth { tokens: parsed })
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller behind an `Authorization` header value.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        open_subject: Option<&str>,
    ) -> Result<Caller, AuthError> {
        if self.is_open() {
            return Ok(Caller {
                subject: open_subject
                    .filter(|s| !s.is_empty())
                    .unwrap_or("anonymous")
                    .to_string(),
                role: Role::Admin,
            });
        }
        // RFC 7235: the scheme name is case-insensitive.
        let token = authorization
            .and_then(|h| h.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Unauthenticated("a bearer token is required".into()))?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare every configured hash in full, so timing does not say how much matched.
        let mut found = None;
        for (h, role, subject) in &self.tokens {
            let diff = h.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some((*role, subject.clone()));
            }
        }
        let (role, subject) = found
            .ok_or_else(|| AuthError::Unauthenticated("the bearer token is not valid".into()))?;
        Ok(Caller { subject, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(token: &str, role: Role, subject: &str) -> TokenSpec {
        TokenSpec {
            sha256: hex::encode(Sha256::digest(token.as_bytes())),
            role,
            subject: subject.into(),
        }
    }

    #[test]
    fn tokens_map_to_roles_and_bad_ones_are_refused() {
        let auth = Auth::new(
            &[spec("s3cret", Role::Reviewer, "dr-a")],
            "0.0.0.0:8080".parse().unwrap(),
        )
        .unwrap();
        let c = auth.authenticate(Some("Bearer s3cret"), None).unwrap();
        assert_eq!(
            c,
            Caller {
                subject: "dr-a".into(),
                role: Role::Reviewer
            }
        );
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            let c = auth
                .authenticate(Some(&format!("{scheme} s3cret")), None)
                .unwrap();
            assert_eq!(c.subject, "dr-a");
        }
        assert!(matches!(
            auth.authenticate(Some("Basic s3cret"), None),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authenticate(Some("Bearer nope"), None),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authenticate(None, Some("me")),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(c.require(&[Role::Reviewer]).is_ok());
        assert!(matches!(
            c.require(&[Role::Client]),
            Err(AuthError::Forbidden(_))
        ));
    }

    #[test]
    fn no_tokens_is_open_on_loopback_and_refused_elsewhere() {
        let auth = Auth::new(&[], "127.0.0.1:8080".parse().unwrap()).unwrap();
        let c = auth.authenticate(None, Some("dev")).unwrap();
        assert_eq!((c.subject.as_str(), c.role), ("dev", Role::Admin));
        let err = Auth::new(&[], "0.0.0.0:8080".parse().unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("without auth tokens"), "{err}");
    }
}
