//! Faults, against the real binary and a real broker: SIGKILL under load
//! loses nothing that was acknowledged; SIGTERM drains and exits 0; no
//! configured secret ever appears in the logs; overload is answered 503.

mod support;

use rdkafka::message::Message;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

struct Bridge {
    child: Child,
    url: String,
}

fn spawn_bridge(config: &std::path::Path, port: u16, stderr: Stdio) -> Bridge {
    let child = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "debug,rdkafka=info,h2=info,hyper=info,reqwest=info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("bridge starts");
    Bridge { child, url: format!("http://127.0.0.1:{port}") }
}

async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "bridge did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config_on_port(stack: &Stack, port: u16, extra_server: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(stack.dir().join("bridge.toml")).expect("config");
    let text = text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\"\n{extra_server}"));
    let path = stack.dir().join(format!("bridge-{port}.toml"));
    std::fs::write(&path, text).expect("write");
    path
}

async fn send(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Option<u16> {
    signed_stripe_post(client, url, body).send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_twenty_times_loses_no_acknowledged_delivery() {
    let stack = Stack::start().await;
    let port = testbed::free_port().expect("port");
    let config = config_on_port(&stack, port, "");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("http://127.0.0.1:{port}");
    let mut bridge = spawn_bridge(&config, port, Stdio::null());
    wait_ready(&bridge.url).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (acked, next, stop, url) = (acked.clone(), next.clone(), stop.clone(), url.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("evt_crash_{}", next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                if let Some(status) = send(&client, &url, stripe_body(&id)).await {
                    if (200..300).contains(&status) {
                        acked.lock().expect("lock").insert(id);
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        bridge.child.kill().expect("SIGKILL");
        bridge.child.wait().expect("reaped");
        bridge = spawn_bridge(&config, port, Stdio::null());
        wait_ready(&bridge.url).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.expect("load");
    }
    let _ = bridge.child.kill();
    let acked = acked.lock().expect("lock").clone();
    let topic = "webhooks.stripe.payment_intent.succeeded";
    let records = stack.records(topic, acked.len());
    let mut found: HashMap<String, usize> = HashMap::new();
    let decoder = stack.decoder();
    for record in &records {
        let decoded = decoder.decode(record.payload()).await.expect("decodes").value;
        *found.entry(string(field(&decoded, "delivery_id")).to_owned()).or_default() += 1;
    }
    let missing = acked.iter().filter(|id| !found.contains_key(*id)).count();
    let duplicates: usize = found.values().map(|n| n - 1).sum();
    println!("acked {}, found {}, missing {missing}, duplicates {duplicates} (20 SIGKILLs)", acked.len(), found.len());
    assert!(acked.len() > 100, "the load generator got too few answers to prove anything: {}", acked.len());
    assert_eq!(missing, 0, "acknowledged deliveries were lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let stack = Stack::start().await;
    let port = testbed::free_port().expect("port");
    let config = config_on_port(&stack, port, "");
    let mut bridge = spawn_bridge(&config, port, Stdio::null());
    wait_ready(&bridge.url).await;
    let client = reqwest::Client::new();
    // Warm up: the first delivery creates the topic and registers the schema.
    assert_eq!(send(&client, &bridge.url, stripe_body("evt_term_warm")).await, Some(200));
    let mut requests = Vec::new();
    for n in 0..50 {
        let (client, url) = (client.clone(), bridge.url.clone());
        requests.push(tokio::spawn(async move {
            (format!("evt_term_{n}"), send(&client, &url, stripe_body(&format!("evt_term_{n}"))).await)
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let status = Command::new("kill").args(["-TERM", &bridge.child.id().to_string()]).status().expect("kill -TERM");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = bridge.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the bridge did not exit within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit}");
    let mut accepted = vec!["evt_term_warm".to_owned()];
    for request in requests {
        let (id, status) = request.await.expect("join");
        if status.is_some_and(|s| (200..300).contains(&s)) {
            accepted.push(id);
        }
    }
    // Every request answered 2xx before the exit is on the topic.
    let records = stack.records("webhooks.stripe.payment_intent.succeeded", accepted.len());
    let decoder = stack.decoder();
    let mut on_topic = HashSet::new();
    for record in &records {
        let decoded = decoder.decode(record.payload()).await.expect("decodes").value;
        on_topic.insert(string(field(&decoded, "delivery_id")).to_owned());
    }
    for id in &accepted {
        assert!(on_topic.contains(id), "{id} was acknowledged but is not on the topic");
    }
    // After the exit nothing answers.
    assert!(send(&client, &bridge.url, stripe_body("evt_after")).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_configured_secret_appears_in_the_logs() {
    let stack = Stack::start().await;
    let port = testbed::free_port().expect("port");
    let config = config_on_port(&stack, port, "");
    let log = stack.dir().join("bridge.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut bridge = spawn_bridge(&config, port, Stdio::from(file));
    wait_ready(&bridge.url).await;
    let client = reqwest::Client::new();
    assert_eq!(send(&client, &bridge.url, stripe_body("evt_logged")).await, Some(200));
    // Forged, stale and malformed requests log their reasons.
    let body = stripe_body("evt_forged");
    let mut request = client.post(format!("{}/webhooks/stripe", bridge.url)).body(body.clone());
    for (name, value) in stripe_headers(&body, "whsec_attacker_guess", now()) {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.expect("answer").status().as_u16(), 401);
    let garbage = b"not json".to_vec();
    let mut request = client.post(format!("{}/webhooks/stripe", bridge.url)).body(garbage.clone());
    for (name, value) in stripe_headers(&garbage, STRIPE_SECRET, now()) {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.expect("answer").status().as_u16(), 202);
    let _ = Command::new("kill").args(["-TERM", &bridge.child.id().to_string()]).status();
    let _ = bridge.child.wait();
    let logs = std::fs::read_to_string(&log).expect("logs");
    assert!(logs.lines().count() > 5, "the run logged too little to prove anything:\n{logs}");
    assert!(logs.contains("evt_logged") || logs.contains("delivery produced"), "{logs}");
    for secret in [
        STRIPE_SECRET,
        "whsec_old_rotated_out",
        GITHUB_SECRET,
        SHOPIFY_SECRET,
        SLACK_SECRET,
        TWILIO_SECRET,
        SVIX_SECRET,
        ACME_SECRET,
        ADMIN_TOKEN,
        ZOOM_SECRET,
        TWITCH_SECRET,
    ] {
        assert!(!logs.contains(secret), "secret {secret} appears in the logs");
    }
    // Every line is JSON (structured logs).
    for line in logs.lines().filter(|l| !l.trim().is_empty() && l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_is_answered_503_at_once() {
    let stack = Stack::start().await;
    let port = testbed::free_port().expect("port");
    let config = config_on_port(&stack, port, "max_in_flight = 2");
    let mut bridge = spawn_bridge(&config, port, Stdio::null());
    wait_ready(&bridge.url).await;
    let client = reqwest::Client::new();
    let mut requests = Vec::new();
    for n in 0..64 {
        let (client, url) = (client.clone(), bridge.url.clone());
        requests.push(tokio::spawn(async move { send(&client, &url, stripe_body(&format!("evt_load_{n}"))).await }));
    }
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for request in requests {
        *statuses.entry(request.await.expect("join").expect("answered")).or_default() += 1;
    }
    let _ = bridge.child.kill();
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "no request was refused: {statuses:?}");
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "nothing got through: {statuses:?}");
    assert_eq!(statuses.len(), 2, "only 200 and 503: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_over_its_rate_limit_is_answered_429() {
    let stack = Stack::start().await;
    let client = reqwest::Client::new();
    // Ten at once: the bucket holds three.
    let mut requests = Vec::new();
    for n in 0..10 {
        let body = stripe_body(&format!("evt_rate_{n}"));
        let mut request = client.post(format!("{}/webhooks/limited", stack.url)).body(body.clone());
        for (name, value) in stripe_headers(&body, STRIPE_SECRET, now()) {
            request = request.header(name, value);
        }
        requests.push(tokio::spawn(async move {
            let response = request.send().await.expect("answer");
            let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            (response.status().as_u16(), retry_after)
        }));
    }
    let mut statuses = Vec::new();
    for request in requests {
        let (status, retry_after) = request.await.expect("join");
        if status == 429 {
            assert_eq!(retry_after.as_deref(), Some("1"));
        }
        statuses.push(status);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!((5..=7).contains(&limited), "a burst of 3 then about 3/s: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count() + limited, 10, "{statuses:?}");
    // Other sources are not affected.
    let body = stripe_body("evt_unlimited");
    let (status, _, _) = stack.post("stripe", &stripe_headers(&body, STRIPE_SECRET, now()), body).await;
    assert_eq!(status, 200);
}

/// Posts to the Stripe route on a connection of its own, announcing a body
/// of `content_length` bytes and sending only `sent` of them, then reads
/// until the bridge closes the connection: what it answered, and how long
/// after the last byte was sent. `None` if it was still open after 10 s.
async fn answer_to_an_unfinished_body(stack: &Stack, content_length: usize, sent: &[u8]) -> Option<(String, Duration)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = stack.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    // The bridge may answer, and close, before all of it is read.
    let _ = socket.write_all(sent).await;
    let started = Instant::now();
    let mut answer = Vec::new();
    // A reset after the answer leaves the answer read: what was read is what counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await.ok()?;
    Some((String::from_utf8_lossy(&answer).into_owned(), started.elapsed()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_is_answered_408_and_cut_off() {
    let stack = Stack::start().await;
    let (answer, after) = answer_to_an_unfinished_body(&stack, 1000, b"{\"id\":")
        .await
        .expect("the bridge kept waiting for the slow body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(after < Duration::from_secs(5), "answered after {after:?}");
}

/// A body over `server.max_body_bytes` is answered 413 before it has all
/// arrived, so the connection is closed after the answer, and the answer
/// says so: a keep-alive client that reused it would see its next request
/// fail unanswered (the hostile corpus's request after a 1 MB body once did).
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_is_answered_413_with_the_connection_closed() {
    let stack = Stack::start().await;
    // More than the limit, less than announced: the rest never comes.
    let (answer, _) = answer_to_an_unfinished_body(&stack, 1_000_000, &vec![b'x'; 100_000])
        .await
        .expect("the bridge kept the connection open after answering");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_https_with_the_configured_certificate() {
    let dir = std::env::temp_dir().join(format!("bridge-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).expect("key");
    let extra = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let stack = Stack::start_with(&extra).await;
    let https = stack.url.replace("http://", "https://");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let body = stripe_body("evt_over_tls");
    let mut request = client.post(format!("{https}/webhooks/stripe")).body(body.clone());
    for (name, value) in stripe_headers(&body, STRIPE_SECRET, now()) {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.expect("HTTPS answer").status().as_u16(), 200);
    assert!(reqwest::get(format!("{}/healthz", stack.url)).await.is_err(), "plain HTTP is not served when TLS is on");
    let _ = std::fs::remove_dir_all(&dir);
}
