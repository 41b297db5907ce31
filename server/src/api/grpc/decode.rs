//! Requests tonic cannot decode are the caller's bad input: INVALID_ARGUMENT, not INTERNAL.
//!
//! tonic answers a request it cannot read — bytes that are not the method's protobuf message, a
//! length prefix promising more bytes than were sent, a compressed flag without `grpc-encoding`,
//! no message at all, a message over the size limit — with INTERNAL (or OUT_OF_RANGE for the
//! size), as the gRPC status-code guide suggests. To a caller that reads as "the gateway is
//! broken, retry", when the request itself is wrong and retrying cannot help; so every service
//! answers these as INVALID_ARGUMENT with Ferryman's ErrorInfo, like any other bad input.
//!
//! How the layer tells them apart from a handler's genuine internal error: tonic turns a status
//! into a trailers-only response with the status in its extensions, and every status a
//! Ferryman handler returns is built by [`to_status`], which always attaches ErrorInfo details.
//! A trailers-only INTERNAL or OUT_OF_RANGE without details therefore never came from a handler:
//! tonic raised it while decoding the request, before any handler ran. tonic's words go to the
//! log; the caller gets a message about its request, without internals.

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use tonic::Code;

use super::status::to_status;
use crate::error::GatewayError;

/// `axum::middleware::map_response_with_state` function, with the decoding size limit as state.
pub async fn decode_errors(State(limit): State<usize>, uri: Uri, response: Response) -> Response {
    let Some(status) = response.extensions().get::<tonic::Status>() else { return response };
    if !matches!(status.code(), Code::Internal | Code::OutOfRange) || !status.details().is_empty() {
        return response;
    }
    tracing::debug!(method = uri.path(), code = ?status.code(), grpc_message = status.message(), "undecodable gRPC request");
    to_status(caller_error(status, limit)).into_http()
}

/// What was wrong with the request, from tonic's status.
fn caller_error(status: &tonic::Status, limit: usize) -> GatewayError {
    let said = status.message();
    if status.code() == Code::OutOfRange {
        return GatewayError::invalid(
            "",
            format!(
                "the request message is larger than the gateway's limit of {limit} bytes (general_settings.max_request_size_mb)"
            ),
        )
        .with_reason("request_too_large");
    }
    let what = if said.starts_with("Missing request message") {
        return GatewayError::invalid("", "the request has no message; a call takes exactly one request message");
    } else if said.starts_with("failed to decode Protobuf message") {
        "its message is not a valid protobuf encoding of the method's request type"
    } else if said.contains("Unexpected EOF") {
        "the body ends inside a message (a length prefix promises more bytes than were sent)"
    } else if said.contains("compressed-flag but no grpc-encoding") {
        "a message is flagged as compressed but the request names no grpc-encoding"
    } else if said.contains("invalid compression flag") {
        "a message's compressed flag is neither 0 nor 1"
    } else if said.starts_with("Error decompressing") {
        "its compressed message cannot be decompressed"
    } else if said.starts_with("tonic-web") || said.contains("base64") {
        "the grpc-web-text body is not valid base64"
    } else {
        "it is not a well-formed gRPC request"
    };
    GatewayError::invalid("", format!("the request could not be decoded: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    async fn through(status: tonic::Status) -> tonic::Status {
        let response =
            decode_errors(State(1000), Uri::from_static("/ferryman.v1.KeyService/ListKeys"), status.into_http()).await;
        tonic::Status::from_header_map(response.headers()).unwrap()
    }

    #[tokio::test]
    async fn tonic_decode_errors_become_invalid_argument_with_error_info() {
        let s = through(tonic::Status::internal("failed to decode Protobuf message: invalid varint")).await;
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("not a valid protobuf encoding"), "{}", s.message());
        assert!(!s.message().contains("varint"), "{}", s.message());
        let info = s.get_error_details().error_info().cloned().unwrap();
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_ARGUMENT", "ferryman"));

        let s = through(tonic::Status::internal("Unexpected EOF decoding stream.")).await;
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("length prefix"), "{}", s.message());

        let s = through(tonic::Status::out_of_range("Error, decoded message length too large: found 2000 bytes")).await;
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("limit of 1000 bytes"), "{}", s.message());
        assert_eq!(s.get_error_details().error_info().unwrap().reason, "request_too_large");

        let s = through(tonic::Status::internal("something tonic says one day")).await;
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "the request could not be decoded: it is not a well-formed gRPC request");
    }

    #[tokio::test]
    async fn statuses_from_handlers_pass_through() {
        let s = through(to_status(GatewayError::internal("internal error reading the gateway's database"))).await;
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "internal error reading the gateway's database");
        let s = through(tonic::Status::not_found("no such key")).await;
        assert_eq!(s.code(), Code::NotFound);
    }
}
