// figment::Jail closures must return figment::Result, whose error type is large by design.
#![allow(clippy::result_large_err)]

use std::path::Path;

use figment::Jail;
use secrecy::ExposeSecret;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A figment jail without any inherited `KILN__*` variables (`./deploy.sh test` sets some).
fn jailed(f: impl FnOnce(&mut Jail) -> figment::error::Result<()>) {
    Jail::expect_with(|jail| {
        jail.clear_env();
        f(jail)
    });
}

fn write_config(jail: &mut Jail, body: &str) -> std::path::PathBuf {
    let full = format!("[api]\njwt_secret = \"{SECRET}\"\n{body}");
    jail.create_file("config.toml", &full).unwrap();
    jail.directory().join("config.toml")
}

fn load_err(path: &Path) -> String {
    Config::load(path).unwrap_err().to_string()
}

#[test]
fn the_repository_config_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    jailed(|_| {
        let config = Config::load(&path).expect("config.toml must load");
        assert_eq!(config.kafka.topic_prefix, "dev_");
        assert_eq!(config.kafka.partitions, 6);
        assert_eq!(config.services.api.http_addr.port(), 8080);
        Ok(())
    });
}

#[test]
fn file_values_override_defaults() {
    jailed(|jail| {
        let path = write_config(jail, "[kafka]\npartitions = 3\n");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.kafka.partitions, 3);
        assert_eq!(
            config.kafka.topic_prefix, "dev_",
            "unset keys keep their default"
        );
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file() {
    jailed(|jail| {
        let path = write_config(jail, "[kafka]\nbootstrap_servers = \"file:9092\"\n");
        jail.set_env("KILN__KAFKA__BOOTSTRAP_SERVERS", "env:9092");
        jail.set_env(
            "KILN__SERVICES__SAGA_ORCHESTRATOR__HTTP_ADDR",
            "0.0.0.0:9999",
        );
        let config = Config::load(&path).unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "env:9092");
        assert_eq!(config.services.saga_orchestrator.http_addr.port(), 9999);
        Ok(())
    });
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    jailed(|jail| {
        let path = write_config(jail, "[kafka]\npartitions = \"six\"\n");
        let message = load_err(&path);
        assert!(message.contains("kafka.partitions"), "{message}");
        Ok(())
    });
}

#[test]
fn a_bad_environment_value_names_its_key() {
    jailed(|jail| {
        let path = write_config(jail, "");
        jail.set_env("KILN__LIMITS__MEMORY_MB", "lots");
        let message = load_err(&path);
        assert!(
            message.to_lowercase().contains("limits.memory_mb"),
            "{message}"
        );
        Ok(())
    });
}

#[test]
fn an_unknown_key_is_rejected() {
    jailed(|jail| {
        let path = write_config(jail, "[kafka]\nbootstrap_server = \"typo:9092\"\n");
        let message = load_err(&path);
        assert!(message.contains("bootstrap_server"), "{message}");
        Ok(())
    });
}

#[test]
fn semantic_checks_name_the_key() {
    let cases = [
        ("[kafka]\npartitions = 0\n", "kafka.partitions"),
        (
            "[kafka]\ntopic_prefix = \"bad prefix\"\n",
            "kafka.topic_prefix",
        ),
        (
            "[kafka]\nrevoke_drain_timeout_ms = 9000\n",
            "kafka.revoke_drain_timeout_ms",
        ),
        ("[mongo]\nuri = \"http://nope\"\n", "mongo.uri"),
        ("[redis]\nurl = \"tcp://nope\"\n", "redis.url"),
        (
            "[telemetry]\nsample_ratio = 1.5\n",
            "telemetry.sample_ratio",
        ),
        (
            "[limits]\ndefault_timeout_seconds = 999\n",
            "limits.default_timeout_seconds",
        ),
        (
            "[limits]\nmax_script_bytes = 8388608\n",
            "limits.max_script_bytes",
        ),
        (
            "[services.k8s_worker]\nhttp_addr = \"127.0.0.1:8080\"\nconsumer_group = \"x\"\n",
            "services.k8s_worker.http_addr",
        ),
    ];
    for (body, key) in cases {
        jailed(|jail| {
            let path = write_config(jail, body);
            let message = load_err(&path);
            assert!(message.contains(key), "{body:?}: {message}");
            Ok(())
        });
    }
}

#[test]
fn a_short_jwt_secret_is_rejected() {
    jailed(|jail| {
        jail.create_file("config.toml", "[api]\njwt_secret = \"short\"\n")?;
        let message = load_err(&jail.directory().join("config.toml"));
        assert!(message.contains("api.jwt_secret"), "{message}");
        Ok(())
    });
}

#[test]
fn the_dev_secret_is_refused_outside_dev() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    jailed(|jail| {
        jail.set_env("KILN__TELEMETRY__ENVIRONMENT", "production");
        let message = load_err(&path);
        assert!(message.contains("api.jwt_secret"), "{message}");
        Ok(())
    });
}

#[test]
fn a_missing_file_is_reported() {
    let message = load_err(Path::new("/nonexistent/kiln.toml"));
    assert!(message.contains("/nonexistent/kiln.toml"), "{message}");
}

#[test]
fn dumped_config_redacts_every_secret() {
    jailed(|jail| {
        let path = write_config(
            jail,
            "[mongo]\nuri = \"mongodb://kiln:hunter2@db:27017/?authSource=admin\"\n\
             [redis]\nurl = \"redis://:s3cret@cache:6379/0\"\n",
        );
        let config = Config::load(&path).unwrap();
        assert_eq!(config.api.jwt_secret.expose_secret(), SECRET);
        let dump = config.to_redacted_toml();
        for secret in [SECRET, "hunter2", "s3cret"] {
            assert!(!dump.contains(secret), "{secret} leaked:\n{dump}");
        }
        assert!(
            dump.contains("mongodb://kiln:[REDACTED]@db:27017/?authSource=admin"),
            "{dump}"
        );
        assert!(dump.contains("redis://:[REDACTED]@cache:6379/0"), "{dump}");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(SECRET) && !debug.contains("hunter2"),
            "Debug leaks secrets"
        );
        Ok(())
    });
}

#[test]
fn urls_without_a_password_are_printed_unchanged() {
    assert_eq!(
        redact_url("redis://127.0.0.1:6379/"),
        "redis://127.0.0.1:6379/"
    );
    assert_eq!(
        redact_url("mongodb://user@h/?x=a@b"),
        "mongodb://user@h/?x=a@b"
    );
    assert_eq!(redact_url("not a url"), "not a url");
}
