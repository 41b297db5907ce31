//! Management operations, shared by the gRPC services and the LiteLLM-compatible routes so
//! both check, validate and invalidate the same way. The API layers only translate.

pub mod keys;
