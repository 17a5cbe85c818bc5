"""Malformed input costs one connection, never the broker."""
import socket
import struct
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import create_topic


def connect(strata):
    s = socket.create_connection(("127.0.0.1", strata.port), timeout=10)
    s.settimeout(10)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def closed_or_answer(s):
    """Returns the response body, or None if the broker closed the connection."""
    try:
        head = recv_exact(s, 4)
    except (ConnectionResetError, socket.timeout):
        return None
    if head is None:
        return None
    (n,) = struct.unpack(">i", head)
    return recv_exact(s, n)


def healthy(strata, topic):
    """A normal client on another connection still works."""
    p = Producer({"bootstrap.servers": strata.bootstrap})
    errs = []
    p.produce(topic, value=b"still-fine", on_delivery=lambda e, m: errs.append(e))
    assert p.flush(20) == 0
    assert errs == [None]
    assert strata.alive()


def test_garbage_frame_closes_only_that_connection(strata, topic_name):
    create_topic(strata.bootstrap, topic_name)
    s = connect(strata)
    s.sendall(struct.pack(">i", 3) + b"\x01\x02\x03")  # shorter than a header
    assert closed_or_answer(s) is None
    s = connect(strata)
    s.sendall(struct.pack(">i", 40) + bytes(range(40)))  # API key 1 with a nonsense body
    closed_or_answer(s)
    healthy(strata, topic_name)


def test_absurd_frame_length(strata, topic_name):
    create_topic(strata.bootstrap, topic_name)
    for length in (0x7FFFFFFF, -5):
        s = connect(strata)
        s.sendall(struct.pack(">i", length) + b"\x00" * 16)
        assert closed_or_answer(s) is None
    healthy(strata, topic_name)


def test_counts_larger_than_the_request_cost_only_the_connection(strata, topic_name):
    """A request declaring billions of array entries it does not carry (a
    15-byte frame once made the broker reserve 150 GB and abort) is
    refused: the connection closes, the broker stays up."""
    create_topic(strata.bootstrap, topic_name)
    topic = topic_name.encode()
    bombs = [
        # Metadata v1: topics = i32::MAX entries, none sent.
        struct.pack(">hhih", 3, 1, 1, -1) + struct.pack(">i", 0x7FFFFFFF),
        # Metadata v9 (flexible header and body): compact array of 2^32 - 2.
        struct.pack(">hhih", 3, 9, 2, -1) + b"\x00" + b"\xff\xff\xff\xff\x0f" + b"\x00" * 4,
        # Produce v3: one topic whose partition array declares i32::MAX.
        struct.pack(">hhih", 0, 3, 3, -1) + struct.pack(">hhi", -1, 1, 5000)
        + struct.pack(">ih", 1, len(topic)) + topic + struct.pack(">i", 0x7FFFFFFF),
        # Fetch v12 (flexible): topics = 2^28 entries in a 40-byte request.
        struct.pack(">hhih", 1, 12, 4, -1) + b"\x00"
        + struct.pack(">iiiibii", -1, 500, 1, 1 << 20, 0, 0, -1)
        + b"\x80\x80\x80\x80\x01" + b"\x00" * 3,
    ]
    for req in bombs:
        s = connect(strata)
        s.sendall(struct.pack(">i", len(req)) + req)
        assert closed_or_answer(s) is None
        assert strata.alive()
    healthy(strata, topic_name)


def test_unknown_api_key_gets_an_error_response(strata, topic_name):
    create_topic(strata.bootstrap, topic_name)
    s = connect(strata)
    # api_key 9999, version 0, correlation 42, null client id
    req = struct.pack(">hhih", 9999, 0, 42, -1)
    s.sendall(struct.pack(">i", len(req)) + req)
    body = closed_or_answer(s)
    assert body is not None
    corr, err = struct.unpack(">ih", body[:6])
    assert (corr, err) == (42, 35)  # UNSUPPORTED_VERSION
    # The same connection keeps working: ApiVersions v0.
    req = struct.pack(">hhih", 18, 0, 43, -1)
    s.sendall(struct.pack(">i", len(req)) + req)
    body = closed_or_answer(s)
    corr, err = struct.unpack(">ih", body[:6])
    assert (corr, err) == (43, 0)
    healthy(strata, topic_name)


def record(rest, offset_delta=0):
    """One v2 record: attributes, timestamp and offset deltas, then `rest`."""
    rec = bytes([0]) + varint(0) + varint(offset_delta) + rest
    return varint(len(rec)) + rec


def batch(records, count, attributes=0, corrupt=False):
    """A v2 batch of `records` (bytes, compressed if `attributes` says so)
    declaring `count` records, with a correct CRC unless `corrupt`."""
    body = struct.pack(">hiqqqhii", attributes, count - 1, 0, 0, -1, -1, -1, count) + records
    crc = crc32c(body)
    if corrupt:
        body = body[:-3] + bytes([body[-3] ^ 0xFF]) + body[-2:]
    batch_wo_len = struct.pack(">ib", -1, 2) + struct.pack(">I", crc) + body
    return struct.pack(">qi", 0, len(batch_wo_len)) + batch_wo_len


