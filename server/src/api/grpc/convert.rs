//! Proto ↔ domain conversions. Proto messages are destructured without `..`, so a new proto
//! field fails the build here until it is handled.

use prost_types::{ListValue, Struct, Timestamp, value::Kind};
use serde_json::{Map, Number, Value};

use ferryman_proto::v1 as pb;

use crate::admin::mcp::{AuthType, McpServerView, OAuth2View, Registration, Source, Transport};
use crate::chat::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, InputAudio,
    Message, Role, Stop, Tool, ToolCall, Usage,
};
use crate::error::GatewayError;
use crate::gateway::CallInfo;
use crate::pricing::{Nanos, format_usd};
use crate::store::SpendRecord;
use crate::tenancy::{KeyRecord, ObjectPermission};

pub fn struct_to_map(s: Struct) -> Map<String, Value> {
    s.fields.into_iter().map(|(k, v)| (k, value_to_json(v))).collect()
}

pub fn value_to_json(v: prost_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            // Whole numbers stay integers, so `max_tokens: 5` reads as 5, not 5.0.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::Number(Number::from(n as i64))
            } else {
                Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_map(s)),
    }
}

pub fn map_to_struct(m: &Map<String, Value>) -> Struct {
    Struct { fields: m.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() }
}

pub fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(json_to_value).collect() }),
        Value::Object(o) => Kind::StructValue(map_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

pub fn from_timestamp(field: &str, t: Timestamp) -> Result<chrono::DateTime<chrono::Utc>, GatewayError> {
    let Timestamp { seconds, nanos } = t;
    chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).unwrap_or(0))
        .ok_or_else(|| GatewayError::invalid(field, format!("{field}: timestamp out of range")))
}

fn role_from(field: &str, role: i32) -> Result<Role, GatewayError> {
    match pb::Role::try_from(role) {
        Ok(pb::Role::System) => Ok(Role::System),
        Ok(pb::Role::Developer) => Ok(Role::Developer),
        Ok(pb::Role::User) => Ok(Role::User),
        Ok(pb::Role::Assistant) => Ok(Role::Assistant),
        Ok(pb::Role::Tool) => Ok(Role::Tool),
        Ok(pb::Role::Unspecified) | Err(_) => Err(GatewayError::invalid(
            field,
            format!("{field}: set a role (system, developer, user, assistant or tool)"),
        )),
    }
}

fn role_to(role: Role) -> pb::Role {
    match role {
        Role::System => pb::Role::System,
        Role::Developer => pb::Role::Developer,
        Role::User => pb::Role::User,
        Role::Assistant => pb::Role::Assistant,
        Role::Tool => pb::Role::Tool,
    }
}

fn message_from(path: &str, m: pb::ChatMessage) -> Result<Message, GatewayError> {
    let pb::ChatMessage { role, content, name, tool_calls, tool_call_id, refusal } = m;
    let content = match content {
        None => None,
        Some(pb::chat_message::Content::Text(t)) => Some(Content::Text(t)),
        Some(pb::chat_message::Content::Parts(pb::ContentParts { parts })) => {
            let mut out = Vec::with_capacity(parts.len());
            for (i, p) in parts.into_iter().enumerate() {
                let pb::ContentPart { part } = p;
                out.push(match part {
                    Some(pb::content_part::Part::Text(text)) => ContentPart::Text { text },
                    Some(pb::content_part::Part::ImageUrl(pb::ImageUrl { url, detail })) => {
                        ContentPart::ImageUrl { image_url: ImageUrl { url, detail } }
                    }
                    Some(pb::content_part::Part::InputAudio(pb::InputAudio { data, format })) => {
                        ContentPart::InputAudio { input_audio: InputAudio { data, format } }
                    }
                    None => {
                        let f = format!("{path}.parts[{i}]");
                        return Err(GatewayError::invalid(f.clone(), format!("{f}: empty content part")));
                    }
                });
            }
            Some(Content::Parts(out))
        }
    };
    let tool_calls =
        if tool_calls.is_empty() { None } else { Some(tool_calls.into_iter().map(tool_call_from).collect()) };
    Ok(Message { role: role_from(&format!("{path}.role"), role)?, content, name, tool_calls, tool_call_id, refusal })
}

fn tool_call_from(c: pb::ToolCall) -> ToolCall {
    let pb::ToolCall { id, function } = c;
    let pb::FunctionCall { name, arguments } = function.unwrap_or_default();
    ToolCall { id, kind: "function".to_owned(), function: FunctionCall { name, arguments } }
}

