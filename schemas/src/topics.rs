//! Creating Kafka topics through the admin API, reading one to its end, and
//! asking the broker without holding up the async runtime.
//!
//! Brokers that do not create topics on first use (tansu 0.6, or Kafka with
//! `auto.create.topics.enable=false`) need this before the first produce.

use crate::single_flight::SingleFlight;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use std::time::Duration;

/// A topic could not be created.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "could not create Kafka topic '{topic}' on {brokers}: {reason}; check that the brokers are reachable and allow topic creation"
)]
pub struct TopicError {
    /// The topic.
    pub topic: String,
    /// The bootstrap servers used.
    pub brokers: String,
    /// What the broker or client said.
    pub reason: String,
}

/// Creates `topic` with `partitions` partitions and the given topic configs,
/// unless it exists already (then it is left as it is).
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), TopicError> {
    let fail = |reason: String| TopicError { topic: topic.to_owned(), brokers: brokers.to_owned(), reason };
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().map_err(|error| fail(error.to_string()))?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&new_topic], &options).await.map_err(|error| fail(error.to_string()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(fail(code.to_string())),
        }
    }
    Ok(())
}

/// The topics of one cluster this process has created (or found), each
/// created once, by one admin client, however many ask for it at once
/// ([`SingleFlight`]): the first webhooks of a new event type, the first
/// dead letters of a batch.
#[derive(Debug)]
pub struct KnownTopics {
    brokers: String,
    created: SingleFlight<String, (), TopicError>,
}

impl KnownTopics {
    /// The topics of the cluster at `brokers`, none known yet.
    pub fn new(brokers: &str) -> Self {
        Self { brokers: brokers.to_owned(), created: SingleFlight::default() }
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Creates `topic` with `partitions` partitions unless it is known to
    /// exist; callers that ask while it is being created wait for that
    /// creation.
    pub async fn ensure(&self, topic: &str, partitions: i32) -> Result<(), TopicError> {
        let create = || {
            let (brokers, topic) = (self.brokers.clone(), topic.to_owned());
            async move { ensure_topic(&brokers, &topic, partitions, &[]).await }
        };
        self.created.get_or_make(topic, create).await
    }
}

/// How long a reader that has reached a partition's high watermark waits
/// for more of what its consumer has already fetched. tansu 0.6 gives the
/// high watermark as the last record batch's first offset + 1, so the rest
/// of that batch lies beyond it; fetched with the batch, it is already
/// queued and arrives at once.
pub const PAST_THE_WATERMARK: Duration = Duration::from_millis(10);

/// The next record `consumer` has already fetched, or `None` if none comes
/// within [`PAST_THE_WATERMARK`]: to read a partition past its high
/// watermark to the end of its last record batch.
pub async fn already_fetched(consumer: &StreamConsumer) -> Option<KafkaResult<BorrowedMessage<'_>>> {
    tokio::time::timeout(PAST_THE_WATERMARK, consumer.recv()).await.ok()
}

/// Runs `ask` with a clone of `client` on a blocking thread. librdkafka's
/// synchronous calls (metadata, watermarks, seek) wait on the calling thread
/// for the broker's answer, for up to their timeout: not on one of the
/// runtime's workers.
pub async fn blocking<C, T>(client: &C, ask: impl FnOnce(&C) -> T + Send + 'static) -> Result<T, tokio::task::JoinError>
where
    C: Clone + Send + 'static,
    T: Send + 'static,
{
    let client = client.clone();
    tokio::task::spawn_blocking(move || ask(&client)).await
}
