//! Who is calling, as actix extractors that carry their role check: a handler
//! takes a [`Client`], [`Reviewer`], [`Reader`], [`Adjudicator`] or [`Admin`] argument and cannot
//! run without that role (admins pass every check); [`Authenticated`] only
//! says who is calling. The `Oip*` twins answer refusals in the Open Inference
//! Protocol's error shape.

use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest};

use super::problem::{ApiError, OipError};
use super::AppState;
use crate::auth::{Caller, Role};

/// Authenticates the request's bearer token (or, in open mode, its subject header).
fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Err(ApiError::Internal("application state missing".into()));
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    Ok(state
        .auth
        .authenticate(header("authorization"), header("x-triaged-subject"))?)
}

/// Authenticates the request and checks the caller has one of `roles`.
fn authorize(req: &HttpRequest, roles: &[Role]) -> Result<Caller, ApiError> {
    let caller = authenticate(req)?;
    caller.require(roles)?;
    Ok(caller)
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $error:ty, [$($role:expr),*]) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Caller);

        impl FromRequest for $name {
            type Error = $error;
            type Future = Ready<Result<$name, $error>>;

            fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
                ready(authorize(req, &[$($role),*]).map($name).map_err(Into::into))
            }
        }

        impl std::ops::Deref for $name {
            type Target = Caller;

            fn deref(&self) -> &Caller {
                &self.0
            }
        }
    };
}

role_extractor!(
    /// A caller with the `client` role: sends cases to triage.
    Client, ApiError, [Role::Client]
);
role_extractor!(
    /// A caller with the `reviewer` role: works the review queue.
    Reviewer, ApiError, [Role::Reviewer]
);
role_extractor!(
    /// A client or a reviewer: reads model descriptions.
    Reader, ApiError, [Role::Client, Role::Reviewer]
);
role_extractor!(
    /// A caller with the `adjudicator` role: settles cases whose reviewers tied.
    Adjudicator, ApiError, [Role::Adjudicator]
);
role_extractor!(
    /// A caller with the `admin` role.
    Admin, ApiError, []
);
role_extractor!(
    /// A client on an Open Inference Protocol route.
    OipClient, OipError, [Role::Client]
);

/// Any authenticated caller, whatever the role: for routes that only say who
/// the caller is.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Authenticated, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(authenticate(req).map(Authenticated))
    }
}