fn tool_call_to(c: &ToolCall) -> pb::ToolCall {
    pb::ToolCall {
        id: c.id.clone(),
        function: Some(pb::FunctionCall { name: c.function.name.clone(), arguments: c.function.arguments.clone() }),
    }
}

/// The fields of `SamplingParams`, whose paths in errors are `params.sampling.<field>`.
const SAMPLING_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
];

/// A gRPC request → the gateway's request; the field paths in errors are the proto's.
pub fn chat_request(params: Option<pb::ChatCompletionParams>, stream: bool) -> Result<ChatRequest, GatewayError> {
    let params = params.ok_or_else(|| GatewayError::invalid("params", "params: required"))?;
    let pb::ChatCompletionParams {
        model,
        messages,
        sampling,
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        user,
        extra,
        tags,
    } = params;
    let messages = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message_from(&format!("params.messages[{i}]"), m))
        .collect::<Result<Vec<_>, _>>()?;
    let pb::SamplingParams {
        temperature,
        top_p,
        max_tokens,
        max_completion_tokens,
        n,
        stop,
        presence_penalty,
        frequency_penalty,
        seed,
    } = sampling.unwrap_or_default();
    let tools = if tools.is_empty() {
        None
    } else {
        let mut out = Vec::with_capacity(tools.len());
        for (i, t) in tools.into_iter().enumerate() {
            let pb::Tool { function } = t;
            let Some(pb::FunctionDefinition { name, description, parameters, strict }) = function else {
                let f = format!("params.tools[{i}].function");
                return Err(GatewayError::invalid(f.clone(), format!("{f}: required")));
            };
            out.push(Tool {
                kind: "function".to_owned(),
                function: FunctionDef {
                    name,
                    description,
                    parameters: parameters.map(|p| Value::Object(struct_to_map(p))),
                    strict,
                },
            });
        }
        Some(out)
    };
    let tool_choice = match tool_choice.and_then(|c| c.choice) {
        None => None,
        Some(pb::tool_choice::Choice::FunctionName(name)) => {
            Some(serde_json::json!({"type": "function", "function": {"name": name}}))
        }
        Some(pb::tool_choice::Choice::Mode(m)) => match pb::tool_choice::Mode::try_from(m) {
            Ok(pb::tool_choice::Mode::None) => Some(Value::String("none".to_owned())),
            Ok(pb::tool_choice::Mode::Auto) => Some(Value::String("auto".to_owned())),
            Ok(pb::tool_choice::Mode::Required) => Some(Value::String("required".to_owned())),
            Ok(pb::tool_choice::Mode::Unspecified) | Err(_) => None,
        },
    };
    let response_format = response_format.map(|pb::ResponseFormat { r#type, json_schema }| {
        let mut m = Map::new();
        m.insert("type".to_owned(), Value::String(r#type));
        if let Some(s) = json_schema {
            m.insert("json_schema".to_owned(), Value::Object(struct_to_map(s)));
        }
        Value::Object(m)
    });
    let request = ChatRequest {
        model,
        messages,
        stream,
        stream_options: None,
        temperature,
        top_p,
        max_tokens,
        max_completion_tokens,
        n,
        stop: if stop.is_empty() { None } else { Some(Stop::Many(stop)) },
        presence_penalty,
        frequency_penalty,
        seed,
        user,
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        extra: extra.map(struct_to_map).unwrap_or_default(),
        tags: Vec::new(),
        legacy_prompt: None,
    };
    let mut request = request;
    let tag_list = serde_json::Map::from_iter([("tags".to_owned(), Value::from(tags))]);
    request.tags = crate::governance::tags::from_request(&tag_list, None).map_err(|mut e| {
        e.param = e.param.map(|p| format!("params.{p}"));
        e
    })?;
    request.validate().map_err(|mut e| {
        if let Some(p) = &e.param {
            // The sampling knobs sit in their own message in the proto.
            let top = p.split(['.', '[']).next().unwrap_or_default();
            let field =
                if SAMPLING_FIELDS.contains(&top) { format!("params.sampling.{p}") } else { format!("params.{p}") };
            e.message = e.message.replacen(p.as_str(), &field, 1);
            e.param = Some(field);
        }
        e
    })?;
    Ok(request)
}

pub fn usage(u: &Usage) -> pb::Usage {
    pb::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
        cached_prompt_tokens: u.prompt_tokens_details.map(|d| d.cached_tokens),
        reasoning_tokens: u.completion_tokens_details.map(|d| d.reasoning_tokens),
    }
}

pub fn call_info(info: &CallInfo) -> pb::CallInfo {
    pb::CallInfo {
        call_id: info.call_id.clone(),
        deployment: info.deployment.clone(),
        cost_nanos: info.cost.0,
        cost_usd: format_usd(info.cost),
        overhead_ms: info.overhead.as_secs_f64() * 1000.0,
    }
}

