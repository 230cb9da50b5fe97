"""Unit tests of ``--peer``'s pure parts: ``pytest bench/test_peer.py``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bench.peer import jwt_alg, load
from bench.peer_node import install_command, installed_version, peer_command
from bench.peer_pin import PinnedWrkJob, affinity_command, parse_affinity, pinned
from bench.peer_report import (
    PEER,
    PG,
    SQLITE,
    Cell,
    Results,
    Verdict,
    format_table,
    format_targets,
    peer_warnings,
    ratio,
    verdicts,
    write_results,
)


def cell(rps: float, p99: float = 10.0, errors: int = 0, requests: int = 1000) -> Cell:
    return Cell(rps, p99 / 2, p99, errors, requests, 64)


def results() -> Results:
    return {
        "client_credentials": {
            PEER: cell(400.0, p99=300.0),
            SQLITE: cell(1000.0, p99=60.0),
            PG: cell(800.0, p99=120.0),
        },
        "introspection": {PEER: cell(2000.0), SQLITE: cell(2500.0), PG: cell(1900.0)},
        "jwks": {PEER: cell(4000.0), SQLITE: cell(5000.0), PG: cell(4700.0, errors=3)},
        "discovery": {PEER: cell(3000.0), SQLITE: cell(4900.0), PG: cell(4700.0)},
        "refresh": {PG: cell(500.0)},
    }


def by(label: str, side: str, found: list[Verdict]) -> Verdict:
    matches = [v for v in found if v.side == side and label in v.label]
    assert len(matches) == 1
    return matches[0]


def test_ratio_is_to_the_peer_and_refresh_to_its_own_client_credentials() -> None:
    data = results()
    assert ratio(data, "client_credentials", SQLITE) == 2.5
    assert ratio(data, "client_credentials", PG) == 2.0
    assert ratio(data, "refresh", PG) == 500.0 / 800.0
    assert ratio(data, "refresh", SQLITE) is None  # not measured there
    assert ratio(data, "discovery", SQLITE) == 4900.0 / 3000.0  # the table: same scenario


def test_table_has_a_row_per_scenario_with_both_ratios() -> None:
    text = format_table(results())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["scenario", "peer", "req/s"]
    token = next(line for line in lines if line.startswith("client_credentials"))
    assert token.split() == [
        "client_credentials", "400", "300.00", "0",
        "1,000", "60.00", "0", "2.50",
        "800", "120.00", "0", "2.00",
    ]  # fmt: skip
    refresh = next(line for line in lines if line.startswith("refresh"))
    assert refresh.split() == ["refresh", "-", "-", "-", "-", "-", "-", "-", "500", "10.00", "0",
                               "0.62*"]  # fmt: skip
    assert "* refresh: over identity PG+Redis's own client_credentials" in text


def test_targets() -> None:
    found = verdicts(results())
    token_rps = by("client_credentials req/s", SQLITE, found)
    assert token_rps.met is True
    # p99: 60 <= 300 / 3 yes; 120 > 100 no.
    assert by("client_credentials p99", SQLITE, found).met is True
    pg_p99 = by("client_credentials p99", PG, found)
    assert pg_p99.met is False
    assert pg_p99.bound == 100.0
    assert by("introspection", PG, found).met is False  # 0.95
    assert by("introspection", SQLITE, found).met is True
    # jwks PG: 1.175 is short of 1.2, and it had errors anyway.
    jwks = by("jwks req/s", PG, found)
    assert jwks.met is False
    assert jwks.why == "3 errors"
    # discovery against the peer's JWKS (4000), not its discovery (3000): 4700 / 4000 < 1.2.
    discovery = by("discovery", PG, found)
    assert discovery.measured == 4700.0 / 4000.0
    assert discovery.met is False
    assert by("discovery", SQLITE, found).met is True  # 1.225
    refresh = by("refresh", PG, found)
    assert refresh.met is True  # 0.625 >= 0.5
    assert not [v for v in found if "refresh" in v.label and v.side == SQLITE]


def test_errors_fail_a_target_whose_figure_is_met() -> None:
    data = results()
    data["client_credentials"][SQLITE] = cell(5000.0, p99=1.0, errors=1)
    found = verdicts(data)
    assert by("client_credentials req/s", SQLITE, found).met is False
    text = format_targets(verdicts(data))
    assert "identity SQLite: 12.50x NO (1 errors)" in text
    assert "identity PG+Redis: 2.00x yes" in text


def test_missing_side_is_not_measured_rather_than_failed() -> None:
    data = results()
    for sides in data.values():
        sides.pop(PG, None)
    del data["refresh"]
    found = verdicts(data)
    assert all(v.met is None for v in found if v.side == PG)
    assert "identity PG+Redis: not measured" in format_targets(found)
    assert "* refresh" not in format_table(data)


def test_peer_errors_are_warned_about() -> None:
    data = results()
    data["client_credentials"][PEER] = cell(400.0, errors=12)
    assert peer_warnings(data) == ["the peer's client_credentials run had 12 errors"]


def test_json_holds_cells_ratios_and_targets(tmp_path: Path) -> None:
    path = write_results(tmp_path, "T", {"mode": "peer"}, results(), {"refresh": "pool"})
    assert path.name == "T-peer.json"
    data = json.loads(path.read_text())
    assert data["mode"] == "peer"
    assert data["scenarios"]["jwks"]["pg"]["errors"] == 3
    assert data["scenarios"]["client_credentials"]["ratio"] == {"sqlite": 2.5, "pg": 2.0}
    assert data["scenarios"]["refresh"]["ratio_to"] == "pg client_credentials"
    assert data["scenarios"]["refresh"]["note"] == "pool"
    assert len(data["targets"]) == 11


def test_wrk_runs_pinned_to_core_1_with_64_connections() -> None:
    command = load("http://127.0.0.1:1/token", 10, Path("scripts/t.lua")).command()
    assert command[1:3] == ["-c", "1"]
    assert command[0].endswith("taskset")
    assert command[3].endswith("wrk")
    assert command[4:] == ["-t2", "-c64", "-d10s", "--latency", "-s", "scripts/t.lua",
                           "http://127.0.0.1:1/token"]  # fmt: skip
    job = PinnedWrkJob("http://x/", 5, core=0)
    assert job.command()[1:3] == ["-c", "0"]


def test_servers_and_services_are_pinned() -> None:
    assert pinned(["node", "x.mjs"], 0)[1:] == ["-c", "0", "node", "x.mjs"]
    assert affinity_command(42, "1")[1:] == ["-a", "-p", "-c", "1", "42"]
    command = peer_command("/usr/bin/node", Path("/p/oidc-provider"), 4000)
    assert command[1:3] == ["-c", "0"]
    assert command[3] == "/usr/bin/node"
    assert command[4].endswith("bench/peer_provider.mjs")
    assert command[5:] == ["/p/oidc-provider", "4000"]


def test_parse_affinity() -> None:
    assert parse_affinity("pid 2230's current affinity list: 0,1\n") == "0,1"
    assert parse_affinity("pid 7's current affinity list: 0-3") == "0-3"
    with pytest.raises(ValueError):
        parse_affinity("pid 7's current affinity mask: 3")


def test_npm_install_and_the_installed_version(tmp_path: Path) -> None:
    assert install_command("npm", tmp_path)[1:] == [
        "install", "--prefix", str(tmp_path), "--no-audit", "--no-fund", "oidc-provider@9",
    ]  # fmt: skip
    assert installed_version(tmp_path) is None
    manifest = tmp_path / "node_modules" / "oidc-provider" / "package.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"name": "oidc-provider", "version": "9.13.3"}')
    assert installed_version(tmp_path) == "9.13.3"


def _segment(data: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_jwt_alg() -> None:
    assert jwt_alg(_segment({"alg": "RS256", "typ": "at+jwt"}) + ".e30.sig") == "RS256"
    assert jwt_alg("P2nMuWmmvkmH3B0V7yMK4DgswCp74w7nrGfnQfTG0Be") is None  # opaque
    assert jwt_alg("!!.e30.sig") is None
