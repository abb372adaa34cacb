//! The rampart command line: nutcracker's flags, plus rampart's own.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rampart::observe::stats::{PoolStat, ServerStat};
use rampart::server::{self, Options};

/// A highly-available, sharding Redis proxy; reads twemproxy's nutcracker.yml.
#[derive(Parser, Debug)]
#[command(name = "rampart", version, about)]
struct Cli {
    /// Configuration file (nutcracker.yml format).
    #[arg(short = 'c', long = "conf-file", default_value = "conf/nutcracker.yml")]
    conf_file: PathBuf,
    /// Check the configuration file for errors and exit (0: valid, 1: invalid).
    #[arg(short = 't', long = "test-conf")]
    test_conf: bool,
    /// Run in the background (detached from the terminal).
    #[arg(short = 'd', long = "daemonize")]
    daemonize: bool,
    /// Print the statistics rampart keeps and exit.
    #[arg(short = 'D', long = "describe-stats")]
    describe_stats: bool,
    /// Log level, nutcracker's scale: 0-3 errors, 4 warnings, 5-6 notices, 7-8 debug, 9+ trace.
    #[arg(short = 'v', long = "verbose", default_value_t = 5)]
    verbose: u8,
    /// Log file (default: stderr).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Stats port (twemproxy JSON).
    #[arg(short = 's', long = "stats-port", default_value_t = 22222)]
    stats_port: u16,
    /// Stats listen address.
    #[arg(short = 'a', long = "stats-addr", default_value = "0.0.0.0")]
    stats_addr: String,
    /// Stats aggregation interval in msec (accepted for compatibility; stats are always current).
    #[arg(short = 'i', long = "stats-interval", default_value_t = 30000)]
    stats_interval: u64,
    /// Write the process id to this file.
    #[arg(short = 'p', long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Mbuf chunk size (accepted for compatibility; rampart sizes buffers itself).
    #[arg(short = 'm', long = "mbuf-size")]
    mbuf_size: Option<usize>,
    /// Worker threads (default: one per core).
    #[arg(long = "workers")]
    workers: Option<usize>,
    /// Disable the stats listener.
    #[arg(long = "no-stats")]
    no_stats: bool,
    /// Admin HTTP interface (Prometheus /metrics, /stats, /readyz, JSON API, live page at /)
    /// [default: 127.0.0.1:22223, loopback only]. An address reachable from other machines
    /// needs a token (--admin-token-file). When the default address is taken, rampart starts
    /// without it.
    #[arg(long = "admin", value_name = "ADDR")]
    admin: Option<String>,
    /// Disable the admin HTTP interface.
    #[arg(long = "no-admin", conflicts_with = "admin")]
    no_admin: bool,
    /// Bearer token the admin interface requires for changes (POST, DELETE); required when
    /// --admin is not a loopback address. Visible in `ps`: prefer --admin-token-file. Also
    /// read from RAMPART_ADMIN_TOKEN when no other token option is given.
    #[arg(long = "admin-token", value_name = "TOKEN", conflicts_with_all = ["admin_token_file", "admin_token_env"])]
    admin_token: Option<String>,
    /// File holding the admin token (surrounding white space ignored), read again on every
    /// reload (SIGHUP, POST /api/reload): rotate the token by rewriting the file and
    /// reloading.
    #[arg(
        long = "admin-token-file",
        value_name = "FILE",
        conflicts_with = "admin_token_env"
    )]
    admin_token_file: Option<PathBuf>,
    /// Environment variable holding the admin token (read once at start).
    #[arg(long = "admin-token-env", value_name = "VAR")]
    admin_token_env: Option<String>,
    /// Another name the admin interface answers to in Host and Origin (repeatable): NAME for
    /// any port, or NAME:PORT (a reverse proxy's name, an ssh tunnel's local port).
    #[arg(long = "admin-host", value_name = "NAME")]
    admin_host: Vec<String>,
    /// Serve the admin interface over HTTPS with this certificate chain (PEM; needs
    /// --admin-tls-key). Read again after every configuration reload.
    #[arg(
        long = "admin-tls-cert",
        value_name = "FILE",
        requires = "admin_tls_key"
    )]
    admin_tls_cert: Option<PathBuf>,
    /// The private key of --admin-tls-cert (PEM).
    #[arg(
        long = "admin-tls-key",
        value_name = "FILE",
        requires = "admin_tls_cert"
    )]
    admin_tls_key: Option<PathBuf>,
    /// Log lines as text or as JSON objects (one per line).
    #[arg(long = "log-format", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// SLOWLOG threshold in microseconds (negative disables, 0 logs every request).
    #[arg(
        long = "slowlog-slower-than",
        default_value_t = 10_000,
        allow_negative_numbers = true
    )]
    slowlog_slower_than: i64,
    /// Entries SLOWLOG keeps.
    #[arg(long = "slowlog-max-len", default_value_t = 128)]
    slowlog_max_len: usize,
    /// How long SIGTERM/SIGINT waits for in-flight requests before exiting, in msec.
    #[arg(long = "drain-timeout", default_value_t = 5000)]
    drain_timeout: u64,
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the log subscriber: `-v` (or `RAMPART_LOG`) picks the filter, which SIGTTIN and
/// SIGTTOU can change later; colours only when writing to a terminal.
fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let level = match cli.verbose {
        0..=3 => LevelFilter::ERROR,
        4 => LevelFilter::WARN,
        5..=6 => LevelFilter::INFO,
        7..=8 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAMPART_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::default().add_directive(level.into()));
    let initial = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    rampart::logfile::install_level_control(handle, initial);
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer();
    let json = cli.log_format == LogFormat::Json;
    match &cli.output {
        Some(path) => {
            let file = rampart::logfile::open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let make = move || file.clone();
            if json {
                registry.with(layer.json().with_writer(make)).init();
            } else {
                registry
                    .with(layer.with_ansi(false).with_writer(make))
                    .init();
            }
        }
        None if json => registry
            .with(layer.json().with_writer(std::io::stderr))
            .init(),
        None => {
            let ansi = std::io::stderr().is_terminal();
            registry
                .with(layer.with_ansi(ansi).with_writer(std::io::stderr))
                .init();
        }
    }
    Ok(())
}

