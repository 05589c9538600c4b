//! The deployment artefacts under `deploy/` parse, and name only real things: subcommands
//! and flags the binary accepts (`p11kms <sub> --help`), `P11KMS_*` variables and TOML keys
//! `src/config.rs` reads, routes the gateway serves and metrics it registers. The systemd
//! unit passes `systemd-analyze verify`.
//!
//! YAML is parsed by Python's `yaml` (PyYAML; `scripts/test.sh` installs the Python test
//! dependencies), converted to JSON and checked here.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_p11kms-under-test");

fn root() -> PathBuf {
    crate::common::repository_root().to_path_buf()
}

fn deploy(path: &str) -> PathBuf {
    root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document in the file, as JSON.
fn yaml(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml, json; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("python3 (with PyYAML) is needed to parse the YAML artefacts");
    assert!(
        out.status.success(),
        "{} does not parse as YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json from python");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// `P11KMS_*` names appearing in a text.
fn p11kms_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("P11KMS_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The variables the configuration reads.
fn known_env() -> BTreeSet<String> {
    let names: BTreeSet<String> = p11kms_names(&read(&root().join("src/config.rs")))
        .into_iter()
        .filter(|n| n != "P11KMS_")
        .collect();
    assert!(names.contains("P11KMS_LISTEN") && names.contains("P11KMS_PIN"));
    names
}

fn assert_known_env(names: impl IntoIterator<Item = String>, whence: &str) {
    let known = known_env();
    for name in names {
        assert!(
            known.contains(&name),
            "{whence} uses {name}, which src/config.rs does not read"
        );
    }
}

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--help")
        .output()
        .expect("run p11kms --help");
    assert!(out.status.success(), "p11kms {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command line for the binary (without its path): the subcommand exists and every flag
/// is one its `--help` lists.
fn assert_real_command_line(args: &[String], whence: &str) {
    let sub = args
        .first()
        .unwrap_or_else(|| panic!("{whence}: no subcommand"));
    let top = help(&[]);
    assert!(
        top.lines()
            .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
        "{whence}: `{sub}` is not a p11kms subcommand:\n{top}"
    );
    let sub_help = help(&[sub]);
    for flag in args.iter().filter(|a| a.starts_with('-')) {
        let flag = flag.split('=').next().unwrap_or(flag);
        assert!(
            sub_help.contains(&format!("{flag} ")) || sub_help.contains(&format!("{flag},")),
            "{whence}: `p11kms {sub}` has no flag {flag}:\n{sub_help}"
        );
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The routes the gateway serves, as written in the router.
fn routes() -> String {
    read(&root().join("src/wire/mod.rs"))
}

// === docker ===

#[test]
fn dockerfile_runs_as_non_root_with_real_commands() {
    let text = read(&deploy("Dockerfile"));
    assert!(
        text.contains("AS build") && text.contains("AS softhsm") && text.contains("AS runtime")
    );
    assert!(
        text.contains("cargo build --release --bin p11kms"),
        "same build as scripts/run.sh"
    );
    assert!(read(&root().join("scripts/run.sh")).contains("cargo build --release --bin p11kms"));
    // Cargo loads the whole workspace to build one binary: every member must be in the image.
    let manifest: toml::Value =
        toml::from_str(&read(&root().join("Cargo.toml"))).expect("Cargo.toml");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("members");
    for member in members
        .iter()
        .filter_map(|m| m.as_str())
        .filter(|m| *m != ".")
    {
        let top = member.split('/').next().expect("member path");
        let copy = format!("COPY {top} ./{top}");
        assert!(
            text.lines().any(|line| line.trim() == copy),
            "the build stage does not copy the workspace member {member}"
        );
    }
    assert!(text.lines().any(|line| line.trim() == "COPY src ./src"));
    // Every stage that switches to root (to install packages) switches back.
    let users: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .collect();
    assert!(!users.is_empty(), "the image sets a non-root USER");
    for pair in users.windows(2) {
        if pair[0] == "root" {
            assert_ne!(pair[1], "root");
        }
    }
    assert_eq!(users.last(), Some(&"10001:10001"), "runs as non-root");
    assert!(
        text.contains("no docker engine"),
        "says it was not built here"
    );
    for line in text.lines().filter(|l| l.starts_with("CMD [")) {
        let args: Vec<String> =
            serde_json::from_str(line.trim_start_matches("CMD ")).expect("CMD is a JSON array");
        assert_real_command_line(&args, "Dockerfile CMD");
    }
    assert_known_env(p11kms_names(&text), "Dockerfile");
    // The images listen on 0.0.0.0; the test-rig target, which has no configuration file to
    // configure TLS in, asks for plain HTTP explicitly.
    assert!(text.contains("P11KMS_LISTEN=0.0.0.0:8080"));
    let softhsm = &text[text.find("AS softhsm").expect("softhsm stage")..];
    let softhsm = &softhsm[..softhsm.find("FROM ").unwrap_or(softhsm.len())];
    assert!(
        softhsm.contains("ENV P11KMS_ALLOW_PLAIN_HTTP=true"),
        "the softhsm target serves plain HTTP on 0.0.0.0 without allowing it"
    );
}

/// Plain HTTP is refused on addresses other than loopback unless TLS is configured or
/// plain HTTP is allowed explicitly (src/config.rs).
fn assert_valid_transport(listen: &str, tls: bool, allow_plain_http: bool, whence: &str) {
    let address: std::net::SocketAddr = listen
        .parse()
        .unwrap_or_else(|_| panic!("{whence}: listen {listen} is not a socket address"));
    assert!(
        address.ip().is_loopback() || tls || allow_plain_http,
        "{whence}: plain HTTP on {listen} without allow_plain_http: the gateway would refuse to start"
    );
}

#[test]
fn compose_parses_and_references_real_things() {
    let docs = yaml(&deploy("docker-compose.yml"));
    let compose = &docs[0];
    let services = compose["services"].as_object().expect("services");
    for name in ["p11kms", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "compose has no {name} service");
    }
    let gateway = &services["p11kms"];
    assert_real_command_line(&strings(&gateway["command"]), "compose p11kms.command");
    let env = gateway["environment"].as_object().expect("environment map");
    assert_known_env(env.keys().cloned(), "compose p11kms.environment");
    assert_eq!(gateway["build"]["dockerfile"], "deploy/Dockerfile");
    assert_eq!(gateway["build"]["target"], "softhsm");
    // Prometheus scrapes the gateway's service name, port and /metrics.
    let listen = env["P11KMS_LISTEN"].as_str().expect("listen");
    assert_valid_transport(
        listen,
        env.contains_key("P11KMS_TLS_CERT_FILE"),
        env.get("P11KMS_ALLOW_PLAIN_HTTP").and_then(Value::as_str) == Some("true"),
        "compose p11kms.environment",
    );
    let port = listen.rsplit(':').next().expect("port");
    let prom = &yaml(&deploy("prometheus.yml"))[0];
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/metrics");
    assert!(routes().contains("\"/metrics\""));
    assert_eq!(
        job["static_configs"][0]["targets"][0],
        format!("p11kms:{port}").as_str()
    );
    // Every file the compose file mounts exists.
    for service in services.values() {
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap_or_default();
            if source.starts_with("./") {
                assert!(deploy(source).exists(), "compose mounts missing {source}");
            }
        }
    }
    for file in [
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/p11kms.yml",
    ] {
        assert!(!yaml(&deploy(file)).is_empty(), "{file}");
    }
}

#[test]
fn grafana_dashboard_uses_only_registered_metrics() {
    let dashboard: Value =
        serde_json::from_str(&read(&deploy("grafana/dashboards/p11kms.json"))).expect("json");
    let source = read(&root().join("src/telemetry/metrics.rs"));
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(
        exprs.len() >= 10,
        "throughput, errors, latency and HSM health panels"
    );
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("p11kms_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            used.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    for metric in &used {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))
            .unwrap_or(metric);
        assert!(
            source.contains(&format!("\"{base}\"")),
            "the dashboard queries {metric}, which src/telemetry/metrics.rs does not register"
        );
    }
    for needed in [
        "p11kms_requests_total",
        "p11kms_request_duration_seconds_bucket",
        "p11kms_pkcs11_call_duration_seconds_bucket",
        "p11kms_session_pool_sessions",
        "p11kms_session_pool_waiters",
        "p11kms_throttled_requests_total",
        "p11kms_hsm_reinitialisations_total",
        "p11kms_keys",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
}

// === kubernetes ===

fn kubernetes(subdir: &str) -> Vec<Value> {
    let dir = deploy(subdir);
    let kustomization = &yaml(&dir.join("kustomization.yaml"))[0];
    let mut docs = Vec::new();
    for file in strings(&kustomization["resources"]) {
        docs.extend(yaml(&dir.join(&file)));
    }
    docs
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} manifest"))
}

#[test]
fn kubernetes_manifests_parse_and_reference_real_things() {
    check_kubernetes("kubernetes");
}

/// The cluster variant: N replicas rolled one at a time, the store on PostgreSQL with its
/// connection string from a file the Secret mounts, nothing persistent in the pod.
#[test]
fn kubernetes_cluster_manifests_parse_and_reference_real_things() {
    let (docs, file) = check_kubernetes("kubernetes/cluster");
    let deployment = of_kind(&docs, "Deployment");
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "{replicas}");
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let min_available = of_kind(&docs, "PodDisruptionBudget")["spec"]["minAvailable"]
        .as_u64()
        .expect("minAvailable");
    assert!(min_available < replicas);
    assert_eq!(file.store.backend.as_deref(), Some("postgres"));
    let url_file = file
        .store
        .postgres_url_file
        .as_ref()
        .expect("postgres_url_file");
    let pod = &deployment["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|mp| url_file.starts_with(mp))
        })
        .expect("the connection string's file is mounted");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("volume");
    let secret = of_kind(&docs, "Secret");
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);
    let item = volume["secret"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| url_file.ends_with(i["path"].as_str().unwrap()))
        .expect("the Secret's item at that path");
    let key = item["key"].as_str().unwrap();
    assert!(secret["stringData"][key]
        .as_str()
        .is_some_and(|u| u.starts_with("postgresql://")));
    assert!(
        !pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.get("persistentVolumeClaim").is_some()),
        "replicas keep nothing on a volume"
    );
}

