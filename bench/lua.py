"""wrk Lua scripts for the POST scenarios, written to a temporary folder."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import urlencode

_POST = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = {authorization}
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII is a valid Lua string literal


def basic_auth(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


def post_form_script(
    folder: Path, name: str, form: dict[str, str], client_id: str, client_secret: str
) -> Path:
    """A script that POSTs ``form`` with HTTP Basic client authentication."""
    script = folder / f"{name}.lua"
    script.write_text(
        _POST.format(
            body=_lua_string(urlencode(form)),
            authorization=_lua_string(basic_auth(client_id, client_secret)),
        )
    )
    return script
