"""Unit tests of the wrk output parser: ``pytest bench/test_wrk.py``."""

from __future__ import annotations

from pathlib import Path

from bench.wrk import WrkJob, parse_wrk_output

SAMPLE = """\
Running 5s test @ http://127.0.0.1:8000/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  400.00us   9.80ms   90.00%
    Req/Sec    12.50k     1.00k   14.00k    80.00%
  Latency Distribution
     50%  850.00us
     75%    1.40ms
     90%    2.00ms
     99%    1.02s
  124000 requests in 5.00s, 18.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  24800.50
Transfer/sec:      3.60MB
"""


def test_parses_rate_percentiles_and_errors() -> None:
    result = parse_wrk_output(SAMPLE)
    assert result.requests == 124000
    assert result.requests_per_second == 24800.50
    assert result.p50_ms == 0.85
    assert result.p99_ms == 1020.0
    assert result.non_2xx == 7
    assert result.socket_errors == 5
    assert result.errors == 12
    assert result.connections == 32
    assert result.counters == {}


def test_reads_the_counters_a_script_prints() -> None:
    output = SAMPLE + "bench pool_used: 4100\nbench pool_exhausted: 0\n"
    assert parse_wrk_output(output).counters == {"pool_used": 4100, "pool_exhausted": 0}


def test_clean_run_has_no_errors() -> None:
    clean = "\n".join(
        line for line in SAMPLE.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    assert parse_wrk_output(clean).errors == 0


def test_a_job_gives_wrk_its_timeout_and_script() -> None:
    job = WrkJob("http://x/", 5, Path("s.lua"), threads=1, connections=8, timeout_seconds=30)
    command = job.command()
    assert command[1:] == [
        "-t1",
        "-c8",
        "-d5s",
        "--latency",
        "--timeout=30s",
        "-s",
        "s.lua",
        "http://x/",
    ]
