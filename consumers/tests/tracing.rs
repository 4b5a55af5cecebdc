//! One delivery is one trace: the bridge's HTTP request span (continuing the
//! caller's `traceparent`), its verify / transcode / produce spans, and the
//! sync consumer's process span, linked through the record's `traceparent`
//! header. Spans are exported over OTLP/HTTP to a receiver in this test, which
//! decodes the protobuf.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

#[derive(Debug, Clone)]
struct SpanSeen {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
}

async fn receiver() -> (String, Arc<Mutex<Vec<SpanSeen>>>) {
    let spans: Arc<Mutex<Vec<SpanSeen>>> = Arc::default();
    let collected = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let collected = collected.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut out = collected.lock().expect("lock");
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            out.push(SpanSeen {
                                name: span.name,
                                trace_id: hex::encode(span.trace_id),
                                span_id: hex::encode(span.span_id),
                                parent_span_id: hex::encode(span.parent_span_id),
                                attributes: span
                                    .attributes
                                    .into_iter()
                                    .map(|kv| (kv.key, kv.value.map(|v| format!("{:?}", v.value)).unwrap_or_default()))
                                    .collect(),
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (url, spans)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_links_the_http_request_to_the_consumer() {
    let (otlp, spans) = receiver().await;
    // Logs at warn, as a quiet deployment runs: the spans must still be exported.
    let telemetry =
        bridge::telemetry::init_with("webhook-bridge-test", Some(Some(format!("{otlp}/v1/traces"))), Some("warn"))
            .expect("telemetry");
    let stack = Stack::start().await;
    let mut config = bridge::config::Config::load(&stack.bridge_config_path).expect("config");
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    let application = bridge::Application::build(config).await.expect("bridge");
    let url = format!("http://{}/webhooks/stripe", application.local_addr());
    tokio::spawn(async move { application.run_until_stopped(std::future::pending()).await.expect("bridge runs") });

    let event = stripe_event(
        "evt_traced",
        "payment_intent.succeeded",
        chrono::Utc::now().timestamp(),
        payment_intent("pi_traced", 42, "succeeded"),
    );
    let body = serde_json::to_vec(&event).expect("json");
    let t = chrono::Utc::now().timestamp().to_string();
    let mac = bridge::verify::mac(bridge::verify::Algorithm::Sha256, b"unused-secret", &[t.as_bytes(), b".", &body]);
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(&url)
        .header("stripe-signature", format!("t={t},v1={}", hex::encode(mac)))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 200);

    run_until(&stack, consumers::sync::Sync, &[("SELECT count(*) FROM payment_intents WHERE id = 'pi_traced'", 1)])
        .await;

    // Export and wait for the receiver to have every span of the trace.
    let find =
        |name: &str| spans.lock().expect("lock").iter().find(|s| s.name == name && s.trace_id == caller_trace).cloned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        telemetry.flush();
        if find("process").is_some() && find("produce").is_some() && find("POST /webhooks/{source}").is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "spans seen: {:#?}", spans.lock().expect("lock"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let request = find("POST /webhooks/{source}").expect("request span");
    let produce = find("produce").expect("produce span");
    let process = find("process").expect("process span");
    let verify = find("verify").expect("verify span");
    let transcode = find("transcode").expect("transcode span");
    assert_eq!(request.parent_span_id, caller_span, "the request continues the caller's trace");
    assert_eq!(verify.parent_span_id, request.span_id);
    assert_eq!(transcode.parent_span_id, request.span_id);
    assert_eq!(produce.parent_span_id, request.span_id);
    assert_eq!(process.parent_span_id, produce.span_id, "the consumer continues from the record's traceparent");
    let attribute = |span: &SpanSeen, key: &str| span.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert!(attribute(&produce, "messaging.kafka.offset").is_some(), "{produce:?}");
    assert!(
        attribute(&produce, "messaging.destination.name")
            .is_some_and(|v| v.contains("webhooks.stripe.payment_intent.succeeded"))
    );
    assert!(attribute(&request, "http.response.status_code").is_some_and(|v| v.contains("200")), "{request:?}");
    assert!(attribute(&process, "messaging.message.id").is_some_and(|v| v.contains("evt_traced")), "{process:?}");
}
