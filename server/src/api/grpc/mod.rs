//! The gRPC surface: Ferryman's services, `grpc.health.v1` and reflection, as one axum router
//! that also answers gRPC-web (tonic-web).

mod config;
mod convert;
mod decode;
mod mcp;
mod services;
mod status;
mod tenancy;
mod usage;

use std::sync::Arc;

use ferryman_proto::v1::audit_service_server::AuditServiceServer;
use ferryman_proto::v1::budget_service_server::BudgetServiceServer;
use ferryman_proto::v1::config_service_server::ConfigServiceServer;
use ferryman_proto::v1::customer_service_server::CustomerServiceServer;
use ferryman_proto::v1::inference_service_server::InferenceServiceServer;
use ferryman_proto::v1::key_service_server::KeyServiceServer;
use ferryman_proto::v1::mcp_server_service_server::McpServerServiceServer;
use ferryman_proto::v1::organization_service_server::OrganizationServiceServer;
use ferryman_proto::v1::spend_service_server::SpendServiceServer;
use ferryman_proto::v1::team_service_server::TeamServiceServer;
use ferryman_proto::v1::usage_service_server::UsageServiceServer;
use ferryman_proto::v1::user_service_server::UserServiceServer;
use tonic::service::Routes;

pub use services::Services;
pub use status::to_status;

use crate::gateway::Gateway;

/// Every gRPC service, ready to merge into the HTTP router.
pub async fn routes(gateway: Arc<Gateway>) -> Result<axum::Router, tonic_reflection::server::Error> {
    let max_message = gateway.config.general.max_request_size_bytes;
    let services = Services { gateway };

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<InferenceServiceServer<Services>>().await;
    health_reporter.set_serving::<KeyServiceServer<Services>>().await;
    health_reporter.set_serving::<SpendServiceServer<Services>>().await;
    health_reporter.set_serving::<OrganizationServiceServer<Services>>().await;
    health_reporter.set_serving::<TeamServiceServer<Services>>().await;
    health_reporter.set_serving::<UserServiceServer<Services>>().await;
    health_reporter.set_serving::<CustomerServiceServer<Services>>().await;
    health_reporter.set_serving::<BudgetServiceServer<Services>>().await;
    health_reporter.set_serving::<AuditServiceServer<Services>>().await;
    health_reporter.set_serving::<UsageServiceServer<Services>>().await;
    health_reporter.set_serving::<ConfigServiceServer<Services>>().await;
    health_reporter.set_serving::<McpServerServiceServer<Services>>().await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferryman_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ferryman_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let routes = Routes::new(InferenceServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(KeyServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(SpendServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(OrganizationServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(TeamServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(UserServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(CustomerServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(BudgetServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(AuditServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(UsageServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(ConfigServiceServer::new(services.clone()).max_decoding_message_size(max_message))
        .add_service(McpServerServiceServer::new(services).max_decoding_message_size(max_message))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // Around every service, inside gRPC-web's translation: a request tonic cannot decode is
    // answered INVALID_ARGUMENT, not INTERNAL (see `decode`).
    Ok(routes.into_axum_router().layer(axum::middleware::map_response_with_state(max_message, decode::decode_errors)))
}
