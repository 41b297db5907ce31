//! The gRPC services: inference, keys and spend. Each method authenticates from metadata,
//! converts, and calls the same gateway and admin code as the HTTP shim.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use ferryman_proto::v1 as pb;
use pb::inference_service_server::InferenceService;
use pb::key_service_server::KeyService;
use pb::spend_service_server::SpendService;

use super::convert;
use super::status::{presented_secret, to_status};
use super::tenancy::key_pb;
use crate::admin::{Ctx, keys};
use crate::gateway::{Gateway, StreamEvent};
use crate::governance::Caller;
use crate::pricing::format_usd;
use crate::store::{PageRequest, SpendQuery};

/// The gRPC surface over one gateway.
#[derive(Clone)]
pub struct Services {
    pub gateway: Arc<Gateway>,
}

impl Services {
    pub(super) async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.gateway.authenticate(presented_secret(req.metadata())).await.map_err(to_status)
    }

    /// A management call's context: the caller's role and scopes, and its address.
    pub(super) async fn ctx<T>(&self, req: &Request<T>) -> Result<Ctx<'_>, Status> {
        let caller = self.caller(req).await?;
        Ctx::new(&self.gateway, &caller, req.remote_addr().map(|a| a.to_string())).await.map_err(to_status)
    }
}

pub(super) fn page_size(n: i32) -> Result<u32, Status> {
    u32::try_from(n)
        .map_err(|_| to_status(crate::error::GatewayError::invalid("page_size", "page_size: must not be negative")))
}

pub(super) fn token(t: String) -> Option<String> {
    if t.is_empty() { None } else { Some(t) }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::StreamChatCompletionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl InferenceService for Services {
    async fn create_chat_completion(
        &self,
        req: Request<pb::CreateChatCompletionRequest>,
    ) -> Result<Response<pb::CreateChatCompletionResponse>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let request = convert::chat_request(req.into_inner().params, false).map_err(to_status)?;
        let (response, info) = self.gateway.chat(&caller, request, started).await.map_err(to_status)?;
        let mut resp = Response::new(convert::chat_response(response, &info));
        let md = resp.metadata_mut();
        for (name, value) in [
            ("x-ferryman-response-cost", format_usd(info.cost)),
            ("x-ferryman-call-id", info.call_id.clone()),
            ("x-ferryman-model-id", info.deployment.clone()),
        ] {
            if let Ok(v) = MetadataValue::try_from(value.as_str()) {
                md.insert(name, v);
            }
        }
        Ok(resp)
    }

    type StreamChatCompletionStream = ChunkStream;

    async fn stream_chat_completion(
        &self,
        req: Request<pb::StreamChatCompletionRequest>,
    ) -> Result<Response<Self::StreamChatCompletionStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let request = convert::chat_request(req.into_inner().params, true).map_err(to_status)?;
        let governed = self.gateway.chat_stream(&caller, request, started).await.map_err(to_status)?;
        // The last message repeats the stream's id, created and model, with usage and cost.
        let mut last = (String::new(), 0i64, String::new());
        let out = governed.filter_map(move |event| {
            let item = match event {
                Ok(StreamEvent::Chunk(chunk)) => {
                    last = (chunk.id.clone(), chunk.created, chunk.model.clone());
                    if chunk.choices.is_empty() {
                        None // usage-only chunk: its figures go out in the final message
                    } else {
                        Some(Ok(convert::chunk(chunk)))
                    }
                }
                Ok(StreamEvent::Done(info)) => Some(Ok(pb::StreamChatCompletionResponse {
                    id: last.0.clone(),
                    created: last.1,
                    model: last.2.clone(),
                    choices: vec![],
                    usage: Some(convert::usage(&info.usage)),
                    call: Some(convert::call_info(&info)),
                })),
                Err(e) => Some(Err(to_status(e))),
            };
            std::future::ready(item)
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn create_embeddings(
        &self,
        req: Request<pb::CreateEmbeddingsRequest>,
    ) -> Result<Response<pb::CreateEmbeddingsResponse>, Status> {
        self.embeddings(req).await
    }

    async fn list_models(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let caller = self.caller(&req).await?;
        Ok(Response::new(pb::ListModelsResponse { models: self.models_for(&caller) }))
    }

    async fn get_model(&self, req: Request<pb::GetModelRequest>) -> Result<Response<pb::GetModelResponse>, Status> {
        let caller = self.caller(&req).await?;
        let id = req.into_inner().id;
        match self.models_for(&caller).into_iter().find(|m| m.id == id) {
            Some(model) => Ok(Response::new(pb::GetModelResponse { model: Some(model) })),
            None => Err(to_status(
                crate::error::GatewayError::not_found(format!("model {id:?} does not exist or you may not use it"))
                    .with_param("id"),
            )),
        }
    }
}

impl Services {
    async fn embeddings(
        &self,
        req: Request<pb::CreateEmbeddingsRequest>,
    ) -> Result<Response<pb::CreateEmbeddingsResponse>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let r = req.into_inner();
        let mut body = serde_json::Map::new();
        body.insert("model".into(), r.model.into());
        body.insert("input".into(), r.input.into());
        if let Some(d) = r.dimensions {
            body.insert("dimensions".into(), d.into());
        }
        if let Some(u) = r.user {
            body.insert("user".into(), u.into());
        }
        if !r.tags.is_empty() {
            body.insert("tags".into(), r.tags.into());
        }
        let request = crate::embeddings::EmbeddingRequest::from_json_object(body).map_err(to_status)?;
        let (v, info) = self.gateway.embeddings(&caller, request, started).await.map_err(to_status)?;
        let data = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, d)| pb::Embedding {
                index: d["index"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(u32::try_from(i).unwrap_or(0)),
                vector: d["embedding"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_f64).collect(),
            })
            .collect();
        Ok(Response::new(pb::CreateEmbeddingsResponse {
            model: v["model"].as_str().unwrap_or_default().to_owned(),
            data,
            usage: Some(convert::usage(&info.usage)),
            call: Some(convert::call_info(&info)),
        }))
    }

    /// The model names the caller may use.
    fn models_for(&self, caller: &Caller) -> Vec<pb::Model> {
        let models = self.gateway.models();
        let groups = models.access_groups();
        models
            .names()
            .iter()
            .filter(|name| {
                crate::governance::admit(caller, &crate::governance::access::Target::listed(name), groups).is_ok()
            })
            .map(|name| pb::Model { id: name.clone(), owned_by: "ferryman".to_owned() })
            .collect()
    }
}