/// The compose cluster: PostgreSQL, a one-shot token maker and two replicas sharing the
/// token volume and the connection string secret.
#[test]
fn cluster_compose_parses_and_references_real_things() {
    let compose = &yaml(&deploy("docker-compose.cluster.yml"))[0];
    let services = compose["services"].as_object().expect("services");
    assert_real_command_line(&strings(&services["token"]["command"]), "token.command");
    let token_dir = services["token"]["environment"]["P11KMS_DATA_DIR"]
        .as_str()
        .expect("token data dir");
    let mut ports = BTreeSet::new();
    for name in ["replica-1", "replica-2"] {
        let replica = &services[name];
        assert_real_command_line(&strings(&replica["command"]), name);
        let env = replica["environment"].as_object().expect("environment");
        assert_known_env(
            env.keys().filter(|k| k.starts_with("P11KMS_")).cloned(),
            name,
        );
        assert_eq!(env["P11KMS_STORE_BACKEND"], "postgres");
        assert_eq!(env["P11KMS_EMBEDDED_SOFTHSM"], "false");
        for var in ["SOFTHSM2_CONF", "P11KMS_PIN_FILE"] {
            assert!(
                env[var].as_str().unwrap().starts_with(token_dir),
                "{name}: {var} is in the shared token"
            );
        }
        assert!(strings(&replica["volumes"])
            .iter()
            .any(|v| v.ends_with(&format!(":{token_dir}"))));
        let url_file = env["P11KMS_DATABASE_URL_FILE"].as_str().unwrap();
        let secret = url_file.strip_prefix("/run/secrets/").expect("a secret");
        assert!(strings(&replica["secrets"]).contains(&secret.to_string()));
        let source = compose["secrets"][secret]["file"].as_str().unwrap();
        assert!(read(&deploy(source)).starts_with("postgresql://"));
        ports.insert(strings(&replica["ports"]).join(","));
    }
    assert_eq!(ports.len(), 2, "each replica has its own port");
    let password = compose["secrets"]["pg-password"]["file"].as_str().unwrap();
    assert!(deploy(password).exists());
}

