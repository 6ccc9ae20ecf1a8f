"""Fetch the gateway's vendored assets again from the npm registry and check them.

    python deploy/vendor_assets.py [--check]

Reads every VENDOR.json under services/gateway/livestats_gateway/static/vendor (the dashboard's
charts; the API docs pages' Swagger UI and ReDoc) and tests/browser/vendor (axe-core, for the
browser tests' accessibility scan; never served), downloads each named package version with
`npm pack`, verifies the tarball against the recorded `integrity` (the registry's SHA-512), and
writes each listed file next to its VENDOR.json, verified against its recorded sha256. `--check`
compares instead of writing and exits 1 on any difference. Needs Node's npm; nothing else.
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
VENDOR = ROOT / "services/gateway/livestats_gateway/static/vendor"
TEST_VENDOR = ROOT / "tests/browser/vendor"


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    manifests = sorted(VENDOR.rglob("VENDOR.json")) + sorted(TEST_VENDOR.rglob("VENDOR.json"))
    return max(vendor(path, check) for path in manifests)


def vendor(manifest_path: Path, check: bool) -> int:
    """One package: fetched, verified, written (or compared) next to its manifest."""
    target_dir = manifest_path.parent
    manifest = json.loads(manifest_path.read_text())
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
                target = target_dir / entry["as"]
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
