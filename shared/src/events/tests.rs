use std::collections::HashSet;

use serde_json::{Value, json};

use super::*;

fn requested() -> EventPayload {
    EventPayload::ExecutionRequested(ExecutionRequested {
        script: "print('héllo')".into(),
        lang: "python".into(),
        lang_version: "3.11".into(),
        stdin: None,
        priority: 5,
        limits: ExecutionLimits {
            timeout_seconds: 10,
            memory_mb: 256,
            max_processes: 64,
            max_output_bytes: 1 << 20,
            max_file_bytes: 1 << 24,
        },
        agent: None,
    })
}

fn sample() -> Event {
    Event::new(
        "exec-1",
        requested(),
        EventMetadata::new("api", Some("user-1".into())),
    )
}

#[test]
fn an_event_survives_a_json_round_trip() {
    let event = sample();
    let bytes = event.to_json().unwrap();
    assert_eq!(Event::from_json(Some(&bytes)).unwrap(), event);
}

#[test]
fn the_wire_format_has_the_envelope_fields_at_the_top_level() {
    let value: Value = serde_json::to_value(sample()).unwrap();
    for field in [
        "event_id",
        "event_type",
        "event_version",
        "occurred_at",
        "aggregate_id",
        "correlation_id",
        "metadata",
        "payload",
    ] {
        assert!(value.get(field).is_some(), "missing {field}: {value}");
    }
    assert_eq!(value["event_type"], "execution_requested");
    assert_eq!(value["event_version"], 1);
    assert_eq!(value["metadata"]["service"], "api");
    assert_eq!(value["metadata"]["user_id"], "user-1");
    assert_eq!(value["payload"]["lang"], "python");
}

#[test]
fn event_ids_are_time_ordered_uuid_v7() {
    let first = sample();
    let second = sample();
    assert_eq!(first.event_id.get_version_num(), 7);
    assert!(second.event_id > first.event_id);
}

#[test]
fn a_follow_up_event_keeps_the_flow() {
    let first = sample();
    let next = first.follow(
        EventPayload::ExecutionQueued(ExecutionQueued { position: Some(1) }),
        "saga-orchestrator",
    );
    assert_eq!(next.aggregate_id, first.aggregate_id);
    assert_eq!(next.correlation_id, first.correlation_id);
    assert_eq!(next.causation_id, Some(first.event_id));
    assert_eq!(next.metadata.user_id, first.metadata.user_id);
    assert_eq!(next.event_type(), EventType::ExecutionQueued);
}

#[test]
fn a_payload_that_does_not_match_its_type_is_rejected() {
    let mut value = serde_json::to_value(sample()).unwrap();
    value["event_type"] = json!("pod_running");
    let bytes = serde_json::to_vec(&value).unwrap();
    assert!(Event::from_json(Some(&bytes)).is_err());
    assert!(matches!(Event::from_json(None), Err(DecodeError::Empty)));
    assert!(Event::from_json(Some(b"not json")).is_err());
}

#[test]
fn topics_are_prefix_plus_event_type() {
    assert_eq!(
        topic_for("dev_", EventType::ExecutionRequested),
        "dev_execution_requested"
    );
    assert_eq!(dead_letter_topic("dev_"), "dev_dead_letter_queue");
    let topics = all_topics("dev_");
    assert_eq!(topics.len(), EventType::ALL.len() + 1);
    assert_eq!(topics.iter().collect::<HashSet<_>>().len(), topics.len());
}

#[test]
fn every_wire_name_parses_back_to_its_type() {
    for t in EventType::ALL {
        assert_eq!(EventType::parse(t.as_str()), Some(*t));
        let json = serde_json::to_value(t).unwrap();
        assert_eq!(json, t.as_str());
    }
}

#[test]
fn the_catalogue_covers_the_whole_life_cycle() {
    let names: HashSet<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    for required in [
        "execution_requested",
        "execution_queued",
        "execution_scheduled",
        "execution_started",
        "execution_output",
        "execution_completed",
        "execution_failed",
        "execution_timeout",
        "execution_cancelled",
        "pod_created",
        "pod_scheduled",
        "pod_running",
        "pod_terminated",
        "create_pod_command",
        "delete_pod_command",
        "result_stored",
        "result_failed",
    ] {
        assert!(
            names.contains(required),
            "{required} missing from the catalogue"
        );
    }
    assert!(
        EventType::ALL
            .iter()
            .any(|t| t.category() == Category::Saga)
    );
    assert!(EventType::ALL.iter().any(|t| t.category() == Category::Dlq));
}

/// `docs/events.md` embeds the generated catalogue between two markers; regenerate it with
/// `KILN_UPDATE_DOCS=1 cargo test -p shared events_doc`.
#[test]
fn events_doc_matches_the_catalogue() {
    const START: &str = "<!-- catalogue:start -->\n";
    const END: &str = "<!-- catalogue:end -->";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.md");
    let doc = std::fs::read_to_string(&path).expect("docs/events.md exists");
    let start = doc.find(START).expect("start marker") + START.len();
    let end = doc.find(END).expect("end marker");
    let expected = catalogue_markdown("dev_");
    if std::env::var_os("KILN_UPDATE_DOCS").is_some() {
        let updated = format!("{}{}{}", &doc[..start], expected, &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &doc[start..end],
        expected,
        "docs/events.md is out of date; run KILN_UPDATE_DOCS=1 cargo test -p shared events_doc"
    );
}