pub fn chat_response(r: ChatResponse, info: &CallInfo) -> pb::CreateChatCompletionResponse {
    let ChatResponse { id, object: _, created, model, choices, usage: _, system_fingerprint } = r;
    pb::CreateChatCompletionResponse {
        id,
        created,
        model,
        choices: choices
            .into_iter()
            .map(|c| pb::Choice {
                index: c.index,
                message: Some(pb::ChatMessage {
                    role: role_to(c.message.role).into(),
                    content: c.message.content.map(pb::chat_message::Content::Text),
                    name: None,
                    tool_calls: c.message.tool_calls.iter().flatten().map(tool_call_to).collect(),
                    tool_call_id: None,
                    refusal: c.message.refusal,
                }),
                finish_reason: c.finish_reason.unwrap_or_default(),
            })
            .collect(),
        // The settled usage (the provider's, or the gateway's count when it reported none).
        usage: Some(usage(&info.usage)),
        system_fingerprint,
        call: Some(call_info(info)),
    }
}

pub fn chunk(c: ChatChunk) -> pb::StreamChatCompletionResponse {
    let ChatChunk { id, object: _, created, model, choices, usage: _, system_fingerprint: _ } = c;
    pb::StreamChatCompletionResponse {
        id,
        created,
        model,
        choices: choices
            .into_iter()
            .map(|c| pb::ChunkChoice {
                index: c.index,
                delta: Some(pb::ChatDelta {
                    role: c.delta.role.map(|r| role_to(r).into()),
                    content: c.delta.content,
                    tool_calls: c
                        .delta
                        .tool_calls
                        .into_iter()
                        .flatten()
                        .map(|t| pb::ToolCallDelta {
                            index: t.index,
                            id: t.id,
                            name: t.function.as_ref().and_then(|f| f.name.clone()),
                            arguments: t.function.and_then(|f| f.arguments),
                        })
                        .collect(),
                    refusal: c.delta.refusal,
                }),
                finish_reason: c.finish_reason,
            })
            .collect(),
        usage: None,
        call: None,
    }
}

pub fn key(k: &KeyRecord) -> pb::Key {
    pb::Key {
        key_id: k.key_id.clone(),
        key_alias: k.key_alias.clone(),
        key_name: k.key_name.clone(),
        models: k.models.clone(),
        max_budget_nanos: k.limits.max_budget.map(|n| n.0),
        spend_nanos: k.meta.spend.0,
        metadata: Some(map_to_struct(&k.metadata)),
        expire_time: k.expires_at.map(timestamp),
        blocked: k.blocked,
        user_id: k.user_id.clone(),
        team_id: k.team_id.clone(),
        create_time: Some(timestamp(k.meta.created_at)),
        organization_id: k.organization_id.clone(),
        etag: k.meta.version.to_string(),
        managed_by: k.managed_by.clone(),
        object_permission: Some(object_permission(&k.object_permission)),
    }
}

/// The settable fields of a proto key → key fields. Output-only fields are ignored, as AIP
/// asks.
pub fn new_key(
    k: pb::Key,
    duration: Option<String>,
) -> Result<(crate::admin::keys::KeyFields, crate::admin::fields::LimitsFields), GatewayError> {
    let pb::Key {
        key_id: _,
        key_alias,
        key_name: _,
        models,
        max_budget_nanos,
        spend_nanos: _,
        metadata,
        expire_time,
        blocked,
        user_id,
        team_id,
        create_time: _,
        organization_id,
        etag: _,
        managed_by: _,
        object_permission,
    } = k;
    if let Some(b) = max_budget_nanos
        && b < 0
    {
        return Err(GatewayError::invalid("key.max_budget_nanos", "key.max_budget_nanos: must not be negative"));
    }
    let fields = crate::admin::keys::KeyFields {
        key_alias: Some(key_alias),
        models: Some(models),
        metadata: metadata.map(struct_to_map),
        duration: duration.map(Some),
        expires: expire_time.map(|t| from_timestamp("key.expire_time", t)).transpose()?.map(Some),
        user_id: user_id.map(Some),
        team_id: team_id.map(Some),
        organization_id: organization_id.map(Some),
        blocked: blocked.then_some(true),
        // Given, it sets all three of its fields (each unset one: no restriction).
        object_permission: object_permission.map(|p| object_permission_from(p).into()),
        ..Default::default()
    };
    let limits = crate::admin::fields::LimitsFields {
        max_budget: max_budget_nanos.map(|n| Some(Nanos(n))),
        ..Default::default()
    };
    Ok((fields, limits))
}

