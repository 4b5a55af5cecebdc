//! Reconciliation against a fake provider API (the providers are outside
//! this network): missed events are recovered onto their topics marked
//! `origin = reconciliation`, the late webhook is then a duplicate, 429 is
//! honoured, and the cursor survives a restart.

mod support;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use consumers::reconcile::{ReconcileConfig, Reconciler, RoundReport};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use support::*;

#[derive(Default)]
struct FakeStripe {
    events: Vec<Value>,
    requests: Vec<HashMap<String, String>>,
    throttled_once: bool,
}

async fn list_events(
    State(fake): State<Arc<Mutex<FakeStripe>>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut fake = fake.lock().expect("lock");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk_test_fake") {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    fake.requests.push(q.clone());
    if !fake.throttled_once {
        fake.throttled_once = true;
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response();
    }
    let since: i64 = q.get("created[gte]").and_then(|v| v.parse().ok()).unwrap_or(0);
    // Newest first, pages of 2, as Stripe lists them.
    let mut matching: Vec<&Value> =
        fake.events.iter().filter(|e| e["created"].as_i64().unwrap_or(0) >= since).collect();
    matching.sort_by_key(|e| std::cmp::Reverse(e["created"].as_i64()));
    let start = match q.get("starting_after") {
        Some(after) => matching.iter().position(|e| e["id"] == after.as_str()).map_or(matching.len(), |p| p + 1),
        None => 0,
    };
    let page: Vec<Value> = matching.iter().skip(start).take(2).map(|e| (*e).clone()).collect();
    let has_more = start + 2 < matching.len();
    axum::Json(json!({ "object": "list", "data": page, "has_more": has_more })).into_response()
}

#[derive(Default)]
struct FakeAcme {
    items: Vec<Value>,
}

async fn list_acme(State(fake): State<Arc<Mutex<FakeAcme>>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let fake = fake.lock().expect("lock");
    let after: usize = q.get("after").and_then(|v| v.trim_start_matches("w").parse().ok()).map_or(0, |n: usize| n + 1);
    let page: Vec<Value> = fake.items.iter().skip(after).take(2).cloned().collect();
    let next = if after + 2 < fake.items.len() { page.last().map(|i| i["id"].clone()) } else { None };
    axum::Json(json!({ "items": page, "next": next })).into_response()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("fake serves") });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_events_are_recovered_and_the_late_webhook_is_a_duplicate() {
    let stack = Stack::start().await;
    let now = chrono::Utc::now().timestamp();
    let delivered =
        stripe_event("evt_seen", "payment_intent.succeeded", now - 50, payment_intent("pi_1", 100, "succeeded"));
    let missed: Vec<Value> = (0..3)
        .map(|n| {
            stripe_event(
                &format!("evt_missed_{n}"),
                "payment_intent.succeeded",
                now - 40 + n,
                payment_intent(&format!("pi_m{n}"), 200 + n, "succeeded"),
            )
        })
        .collect();
    // The webhook of evt_seen arrived; the others never did.
    assert_eq!(stack.ingest("stripe", &[], &delivered).await["status"], "accepted");

    let stripe = Arc::new(Mutex::new(FakeStripe {
        events: [vec![delivered.clone()], missed.clone()].concat(),
        ..Default::default()
    }));
    let stripe_url = serve(Router::new().route("/v1/events", get(list_events)).with_state(stripe.clone())).await;
    let acme = Arc::new(Mutex::new(FakeAcme {
        items: (0..5).map(|n| json!({"id": format!("w{n}"), "event": "widget.made", "widget": {"n": n}})).collect(),
    }));
    let acme_url = serve(Router::new().route("/events", get(list_acme)).with_state(acme.clone())).await;

    let pool = stack.pool().await;
    let key_file = stack.bridge_config_path.with_file_name("stripe-api-key");
    std::fs::write(&key_file, "sk_test_fake\n").expect("key file");
    let settings: ReconcileConfig = toml_config(&format!(
        r#"
bridge_config = "{bridge}"
interval_secs = 1
[[stripe]]
source = "stripe"
api_base = "{stripe_url}"
api_key_file = "{key_file}"
lookback_secs = 3600
[[generic]]
source = "acme"
url = "{acme_url}/events"
list_pointer = "/items"
id_pointer = "/id"
cursor_param = "after"
next_cursor_pointer = "/next"
"#,
        bridge = stack.bridge_config_path.display(),
        key_file = key_file.display(),
    ));
    let reconciler = Reconciler::new(settings.clone(), stack.app.clone(), pool.clone());
    let report = reconciler.round().await.expect("round");
    assert_eq!(
        report,
        RoundReport { fetched: 9, recovered: 8, duplicates: 1, failed: 0 },
        "4 Stripe events (1 known) + 5 acme items"
    );
    assert!(stripe.lock().expect("lock").throttled_once, "the 429 was met and waited out");
    assert!(
        reconciler.render_metrics().contains("reconcile_events_total{result=\"recovered\"} 8"),
        "{}",
        reconciler.render_metrics()
    );

    // The recovered events are on their topics, typed, marked as reconciled.
    let decoder = consumers::record::Decoder::new(&stack.registry.url);
    let records = read_all(&stack, "webhooks.stripe.payment_intent.succeeded", 4).await;
    let mut origins: Vec<(String, String)> = Vec::new();
    for record in &records {
        let decoded = decoder.decode(record).await.expect("decodes");
        origins.push((
            decoded.text("/delivery_id").expect("id").to_owned(),
            decoded.text("/origin").expect("origin").to_owned(),
        ));
    }
    origins.sort();
    assert_eq!(
        origins,
        vec![
            ("evt_missed_0".into(), "reconciliation".into()),
            ("evt_missed_1".into(), "reconciliation".into()),
            ("evt_missed_2".into(), "reconciliation".into()),
            ("evt_seen".into(), "webhook".into()),
        ]
    );
    assert_eq!(read_all(&stack, "webhooks.acme.widget.made", 5).await.len(), 5);

    // The late webhook of a recovered event is recognised as a duplicate.
    assert_eq!(stack.ingest("stripe", &[], &missed[1]).await["status"], "duplicate");

    // A second reconciler (a restart) resumes from the stored cursors.
    let restarted = Reconciler::new(settings, stack.app.clone(), pool.clone());
    let report = restarted.round().await.expect("round");
    assert_eq!(report.recovered, 0, "nothing new after a restart: {report:?}");
    let last_since =
        stripe.lock().expect("lock").requests.last().and_then(|q| q.get("created[gte]").cloned()).expect("query");
    assert_eq!(last_since, (now - 38).to_string(), "the Stripe cursor is the newest created seen");
    let (cursor,): (String,) = sqlx::query_as("SELECT cursor FROM reconcile_cursors WHERE poller LIKE 'generic:%'")
        .fetch_one(&pool)
        .await
        .expect("cursor");
    // The last cursor the API handed out: the last page is read again next
    // round (opaque cursors cannot be made up), and deduplicated.
    assert_eq!(cursor, "w3");
}

