"""A consumer-group member run as its own process, so tests can kill -9 it.

Usage: group_member.py BOOTSTRAP GROUP TOPIC SESSION_TIMEOUT_MS
Prints `assigned p1,p2,...` whenever its assignment changes.
"""
import sys
import time

from confluent_kafka import Consumer

bootstrap, group, topic, session = sys.argv[1:5]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
              "session.timeout.ms": int(session), "heartbeat.interval.ms": 300,
              "auto.offset.reset": "earliest"})
c.subscribe([topic])
last = None
deadline = time.time() + 120  # never outlive the test by much
while time.time() < deadline:
    c.poll(0.1)
    now = sorted(tp.partition for tp in c.assignment())
    if now != last:
        print("assigned " + ",".join(map(str, now)), flush=True)
        last = now
c.close()
