//! Ferryman's protobuf API, generated from `proto/ferryman/v1/*.proto`.
//!
//! The server uses the service traits (feature `server`); the CLI, the tests and the SDKs use
//! the clients (feature `client`). Both are on by default.

/// Package `ferryman.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("ferryman.v1");
}

/// The encoded `FileDescriptorSet` of every Ferryman proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferryman_descriptor");
