//! docs/configuration.md and config.toml name every configuration key the code has.
//!
//! The keys are those of `Config::default()` serialised, so a field added to a config type
//! without a row in the reference fails here, and so does one the working copy `config.toml`
//! neither sets nor names in a comment (`# key = ...`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::Value;
use shared::config::Config;

fn repo_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(section, key)` for every leaf key: `section` is the dotted table (`kafka.retry`); tables of
/// services are reported once as `services.<name>`. Maps and arrays are leaves.
fn keys(prefix: &str, value: &Value, into: &mut Vec<(String, String)>) {
    let Value::Object(map) = value else { return };
    for (key, v) in map {
        match v {
            Value::Object(_) if prefix == "services" => keys("services.<name>", v, into),
            Value::Object(inner) if !inner.is_empty() && !is_free_map(prefix, key) => {
                let section = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                keys(&section, v, into);
            }
            _ => into.push((prefix.to_owned(), key.clone())),
        }
    }
}

/// Tables whose keys are data, not settings.
fn is_free_map(prefix: &str, key: &str) -> bool {
    matches!(
        (prefix, key),
        ("kafka", "client_overrides") | ("rate_limit", "routes") | ("agents", "providers")
    )
}

/// The text of the reference's `### \`[section]\`` part, up to the next heading.
fn doc_section<'a>(doc: &'a str, section: &str) -> Option<&'a str> {
    let heading = format!("### `[{section}]`");
    let start = doc.find(&heading)? + heading.len();
    let rest = &doc[start..];
    Some(&rest[..rest.find("\n#").unwrap_or(rest.len())])
}

#[test]
fn every_key_is_in_the_reference_and_in_config_toml() {
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let mut all = Vec::new();
    keys("", &defaults, &mut all);
    all.dedup();
    assert!(all.len() > 30, "found only {all:?}");

    let doc = repo_file("docs/configuration.md");
    let config_toml = repo_file("config.toml");
    let file: toml::Table = toml::from_str(&config_toml).unwrap();
    let mut missing = Vec::new();
    for (section, key) in &all {
        // A table of like sub-tables may be documented once in its parent, as `<name>.key` rows
        // (e.g. `[dlq]` has `<policy>.max_attempts` for `[dlq.commands]`, `[dlq.results]`, ...).
        let in_parent = section.rsplit_once('.').is_some_and(|(parent, _)| {
            doc_section(&doc, parent).is_some_and(|text| text.contains(&format!(">.{key}` |")))
        });
        match doc_section(&doc, section) {
            _ if in_parent => {}
            None => missing.push(format!("docs/configuration.md: no section [{section}]")),
            Some(text)
                if !text.contains(&format!("| `{key}` |"))
                    && !text.contains(&format!("| `{key}` (")) =>
            {
                missing.push(format!(
                    "docs/configuration.md: [{section}] has no row for `{key}`"
                ));
            }
            Some(_) => {}
        }
        let tables: Vec<&toml::Table> = if section == "services.<name>" {
            file.get("services")
                .and_then(toml::Value::as_table)
                .map(|s| s.values().filter_map(toml::Value::as_table).collect())
                .unwrap_or_default()
        } else {
            section
                .split('.')
                .try_fold(&file, |table, part| table.get(part)?.as_table())
                .into_iter()
                .collect()
        };
        let named_in_comment = config_toml
            .lines()
            .any(|line| line.trim_start().starts_with(&format!("# {key} =")));
        if !named_in_comment && (tables.is_empty() || tables.iter().any(|t| !t.contains_key(key))) {
            missing.push(format!("config.toml: [{section}] has no `{key}`"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}