def produce_raw(strata, topic_name, records):
    """Sends one Produce v3 (acks=-1) of `records` to partition 0; returns
    the partition's error code."""
    topic = topic_name.encode()
    # transactional_id null, acks -1, timeout, [topic [partition records]]
    req = struct.pack(">hhih", 0, 3, 7, -1) + struct.pack(">hhi", -1, -1, 5000)
    req += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic
    req += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", len(records)) + records
    s = connect(strata)
    s.sendall(struct.pack(">i", len(req)) + req)
    resp = closed_or_answer(s)
    assert resp is not None
    # correlation, [topic: name, [partition: index, error_code, ...]]
    (corr,) = struct.unpack(">i", resp[:4])
    assert corr == 7
    off = 4 + 4 + 2 + len(topic) + 4
    idx, err = struct.unpack(">ih", resp[off:off + 6])
    assert idx == 0
    return err


def assert_empty(strata, topic_name):
    c = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": "bad-input"})
    assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (0, 0)
    c.close()


CORRUPT_MESSAGE = 2


def test_batch_with_wrong_crc_is_refused(strata, topic_name):
    """A Produce whose record batch fails its CRC gets CORRUPT_MESSAGE, and nothing is stored."""
    create_topic(strata.bootstrap, topic_name)
    value = b"hello"
    good = record(varint(-1) + varint(len(value)) + value + varint(0))
    assert produce_raw(strata, topic_name, batch(good, 1, corrupt=True)) == CORRUPT_MESSAGE
    assert_empty(strata, topic_name)
    healthy(strata, topic_name)


def test_batch_whose_records_do_not_parse_is_refused(strata, topic_name):
    """A batch with a correct CRC whose records are malformed inside (a
    header key not UTF-8 among them), or whose compressed records number
    fewer than it declares, is refused
    (once stored, no reader could decode it: the cold tier's offload
    retried it forever)."""
    import gzip

    create_topic(strata.bootstrap, topic_name)
    value = b"hello"
    good = record(varint(-1) + varint(len(value)) + value + varint(0))
    bad = [
        # The key claims 50 bytes, the record holds 8.
        batch(record(varint(50) + b"k" + varint(-1) + varint(0)), 1),
        # A header count of 2^31 - 1.
        batch(record(varint(-1) + varint(-1) + varint(2**31 - 1)), 1),
        # Offset deltas 0, 0.
        batch(good + good, 2),
        # gzip: one record inside, 1000 declared.
        batch(gzip.compress(good), 1000, attributes=1),
        # gzip in the attributes, not in the bytes.
        batch(good, 1, attributes=1),
        # A header key that is not UTF-8 (the cold tier's column is a
        # string: it could not keep it as sent).
        batch(record(varint(-1) + varint(-1) + varint(1) + varint(1) + b"\xff" + varint(1) + b"v"), 1),
    ]
    for b in bad:
        assert produce_raw(strata, topic_name, b) == CORRUPT_MESSAGE
    assert_empty(strata, topic_name)
    # The same records, well formed, are stored.
    assert produce_raw(strata, topic_name, batch(gzip.compress(good + record(
        varint(-1) + varint(len(value)) + value + varint(0), offset_delta=1)), 2, attributes=1)) == 0
    healthy(strata, topic_name)


def test_batch_decompressing_past_the_limit_is_refused(strata, topic_name):
    """A gzip batch of 80 KB holding an 80 MB record (records are held whole
    while they are checked) gets MESSAGE_TOO_LARGE and is not stored."""
    import gzip

    create_topic(strata.bootstrap, topic_name)
    n = 80 << 20
    bomb = gzip.compress(record(varint(-1) + varint(n) + bytes(n) + varint(0)), compresslevel=1)
    assert len(bomb) < 1 << 20
    assert produce_raw(strata, topic_name, batch(bomb, 1, attributes=1)) == 10  # MESSAGE_TOO_LARGE
    assert_empty(strata, topic_name)
    healthy(strata, topic_name)


def test_many_bad_connections_do_not_hurt_the_broker(strata, topic_name):
    create_topic(strata.bootstrap, topic_name)
    deadline = time.time() + 10
    for i in range(200):
        if time.time() > deadline:
            break
        s = connect(strata)
        s.sendall(bytes([i % 256]) * (i % 50 + 1))
        s.close()
    healthy(strata, topic_name)


def varint(v):
    z = (v << 1) ^ (v >> 63)
    out = b""
    while z >= 0x80:
        out += bytes([(z & 0x7F) | 0x80])
        z >>= 7
    return out + bytes([z])


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF
