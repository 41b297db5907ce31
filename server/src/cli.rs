//! The command line: only the definitions. `main.rs` runs them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "ferryman", version, about = "Ferryman: an LLM governance gateway")]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "FERRYMAN_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve gRPC, gRPC-web and the OpenAI / LiteLLM HTTP routes on one port.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(ConfigArg),
    /// Manage virtual keys on a running gateway (over gRPC, with the master key).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the audit log's hash chain in the database; exit non-zero naming the first
    /// entry that was changed, removed or reordered.
    Verify(ConfigArg),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address to listen on.
    #[arg(long, env = "FERRYMAN_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "FERRYMAN_PORT", default_value_t = 4000)]
    pub port: u16,
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// A LiteLLM-style config.yaml.
    #[arg(long, short, env = "FERRYMAN_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct Remote {
    /// The gateway's URL.
    #[arg(long, env = "FERRYMAN_URL", default_value = "http://127.0.0.1:4000")]
    pub url: String,
    /// The master key.
    #[arg(long, env = "FERRYMAN_MASTER_KEY", hide_env_values = true)]
    pub master_key: String,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Mint a key; its secret is printed once.
    Create {
        #[command(flatten)]
        remote: Remote,
        /// A name for the key.
        #[arg(long)]
        alias: Option<String>,
        /// Models the key may call (repeat or comma-separate); none means all.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Budget in USD, e.g. 10 or 0.5.
        #[arg(long)]
        max_budget: Option<String>,
        /// Lifetime, e.g. 30d, 12h.
        #[arg(long)]
        duration: Option<String>,
    },
    /// List keys (masked).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a key by id.
    Delete {
        #[command(flatten)]
        remote: Remote,
        key_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file: print every problem and warning, exit non-zero on problems.
    Check { file: PathBuf },
    /// Show what applying a config file would change in its database (organizations, teams,
    /// users, keys, customers, budgets), without changing anything.
    Diff { file: PathBuf },
    /// Make a running gateway read its config file again and apply it, as SIGHUP does; prints
    /// what changed.
    Apply {
        #[command(flatten)]
        remote: Remote,
    },
}
