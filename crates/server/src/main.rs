//! `strata`: the broker profiles and the command-line tools (DESIGN §9).

mod cli;
mod http;
mod run;
mod settings;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Kafka-compatible streaming on local NVMe and object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Single-node broker: embedded metadata, local object store, no external service.
    Dev(DevArgs),
    /// Cluster broker: metadata, leases and offsets in etcd.
    Broker(BrokerArgs),
    /// Topic administration.
    Topic(cli::topic::TopicArgs),
    /// Consumer group inspection.
    Group(cli::group::GroupArgs),
    /// Transactions and producers.
    Txn(cli::txn::TxnArgs),
    /// Cluster operations (draining a broker).
    Cluster(ClusterArgs),
    /// Produce lines from stdin.
    Produce(cli::produce::ProduceArgs),
    /// Consume records to stdout.
    Consume(cli::consume::ConsumeArgs),
    /// Hot and cold segments of a topic (via a broker's HTTP port).
    Segments(cli::segments::SegmentsArgs),
    /// Load generator against any Kafka-compatible broker.
    Bench(cli::bench::BenchArgs),
    /// Check settings and print the effective ones (defaults < config file <
    /// STRATA_* < flags) as TOML; fails on unknown or invalid settings.
    Config(DevArgs),
}

#[derive(Args)]
struct DevArgs {
    /// Data directory (segments, metadata, local objects).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kafka listener HOST:PORT (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Address advertised to clients.
    #[arg(long)]
    advertise: Option<String>,
    /// HTTP listener HOST:PORT for /metrics, /healthz, /readyz.
    #[arg(long)]
    http: Option<String>,
    /// Object store URL (file:///abs/path, s3://bucket/prefix, memory://).
    #[arg(long)]
    object_store: Option<String>,
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Any setting as KEY=VALUE (repeatable), e.g. group_initial_rebalance_delay_ms=0.
    #[arg(long = "set", value_parser = cli::parse_kv)]
    set: Vec<(String, String)>,
}

#[derive(Args)]
struct ClusterArgs {
    #[command(subcommand)]
    cmd: ClusterCmd,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Move every replica (and leadership) off a broker.
    Drain {
        #[arg(long)]
        bootstrap: String,
        /// The broker id to drain.
        #[arg(long)]
        broker: i32,
        /// Wait until every move has completed.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
}

#[derive(Args)]
struct BrokerArgs {
    /// Broker id, unique in the cluster.
    #[arg(long)]
    id: i32,
    /// etcd endpoints, comma-separated (http://host:port,...); or `etcd` in
    /// the config file / STRATA_ETCD.
    #[arg(long)]
    etcd: Option<String>,
    /// Cluster name: the etcd prefix is /strata/<cluster>/.
    #[arg(long)]
    cluster: Option<String>,
    /// Broker-to-broker gRPC endpoint HOST:PORT.
    #[arg(long)]
    grpc: Option<String>,
    #[command(flatten)]
    common: DevArgs,
}

impl BrokerArgs {
    fn overrides(&self) -> Vec<(String, String)> {
        let mut o = vec![("node_id".to_string(), self.id.to_string())];
        if let Some(e) = &self.etcd {
            o.push(("etcd".into(), format!("{e:?}")));
        }
        if let Some(c) = &self.cluster {
            o.push(("cluster".into(), format!("{c:?}")));
        }
        if let Some(g) = &self.grpc {
            o.push(("grpc".into(), format!("{g:?}")));
        }
        o.extend(self.common.overrides());
        o
    }
}

impl DevArgs {
    fn overrides(&self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if let Some(d) = &self.data_dir {
            o.push(("data_dir".into(), d.display().to_string()));
        }
        for (k, v) in [
            ("listen", &self.listen),
            ("advertise", &self.advertise),
            ("http", &self.http),
            ("object_store", &self.object_store),
        ] {
            if let Some(v) = v {
                // Quote so TOML keeps it a string.
                o.push((k.into(), format!("{v:?}")));
            }
        }
        o.extend(self.set.iter().cloned());
        o
    }
}

/// Settings from defaults < `config` < `STRATA_*` environment < `overrides`.
fn load_settings(
    config: Option<&std::path::Path>,
    overrides: &[(String, String)],
) -> anyhow::Result<settings::Settings> {
    settings::Settings::load(config, std::env::vars(), overrides)
}

fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Dev(args) => {
                let mut s = load_settings(args.config.as_deref(), &args.overrides())?;
                s.profile_defaults(false);
                init_logging(&s.log);
                run::dev(s).await
            }
            Command::Broker(args) => {
                let mut s = load_settings(args.common.config.as_deref(), &args.overrides())?;
                s.profile_defaults(true);
                init_logging(&s.log);
                run::cluster(s).await
            }
            Command::Topic(a) => cli::topic::run(a).await,
            Command::Group(a) => cli::group::run(a).await,
            Command::Txn(a) => cli::txn::run(a).await,
            Command::Cluster(ClusterArgs {
                cmd:
                    ClusterCmd::Drain {
                        bootstrap,
                        broker,
                        wait,
                        timeout_secs,
                    },
            }) => {
                cli::reassign::drain(
                    &bootstrap,
                    broker,
                    wait,
                    std::time::Duration::from_secs(timeout_secs),
                )
                .await
            }
            Command::Produce(a) => cli::produce::run(a).await,
            Command::Consume(a) => cli::consume::run(a).await,
            Command::Segments(a) => cli::segments::run(a).await,
            Command::Bench(a) => cli::bench::run(a).await,
            Command::Config(args) => {
                let s = load_settings(args.config.as_deref(), &args.overrides())?;
                print!("{}", s.to_redacted_toml()?);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
