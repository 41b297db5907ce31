//! Ferryman, an LLM governance gateway: for every call it decides who is calling, whether
//! they may, routes the call upstream, and records exactly what it cost.
//!
//! The hot path lives in [`gateway`]; [`api`] translates gRPC and HTTP into it; [`store`]
//! and [`ledger`] keep state; [`config`] reads LiteLLM-compatible configuration.

pub mod admin;
pub mod api;
pub mod audit;
pub mod cache;
pub mod chat;
pub mod cli;
pub mod config;
pub mod embeddings;
pub mod error;
pub mod gateway;
pub mod governance;
pub mod ledger;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod pricing;
pub mod providers;
pub mod reload;
pub mod router;
pub mod server;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod tenancy;
pub mod tokens;
pub mod usage;
