//! The `ferryman` binary: parses the command line and runs one command.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use tokio::net::TcpListener;

use ferryman_proto::v1 as pb;
use ferryman_server::cli::{AuditCommand, Cli, Command, ConfigCommand, KeysCommand, LogFormat, Remote};
use ferryman_server::config::{Config, ConfigError, DEV_MASTER_KEY, Loaded, ProcessEnv, redact_url};
use ferryman_server::pricing::Nanos;
use ferryman_server::{server, store};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRYMAN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Writes a line to stdout; the CLI's output, as opposed to its logs.
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(arg) => migrate(arg.config.as_deref()).await,
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Config(ConfigCommand::Diff { file }) => config_diff(&file).await,
        Command::Config(ConfigCommand::Apply { remote }) => config_apply(&remote).await,
        Command::Keys(cmd) => keys(cmd).await,
        Command::Audit(AuditCommand::Verify(arg)) => audit_verify(arg.config.as_deref()).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn report(err: &ConfigError) {
    for w in &err.warnings {
        tracing::warn!("config: {w}");
    }
    for p in &err.problems {
        tracing::error!("config: {p}");
    }
}

/// Loads the configuration (none: an empty one), logging warnings.
fn load_config(path: Option<&Path>) -> Result<Loaded, String> {
    let loaded = match path {
        Some(p) => Config::load(p, &ProcessEnv),
        None => Config::parse("", &ProcessEnv),
    };
    match loaded {
        Ok(l) => {
            for w in &l.warnings {
                tracing::warn!("config: {w}");
            }
            Ok(l)
        }
        Err(e) => {
            report(&e);
            Err(format!("the configuration has {} problem(s); nothing was started", e.problems.len()))
        }
    }
}

async fn serve(args: ferryman_server::cli::ServeArgs) -> Result<(), String> {
    let config = load_config(args.config.config.as_deref())?.config;
    match &config.general.master_key {
        None => tracing::warn!("no master key configured: management routes are closed"),
        Some(k) if k.expose() == DEV_MASTER_KEY => {
            tracing::warn!("using the development master key; set FERRYMAN_MASTER_KEY before exposing this gateway")
        }
        Some(_) => {}
    }
    let hangups = ferryman_server::reload::hangups();
    let gateway = server::build(config).await.map_err(|e| e.to_string())?;
    ferryman_server::reload::watch(gateway.clone(), hangups);
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(models = gateway.models().names().len(), "ferryman listening on {addr}");
    server::serve(gateway, listener, server::shutdown_signal()).await.map_err(|e| e.to_string())?;
    tracing::info!("ferryman stopped");
    Ok(())
}

async fn migrate(path: Option<&Path>) -> Result<(), String> {
    let config = load_config(path)?.config;
    let url = server::database_url(&config);
    let store = store::connect(&url).await.map_err(|e| format!("cannot open {}: {e}", redact_url(&url)))?;
    store.migrate().await.map_err(|e| format!("cannot migrate {}: {e}", redact_url(&url)))?;
    out(&format!("migrations applied to {}", redact_url(&url)));
    Ok(())
}

async fn audit_verify(path: Option<&Path>) -> Result<(), String> {
    let config = load_config(path)?.config;
    let url = server::database_url(&config);
    let store = store::connect(&url).await.map_err(|e| format!("cannot open {}: {e}", redact_url(&url)))?;
    match ferryman_server::audit::verify(store.as_ref()).await.map_err(|e| format!("cannot read the audit log: {e}"))? {
        ferryman_server::audit::Verdict::Intact { entries } => {
            out(&format!("audit log intact: {entries} entries verified"));
            Ok(())
        }
        ferryman_server::audit::Verdict::Broken { seq, entry_id, reason } => {
            let id = if entry_id.is_empty() { String::new() } else { format!(" (id {entry_id})") };
            out(&format!("audit log BROKEN at entry {seq}{id}: {reason}"));
            Err(format!("audit log verification failed at entry {seq}"))
        }
    }
}

fn config_check(file: &Path) -> Result<(), String> {
    match Config::load(file, &ProcessEnv) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                out(&format!("warning: {w}"));
            }
            let g = &loaded.config.governance;
            out(&format!(
                "{}: OK ({} deployment(s), {} organization(s), {} team(s), {} user(s), {} key(s), {} customer(s), \
                 {} budget(s), {} warning(s))",
                file.display(),
                loaded.config.deployments.len(),
                g.organizations.len(),
                g.teams.len(),
                g.users.len(),
                g.keys.len(),
                g.customers.len(),
                g.budgets.len(),
                loaded.warnings.len()
            ));
            Ok(())
        }
        Err(e) => {
            for w in &e.warnings {
                out(&format!("warning: {w}"));
            }
            for p in &e.problems {
                out(&format!("error: {p}"));
            }
            Err(format!("{}: {} problem(s)", file.display(), e.problems.len()))
        }
    }
}

