"""A pool of single-use refresh tokens: the Lua that harvests it and the Lua that spends it.

Each token may be presented once (a second time is reuse: identity revokes its family), and
wrk runs one Lua state per thread, so the pool is split into one file per wrk thread and
each thread walks its own file. A thread that reaches the end sends a token that does not
exist instead, which the server refuses (400, counted as an error by wrk) and done()
reports as ``pool_exhausted``: a run never reuses a token, silently or not.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from bench.lua import THREAD_SETUP, form_headers, lua_string

EXHAUSTED = "bench-pool-exhausted"  # a marker that matches no token
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,512}$")

# Logins whose refresh token is written, one a line, to this thread's file; the thread stops
# once it has its quota. Any other answer is counted and makes the harvest fail.
_HARVEST = """\
local prefix = {prefix}
local quota = {quota}
harvested, refused = 0, 0
local out
function init(args) out = assert(io.open(prefix .. id .. ".txt", "w")) end
function response(status, headers, body)
  local token = status == 200 and string.match(body, '"refresh_token"%s*:%s*"([%w_%-]+)"')
  if token then
    out:write(token, "\\n")
    out:flush()
    harvested = harvested + 1
    if harvested >= quota then wrk.thread:stop() end
  else
    refused = refused + 1
  end
end
function done(summary, latency, requests)
  io.write("bench harvested: ", total("harvested"), "\\n")
  io.write("bench refused: ", total("refused"), "\\n")
end
"""

# Reads this thread's tokens in init(); hands out the next one per request.
POOL_READER = """\
local pool_prefix = {prefix}
local pool = {{}}
pool_used, pool_exhausted = 0, 0
local function read_pool()
  for line in io.lines(pool_prefix .. id .. ".txt") do pool[#pool + 1] = line end
end
local function next_token()
  pool_used = pool_used + 1
  local token = pool[pool_used]
  if token == nil then
    pool_exhausted = pool_exhausted + 1
    return {exhausted}
  end
  return token
end
local function pool_report()
  io.write("bench pool_used: ", total("pool_used") - total("pool_exhausted"), "\\n")
  io.write("bench pool_exhausted: ", total("pool_exhausted"), "\\n")
end
"""

_REFRESH = """\
function init(args) read_pool() end
function request()
  return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. next_token())
end
function done(summary, latency, requests) pool_report() end
"""


def pool_size(rate: float, seconds: float, share: float = 1.0, safety: float = 2.0) -> int:
    """Tokens for ``seconds`` at ``rate`` requests/s of which ``share`` spend one, times
    ``safety`` (the rate is an estimate); at least 100."""
    return max(100, math.ceil(rate * seconds * share * safety))


def split(tokens: list[str], parts: int) -> list[list[str]]:
    """``tokens`` dealt into ``parts`` lists of (nearly) equal length, none used twice."""
    return [tokens[index::parts] for index in range(parts)]


def write_pool(folder: Path, name: str, tokens: list[str], threads: int) -> str:
    """One file per wrk thread, ``<folder>/<name>-<thread id>.txt``; the prefix of them."""
    prefix = str(folder / f"{name}-")
    for thread_id, part in enumerate(split(tokens, threads), start=1):
        Path(f"{prefix}{thread_id}.txt").write_text("".join(f"{t}\n" for t in part))
    return prefix


def read_harvest(prefix: str, threads: int) -> list[str]:
    """Every whole token the harvest threads wrote (a line cut short by the end is left)."""
    tokens: list[str] = []
    for thread_id in range(1, threads + 1):
        path = Path(f"{prefix}{thread_id}.txt")
        if path.exists():
            tokens += [line for line in path.read_text().splitlines() if _TOKEN.match(line)]
    return tokens


def harvest_script(
    folder: Path, form: str, client_id: str, client_secret: str, quota: int
) -> tuple[Path, str]:
    """A script POSTing ``form`` (a password-grant login) until each thread has written
    ``quota`` refresh tokens; the script and the prefix of its per-thread files."""
    prefix = str(folder / "harvest-")
    script = folder / "harvest.lua"
    script.write_text(
        form_headers(client_id, client_secret)
        + f"wrk.body = {lua_string(form)}\n"
        + THREAD_SETUP
        + _HARVEST.format(prefix=lua_string(prefix), quota=quota)
    )
    return script, prefix


def pool_reader(prefix: str) -> str:
    return POOL_READER.format(prefix=lua_string(prefix), exhausted=lua_string(EXHAUSTED))


def refresh_script(folder: Path, pool_prefix: str, client_id: str, client_secret: str) -> Path:
    """A script presenting each refresh token of the pool once."""
    script = folder / "refresh.lua"
    script.write_text(
        form_headers(client_id, client_secret) + THREAD_SETUP + pool_reader(pool_prefix) + _REFRESH
    )
    return script
