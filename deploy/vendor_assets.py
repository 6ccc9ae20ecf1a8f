"""Fetch the dashboard's vendored assets again from the npm registry and check them.

    python deploy/vendor_assets.py [--check]

For each vendor directory (the dashboard's uPlot, and axe-core for the browser tests' accessibility
scan) reads its VENDOR.json, downloads the named package
version with `npm pack`, verifies the tarball against the recorded `integrity` (the registry's
SHA-512), and writes each listed file, verified against its recorded sha256. `--check` compares
instead of writing and exits 1 on any difference. Needs Node's npm; nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR_DIRS = (ROOT / "services/gateway/livestats_gateway/static/vendor", ROOT / "tests/browser/vendor")


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    return 1 if sum(vendor(directory, check=check) for directory in VENDOR_DIRS) else 0


def vendor(directory: Path, *, check: bool) -> int:
    """Fetch, verify and write (or compare) one directory's files; returns 1 on any failure."""
    manifest = json.loads((directory / "VENDOR.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        spec = f"{manifest['package']}@{manifest['version']}"
        name = (
            subprocess.run(
                ["npm", "pack", spec, "--pack-destination", tmp, "--silent"],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        tarball = Path(tmp) / name
        algo, _, expected = manifest["integrity"].partition("-")
        actual = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
        if actual != expected:
            print(f"{spec}: tarball integrity {algo}-{actual} != recorded {manifest['integrity']}", file=sys.stderr)
            return 1
        failures = 0
        with tarfile.open(tarball) as archive:
            for member, entry in manifest["files"].items():
                extracted = archive.extractfile(member)
                if extracted is None:
                    print(f"{member}: not a file in {name}", file=sys.stderr)
                    return 1
                data = extracted.read()
                digest = hashlib.sha256(data).hexdigest()
                if digest != entry["sha256"]:
                    print(f"{member}: sha256 {digest} != recorded {entry['sha256']}", file=sys.stderr)
                    failures += 1
                    continue
                target = directory / entry["as"]
                if check:
                    same = target.exists() and target.read_bytes() == data
                    print(f"{target.name}: {'ok' if same else 'DIFFERS'}")
                    failures += not same
                else:
                    target.write_bytes(data)
                    print(f"{target.name}: written ({len(data)} bytes)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
