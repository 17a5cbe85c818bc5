"""End-to-end latency probe: a librdkafka producer sends timestamped records at
a fixed rate (linger.ms=0) while a consumer (fetch.wait.max.ms=10) reads them;
prints p50/p95/p99/p99.9/max of send-to-receive time.

Usage: e2e_latency.py BOOTSTRAP [--rate 1000] [--seconds 20] [--size 100]
Runs against any Kafka-compatible broker. The producer and the consumer run
in separate processes: in one interpreter they share the GIL, and the
consumer thread then waits for the producer's loop (tens of milliseconds at
the tail), which is the probe's latency, not the broker's.
"""
import argparse
import multiprocessing as mp
import struct
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def consume(bootstrap, topic, total, extra, ready, out):
    c = Consumer({**extra, "bootstrap.servers": bootstrap, "group.id": topic,
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10,
                  "fetch.min.bytes": 1, "enable.auto.commit": False})
    c.subscribe([topic])
    # Join before producing so the first records are not waiting on the group.
    deadline = time.time() + 30
    while not c.assignment() and time.time() < deadline:
        c.poll(0.05)
    ready.set()
    lat = []
    deadline = time.time() + 60 + total / 100
    while len(lat) < total and time.time() < deadline:
        m = c.poll(0.1)
        if m is None or m.error():
            continue
        # CLOCK_MONOTONIC (perf_counter) is system-wide: comparable across processes.
        lat.append(time.perf_counter() - struct.unpack(">d", m.value()[:8])[0])
    c.close()
    out.put(lat)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--acks", default="1")
    ap.add_argument("--nagle-disable", action="store_true",
                    help="set socket.nagle.disable=true on both clients")
    a = ap.parse_args()
    topic = f"latency-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)

    extra = {"socket.nagle.disable": True} if a.nagle_disable else {}
    total = int(a.rate * a.seconds)
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=consume, args=(a.bootstrap, topic, total, extra, ready, out))
    proc.start()
    ready.wait(60)

    p = Producer({**extra, "bootstrap.servers": a.bootstrap, "linger.ms": 0, "acks": a.acks})
    pad = b"x" * max(0, a.size - 8)
    interval = 1.0 / a.rate
    start = time.perf_counter()
    for i in range(total):
        target = start + i * interval
        while (now := time.perf_counter()) < target:
            time.sleep(min(0.0005, target - now))
        p.produce(topic, struct.pack(">d", time.perf_counter()) + pad)
        p.poll(0)
    p.flush(30)
    lat = sorted(out.get(timeout=120))
    proc.join(timeout=30)
    n = len(lat)
    if n == 0:
        raise SystemExit("no records received")

    def pct(q):
        return lat[min(n - 1, int(q * n))] * 1000

    print(f"records {n}/{total} rate {a.rate}/s size {a.size} B")
    print(f"latency ms: p50 {pct(0.5):.3f} p95 {pct(0.95):.3f} p99 {pct(0.99):.3f} "
          f"p99.9 {pct(0.999):.3f} max {lat[-1] * 1000:.3f}")


if __name__ == "__main__":
    main()
