//! No Docker engine runs on the machines that test this project, so
//! `docker-compose.yml` and the `Dockerfile` are checked by parsing them:
//! every service is buildable or pulled, depends only on services that exist
//! (and have a health check when waited on), publishes distinct host ports,
//! and every `BRIDGE_*` / `CONSUMERS_*` variable it sets is a real config key
//! that loads, with the example configs the image ships, into a valid config.

#![allow(clippy::result_large_err)] // figment::Jail closures return figment::Error

use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(root().join("docker-compose.yml")).expect("compose file"))
        .expect("valid YAML")
}

/// `${NAME:-default}` → `default`; plain values unchanged.
fn resolve(value: &str) -> String {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(inner) => inner.split_once(":-").map(|(_, d)| d.to_owned()).unwrap_or_default(),
        None => value.to_owned(),
    }
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str().expect("name").to_owned(), resolve(v.as_str().unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_service_is_complete_and_consistent() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let names: HashSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for expected in [
        "kafka",
        "registry",
        "confluent-registry",
        "postgres",
        "otel-collector",
        "jaeger",
        "bridge",
        "sync",
        "analytics",
        "reconcile",
    ] {
        assert!(names.contains(expected), "service {expected} is missing");
    }
    let mut host_ports = HashSet::new();
    for (name, service) in services {
        let name = name.as_str().expect("name");
        assert!(
            service.get("image").is_some() ^ service.get("build").is_some(),
            "{name} must have exactly one of image and build"
        );
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let host = port.as_str().expect("port").split(':').next().expect("host port").to_owned();
            assert!(host_ports.insert(host.clone()), "{name} publishes host port {host} twice");
        }
        if let Some(depends) = service["depends_on"].as_mapping() {
            for (dependency, how) in depends {
                let dependency = dependency.as_str().expect("name");
                assert!(names.contains(dependency), "{name} depends on unknown service {dependency}");
                if how["condition"].as_str() == Some("service_healthy") {
                    assert!(
                        services[dependency].get("healthcheck").is_some(),
                        "{name} waits for {dependency} to be healthy, which has no healthcheck"
                    );
                }
            }
        }
        if service.get("build").is_some() {
            let command = service["command"].as_sequence().expect("our services say their command");
            let binary = command[0].as_str().expect("binary");
            let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
            assert!(
                dockerfile.contains(&format!("target/release/{binary}")),
                "{name} runs {binary}, which the Dockerfile does not install"
            );
        }
    }
    assert!(root().join("deploy/otel-collector.yaml").is_file());
    // The bridge's published port is the one it listens on.
    let bridge = &services[&Value::from("bridge")];
    assert_eq!(environment(bridge)["BRIDGE_SERVER__LISTEN"], "0.0.0.0:8080");
    assert!(bridge["ports"].as_sequence().expect("ports").iter().any(|p| p.as_str() == Some("8080:8080")));
}

#[test]
fn bridge_and_consumer_environments_are_valid_configs() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    for (name, service) in services {
        let name = name.as_str().expect("name").to_owned();
        let env = environment(service);
        if env.keys().any(|k| k.starts_with("BRIDGE_")) {
            let (env, name) = (env.clone(), name.clone());
            figment::Jail::expect_with(move |jail| {
                for (key, value) in &env {
                    jail.set_env(key, value);
                }
                let config = bridge::config::Config::load(&root().join("bridge/bridge.example.toml"))
                    .unwrap_or_else(|e| panic!("{name}: BRIDGE_* variables do not make a valid config: {e}"));
                assert_eq!(config.kafka.brokers, "kafka:9092", "{name}");
                // Every secret the example config reads is provided.
                for (source, settings) in &config.sources {
                    if let Some(var) = &settings.secrets_env {
                        assert!(
                            env.contains_key(var),
                            "{name}: source {source} reads {var}, which the service does not set"
                        );
                    }
                }
                Ok(())
            });
        }
        if env.keys().any(|k| k.starts_with("CONSUMERS_")) {
            let (env, name) = (env.clone(), name.clone());
            figment::Jail::expect_with(move |jail| {
                for (key, value) in &env {
                    jail.set_env(key, value);
                }
                let config = consumers::config::Config::load(&root().join("consumers/consumers.example.toml"))
                    .unwrap_or_else(|e| panic!("{name}: CONSUMERS_* variables do not make a valid config: {e}"));
                assert_eq!(config.kafka.brokers, "kafka:9092", "{name}");
                assert!(config.postgres.url.contains("@postgres:5432/webhooks"), "{name}");
                Ok(())
            });
        }
    }
}
