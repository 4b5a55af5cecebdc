//! The process's tracing as `bridge` sets it up: alone in its test binary,
//! as the interest a callsite gets is shared by every subscriber of the process.

#[test]
fn without_trace_export_the_stage_spans_are_not_opened_and_the_request_span_is() {
    let _telemetry = bridge::telemetry::init_with("webhook-bridge-test", None, Some("info")).expect("init");
    let request = tracing::info_span!(target: "bridge::app", "POST /webhooks/{source}", webhook.source = "stripe");
    assert!(!request.is_disabled(), "the request span gives log lines their context");
    let _in_request = request.enter();
    use bridge::telemetry::stage;
    for span in [
        tracing::info_span!(target: "bridge::app", stage::VERIFY),
        tracing::info_span!(target: "bridge::app", stage::TRANSCODE),
        tracing::info_span!(target: "bridge::app", stage::PRODUCE),
    ] {
        assert!(span.is_disabled(), "{span:?} was opened, and nothing wants it");
    }
    let elsewhere = tracing::info_span!(target: "consumers::runner", "produce");
    assert!(!elsewhere.is_disabled(), "only the bridge's stages are left out");
    // And the log level still bounds what is even looked at.
    assert_eq!(tracing::level_filters::LevelFilter::current(), tracing::level_filters::LevelFilter::INFO);
    assert!(!tracing::enabled!(target: "hyper::proto", tracing::Level::DEBUG));
}
