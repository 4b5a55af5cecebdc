//! The analytics consumer and its report, against a real broker, registry
//! and PostgreSQL.

mod support;

use consumers::analytics;
use std::time::Duration;
use support::*;

// On a current-thread runtime, as a consumer embedded in a small service
// may run: nothing in the runner may need the multi-threaded one.
#[tokio::test(flavor = "current_thread")]
async fn per_minute_rollups_count_entities_amounts_and_latency() {
    let stack = Stack::start().await;
    let pool = stack.pool().await;
    // Rollups are per minute of receipt: keep the three events in one minute.
    while chrono::Timelike::second(&chrono::Utc::now()) > 50 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let now = chrono::Utc::now().timestamp();
    // Three payments over two intents, in two currencies.
    for (id, intent, amount, currency) in
        [("evt_a", "pi_a", 1000, "usd"), ("evt_b", "pi_a", 250, "usd"), ("evt_c", "pi_b", 700, "eur")]
    {
        let mut object = payment_intent(intent, amount, "succeeded");
        object["currency"] = currency.into();
        let event = stripe_event(id, "payment_intent.succeeded", now - 3, object);
        assert_eq!(stack.ingest("stripe", &[], &event).await["status"], "accepted");
    }
    run_until(&stack, analytics::Analytics, &[("SELECT coalesce(sum(events), 0)::bigint FROM rollup_counts", 3)]).await;

    let rows = analytics::report(&pool, 60).await.expect("report");
    let row = rows.iter().find(|r| r.event_type == "payment_intent.succeeded").expect("a row for the event type");
    assert_eq!((row.source.as_str(), row.events, row.entities), ("stripe", 3, 2));
    assert_eq!(row.amounts, vec![("EUR".to_owned(), 700), ("USD".to_owned(), 1250)]);
    let [p50, _, p99] = row.provider_to_bridge.expect("occurred_at → received_at recorded");
    assert!((2_000.0..=10_000.0).contains(&p50), "about 3 s from the event to the bridge: {p50}");
    assert!(p99 >= p50);
    assert!(row.bridge_to_consumer.is_some());

    // The command prints the same as a table.
    let config_path = stack.write_consumer_config("");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_consumers"))
            .args(["--config"])
            .arg(&config_path)
            .args(["report", "--minutes", "60"])
            .output()
            .expect("report runs")
    })
    .await
    .expect("join");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(table.contains("payment_intent.succeeded"), "{table}");
    assert!(table.contains("EUR 7.00, USD 12.50"), "{table}");
}

/// The rollups, as text in key order; bridge → consumer latency (measured
/// when applied) only counted per minute, source and event type.
async fn rollups(pool: &sqlx::PgPool) -> Vec<String> {
    rows_as_text(
        pool,
        &[
            "SELECT * FROM analytics_seen",
            "SELECT * FROM rollup_counts",
            "SELECT * FROM rollup_entities",
            "SELECT * FROM rollup_amounts",
            "SELECT * FROM rollup_latency WHERE stage = 'provider_to_bridge'",
            "SELECT minute, source, event_type, sum(hits) FROM rollup_latency WHERE stage = 'bridge_to_consumer'
             GROUP BY 1, 2, 3",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_adds_to_the_rollups_what_one_event_at_a_time_does() {
    let records = mixed_events(300);
    let both = apply_both_ways(&analytics::Analytics, &records).await;
    let (sequential, batch) = (&both.one_at_a_time, &both.batched);

    assert_eq!(rollups(batch).await, rollups(sequential).await);
    // Each delivery counted once, its first copy's amount summed once.
    let mut seen = std::collections::HashSet::new();
    let (mut events, mut usd) = (0i64, 0i64);
    for record in &records {
        if seen.insert((record.text("/source").expect("source"), record.text("/delivery_id").expect("delivery"))) {
            events += 1;
            if let Some((currency, amount)) = analytics::amount_of(record)
                && currency == "USD"
            {
                usd += amount;
            }
        }
    }
    assert!(events < 300, "the events include copies of deliveries");
    let (counted, summed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(events) FROM rollup_counts)::bigint,
                (SELECT sum(amount_minor) FROM rollup_amounts WHERE currency = 'USD')::bigint",
    )
    .fetch_one(batch)
    .await
    .expect("sums");
    assert_eq!((counted, summed), (events, usd));
}
