"""Every library internal livestats relies on is still what it was when the use was written.

Each package's `compat` module records, per internal, a digest of its source in the pinned
version. An upgrade that changes one fails here, naming it: read the new source, adapt the use,
record the new digest (docs/compat.md).
"""

from __future__ import annotations

import importlib
import logging

import livestats_cli.compat as cli_compat
import livestats_gateway.compat as gateway_compat
import livestats_shared.compat as shared_compat
import livestats_worker.compat as worker_compat
import pytest
from livestats_shared.errors import LivestatsError

COMPAT_MODULES = [shared_compat, worker_compat, gateway_compat, cli_compat]
RELIED_ON = [(m.__name__, name, digest) for m in COMPAT_MODULES for name, digest in m.RELIED_ON.items()]


def resolve(dotted: str) -> object:
    """The object a dotted name like `arq.worker.Worker.close` names (module part, then attributes)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise LookupError(dotted)


@pytest.mark.parametrize(("owner", "name", "digest"), RELIED_ON, ids=[f"{o}:{n}" for o, n, _ in RELIED_ON])
def test_a_relied_on_internal_is_unchanged_since_it_was_verified(owner, name, digest):
    assert shared_compat.source_digest(resolve(name)) == digest, (
        f"{name} changed (relied on by {owner}): read its new source, adapt {owner}, record the new digest"
    )


def test_the_digest_notices_a_changed_function():
    # Positive control: the comparison above can fail.
    def original(x):
        return x

    def changed(x):
        return x + 1

    assert shared_compat.source_digest(original) == shared_compat.source_digest(original)
    assert shared_compat.source_digest(changed) != shared_compat.source_digest(original)


def test_every_compat_module_relies_on_something_and_every_name_resolves():
    for module in COMPAT_MODULES:
        assert module.RELIED_ON, module.__name__
        for name in module.RELIED_ON:
            assert callable(resolve(name)), name


@pytest.mark.parametrize("installed", ["0.27.9", "0.28.1", "0.29.0", "1.0"])
def test_an_arq_outside_the_pin_is_refused(installed):
    with pytest.raises(shared_compat.UnsupportedLibrary) as refused:
        shared_compat.require("arq", installed, shared_compat.ARQ_PINS, shared_compat.ARQ_VERIFIED)
    assert "arq " + installed in str(refused.value)
    assert isinstance(refused.value, LivestatsError)


@pytest.mark.parametrize("installed", ["5.3.0", "6.0.0", "6.1.1", "4.6.0"])
def test_a_redis_py_outside_the_pin_is_refused(installed):
    with pytest.raises(shared_compat.UnsupportedLibrary):
        shared_compat.require("redis", installed, shared_compat.REDIS_PINS, shared_compat.REDIS_VERIFIED)


def test_an_unverified_version_inside_the_pins_is_allowed_but_logged(caplog):
    with caplog.at_level(logging.WARNING, logger=shared_compat.__name__):
        shared_compat.require("redis", "5.3.2", shared_compat.REDIS_PINS, shared_compat.REDIS_VERIFIED)
    assert "redis 5.3.2" in caplog.text and "verified on 5.3.1" in caplog.text


def test_the_verified_versions_are_the_installed_ones_and_pass_silently(caplog):
    from importlib.metadata import version

    assert version("arq") == shared_compat.ARQ_VERIFIED
    assert version("redis") == shared_compat.REDIS_VERIFIED
    with caplog.at_level(logging.WARNING, logger=shared_compat.__name__):
        shared_compat.require("arq", version("arq"), shared_compat.ARQ_PINS, shared_compat.ARQ_VERIFIED)
        shared_compat.require("redis", version("redis"), shared_compat.REDIS_PINS, shared_compat.REDIS_VERIFIED)
    assert caplog.text == ""
