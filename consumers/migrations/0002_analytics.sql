-- Per-minute rollups by source and event type (minute of bridge receipt).
CREATE TABLE analytics_seen (
    source      text NOT NULL,
    delivery_id text NOT NULL,
    PRIMARY KEY (source, delivery_id)
);

CREATE TABLE rollup_counts (
    minute     timestamptz NOT NULL,
    source     text NOT NULL,
    event_type text NOT NULL,
    events     bigint NOT NULL,
    PRIMARY KEY (minute, source, event_type)
);

CREATE TABLE rollup_entities (
    minute     timestamptz NOT NULL,
    source     text NOT NULL,
    event_type text NOT NULL,
    entity     text NOT NULL,
    PRIMARY KEY (minute, source, event_type, entity)
);

-- Monetary sums in minor units (cents) by currency.
CREATE TABLE rollup_amounts (
    minute       timestamptz NOT NULL,
    source       text NOT NULL,
    event_type   text NOT NULL,
    currency     text NOT NULL,
    amount_minor bigint NOT NULL,
    PRIMARY KEY (minute, source, event_type, currency)
);

-- Latency histograms: stage is 'provider_to_bridge' (occurred_at → received_at)
-- or 'bridge_to_consumer' (received_at → consumed); bucket b holds latencies
-- in [1.1^b, 1.1^(b+1)) ms, so percentiles are within 10 %.
CREATE TABLE rollup_latency (
    minute     timestamptz NOT NULL,
    source     text NOT NULL,
    event_type text NOT NULL,
    stage      text NOT NULL,
    bucket     integer NOT NULL,
    hits       bigint NOT NULL,
    PRIMARY KEY (minute, source, event_type, stage, bucket)
);
