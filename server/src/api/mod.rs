//! The surfaces: gRPC (tonic, with gRPC-web) and the HTTP shim (axum) speaking the OpenAI API
//! and LiteLLM's management routes. Both only translate to and from [`crate::gateway`] and
//! [`crate::admin`].

pub mod grpc;
pub mod http;
