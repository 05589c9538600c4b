//! The `p11kms` binary: a thin command line over the library.

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Audit-trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files (give rotated files first, in order).
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => match p11kms::telemetry::audit::verify_files(&files) {
            Ok(n) => {
                println!("ok: {n} records, chain intact");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("BROKEN: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match p11kms::config::Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("p11kms: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    p11kms::server::init_logging(&config);
    // PKCS#11 set-up happens before the runtime's threads exist (it exports SOFTHSM2_CONF).
    let prepared = match p11kms::server::prepare(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("p11kms: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("p11kms: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(p11kms::server::serve(prepared)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p11kms: {e}");
            ExitCode::FAILURE
        }
    }
}
