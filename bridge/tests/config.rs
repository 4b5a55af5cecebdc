//! The shipped example config parses; unknown keys and bad values are
//! refused with a message naming the key; the environment overrides the file.

#![allow(clippy::result_large_err)] // figment::Jail closures return figment::Error

use bridge::config::{Config, Provider};
use std::path::Path;

fn example() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.example.toml"))
}

#[test]
fn example_config_parses() {
    figment::Jail::expect_with(|_| {
        let config = Config::load(example()).expect("the example config is valid");
        assert_eq!(config.sources.len(), 7);
        assert_eq!(config.sources["stripe"].provider, Provider::Stripe);
        assert_eq!(config.sources["stripe"].key_pointer.as_deref(), Some("/data/object/id"));
        assert_eq!(config.sources["svix"].provider, Provider::StandardWebhooks);
        assert_eq!(config.kafka.topic_template, "webhooks.{source}.{event_type}");
        assert!(config.sources["acme"].generic.is_some());
        assert_eq!((config.dedup.window_secs, config.dedup.max_deliveries), (259_200, 1_750_000));
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("BRIDGE_KAFKA__BROKERS", "kafka-a:9092,kafka-b:9092");
        jail.set_env("BRIDGE_SOURCES__STRIPE__TOLERANCE_SECS", "600");
        let config = Config::load(example()).expect("valid");
        assert_eq!(config.kafka.brokers, "kafka-a:9092,kafka-b:9092");
        assert_eq!(config.sources["stripe"].tolerance_secs, 600);
        Ok(())
    });
}

#[test]
fn unknown_keys_are_named() {
    figment::Jail::expect_with(|_| {
        let text = std::fs::read_to_string(example()).expect("read").replace("[kafka]\n", "[kafka]\nbrokres = \"x\"\n");
        let error = Config::from_toml(&text).expect_err("a misspelt key is an error").to_string();
        assert!(error.contains("brokres"), "{error}");

        let text = std::fs::read_to_string(example())
            .expect("read")
            .replace("[sources.github]\n", "[sources.github]\nsecrets = [\"in-the-file\"]\n");
        let error = Config::from_toml(&text).expect_err("secrets in the file are refused").to_string();
        assert!(error.contains("secrets"), "{error}");
        Ok(())
    });
}

#[test]
fn unusable_values_say_what_to_do() {
    figment::Jail::expect_with(|_| {
        let base = std::fs::read_to_string(example()).expect("read");
        let error = Config::from_toml(&base.replace("public_url = \"https://hooks.example.com/webhooks/twilio\"", ""))
            .expect_err("twilio needs its URL")
            .to_string();
        assert!(error.contains("sources.twilio.public_url"), "{error}");
        let error = Config::from_toml(&base.replace("webhooks.{source}.{event_type}\"", "webhooks.all\""))
            .expect_err("one topic for everything is refused")
            .to_string();
        assert!(error.contains("kafka.topic_template"), "{error}");
        let error = Config::from_toml(&base.replace("max_deliveries = 1750000", "max_deliveries = 0"))
            .expect_err("a dedup view of nothing is refused")
            .to_string();
        assert!(error.contains("dedup.max_deliveries"), "{error}");
        Ok(())
    });
}

#[test]
fn secrets_never_show_in_debug_output() {
    let secret = bridge::config::Secret::new("whsec_do_not_print".into());
    assert_eq!(format!("{secret:?}"), "Secret(***)");
}
