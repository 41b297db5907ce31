//! `ConfigService` over gRPC: the same reload as SIGHUP and `POST /config/reload`.

use tonic::{Request, Response, Status};

use ferryman_proto::v1 as pb;
use pb::config_service_server::ConfigService;

use super::services::Services;
use super::status::to_status;

#[tonic::async_trait]
impl ConfigService for Services {
    async fn reload_config(
        &self,
        req: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        ctx.who.require_admin("only proxy admins may reload the configuration").map_err(to_status)?;
        let pb::ReloadConfigRequest {} = req.into_inner();
        let done = crate::reload::reload(self.gateway.clone()).await.map_err(|e| to_status(e.into()))?;
        Ok(Response::new(pb::ReloadConfigResponse {
            changes: done.plan.lines,
            kept: done.plan.kept,
            model_count: i32::try_from(done.models).unwrap_or(i32::MAX),
            warnings: done.warnings.iter().map(ToString::to_string).collect(),
        }))
    }
}