pub fn spend_log(r: &SpendRecord) -> pb::SpendLog {
    pb::SpendLog {
        request_id: r.request_id.clone(),
        call_type: r.call_type.clone(),
        key_id: r.key_id.clone(),
        model: r.model.clone(),
        deployment: r.deployment.clone(),
        provider: r.provider.clone(),
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        total_tokens: r.total_tokens,
        spend_nanos: r.spend.0,
        status: r.status.as_str().to_owned(),
        start_time: Some(timestamp(r.start_time)),
        end_time: Some(timestamp(r.end_time)),
        duration_ms: r.duration_ms,
        end_user: r.end_user.clone(),
        error_code: r.error_code.clone(),
        metadata: r.metadata.as_ref().and_then(Value::as_object).map(map_to_struct),
    }
}

fn string_list(values: &[String]) -> pb::StringList {
    pb::StringList { values: values.to_vec() }
}

fn from_string_list(l: pb::StringList) -> Vec<String> {
    let pb::StringList { values } = l;
    values
}

/// A key's, team's or organization's `object_permission`: each field that is unset stays
/// unset (no restriction), each empty list stays empty (nothing).
pub fn object_permission(p: &ObjectPermission) -> pb::ObjectPermission {
    let ObjectPermission { mcp_servers, mcp_access_groups, mcp_tool_permissions } = p;
    pb::ObjectPermission {
        mcp_servers: mcp_servers.as_deref().map(string_list),
        mcp_access_groups: mcp_access_groups.as_deref().map(string_list),
        mcp_tool_permissions: mcp_tool_permissions.as_ref().map(|m| pb::McpToolPermissions {
            servers: m.iter().map(|(server, tools)| (server.clone(), string_list(tools))).collect(),
        }),
    }
}

pub fn object_permission_from(p: pb::ObjectPermission) -> ObjectPermission {
    let pb::ObjectPermission { mcp_servers, mcp_access_groups, mcp_tool_permissions } = p;
    ObjectPermission {
        mcp_servers: mcp_servers.map(from_string_list),
        mcp_access_groups: mcp_access_groups.map(from_string_list),
        mcp_tool_permissions: mcp_tool_permissions.map(|pb::McpToolPermissions { servers }| {
            servers.into_iter().map(|(server, tools)| (server, from_string_list(tools))).collect()
        }),
    }
}

/// An MCP server's view; it holds no credential to leave out.
pub fn mcp_server(v: McpServerView) -> pb::McpServer {
    let McpServerView {
        server_id: _,
        server_name,
        source,
        description,
        transport,
        url,
        command,
        args,
        env_keys,
        auth_type,
        oauth2,
        log_arguments,
        allowed_tools,
        disallowed_tools,
        access_groups,
        timeout,
        healthy,
        registration,
    } = v;
    let oauth2 =
        oauth2.map(|OAuth2View { token_url, client_id, scopes }| pb::McpOAuth2Client { token_url, client_id, scopes });
    let source = match source {
        Source::Config => pb::McpServerSource::Config,
        Source::Api => pb::McpServerSource::Api,
    };
    let transport = match transport {
        Transport::Http => pb::McpTransport::Http,
        Transport::Sse => pb::McpTransport::Sse,
        Transport::Stdio => pb::McpTransport::Stdio,
    };
    let auth_type = match auth_type {
        AuthType::None => pb::McpAuthType::None,
        AuthType::BearerToken => pb::McpAuthType::BearerToken,
        AuthType::ApiKey => pb::McpAuthType::ApiKey,
        AuthType::Basic => pb::McpAuthType::Basic,
        AuthType::Oauth2 => pb::McpAuthType::Oauth2,
        AuthType::Passthrough => pb::McpAuthType::Passthrough,
    };
    let (etag, created_by, create_time, update_time) = match registration {
        Some(Registration { created_by, created_at, updated_at, etag }) => {
            (etag.to_string(), created_by, Some(timestamp(created_at)), Some(timestamp(updated_at)))
        }
        None => (String::new(), None, None, None),
    };
    pb::McpServer {
        server_name,
        source: source.into(),
        description,
        transport: transport.into(),
        url,
        command,
        args: args.unwrap_or_default(),
        env_keys: env_keys.unwrap_or_default(),
        auth_type: auth_type.into(),
        oauth2,
        log_arguments,
        allowed_tools,
        disallowed_tools,
        access_groups,
        timeout: Some(prost_types::Duration {
            seconds: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(timeout.subsec_nanos()).unwrap_or(0),
        }),
        healthy,
        etag,
        created_by,
        create_time,
        update_time,
    }
}