fn toml_config(text: &str) -> ReconcileConfig {
    use figment::providers::Format;
    figment::Figment::new().merge(figment::providers::Toml::string(text)).extract().expect("reconcile config")
}

async fn read_all(stack: &Stack, topic: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let (brokers, topic) = (stack.broker.bootstrap(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        testbed::read_records(&brokers, &topic, count, std::time::Duration::from_secs(10)).expect("records")
    })
    .await
    .expect("join")
}

async fn github_deliveries(
    State(base): State<Arc<Mutex<String>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let base = base.lock().expect("lock").clone();
    let delivery = |id: i64, code: i64| json!({"id": id, "guid": format!("guid-{id}"), "status_code": code, "status": if code == 200 { "OK" } else { "failed" }, "redelivery": false, "event": "push"});
    match q.get("cursor").map(String::as_str) {
        None => (
            [("link", format!(r#"<{base}/repos/octo/repo/hooks/1/deliveries?per_page=100&cursor=p2>; rel="next""#))],
            axum::Json(json!([delivery(5, 200), delivery(4, 502)])),
        )
            .into_response(),
        Some("p2") => axum::Json(json!([delivery(3, 0), delivery(2, 200)])).into_response(),
        Some(_) => axum::Json(json!([])).into_response(),
    }
}

async fn github_delivery(axum::extract::Path(id): axum::extract::Path<i64>) -> Response {
    let mut push: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("schemas/samples/github/push.json")).expect("sample"),
    )
    .expect("json");
    push["after"] = json!(format!("sha-of-delivery-{id}"));
    axum::Json(json!({
        "id": id, "guid": format!("guid-{id}"), "event": "push",
        "request": { "headers": { "X-GitHub-Event": "push", "X-GitHub-Delivery": format!("guid-{id}"), "Content-Type": "application/json" }, "payload": push }
    }))
    .into_response()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_github_deliveries_are_fetched_and_pushed() {
    let stack = Stack::start().await;
    let base = Arc::new(Mutex::new(String::new()));
    let url = serve(
        Router::new()
            .route("/repos/octo/repo/hooks/1/deliveries", get(github_deliveries))
            .route("/repos/octo/repo/hooks/1/deliveries/{id}", get(github_delivery))
            .with_state(base.clone()),
    )
    .await;
    *base.lock().expect("lock") = url.clone();
    let token = stack.bridge_config_path.with_file_name("github-token");
    std::fs::write(&token, "ghp_fake").expect("token");
    let settings = toml_config(&format!(
        "bridge_config = \"{}\"\n[[github]]\nsource = \"github\"\napi_base = \"{url}\"\nhook_path = \"/repos/octo/repo/hooks/1\"\ntoken_file = \"{}\"\n",
        stack.bridge_config_path.display(),
        token.display()
    ));
    let pool = stack.pool().await;
    let report = Reconciler::new(settings.clone(), stack.app.clone(), pool.clone()).round().await.expect("round");
    assert_eq!(report, RoundReport { fetched: 2, recovered: 2, duplicates: 0, failed: 0 }, "deliveries 4 and 3 failed");
    let decoder = consumers::record::Decoder::new(&stack.registry.url);
    let mut ids = Vec::new();
    for record in read_all(&stack, "webhooks.github.push", 2).await {
        let decoded = decoder.decode(&record).await.expect("decodes");
        assert_eq!(decoded.text("/origin"), Some("reconciliation"));
        ids.push(decoded.text("/delivery_id").expect("id").to_owned());
    }
    ids.sort();
    assert_eq!(ids, vec!["guid-3", "guid-4"]);
    // The cursor is the newest delivery id: a second round fetches nothing.
    let report = Reconciler::new(settings, stack.app.clone(), pool).round().await.expect("round");
    assert_eq!(report, RoundReport::default());
}
