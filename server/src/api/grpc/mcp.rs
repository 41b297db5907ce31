//! `McpServerService` over gRPC: the same registration, checks, audit and hub refresh as
//! `/v1/mcp/server` ([`crate::admin::mcp`]). Settings travel as a `Struct` in config.yaml's
//! shape, so the one config reader checks both surfaces; a bad setting's field is
//! `settings.<key>`.

use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use ferryman_proto::v1 as pb;
use pb::mcp_server_service_server::McpServerService;

use super::convert::{mcp_server, struct_to_map};
use super::services::{Services, page_size, token};
use super::status::to_status;
use crate::admin::mcp;
use crate::error::{ErrorCode, GatewayError};
use crate::store::PageRequest;

/// A settings problem names the request's field: `settings.<key>` (the server's name is its
/// own field).
fn in_settings(mut e: GatewayError) -> Status {
    if e.code == ErrorCode::InvalidArgument
        && let Some(p) = &e.param
        && p != "server_name"
    {
        e.param = Some(format!("settings.{p}"));
    }
    to_status(e)
}

/// An update's changes: each masked setting takes its value in `settings`, or is removed
/// when `settings` leaves it out.
fn changes(
    settings: Map<String, Value>,
    mask: Option<prost_types::FieldMask>,
) -> Result<Map<String, Value>, GatewayError> {
    let paths = mask.map(|prost_types::FieldMask { paths }| paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(GatewayError::invalid("update_mask", "update_mask: name the settings to change"));
    }
    let mut out = Map::new();
    for p in paths {
        if !crate::config::mcp::keys().contains(&p.as_str()) {
            return Err(GatewayError::invalid(
                "update_mask",
                format!("update_mask: {p:?} is not an MCP server setting"),
            ));
        }
        let v = settings.get(&p).cloned().unwrap_or(Value::Null);
        out.insert(p, v);
    }
    Ok(out)
}

fn etag(e: &str) -> Result<Option<i64>, GatewayError> {
    if e.is_empty() {
        return Ok(None);
    }
    e.parse().map(Some).map_err(|_| GatewayError::invalid("etag", "etag: not an etag this gateway issued"))
}

#[tonic::async_trait]
impl McpServerService for Services {
    async fn list_mcp_servers(
        &self,
        req: Request<pb::ListMcpServersRequest>,
    ) -> Result<Response<pb::ListMcpServersResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::ListMcpServersRequest { page_size: size, page_token } = req.into_inner();
        let page = PageRequest::new(page_size(size)?, token(page_token));
        let mut all = mcp::list(&ctx).await.map_err(to_status)?;
        all.sort_by(|a, b| a.server_name.cmp(&b.server_name));
        // The token is the last name a page held: the next page starts after it.
        let size = usize::try_from(page.effective_size()).unwrap_or(usize::MAX);
        let mut items: Vec<_> = all
            .into_iter()
            .filter(|v| page.token.as_deref().is_none_or(|after| v.server_name.as_str() > after))
            .take(size.saturating_add(1))
            .collect();
        let more = items.len() > size;
        items.truncate(size);
        let next_page_token =
            if more { items.last().map(|v| v.server_name.clone()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListMcpServersResponse {
            mcp_servers: items.into_iter().map(mcp_server).collect(),
            next_page_token,
        }))
    }

    async fn get_mcp_server(
        &self,
        req: Request<pb::GetMcpServerRequest>,
    ) -> Result<Response<pb::GetMcpServerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::GetMcpServerRequest { server_name } = req.into_inner();
        let view = mcp::get(&ctx, &server_name).await.map_err(to_status)?;
        Ok(Response::new(pb::GetMcpServerResponse { mcp_server: Some(mcp_server(view)) }))
    }

    async fn create_mcp_server(
        &self,
        req: Request<pb::CreateMcpServerRequest>,
    ) -> Result<Response<pb::CreateMcpServerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::CreateMcpServerRequest { server_name, settings } = req.into_inner();
        let settings = settings.map(struct_to_map).unwrap_or_default();
        let view = mcp::create(&ctx, &server_name, settings).await.map_err(in_settings)?;
        Ok(Response::new(pb::CreateMcpServerResponse { mcp_server: Some(mcp_server(view)) }))
    }

    async fn update_mcp_server(
        &self,
        req: Request<pb::UpdateMcpServerRequest>,
    ) -> Result<Response<pb::UpdateMcpServerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::UpdateMcpServerRequest { server_name, settings, update_mask, etag: e } = req.into_inner();
        let changes = changes(settings.map(struct_to_map).unwrap_or_default(), update_mask).map_err(to_status)?;
        let etag = etag(&e).map_err(to_status)?;
        let view = mcp::update(&ctx, &server_name, changes, etag).await.map_err(in_settings)?;
        Ok(Response::new(pb::UpdateMcpServerResponse { mcp_server: Some(mcp_server(view)) }))
    }

    async fn delete_mcp_server(
        &self,
        req: Request<pb::DeleteMcpServerRequest>,
    ) -> Result<Response<pb::DeleteMcpServerResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::DeleteMcpServerRequest { server_name } = req.into_inner();
        mcp::delete(&ctx, &server_name).await.map_err(to_status)?;
        Ok(Response::new(pb::DeleteMcpServerResponse {}))
    }
}