fn describe_stats() {
    println!("pool stats:");
    for s in PoolStat::ALL {
        println!("  {:<24}\"{}\"", s.key(), s.describe());
    }
    println!("\nserver stats:");
    for s in ServerStat::ALL {
        println!("  {:<24}\"{}\"", s.key(), s.describe());
        if *s == ServerStat::ServerConnections {
            // A timestamp kept with each node rather than a per-worker cell.
            println!(
                "  {:<24}\"timestamp of the last ejection (unix µs)\"",
                "server_ejected_at"
            );
        }
    }
}

/// Start a detached copy of this process without `-d` and let the caller return.
fn daemonize() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "-d" && a != "--daemonize")
        .collect();
    std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the background process")?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.describe_stats {
        describe_stats();
        return ExitCode::SUCCESS;
    }
    if cli.test_conf {
        let loaded = rampart_config::load(&cli.conf_file);
        // The certificates and keys the file names are read as at start.
        if let Ok(config) = &loaded {
            for pool in &config.pools {
                if let Err(e) = rampart::tls::PoolTls::load(pool) {
                    eprintln!(
                        "rampart: configuration file '{}' syntax is invalid\n{e}",
                        cli.conf_file.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        return match loaded {
            Ok(config) => {
                // Keys the pool's kind accepts but ignores: the file is valid, and says so.
                for w in config.pools.iter().flat_map(|p| &p.warnings) {
                    eprintln!("rampart: warning: {w}");
                }
                eprintln!(
                    "rampart: configuration file '{}' syntax is ok",
                    cli.conf_file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) if e.is_invalid_content() => {
                eprintln!(
                    "rampart: configuration file '{}' syntax is invalid\n{e}",
                    cli.conf_file.display()
                );
                ExitCode::FAILURE
            }
            // Missing, unreadable or not text: the error says which, with the path.
            Err(e) => {
                eprintln!("rampart: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.daemonize {
        return match daemonize() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rampart: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the admin token comes from: the option given, else `RAMPART_ADMIN_TOKEN` when set.
fn admin_token(cli: &Cli) -> Option<rampart::admin::token::Source> {
    use rampart::admin::token::Source;
    if let Some(f) = &cli.admin_token_file {
        return Some(Source::File(f.clone()));
    }
    if let Some(v) = &cli.admin_token_env {
        return Some(Source::Env(v.clone()));
    }
    if let Some(t) = &cli.admin_token {
        return Some(Source::Value(t.clone()));
    }
    std::env::var_os("RAMPART_ADMIN_TOKEN").map(|_| Source::Env("RAMPART_ADMIN_TOKEN".into()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = rampart_config::load(&cli.conf_file)?;
    init_logging(&cli)?;
    for w in config.pools.iter().flat_map(|p| &p.warnings) {
        tracing::warn!("{w}");
    }
    if cli.mbuf_size.is_some() {
        tracing::info!("--mbuf-size is accepted for compatibility and ignored");
    }
    let _ = cli.stats_interval;
    rampart::observe::slowlog::configure(cli.slowlog_slower_than, cli.slowlog_max_len);
    if let Some(pid) = &cli.pid_file {
        std::fs::write(pid, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", pid.display()))?;
    }
    let workers = cli.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let opts = Options {
        workers,
        stats_addr: (!cli.no_stats).then(|| format!("{}:{}", cli.stats_addr, cli.stats_port)),
        drain_timeout: Duration::from_millis(cli.drain_timeout),
        config_path: Some(cli.conf_file.clone()),
        admin: (!cli.no_admin).then(|| rampart::admin::AdminOptions {
            addr: cli
                .admin
                .clone()
                .unwrap_or_else(|| rampart::admin::DEFAULT_ADDR.to_string()),
            token: admin_token(&cli),
            hosts: cli.admin_host.clone(),
            explicit: cli.admin.is_some(),
            tls: cli.admin_tls_cert.clone().zip(cli.admin_tls_key.clone()),
        }),
    };
    tracing::info!(
        "rampart {} starting: {} pool(s), {} worker(s), config {}",
        env!("CARGO_PKG_VERSION"),
        config.pools.len(),
        workers,
        cli.conf_file.display()
    );
    let result = server::run(config, opts, tokio_util::sync::CancellationToken::new());
    if let Some(pid) = &cli.pid_file {
        let _ = std::fs::remove_file(pid);
    }
    result?;
    tracing::info!("rampart stopped");
    Ok(())
}