/// Prints what applying `file` would change in the database it names.
async fn config_diff(file: &Path) -> Result<(), String> {
    let loaded = match Config::load(file, &ProcessEnv) {
        Ok(l) => l,
        Err(e) => {
            for p in &e.problems {
                out(&format!("error: {p}"));
            }
            return Err(format!("{}: {} problem(s)", file.display(), e.problems.len()));
        }
    };
    let config = loaded.config;
    if !config.governance.present {
        out(&format!(
            "{} declares no {}: governance as code is off for this file, and nothing would change",
            file.display(),
            ferryman_server::config::governance::SECTIONS.join(", ")
        ));
        return Ok(());
    }
    let url = server::database_url(&config);
    let store = store::connect(&url).await.map_err(|e| format!("cannot open {}: {e}", redact_url(&url)))?;
    let plan = ferryman_server::admin::reconcile::plan(
        store.as_ref(),
        &config.governance,
        config.general.config_prune,
        chrono::Utc::now(),
    )
    .await
    .map_err(|e| match e {
        ferryman_server::admin::reconcile::ReconcileError::Store(e) => format!(
            "cannot read the current state from {} (has `ferryman migrate` or `ferryman serve` run on it?): {e}",
            redact_url(&url)
        ),
        conflicts => format!("{} cannot be applied: {conflicts}", file.display()),
    })?;
    for line in plan.lines.iter().chain(&plan.kept) {
        out(line);
    }
    if plan.lines.is_empty() {
        out("no changes");
    }
    Ok(())
}

/// Asks a running gateway to reload its configuration (gRPC `ConfigService.ReloadConfig`).
async fn config_apply(remote: &Remote) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(remote.url.clone())
        .map_err(|e| format!("bad --url: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", remote.url))?;
    let req = authed(remote, pb::ReloadConfigRequest {})?;
    let done = pb::config_service_client::ConfigServiceClient::new(channel)
        .reload_config(req)
        .await
        .map_err(|s| format!("reload refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    for line in done.changes.iter().chain(&done.kept) {
        out(line);
    }
    if done.changes.is_empty() {
        out("no changes");
    }
    out(&format!("reloaded: {} model name(s)", done.model_count));
    Ok(())
}

async fn client(
    remote: &Remote,
) -> Result<pb::key_service_client::KeyServiceClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(remote.url.clone())
        .map_err(|e| format!("bad --url: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", remote.url))?;
    Ok(pb::key_service_client::KeyServiceClient::new(channel))
}

fn authed<T>(remote: &Remote, msg: T) -> Result<tonic::Request<T>, String> {
    let mut req = tonic::Request::new(msg);
    let value = format!("Bearer {}", remote.master_key)
        .parse()
        .map_err(|_| "the master key is not a valid header value".to_owned())?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

fn key_json(k: &pb::Key) -> serde_json::Value {
    json!({
        "key_id": k.key_id,
        "key_alias": k.key_alias,
        "key_name": k.key_name,
        "models": k.models,
        "max_budget_usd": k.max_budget_nanos.map(|n| Nanos(n).to_string()),
        "spend_usd": Nanos(k.spend_nanos).to_string(),
        "blocked": k.blocked,
        "expire_time": k.expire_time.as_ref().map(|t| t.to_string()),
    })
}

async fn keys(cmd: KeysCommand) -> Result<(), String> {
    let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    match cmd {
        KeysCommand::Create { remote, alias, models, max_budget, duration } => {
            let max_budget_nanos = match max_budget {
                Some(text) => Some(
                    Nanos::parse_usd(&text).ok_or_else(|| format!("--max-budget: {text:?} is not a USD amount"))?.0,
                ),
                None => None,
            };
            let key = pb::Key { key_alias: alias, models, max_budget_nanos, ..Default::default() };
            let req = authed(&remote, pb::CreateKeyRequest { key: Some(key), duration })?;
            let resp = client(&remote).await?.create_key(req).await.map_err(status)?.into_inner();
            let mut v = resp.key.as_ref().map(key_json).unwrap_or_default();
            v["secret"] = json!(resp.secret);
            out(&serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        KeysCommand::List { remote } => {
            let mut c = client(&remote).await?;
            let mut token = String::new();
            let mut all = Vec::new();
            loop {
                let req = authed(&remote, pb::ListKeysRequest { page_size: 500, page_token: token.clone() })?;
                let page = c.list_keys(req).await.map_err(status)?.into_inner();
                all.extend(page.keys.iter().map(key_json));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            out(&serde_json::to_string_pretty(&all).unwrap_or_default());
        }
        KeysCommand::Delete { remote, key_id } => {
            let req = authed(&remote, pb::DeleteKeyRequest { key_id: key_id.clone() })?;
            client(&remote).await?.delete_key(req).await.map_err(status)?;
            out(&format!("deleted key {key_id}"));
        }
    }
    Ok(())
}
