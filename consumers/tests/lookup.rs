//! `consumers lookup`: one delivery's receipt, outcome, schema, place on
//! Kafka, trace id, and which consumers processed it.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn lookup_shows_where_a_delivery_went_and_who_processed_it() {
    let stack = Stack::start().await;
    let event = stripe_event(
        "evt_lookup",
        "payment_intent.succeeded",
        chrono::Utc::now().timestamp(),
        payment_intent("pi_lookup", 7, "succeeded"),
    );
    let answer = stack.ingest("stripe", &[], &event).await;
    assert_eq!(answer["status"], "accepted");
    run_until(
        &stack,
        consumers::sync::Sync,
        &[("SELECT count(*) FROM webhook_events WHERE delivery_id = 'evt_lookup'", 1)],
    )
    .await;

    let config = stack.write_consumer_config("");
    let run = |id: &'static str| {
        let config = config.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_consumers"))
                .arg("--config")
                .arg(&config)
                .args(["lookup", "--source", "stripe", "--delivery-id", id])
                .env("RUST_LOG", "error")
                .output()
                .expect("lookup runs")
        }
    };
    let output = tokio::task::spawn_blocking(run("evt_lookup")).await.expect("join");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(found["outcome"], "produced");
    assert_eq!(found["event_type"], "payment_intent.succeeded");
    assert_eq!(found["topic"], "webhooks.stripe.payment_intent.succeeded");
    assert_eq!(found["offset"], answer["offset"]);
    assert_eq!(found["partition"], answer["partition"]);
    assert_eq!(found["schema_version"], 1);
    assert!(found["schema_id"].as_u64().is_some());
    assert_eq!(found["trace_id"].as_str().map(str::len), Some(32), "{found}");
    assert_eq!(
        found["consumers"],
        serde_json::json!([{"consumer": "sync", "processed": true}, {"consumer": "analytics", "processed": false}])
    );
    assert!(found["synced_at"].is_string());

    let output = tokio::task::spawn_blocking(run("evt_never_seen")).await.expect("join");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no delivery evt_never_seen"));
}
