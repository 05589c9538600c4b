//! The `p11kms` command line. It lives in the library so that the shipped binary
//! (`src/main.rs`) and the test package's `p11kms-under-test` run the same entry point.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::display_chain;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "p11kms",
    version,
    about = "AWS KMS-compatible key service backed by a PKCS#11 HSM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. With no configuration, runs the embedded default (SoftHSM2 + SQLite
    /// under ./p11kms-data, listening on 127.0.0.1:8080, dev credentials test/test).
    Serve {
        /// TOML configuration file; P11KMS_* environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Probe the configured PKCS#11 module and token (same configuration as `serve`): the
    /// mechanisms p11kms uses, trial operations on throwaway session keys, and a table of the
    /// p11kms features this HSM supports. Exits 0 when `serve` can run on the token, 1 if not.
    Doctor {
        /// TOML configuration file; P11KMS_* environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Domain-key mode (`hsm.key_storage = "domain"`): the domain key that wraps every
    /// key's material, and the ceremony that enrols another token in the domain (see
    /// README, "Domain-key mode" and "Domain ceremony").
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
    /// Audit-trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum DomainCommand {
    /// Generate the domain key in the configured token, record it in the store as the
    /// active one and print its id.
    Create {
        /// TOML configuration file; P11KMS_* environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Rotate the domain key. In a domain of several tokens: `--prepare` (a new key in
    /// this token, recorded as pending), enrol it into every member with the ceremony
    /// (`enrol --domain ID`, `join`), then `--activate` (refused while a recorded member
    /// lacks it; then every stored key material is rewrapped under it and the old key is
    /// retired). Without a flag: both in one step, only where this token is the domain's
    /// only recorded member. Prints the new id, the retired ids and the count.
    Rotate {
        /// TOML configuration file; P11KMS_* environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Stage one: make the new domain key in this token and record it as pending.
        #[arg(long, conflicts_with = "activate")]
        prepare: bool,
        /// Stage two: switch to the pending key, rewrap every material, retire the old key.
        #[arg(long)]
        activate: bool,
    },
    #[command(flatten)]
    Ceremony(super::domain_ceremony::CeremonyCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files (give rotated files first, in order).
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// The whole command line: parses the arguments and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Doctor { config } => doctor(config),
        Command::Domain { command } => match command {
            DomainCommand::Create { config } => domain(config, crate::server::DomainAction::Create),
            DomainCommand::Rotate {
                config,
                prepare,
                activate,
            } => {
                let action = match (prepare, activate) {
                    (true, _) => crate::server::DomainAction::PrepareRotation,
                    (_, true) => crate::server::DomainAction::ActivateRotation,
                    _ => crate::server::DomainAction::Rotate,
                };
                domain(config, action)
            }
            DomainCommand::Ceremony(command) => super::domain_ceremony::run(command),
        },
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => match crate::telemetry::audit::verify_files(&files) {
            Ok(n) => {
                println!("ok: {n} records, chain intact");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("BROKEN: {}", display_chain(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// The configuration `serve`, `doctor` and `domain` run on; exit status 2 when it does not load.
fn load_config(config_path: Option<PathBuf>) -> Result<crate::config::Config, ExitCode> {
    crate::config::Config::load(config_path.as_deref()).map_err(|e| {
        eprintln!("p11kms: configuration error: {}", display_chain(&e));
        ExitCode::from(2)
    })
}

fn doctor(config_path: Option<PathBuf>) -> ExitCode {
    let mut config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // cryptoki logs an ERROR for every mechanism its list drops; the report says it once.
    config.log_level = format!("{},cryptoki::mechanism=off", config.log_level);
    crate::server::init_logging(&config);
    match crate::server::doctor(&config) {
        Ok((report, can_run)) => {
            print!("{report}");
            if can_run {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("p11kms doctor: {}", display_chain(&e));
            ExitCode::from(3)
        }
    }
}

fn domain(config_path: Option<PathBuf>, action: crate::server::DomainAction) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::server::init_logging(&config);
    match crate::server::domain_admin(&config, action) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("p11kms domain: {}", display_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::server::init_logging(&config);
    // PKCS#11 set-up happens before the runtime's threads exist (it exports SOFTHSM2_CONF).
    let prepared = match crate::server::prepare(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("p11kms: cannot start: {}", display_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(prepared.async_threads())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("p11kms: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::server::serve(prepared)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p11kms: {}", display_chain(&e));
            ExitCode::FAILURE
        }
    }
}
