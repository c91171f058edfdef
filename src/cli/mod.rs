//! The command line: serve (default), `check`, `render`, `route` and `appchat`.

mod appchat;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use log::{error, info};

use crate::config::{Checked, Config, ConfigError, SecretSource};
use crate::http::Application;
use crate::model::WebhookPayload;
use crate::render::TemplateError;
use crate::route::explain::{explain, parse_labels};
use crate::route::Router;
use crate::service::{AssemblyError, ConfigSource, Runtime, Service};

#[derive(Debug, Parser)]
#[command(
    name = "alertmanager-wecom",
    version,
    about = "Delivers Prometheus Alertmanager webhooks as WeCom (企业微信) app messages"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file (YAML). Without it, the bundled example configuration is used.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:9097; overrides `listen` in the config.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Render and log the exact WeCom requests instead of sending them.
    #[arg(long)]
    pub dry_run: bool,
    /// Log line format: `text` for people, `json` (one object per line) for log pipelines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and templates, then exit (non-zero on any problem).
    Check {
        /// For a config meant for another machine (a cluster's mounted Secret): secret files
        /// missing here and unset `${VAR}`s are skipped (listed), everything else is checked.
        #[arg(long)]
        offline: bool,
        /// Templates from DIR instead of the config's `templates.dir`.
        #[arg(long, value_name = "DIR")]
        templates_dir: Option<PathBuf>,
    },
    /// Print the exact WeCom requests a webhook payload would produce, with sizes; sends nothing.
    Render {
        /// An Alertmanager webhook payload (JSON file), or `-` for standard input.
        #[arg(long, value_name = "PAYLOAD")]
        payload: String,
        /// Only this route.
        #[arg(long, value_name = "NAME")]
        route: Option<String>,
        /// Templates from DIR instead of the config's `templates.dir`.
        #[arg(long, value_name = "DIR")]
        templates_dir: Option<PathBuf>,
    },
    /// Show which routes an alert with the given labels reaches, and who receives it.
    Route {
        /// The alert's labels, e.g. 'team="db",severity="critical"'.
        #[arg(long, value_name = "LABELS")]
        labels: String,
        /// The alert's annotations, in the same form (for recipient templates that use them).
        #[arg(long, value_name = "ANNOTATIONS", default_value = "")]
        annotations: String,
    },
    /// Create or inspect an app group chat (a chat a route can post to with `chat:`).
    #[command(subcommand)]
    Appchat(appchat::AppchatCommand),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Some(Command::Check {
            offline,
            ref templates_dir,
        }) => check(cli.config.as_deref(), offline, templates_dir.clone()),
        Some(Command::Render {
            ref payload,
            ref route,
            ref templates_dir,
        }) => render(
            cli.config.as_deref(),
            payload,
            route.as_deref(),
            templates_dir.clone(),
        ),
        Some(Command::Route {
            ref labels,
            ref annotations,
        }) => route(cli.config.as_deref(), labels, annotations),
        Some(Command::Appchat(ref command)) => appchat::run(cli.config.as_deref(), command),
        None => serve(cli),
    }
}

