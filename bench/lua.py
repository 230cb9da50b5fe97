"""wrk Lua scripts for the scenarios with a body, a header or a per-request choice."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import urlencode

_FORM_HEADERS = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = {authorization}
"""

# wrk runs one Lua state per thread plus one for setup()/done(); this numbers the threads
# 1..T (``id`` becomes a global of each thread's state) and keeps them for done().
THREAD_SETUP = """\
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end
-- The sum of a global counter over every thread, for done().
local function total(name)
  local sum = 0
  for _, thread in ipairs(threads) do sum = sum + (thread:get(name) or 0) end
  return sum
end
"""

# The next send time of this thread is a schedule of slots ``interval`` seconds apart: each
# connection ready to send takes the next free slot, so the thread sends at 1/interval per
# second whatever the latency; when the server falls behind, the schedule restarts from now
# rather than bursting to catch up. clock_gettime through LuaJIT's FFI: plain Lua has no
# sub-second wall clock.
_PACING = """\
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local timespec = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) / 1e9
end
local interval = {interval}
local next_slot = 0
function delay()
  local current = now()
  if next_slot < current then next_slot = current end
  local wait = next_slot - current
  next_slot = next_slot + interval
  return math.floor(wait * 1000 + 0.5)
end
"""


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII is a valid Lua string literal


def basic_auth(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


def form_headers(client_id: str, client_secret: str) -> str:
    """The Lua lines of a form POST with HTTP Basic client authentication."""
    return _FORM_HEADERS.format(authorization=lua_string(basic_auth(client_id, client_secret)))


def post_form_script(
    folder: Path, name: str, form: dict[str, str], client_id: str, client_secret: str
) -> Path:
    """A script that POSTs ``form`` with HTTP Basic client authentication."""
    script = folder / f"{name}.lua"
    body = f"wrk.body = {lua_string(urlencode(form))}\n"
    script.write_text(form_headers(client_id, client_secret) + body)
    return script


def bearer_get_script(folder: Path, name: str, token: str) -> Path:
    """A script that GETs with ``Authorization: Bearer <token>``."""
    script = folder / f"{name}.lua"
    script.write_text(f'wrk.headers["Authorization"] = {lua_string("Bearer " + token)}\n')
    return script


def rotating_form_script(
    folder: Path, name: str, forms: list[dict[str, str]], client_id: str, client_secret: str
) -> Path:
    """A script that POSTs ``forms`` in turn, one per request (each thread starting at its
    own place in the list, so threads do not send the same one at the same time)."""
    script = folder / f"{name}.lua"
    bodies = ", ".join(lua_string(urlencode(form)) for form in forms)
    script.write_text(
        form_headers(client_id, client_secret)
        + THREAD_SETUP
        + f"local bodies = {{{bodies}}}\n"
        + "local turn = 0\n"
        + "function init(args) turn = id end\n"
        + "function request()\n"
        + "  turn = turn % #bodies + 1\n"
        + "  return wrk.format(nil, nil, nil, bodies[turn])\n"
        + "end\n"
    )
    return script


def pacing_interval(rate: float, threads: int) -> float:
    """Seconds between two sends of one wrk thread, for ``rate`` requests/s over all."""
    if rate <= 0 or threads <= 0:
        raise ValueError("rate and threads must be above 0")
    return threads / rate


def paced_script(folder: Path, name: str, script: Path, rate: float, threads: int) -> Path:
    """``script`` sending at most ``rate`` requests/s in all (wrk has no rate option)."""
    paced = folder / f"{name}.lua"
    pacing = _PACING.format(interval=repr(pacing_interval(rate, threads)))
    paced.write_text(script.read_text() + pacing)
    return paced
