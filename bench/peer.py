"""A do-it-yourself webhook receiver, as a team would write it without the
bridge: Starlette + uvicorn, hmac for Stripe's or GitHub's signature,
fastavro for the same envelope schema, confluent-kafka (acks=all, idempotent) for Kafka, and
a 200 only after the delivery report. Run by `scripts/bench`, through
`serve_peer.py` (uvicorn, 2 workers, TCP_NODELAY on their connections).

Environment: PEER_BROKERS, PEER_TOPIC, PEER_SCHEMA (file with the registered
envelope schema), PEER_SCHEMA_ID, PEER_SECRET, PEER_WEBHOOK (`stripe`, the
default, for Stripe payment_intent.succeeded events; `github` for pushes).
"""
import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import os
import struct
import threading
import time
from datetime import datetime

import fastavro
from confluent_kafka import Producer
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

SECRET = os.environ["PEER_SECRET"].encode()
WEBHOOK = os.environ.get("PEER_WEBHOOK", "stripe")
TOPIC = os.environ["PEER_TOPIC"]
SCHEMA_ID = int(os.environ["PEER_SCHEMA_ID"])
with open(os.environ["PEER_SCHEMA"]) as f:
    SCHEMA = fastavro.parse_schema(json.load(f))
HEADER = struct.pack(">bI", 0, SCHEMA_ID)
PRODUCER = Producer({
    "bootstrap.servers": os.environ["PEER_BROKERS"],
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 2,
})


def poll_until(stopped: threading.Event):
    """Serves the delivery reports on a thread of its own, as confluent-kafka's
    asyncio example does: poll(0.1) sleeps in librdkafka until a report
    arrives, so an idle peer spends no CPU (a 1 ms poll loop on the event
    loop cost each worker 5 % of a core while other scenarios ran)."""
    while not stopped.is_set():
        PRODUCER.poll(0.1)


def verify_stripe(header: str, body: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    t = parts.get("t")
    if t is None or abs(time.time() - int(t)) > 300:
        return False
    expected = hmac.new(SECRET, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in
               (item.split("=", 1) for item in header.split(",")) if k == "v1")


def verify_github(header: str, body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def ms(seconds):
    return None if seconds is None else int(seconds) * 1000


def transcode_stripe(event: dict, raw: str) -> dict:
    obj = event["data"]["object"]
    return {
        "delivery_id": event["id"], "source": "stripe", "event_type": event["type"], "schema_version": 1,
        "received_at": int(time.time() * 1000), "occurred_at": ms(event.get("created")), "origin": "webhook",
        "headers": {}, "raw": raw,
        "payload": {
            "id": event["id"], "object": event.get("object", "event"), "api_version": event.get("api_version"),
            "created": ms(event["created"]), "type": event["type"], "livemode": event.get("livemode", False),
            "pending_webhooks": event.get("pending_webhooks", 0), "request": event.get("request"),
            "data": {"object": {
                "id": obj["id"], "object": obj.get("object", "payment_intent"), "amount": int(obj["amount"]),
                "amount_received": int(obj.get("amount_received", 0)), "currency": obj["currency"],
                "status": obj["status"], "customer": obj.get("customer"), "created": ms(obj["created"]),
                "description": obj.get("description"), "payment_method": obj.get("payment_method"),
                "latest_charge": obj.get("latest_charge"), "livemode": obj.get("livemode", False),
                "metadata": obj.get("metadata", {}),
            }},
        },
    }


def iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def commit(c: dict) -> dict:
    author = c["author"]
    return {
        "id": c["id"], "message": c["message"], "timestamp": iso_ms(c["timestamp"]), "url": c.get("url"),
        "author": {"name": author["name"], "email": author.get("email"), "username": author.get("username")},
        "added": c.get("added", []), "removed": c.get("removed", []), "modified": c.get("modified", []),
    }


def transcode_github(push: dict, delivery: str, raw: str) -> dict:
    repo, pusher, sender, head = push["repository"], push["pusher"], push["sender"], push.get("head_commit")
    return {
        "delivery_id": delivery, "source": "github", "event_type": "push", "schema_version": 1,
        "received_at": int(time.time() * 1000), "occurred_at": None, "origin": "webhook",
        "headers": {}, "raw": raw,
        "payload": {
            "ref": push["ref"], "before": push["before"], "after": push["after"],
            "created": push.get("created", False), "deleted": push.get("deleted", False),
            "forced": push.get("forced", False), "compare": push.get("compare"),
            "commits": [commit(c) for c in push.get("commits", [])],
            "head_commit": commit(head) if head else None,
            "repository": {
                "id": repo["id"], "name": repo["name"], "full_name": repo["full_name"],
                "private": repo.get("private", False), "html_url": repo.get("html_url"),
                "default_branch": repo.get("default_branch"),
            },
            "pusher": {"name": pusher["name"], "email": pusher.get("email")},
            "sender": {"login": sender["login"], "id": sender["id"], "type": sender.get("type", "User"),
                       "html_url": sender.get("html_url")},
        },
    }


def decode(request, body: bytes):
    """The record to produce and its key, or None if the signature is wrong."""
    if WEBHOOK == "github":
        if not verify_github(request.headers.get("x-hub-signature-256", ""), body):
            return None
        push = json.loads(body)
        record = transcode_github(push, request.headers["x-github-delivery"], body.decode())
        return record, push["repository"]["full_name"]
    if not verify_stripe(request.headers.get("stripe-signature", ""), body):
        return None
    event = json.loads(body)
    return transcode_stripe(event, body.decode()), event["data"]["object"]["id"]


async def receive(request):
    body = await request.body()
    decoded = decode(request, body)
    if decoded is None:
        return JSONResponse({"error": "signature"}, status_code=401)
    record, key = decoded
    out = io.BytesIO()
    out.write(HEADER)
    fastavro.schemaless_writer(out, SCHEMA, record)
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def report(error, message):
        loop.call_soon_threadsafe(done.set_result, (error, message))

    PRODUCER.produce(TOPIC, out.getvalue(), key=key, on_delivery=report)
    error, message = await done
    if error is not None:
        return JSONResponse({"error": str(error)}, status_code=503)
    return JSONResponse({"status": "accepted", "offset": message.offset()})


@contextlib.asynccontextmanager
async def lifespan(app):
    stopped = threading.Event()
    poller = threading.Thread(target=poll_until, args=(stopped,), daemon=True)
    poller.start()
    yield
    stopped.set()
    poller.join()
    PRODUCER.flush(10)


app = Starlette(routes=[Route(f"/webhooks/{WEBHOOK}", receive, methods=["POST"])], lifespan=lifespan)