/// `RUST_LOG` decides what is logged; the default is `info`. The template engine's own
/// debug output (hundreds of lines of parser and render internals per webhook) stays out
/// unless `RUST_LOG` names it (`RUST_LOG=debug,handlebars=debug`).
fn init_logging(format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let asked_for_templates = std::env::var("RUST_LOG").is_ok_and(|filter| filter.contains("handlebars"));
    if !asked_for_templates {
        builder.filter_module("handlebars", log::LevelFilter::Warn);
    }
    match format {
        LogFormat::Text => builder.format_timestamp_millis(),
        LogFormat::Json => builder.format(|out, record| {
            let line = serde_json::json!({
                "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(out, "{line}")
        }),
    };
    builder.init();
}

pub(crate) fn load(path: Option<&Path>) -> Result<Config, String> {
    ConfigSource::from_option(path).load().map_err(|e| e.to_string())
}

/// What `check` suggests when a secret file is missing: most often the config is for a
/// cluster whose Secret is mounted there, not here.
const OFFLINE_HINT: &str = "(validating a config for another machine? alertmanager-wecom check --offline)";

/// One line per configuration problem, as `check` prints them.
fn problem_lines(error: &ConfigError, hint: bool) -> Vec<String> {
    match error {
        ConfigError::Invalid { file, problems } => problems
            .iter()
            .map(|problem| {
                let hint = if hint && problem.missing_file {
                    format!(" {OFFLINE_HINT}")
                } else {
                    String::new()
                };
                format!("{file}: {}: {}{hint}", problem.key, problem.message)
            })
            .collect(),
        other => vec![other.to_string()],
    }
}

fn check(path: Option<&Path>, offline: bool, templates_dir: Option<PathBuf>) -> ExitCode {
    let file = path.map_or("<bundled example>".into(), |p| p.display().to_string());
    let secrets = if offline {
        SecretSource::Offline
    } else {
        SecretSource::Online
    };
    let dir_given = templates_dir.is_some();
    let Checked { config, skipped } = match Config::check(path, secrets, templates_dir) {
        Ok(checked) => checked,
        Err(error) => {
            for line in problem_lines(&error, !offline) {
                eprintln!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let source = config.source.clone();
    for skipped in &skipped {
        println!("{source}: skipped (offline): {skipped}");
    }
    // Templates are loaded and rendered against samples; nothing connects anywhere (a Redis
    // store is only opened, WeCom only called, by a running service).
    let service = match Service::standalone(config, true) {
        Ok(service) => service,
        Err(e) => {
            // In a pod the templates may be mounted elsewhere than beside this copy.
            let hint = match e {
                AssemblyError::Templates(TemplateError::Missing { .. }) if !dir_given => {
                    " (are the templates elsewhere on this machine than templates.dir says? --templates-dir DIR)"
                }
                _ => "",
            };
            eprintln!("{file}: {e}{hint}");
            return ExitCode::FAILURE;
        }
    };
    for warning in service.config.warnings() {
        eprintln!("{source}: warning: {warning}");
    }
    let not_checked = if skipped.is_empty() {
        String::new()
    } else {
        format!("; {} secret(s) not checked (offline)", skipped.len())
    };
    println!(
        "{source}: OK ({} route(s), {} app(s)){not_checked}",
        service.config.routes.len(),
        service.config.apps.len()
    );
    ExitCode::SUCCESS
}

fn render(
    path: Option<&Path>,
    payload: &str,
    route: Option<&str>,
    templates_dir: Option<PathBuf>,
) -> ExitCode {
    let loaded = Config::check(path, SecretSource::Online, templates_dir)
        .map(|checked| checked.config)
        .map_err(|e| e.to_string());
    let result = loaded.and_then(|config| {
        if let Some(route) = route {
            if !config.routes.iter().any(|r| r.name == route) {
                return Err(format!("--route {route:?}: no such route"));
            }
        }
        let service = Service::standalone(config, true).map_err(|e| e.to_string())?;
        let body = if payload == "-" {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                .map_err(|e| format!("stdin: {e}"))?;
            body
        } else {
            std::fs::read(payload).map_err(|e| format!("cannot read {payload}: {e}"))?
        };
        let payload = WebhookPayload::parse(&body).map_err(|e| format!("{payload}: {e}"))?;
        Ok(service.preview(&payload, route))
    });
    let previews = match result {
        Ok(previews) => previews,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    if previews.is_empty() {
        println!("# no route matches these alerts: nothing would be sent");
    }
    let mut failed = false;
    for preview in &previews {
        if let Some(error) = &preview.error {
            failed = true;
            println!(
                "# route {} → {} ({}): ERROR {error}",
                preview.route, preview.target, preview.msgtype
            );
            continue;
        }
        let sizes: Vec<String> = preview
            .sizes
            .iter()
            .map(|(field, bytes)| format!("{field} {bytes} B"))
            .collect();
        println!(
            "# route {} → {} ({}), message {}/{}: {} of {} alert(s) shown, cut: {}; {}",
            preview.route,
            preview.target,
            preview.msgtype,
            preview.part,
            preview.parts,
            preview.shown_alerts,
            preview.total_alerts,
            if preview.cut { "yes" } else { "no" },
            sizes.join(", ")
        );
        for request in &preview.requests {
            println!("{}", serde_json::to_string_pretty(request).unwrap_or_default());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn route(path: Option<&Path>, labels: &str, annotations: &str) -> ExitCode {
    let result = load(path).and_then(|config| {
        let router = Router::new(&config.routes).map_err(|e| e.to_string())?;
        let labels = parse_labels(labels)?;
        let annotations = if annotations.is_empty() {
            Default::default()
        } else {
            parse_labels(annotations)?
        };
        Ok(explain(&router, labels, annotations))
    });
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: Cli) -> ExitCode {
    let source = match &cli.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => {
            info!("no --config given: using the bundled example configuration");
            ConfigSource::Bundled
        }
    };
    let listen = match cli.listen.as_deref().map(str::parse).transpose() {
        Ok(listen) => listen,
        Err(e) => {
            error!(
                "--listen {:?} is not an address like 0.0.0.0:9097: {e}",
                cli.listen.unwrap_or_default()
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match Runtime::start(source, listen, cli.dry_run) {
        Ok(runtime) => runtime,
        Err(AssemblyError::Config(error)) => {
            // One log line per mistake, as `check` prints them.
            for line in problem_lines(&error, false) {
                error!("{line}");
            }
            return ExitCode::FAILURE;
        }
        Err(message) => {
            error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let executor = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(executor) => executor,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = executor.block_on(async {
        let application = Application::build(runtime)?;
        application.run_until_stopped().await
    });
    match result {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
