"""Secret values are cut out of what goes back to the submitter, whole or in part at a cut edge."""

from __future__ import annotations

from livestats_worker.redact import Redactor

KEY = "sk-live-0123456789abcdef"


def test_every_occurrence_of_a_secret_is_replaced_by_its_key_name():
    redactor = Redactor.for_env({"FPF_UPSTREAM_KEY": KEY, "FPF_MODEL": "model-x"}, [])
    assert redactor.bytes(f"a {KEY} b {KEY}".encode()) == b"a [redacted:FPF_UPSTREAM_KEY] b [redacted:FPF_UPSTREAM_KEY]"
    assert redactor.names == ["FPF_UPSTREAM_KEY"]  # FPF_MODEL is not secret by name


def test_default_patterns_match_any_case_and_the_operator_adds_more():
    env = {"api_token": "tok-123456", "DB_PASSWORD": "hunter22", "FPF_ENDPOINT": "https://internal"}
    assert Redactor.for_env(env, []).names == ["DB_PASSWORD", "api_token"]
    assert Redactor.for_env(env, ["FPF_ENDPOINT"]).names == ["DB_PASSWORD", "FPF_ENDPOINT", "api_token"]


def test_a_piece_of_a_secret_at_a_cut_edge_is_replaced_too():
    redactor = Redactor({"FPF_UPSTREAM_KEY": KEY})
    tail = KEY[-10:].encode() + b" was refused"  # a stderr tail that starts mid-secret
    head = b"using key " + KEY[:10].encode()  # stdout cut at the cap mid-secret
    assert redactor.bytes(tail) == b"[redacted:FPF_UPSTREAM_KEY] was refused"
    assert redactor.bytes(head) == b"using key [redacted:FPF_UPSTREAM_KEY]"


def test_values_too_short_to_be_secrets_are_left_alone():
    assert Redactor({"FPF_KEY": "abc"}).bytes(b"abc abc") == b"abc abc"