/// Checks a Kubernetes manifest set; returns its documents and the ConfigMap's parsed file.
fn check_kubernetes(subdir: &str) -> (Vec<Value>, p11kms::config::FileConfig) {
    let docs = kubernetes(subdir);
    let deployment = of_kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], *labels);
    for kind in ["Service", "PodDisruptionBudget"] {
        let selector = match kind {
            "Service" => &of_kind(&docs, kind)["spec"]["selector"],
            _ => &of_kind(&docs, kind)["spec"]["selector"]["matchLabels"],
        };
        assert_eq!(selector, labels, "{kind} selects the pods");
    }
    let container = &pod["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert_real_command_line(&args, "Deployment args");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(routes().contains("\"/healthz\"") && routes().contains("\"/readyz\""));
    for bound in ["requests", "limits"] {
        assert!(
            container["resources"][bound]["memory"].is_string(),
            "resources.{bound}"
        );
    }
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let env: Vec<&Value> = container["env"].as_array().expect("env").iter().collect();
    assert_known_env(
        env.iter()
            .filter_map(|e| e["name"].as_str().map(str::to_string)),
        "Deployment env",
    );

    // The PIN comes from the Secret, under a key the Secret has.
    let secret = of_kind(&docs, "Secret");
    let pin = env
        .iter()
        .find(|e| e["name"] == "P11KMS_PIN")
        .expect("P11KMS_PIN from the Secret");
    let key_ref = &pin["valueFrom"]["secretKeyRef"];
    assert_eq!(key_ref["name"], secret["metadata"]["name"]);
    let pin_key = key_ref["key"].as_str().expect("key");
    assert!(
        secret["stringData"][pin_key].is_string(),
        "Secret has {pin_key}"
    );

    // The ConfigMap's file is a configuration the gateway accepts (unknown keys are
    // refused), at the path `--config` names.
    let config_map = of_kind(&docs, "ConfigMap");
    let text = config_map["data"]["p11kms.toml"]
        .as_str()
        .expect("p11kms.toml");
    let file: p11kms::config::FileConfig =
        toml::from_str(text).unwrap_or_else(|e| panic!("ConfigMap p11kms.toml: {e}"));
    let config_flag = args.iter().position(|a| a == "--config").expect("--config");
    let config_path = &args[config_flag + 1];
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == config_path.as_str()),
        "{config_path} is mounted"
    );
    // Files the configuration reads are under a mounted volume.
    let mounted = |path: &Path| {
        mounts.iter().any(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|mp| path.starts_with(mp))
        })
    };
    for credential in &file.credentials {
        if let Some(path) = &credential.secret_access_key_file {
            assert!(mounted(path), "{} is not mounted", path.display());
        }
    }
    let module = file.hsm.module.as_ref().expect("hsm.module");
    assert!(mounted(module), "{} is not mounted", module.display());
    let data_dir = file.data_dir.as_ref().expect("data_dir");
    assert!(mounted(data_dir), "{} is not mounted", data_dir.display());

    // TLS: the certificate and key come from a mounted Secret, and the probes speak HTTPS.
    let listen = file.listen.as_deref().expect("listen");
    let tls = file.tls.cert_file.is_some();
    assert_valid_transport(
        listen,
        tls,
        file.allow_plain_http == Some(true),
        "ConfigMap p11kms.toml",
    );
    if tls {
        for path in [
            &file.tls.cert_file,
            &file.tls.key_file,
            &file.tls.client_ca_file,
        ]
        .into_iter()
        .flatten()
        {
            assert!(mounted(path), "{} is not mounted", path.display());
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            assert_eq!(
                container[probe]["httpGet"]["scheme"], "HTTPS",
                "{probe} on a TLS port"
            );
        }
    }
    let port = listen.rsplit(':').next().expect("port");
    let ports = container["ports"].as_array().expect("ports");
    assert!(
        ports
            .iter()
            .any(|p| p["containerPort"].as_u64().map(|n| n.to_string()) == Some(port.into())),
        "the container port is the one the gateway listens on ({port})"
    );

    // The grace period outlasts the gateway's own drain deadline.
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    let drain_ms = file.shutdown.drain_ms.expect("shutdown.drain_ms");
    assert!(grace * 1000 > drain_ms);
    (docs, file)
}

// === systemd ===

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let path = deploy("systemd/p11kms.service");
    let unit = read(&path);
    for setting in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "User=p11kms",
        "StateDirectory=p11kms",
        "ReadWritePaths=",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting}");
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/p11kms"));
    let args: Vec<String> = words.map(str::to_string).collect();
    assert_real_command_line(&args, "ExecStart");
    assert_known_env(p11kms_names(&unit), "the systemd unit");

    // systemd-analyze checks that ExecStart is executable: point it at the built binary.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("p11kms.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/p11kms", BIN)).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (apt-get install systemd) is needed to verify the unit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("p11kms.service:"),
        "systemd-analyze verify: {stderr}"
    );
}