#[tonic::async_trait]
impl KeyService for Services {
    async fn create_key(&self, req: Request<pb::CreateKeyRequest>) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::CreateKeyRequest { key, duration } = req.into_inner();
        let (fields, limits) = convert::new_key(key.unwrap_or_default(), duration).map_err(to_status)?;
        let (record, secret) = keys::create(&ctx, fields, limits).await.map_err(to_status)?;
        Ok(Response::new(pb::CreateKeyResponse { key: Some(key_pb(&record)), secret }))
    }

    async fn get_key(&self, req: Request<pb::GetKeyRequest>) -> Result<Response<pb::GetKeyResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let record = keys::get(&ctx, &req.into_inner().key_id).await.map_err(to_status)?;
        Ok(Response::new(pb::GetKeyResponse { key: Some(key_pb(&record)) }))
    }

    async fn list_keys(&self, req: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::ListKeysRequest { page_size: size, page_token } = req.into_inner();
        let page = PageRequest::new(page_size(size)?, token(page_token));
        let page = keys::list(&ctx, Default::default(), &page).await.map_err(to_status)?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: page.items.iter().map(key_pb).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn delete_key(&self, req: Request<pb::DeleteKeyRequest>) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        keys::delete(&ctx, &[req.into_inner().key_id]).await.map_err(to_status)?;
        Ok(Response::new(pb::DeleteKeyResponse {}))
    }

    async fn update_key(&self, req: Request<pb::UpdateKeyRequest>) -> Result<Response<pb::UpdateKeyResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::UpdateKeyRequest { key, update_mask } = req.into_inner();
        let key = key.unwrap_or_default();
        let id = key.key_id.clone();
        let (fields, limits) = super::tenancy::key_update(key, update_mask).map_err(to_status)?;
        let record = keys::update(&ctx, &id, fields, limits).await.map_err(to_status)?;
        Ok(Response::new(pb::UpdateKeyResponse { key: Some(key_pb(&record)) }))
    }

    async fn regenerate_key(
        &self,
        req: Request<pb::RegenerateKeyRequest>,
    ) -> Result<Response<pb::RegenerateKeyResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let pb::RegenerateKeyRequest { key_id, grace_period } = req.into_inner();
        let (record, secret) = keys::regenerate(&ctx, &key_id, None, grace_period).await.map_err(to_status)?;
        Ok(Response::new(pb::RegenerateKeyResponse { key: Some(key_pb(&record)), secret }))
    }

    async fn block_key(&self, req: Request<pb::BlockKeyRequest>) -> Result<Response<pb::BlockKeyResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let record = keys::set_blocked(&ctx, &req.into_inner().key_id, true).await.map_err(to_status)?;
        Ok(Response::new(pb::BlockKeyResponse { key: Some(key_pb(&record)) }))
    }

    async fn unblock_key(
        &self,
        req: Request<pb::UnblockKeyRequest>,
    ) -> Result<Response<pb::UnblockKeyResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        let record = keys::set_blocked(&ctx, &req.into_inner().key_id, false).await.map_err(to_status)?;
        Ok(Response::new(pb::UnblockKeyResponse { key: Some(key_pb(&record)) }))
    }
}

#[tonic::async_trait]
impl SpendService for Services {
    async fn list_spend_logs(
        &self,
        req: Request<pb::ListSpendLogsRequest>,
    ) -> Result<Response<pb::ListSpendLogsResponse>, Status> {
        let ctx = self.ctx(&req).await?;
        ctx.who.require_read_all("only proxy admins and viewers may list spend logs over gRPC").map_err(to_status)?;
        let pb::ListSpendLogsRequest {
            page_size: size,
            page_token,
            key_id,
            request_id,
            end_user,
            start_time,
            end_time,
        } = req.into_inner();
        let query = SpendQuery {
            key_id,
            user_id: None,
            team_id: None,
            request_id,
            end_user,
            start: start_time.map(|t| convert::from_timestamp("start_time", t)).transpose().map_err(to_status)?,
            end: end_time.map(|t| convert::from_timestamp("end_time", t)).transpose().map_err(to_status)?,
        };
        let page = PageRequest::new(page_size(size)?, token(page_token));
        let page = self.gateway.store.list_spend(&query, &page).await.map_err(|e| to_status(e.into()))?;
        Ok(Response::new(pb::ListSpendLogsResponse {
            spend_logs: page.items.iter().map(convert::spend_log).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }
}
