"""The mixed load: which requests it is made of, in what proportion, and its wrk script.

The mix is a fixed, interleaved schedule rather than a random draw per request, so the
proportions are exact over every cycle of 20 requests, and the number of refresh tokens a
run spends is known in advance (3 in 20).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import reduce
from pathlib import Path
from urllib.parse import urlencode

from bench.lua import THREAD_SETUP, basic_auth, lua_string
from bench.lua_pool import pool_reader

# Mostly validation (a resource server checking tokens), some refresh, a few service tokens.
MIX: dict[str, int] = {"userinfo": 60, "introspection": 20, "refresh": 15, "client_credentials": 5}

_MIXED = """\
local schedule = {{{schedule}}}
local form = "application/x-www-form-urlencoded"
local refresh_headers = {{["Authorization"] = {user_client}, ["Content-Type"] = form}}
local fixed = {{}}
local turn = 0
function init(args)
  read_pool()
  -- Threads start at different places of the schedule, so they are not in step.
  turn = (id - 1) * 7
  fixed.userinfo = wrk.format("GET", "/oauth2/userinfo", {{["Authorization"] = {bearer}}})
  fixed.introspection = wrk.format("POST", "/oauth2/introspect",
    {{["Authorization"] = {user_client}, ["Content-Type"] = form}}, {introspect_body})
  fixed.client_credentials = wrk.format("POST", "/oauth2/token",
    {{["Authorization"] = {service_client}, ["Content-Type"] = form}}, {service_body})
end
function request()
  turn = turn % #schedule + 1
  local kind = schedule[turn]
  if kind == "refresh" then
    local body = "grant_type=refresh_token&refresh_token=" .. next_token()
    return wrk.format("POST", "/oauth2/token", refresh_headers, body)
  end
  return fixed[kind]
end
function done(summary, latency, requests) pool_report() end
"""


def schedule(weights: Mapping[str, int]) -> list[str]:
    """One cycle of the smooth weighted round robin (nginx's): each name appears in
    proportion to its weight (reduced by their common divisor), spread out evenly."""
    divisor = reduce(math.gcd, weights.values())
    reduced = {name: weight // divisor for name, weight in weights.items()}
    total = sum(reduced.values())
    current = dict.fromkeys(reduced, 0)
    picks: list[str] = []
    for _ in range(total):
        for name, weight in reduced.items():
            current[name] += weight
        chosen = max(current, key=lambda name: current[name])
        current[chosen] -= total
        picks.append(chosen)
    return picks


def harmonic_rate(weights: Mapping[str, float], rates: Mapping[str, float]) -> float:
    """Requests/s of a mix whose parts run at ``rates`` alone: each request of part ``k``
    costs 1/rate_k of the server, so the mix runs at sum(w) / sum(w_k / rate_k)."""
    cost = sum(weight / rates[name] for name, weight in weights.items())
    return sum(weights.values()) / cost


def share(name: str, weights: Mapping[str, int] = MIX) -> float:
    return weights[name] / sum(weights.values())


def mixed_script(
    folder: Path,
    pool_prefix: str,
    access_token: str,
    service_client: tuple[str, str],
    user_client: tuple[str, str],
) -> Path:
    """``MIX`` in one wrk script: userinfo with ``access_token``, introspection of it by the
    user client (its own client: identity shows a token only to its parties), refresh from
    the pool by the user client, client_credentials by the service client."""
    script = folder / "mixed.lua"
    names = ", ".join(lua_string(name) for name in schedule(MIX))
    introspect = {"token": access_token, "token_type_hint": "access_token"}
    script.write_text(
        THREAD_SETUP
        + pool_reader(pool_prefix)
        + _MIXED.format(
            schedule=names,
            user_client=lua_string(basic_auth(*user_client)),
            service_client=lua_string(basic_auth(*service_client)),
            bearer=lua_string("Bearer " + access_token),
            introspect_body=lua_string(urlencode(introspect)),
            service_body=lua_string("grant_type=client_credentials&scope=read"),
        )
    )
    return script
