//! The one closed set of error codes that drives every surface.
//!
//! A [`GatewayError`] says which [`ErrorCode`] it is; the gRPC layer turns the code into a
//! status with `google.rpc.ErrorInfo`, the HTTP shim into an OpenAI-shaped body and status.
//! Extend the enum deliberately: each variant must have an answer in every mapping below.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// The HTTP status of a budget refusal: 400 by default (clients must not retry into a spent
/// budget), set once at start from `general_settings.budget_exceeded_status_code`.
static BUDGET_EXCEEDED_STATUS: AtomicU16 = AtomicU16::new(400);

pub fn set_budget_exceeded_status(status: u16) {
    BUDGET_EXCEEDED_STATUS.store(status, Ordering::Relaxed);
}

/// What kind of failure an error is, independent of the surface that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    BudgetExceeded,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP status of the OpenAI-compatible shim.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::BudgetExceeded => BUDGET_EXCEEDED_STATUS.load(Ordering::Relaxed),
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::AlreadyExists => 409,
            Self::RateLimited => 429,
            Self::UpstreamError => 502,
            Self::UpstreamTimeout => 504,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// The OpenAI error `type`.
    pub fn openai_type(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_request_error",
            Self::Unauthenticated => "authentication_error",
            Self::PermissionDenied => "permission_error",
            Self::NotFound => "not_found_error",
            Self::AlreadyExists => "conflict_error",
            Self::BudgetExceeded => "budget_exceeded",
            Self::RateLimited => "rate_limit_error",
            Self::UpstreamError => "api_error",
            Self::UpstreamTimeout => "timeout_error",
            Self::Unavailable => "service_unavailable",
            Self::Internal => "internal_error",
        }
    }

    /// The stable code string (the JS `error.code`, the ErrorInfo reason when none is more
    /// specific).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::BudgetExceeded => "BUDGET_EXCEEDED",
            Self::RateLimited => "RATE_LIMITED",
            Self::UpstreamError => "UPSTREAM_ERROR",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// The gRPC status code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::BudgetExceeded | Self::RateLimited => tonic::Code::ResourceExhausted,
            Self::UpstreamError | Self::Unavailable => tonic::Code::Unavailable,
            Self::UpstreamTimeout => tonic::Code::DeadlineExceeded,
            Self::Internal => tonic::Code::Internal,
        }
    }
}

/// An error any stage of the gateway can return, ready for every surface.
///
/// `message` is shown to the caller: lowercase, specific, never a secret or internal detail.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault, when there is one (OpenAI `param`, gRPC field violation).
    pub param: Option<String>,
    /// A more specific reason than the code (ErrorInfo reason, OpenAI `code`).
    pub reason: Option<&'static str>,
    /// When the caller may retry (rate limits).
    pub retry_after: Option<Duration>,
    /// A more specific OpenAI error `type` than the code's (e.g. `team_model_access_denied`).
    pub openai_type: Option<&'static str>,
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), param: None, reason: None, retry_after: None, openai_type: None }
    }

    /// A bad request; `param` names the field at fault (empty when it is the body as a whole).
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        let param = param.into();
        Self { param: (!param.is_empty()).then_some(param), ..Self::new(ErrorCode::InvalidArgument, message) }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn with_type(mut self, openai_type: &'static str) -> Self {
        self.openai_type = Some(openai_type);
        self
    }

    /// The OpenAI error `type`: the specific one if set, else the code's.
    pub fn openai_type(&self) -> &'static str {
        self.openai_type.unwrap_or(self.code.openai_type())
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The ErrorInfo reason: the specific one if set, else the code's.
    pub fn reason_str(&self) -> &'static str {
        self.reason.unwrap_or(self.code.as_str())
    }
}

/// Store failures become `internal` (or `unavailable`) without leaking SQL to callers; the
/// detail goes to the log.
impl From<crate::store::StoreError> for GatewayError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::NotFound(what) => Self::not_found(what),
            StoreError::Conflict(what) => Self::new(ErrorCode::AlreadyExists, what),
            StoreError::Database(e) => {
                tracing::error!(error = %e, "store error");
                Self::unavailable("the gateway's database is unavailable; retry shortly")
            }
            StoreError::InvalidPageToken => Self::invalid("page_token", "page_token: not a token this gateway issued"),
            StoreError::Invalid { field, message } => Self::invalid(field.clone(), format!("{field}: {message}")),
            StoreError::Migrate(e) => {
                tracing::error!(error = %e, "migration error");
                Self::internal("the gateway's database schema is not up to date")
            }
            StoreError::Corrupt(e) => {
                tracing::error!(error = %e, "corrupt row in store");
                Self::internal("internal error reading the gateway's database")
            }
        }
    }
}
