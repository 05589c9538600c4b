//! `p11kms domain join-request | enrol | join | members`: the domain ceremony's commands.
//!
//! The token side is [`crate::hsm::ceremony`]; this file reads the configuration (the same
//! as `serve`'s: module, token, user PIN, store), the SO PIN (never from the command line),
//! the request and package files, and records membership in the store.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::config::{read_secret_file, Config, ConfigError};
use crate::error::{display_chain, FileError};
use crate::hsm::ceremony::{
    self, display_fingerprint, CeremonyError, CeremonyTarget, EnrolPackage, JoinRequest,
    TokenIdentity, TrustedBy,
};
use crate::server::StartError;
use crate::store::{DomainMember, MetadataStore, StoreError};

/// Environment variables that give the SO PIN (file first).
pub const SO_PIN_FILE_VAR: &str = "P11KMS_SO_PIN_FILE";
pub const SO_PIN_VAR: &str = "P11KMS_SO_PIN";

#[derive(Subcommand)]
pub enum CeremonyCommand {
    /// On the JOINING token: make a transport key pair in the token and write a join request
    /// (public key, token identity, fingerprint). Read the printed fingerprint to the
    /// holder's operator over another channel.
    JoinRequest {
        /// TOML configuration file; P11KMS_* environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Where to write the request (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// On a HOLDER token: wrap the domain key under the request's transport key and write
    /// the package. The SO PIN comes from P11KMS_SO_PIN_FILE, P11KMS_SO_PIN or the embedded
    /// token's so.pin.
    Enrol {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The joining token's request file.
        #[arg(long)]
        request: PathBuf,
        /// The fingerprint the joining operator read out (hex; spaces and colons allowed).
        #[arg(long)]
        fingerprint: String,
        /// The domain key's id (hex), when the token holds more than one.
        #[arg(long)]
        domain: Option<String>,
        /// Who creates the trusted copy of the transport key: the SO (SoftHSM2 and tokens
        /// that enforce CKA_TRUSTED) or the user (tokens such as Kryoptic that let users
        /// create trusted keys; trust then protects nothing against a PIN holder).
        #[arg(long, value_enum, default_value_t = TrustedByArg::So)]
        trusted_by: TrustedByArg,
        /// Where to write the package (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// On the JOINING token: unwrap the domain key from the package into the token, check
    /// it, destroy the transport key pair, and record the token as a member.
    Join {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        package: PathBuf,
    },
    /// List the tokens enrolled in the domain(s), as the store recorded them.
    Members {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this domain (hex id).
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrustedByArg {
    So,
    User,
}

/// Runs one ceremony command; exits 0 on success, 1 on a refusal or failure, 2 on a bad
/// configuration.
pub fn run(command: CeremonyCommand) -> ExitCode {
    let result = match command {
        CeremonyCommand::JoinRequest { config, out } => {
            with_config(config, |c| join_request(c, &out))
        }
        CeremonyCommand::Enrol {
            config,
            request,
            fingerprint,
            domain,
            trusted_by,
            out,
        } => with_config(config, |c| {
            enrol(
                c,
                &request,
                &fingerprint,
                domain.as_deref(),
                trusted_by,
                &out,
            )
        }),
        CeremonyCommand::Join { config, package } => with_config(config, |c| join(c, &package)),
        CeremonyCommand::Members { config, domain } => {
            with_config(config, |c| members(c, domain.as_deref()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_configuration() => {
            eprintln!("p11kms: configuration error: {}", display_chain(&e));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("p11kms domain: {}", display_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Why a ceremony command stopped. Configuration problems exit 2, the rest 1.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The token the configuration names cannot be prepared.
    #[error(transparent)]
    Target(StartError),
    #[error(transparent)]
    SoPinFile(FileError),
    #[error(
        "enrol needs the SO PIN: set {SO_PIN_FILE_VAR} or {SO_PIN_VAR} (or --trusted-by user on \
         a token that lets users create trusted keys)"
    )]
    NoSoPin,
    #[error(transparent)]
    Store(StartError),
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{} is not a {what}", path.display())]
    NotJson {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The token step is done but the store did not take the membership record.
    #[error("{0}")]
    Membership(&'static str, #[source] StoreError),
    #[error(transparent)]
    Members(StoreError),
}

impl Failure {
    fn is_configuration(&self) -> bool {
        matches!(
            self,
            Failure::Config(_) | Failure::Target(_) | Failure::SoPinFile(_) | Failure::NoSoPin
        )
    }
}

fn with_config(
    path: Option<PathBuf>,
    work: impl FnOnce(&Config) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let config = Config::load(path.as_deref())?;
    work(&config)
}

/// The token the configuration names (preparing the embedded SoftHSM2 token if it is the
/// one), and the embedded token's SO PIN file if there is one.
fn target(config: &Config) -> Result<(CeremonyTarget, Option<PathBuf>), Failure> {
    let resolved = crate::server::resolve_hsm(config).map_err(Failure::Target)?;
    let so_pin_file = resolved
        .embedded
        .as_ref()
        .map(|e| e.so_pin_path().to_path_buf());
    Ok((
        CeremonyTarget {
            module: resolved.module,
            token_label: config.token_label.clone(),
            user_pin: resolved.user_pin,
        },
        so_pin_file,
    ))
}

/// P11KMS_SO_PIN_FILE, P11KMS_SO_PIN, then the embedded token's SO PIN file.
fn so_pin(embedded_file: Option<&Path>) -> Result<SecretString, Failure> {
    if let Some(path) = std::env::var_os(SO_PIN_FILE_VAR) {
        return Ok(SecretString::from(
            read_secret_file(Path::new(&path)).map_err(Failure::SoPinFile)?,
        ));
    }
    if let Ok(pin) = std::env::var(SO_PIN_VAR) {
        return Ok(SecretString::from(pin));
    }
    match embedded_file {
        Some(path) if path.exists() => Ok(SecretString::from(
            read_secret_file(path).map_err(Failure::SoPinFile)?,
        )),
        _ => Err(Failure::NoSoPin),
    }
}

fn open_store(config: &Config) -> Result<std::sync::Arc<dyn MetadataStore>, Failure> {
    crate::server::open_store(&config.store).map_err(Failure::Store)
}

/// Writes a new file; an existing one is never overwritten.
fn write_new(path: &Path, text: &str) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::from(FileError::on("write", path)(e));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, Failure> {
    let text = fs::read_to_string(path).map_err(FileError::on("read", path))?;
    serde_json::from_str(&text).map_err(|source| Failure::NotJson {
        path: path.to_path_buf(),
        what,
        source,
    })
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn member(
    domain_id: &str,
    token: &TokenIdentity,
    transport_fingerprint: Option<String>,
    enrolled_by: String,
) -> DomainMember {
    DomainMember {
        domain_id: domain_id.to_string(),
        token_label: token.label.clone(),
        token_manufacturer: token.manufacturer.clone(),
        token_model: token.model.clone(),
        token_serial: token.serial.clone(),
        transport_fingerprint,
        enrolled_at: now(),
        enrolled_by,
    }
}

fn join_request(config: &Config, out: &Path) -> Result<(), Failure> {
    if out.exists() {
        return Err(Failure::Exists(out.to_path_buf()));
    }
    let (target, _) = target(config)?;
    let outcome = ceremony::join_request(&target)?;
    if outcome.replaced > 0 {
        eprintln!(
            "note: replaced the transport key pair of an earlier join request ({} objects); \
             a package made for it can no longer be joined",
            outcome.replaced
        );
    }
    let request = outcome.request;
    let text = serde_json::to_string_pretty(&request).map_err(|source| Failure::Encode {
        what: "request",
        source,
    })?;
    write_new(out, &text)?;
    println!("join request written to {}", out.display());
    println!("token:       {}", request.token);
    println!(
        "transport:   RSA-{} in the token, OAEP {:?}",
        request.key_bits, request.oaep_hashes
    );
    println!("fingerprint: {}", display_fingerprint(&request.fingerprint));
    println!("Read the fingerprint to the holder's operator over a channel other than the file's.");
    Ok(())
}

fn enrol(
    config: &Config,
    request_path: &Path,
    expected_fingerprint: &str,
    domain: Option<&str>,
    trusted_by: TrustedByArg,
    out: &Path,
) -> Result<(), Failure> {
    if out.exists() {
        return Err(Failure::Exists(out.to_path_buf()));
    }
    let request: JoinRequest = read_json(request_path, "join request")?;
    println!("request from: {}", request.token);
    println!(
        "fingerprint:  {}",
        display_fingerprint(&request.fingerprint)
    );
    // Before any token or PIN is touched: a tampered request stops here.
    ceremony::check_request(&request, expected_fingerprint)?;
    println!("fingerprint matches the one given with --fingerprint");
    let (target, embedded_so_pin) = target(config)?;
    let trusted_by = match trusted_by {
        TrustedByArg::So => TrustedBy::SecurityOfficer(so_pin(embedded_so_pin.as_deref())?),
        TrustedByArg::User => TrustedBy::User,
    };
    let store = open_store(config)?;
    let outcome = ceremony::enrol(&target, &trusted_by, &request, expected_fingerprint, domain)?;
    if let Some(warning) = &outcome.cleanup_warning {
        eprintln!("warning: {warning}");
    }
    let package: EnrolPackage = outcome.package;
    let text = serde_json::to_string_pretty(&package).map_err(|source| Failure::Encode {
        what: "package",
        source,
    })?;
    write_new(out, &text)?;
    // The holder is a member too; recorded once (the domain's creator may have been).
    store
        .insert_domain_member(&member(
            &package.domain_id,
            &package.holder,
            None,
            "holder".into(),
        ))
        .map_err(|e| {
            Failure::Membership(
                "package written, but the holder's membership was not recorded",
                e,
            )
        })?;
    println!(
        "domain key {} wrapped for {} with RSA-OAEP {:?}; package written to {}",
        package.domain_id,
        package.joiner,
        package.oaep_hash,
        out.display()
    );
    Ok(())
}

fn join(config: &Config, package_path: &Path) -> Result<(), Failure> {
    let package: EnrolPackage = read_json(package_path, "domain package")?;
    let (target, _) = target(config)?;
    let store = open_store(config)?;
    let outcome = ceremony::join(&target, &package)?;
    store
        .insert_domain_member(&member(
            &outcome.domain_id,
            &outcome.token,
            Some(package.request_fingerprint.clone()),
            package.holder.to_string(),
        ))
        .map_err(|e| {
            Failure::Membership(
                "the token holds the domain key now, but its membership was not recorded",
                e,
            )
        })?;
    println!(
        "{} joined domain {} (key checked against the holder's check value; transport key pair destroyed)",
        outcome.token, outcome.domain_id
    );
    Ok(())
}

fn members(config: &Config, domain: Option<&str>) -> Result<(), Failure> {
    let store = open_store(config)?;
    let domain = domain.map(ceremony::normalise_fingerprint);
    let list = store
        .domain_members(domain.as_deref())
        .map_err(Failure::Members)?;
    if list.is_empty() {
        println!("no members recorded");
    }
    for m in list {
        let at = time::OffsetDateTime::from_unix_timestamp(m.enrolled_at as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| m.enrolled_at.to_string());
        println!(
            "domain {} token '{}' {} {} serial {} enrolled {} by {} transport {}",
            m.domain_id,
            m.token_label,
            m.token_manufacturer,
            m.token_model,
            m.token_serial,
            at,
            m.enrolled_by,
            m.transport_fingerprint.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
