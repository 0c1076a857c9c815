"""Tests of proxy_log.py: `python -m pytest test_proxy_log.py` or `python test_proxy_log.py`."""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from proxy_log import per_object, round_trips  # noqa: E402


def rec(t_start, t_end, method="GET", path="/b/k", nbytes=0, rid=0):
    return {"id": rid, "conn": 0, "method": method, "path": path, "query": "", "range": None,
            "status": 200, "req_body_bytes": 0, "resp_body_bytes": nbytes,
            "t_start": t_start, "t_first_byte": t_start, "t_end": t_end}


def brute(records):
    rs = [r for r in records if r["method"] in ("GET", "HEAD") and r["t_end"] is not None]
    memo = {}

    def depth(i):
        if i not in memo:
            r = rs[i]
            memo[i] = 1 + max((depth(j) for j, q in enumerate(rs)
                               if j != i and q["t_end"] <= r["t_start"]), default=0)
        return memo[i]
    return max((depth(i) for i in range(len(rs))), default=0)


def test_empty():
    assert round_trips([]) == 0
    assert per_object([]) == {}


def test_sequential_chain():
    # HEAD, then GET, then GET: three dependent round trips.
    rs = [rec(0.0, 1.0, "HEAD"), rec(1.0, 2.0), rec(2.5, 3.0)]
    assert round_trips(rs) == 3


def test_concurrent_requests_are_one_round_trip():
    rs = [rec(0.0, 1.0), rec(0.1, 1.2), rec(0.2, 0.9), rec(0.5, 1.5)]
    assert round_trips(rs) == 1


def test_fan_out_after_a_head():
    # HEAD, then 4 concurrent GETs, then one more GET after all of them.
    rs = [rec(0.0, 0.1, "HEAD")] + [rec(0.2 + i * 0.01, 0.5 + i * 0.01) for i in range(4)]
    assert round_trips(rs) == 2
    rs.append(rec(0.6, 0.7))
    assert round_trips(rs) == 3


def test_longest_chain_not_the_count():
    # a then c; b overlaps both: three requests, a chain of two.
    rs = [rec(0.0, 1.0), rec(0.5, 3.0), rec(1.0, 2.0)]
    assert round_trips(rs) == 2
    # d after all of them: 1 + max(depth a = 1, b = 1, c = 2).
    rs.append(rec(3.0, 4.0))
    assert round_trips(rs) == 3


def test_other_methods_and_unfinished_ignored():
    rs = [rec(0.0, 1.0, "PUT"), rec(1.0, 2.0), rec(2.0, None), rec(3.0, 4.0, "POST")]
    assert round_trips(rs) == 1


def test_matches_brute_force():
    rng = random.Random(1)
    for _ in range(300):
        rs = []
        for _ in range(rng.randint(1, 25)):
            s = round(rng.uniform(0, 10), 1)
            rs.append(rec(s, round(s + rng.choice([0.1, 0.5, 1.0, 3.0]), 1),
                          rng.choice(["GET", "GET", "HEAD", "PUT"])))
        assert round_trips(rs) == brute(rs), rs


def test_zero_length_requests():
    # A request that ends at the instant the next starts is a dependency.
    rs = [rec(1.0, 1.0), rec(0.0, 1.0), rec(1.0, 2.0)]
    assert round_trips(rs) == 3


def test_per_object():
    rs = [rec(0.0, 0.1, "HEAD", "/b/a"), rec(0.2, 0.3, "GET", "/b/a", 100),
          rec(0.2, 0.4, "GET", "/b/a", 50), rec(0.0, 1.0, "GET", "/b/c", 7),
          rec(0.0, 0.5, "PUT", "/b/c", 0)]
    assert per_object(rs) == {
        "/b/a": {"gets": 2, "heads": 1, "bytes": 150, "round_trips": 2},
        "/b/c": {"gets": 1, "heads": 0, "bytes": 7, "round_trips": 1},
    }


if __name__ == "__main__":
    n = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            fn()
            n += 1
    print(f"{n} passed, 0 failed")
