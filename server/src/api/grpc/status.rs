//! [`GatewayError`] → `tonic::Status` with `google.rpc.ErrorInfo`, field violations and
//! `RetryInfo`; and the caller from request metadata.

use std::collections::HashMap;

use tonic::metadata::MetadataMap;
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::GatewayError;

pub const ERROR_DOMAIN: &str = "ferryman";

pub fn to_status(e: GatewayError) -> tonic::Status {
    let mut meta = HashMap::new();
    meta.insert("code".to_owned(), e.code.as_str().to_owned());
    let mut details = ErrorDetails::with_error_info(e.reason_str(), ERROR_DOMAIN, meta);
    if let Some(param) = &e.param
        && e.code == crate::error::ErrorCode::InvalidArgument
    {
        details.add_bad_request_violation(param.clone(), e.message.clone());
    }
    if let Some(after) = e.retry_after {
        details.set_retry_info(Some(after));
    }
    tonic::Status::with_error_details(e.code.grpc_code(), e.message, details)
}

/// The secret in `authorization: Bearer sk-...` (or `x-api-key`) metadata.
pub fn presented_secret(metadata: &MetadataMap) -> Option<&str> {
    if let Some(auth) = metadata.get("authorization").and_then(|v| v.to_str().ok()) {
        let auth = auth.trim();
        return Some(auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")).unwrap_or(auth));
    }
    metadata.get("x-api-key").and_then(|v| v.to_str().ok())
}
