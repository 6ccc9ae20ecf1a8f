"""The dashboard's JavaScript names the gateway's close codes as the gateway does, and logs in
through one function."""

from __future__ import annotations

import re
from pathlib import Path

from livestats_gateway.fanout.wire import CloseCode

JS = Path(__file__).parents[2] / "services/gateway/livestats_gateway/static/js"


def _js_object(name: str) -> dict[str, int]:
    source = (JS / "protocol.js").read_text()
    block = re.search(rf"export const {name} = Object\.freeze\(\{{(.*?)\}}\);", source, re.S)
    assert block is not None, f"protocol.js has no {name}"
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s*([A-Z_]+): (\d+),", block[1], re.M)}


def test_the_page_names_every_close_code_the_gateway_sends_with_its_value():
    assert _js_object("CloseCode") == {code.name: code.value for code in CloseCode}


def test_the_page_s_own_close_codes_are_not_ones_the_gateway_sends():
    page = _js_object("PageCloseCode")
    assert page and not set(page.values()) & {code.value for code in CloseCode}


# Where a close code is written: compared with `.code`, passed to close(), a `code:` field, an object key.
_CODE_SPELLED = re.compile(r"code\s*[!=]==?\s*(\d+)|\.close\(\s*(\d+)|\bcode:\s*(\d+)|^\s*(\d{4}):", re.M)


def test_no_script_spells_a_close_code_as_a_bare_number():
    assert _CODE_SPELLED.search('if (event.code === 4401) ws.close(1000, "x");')  # the pattern finds them
    for script in JS.glob("*.js"):
        if script.name != "protocol.js":
            spelled = [m[0] for m in _CODE_SPELLED.finditer(script.read_text())]
            assert not spelled, f"{script.name} spells close codes as numbers: {spelled}; name them in protocol.js"


def test_the_login_post_is_written_once():
    posting = [
        s.name for s in JS.glob("*.js") if re.search(r'fetch\("/api/session",\s*\{\s*method: "POST"', s.read_text())
    ]
    assert posting == ["session.js"]
