"""``python -m emulator.healthcheck``: exit 0 when the local emulator is ready, 1 otherwise.

For container health checks (the image has no curl): it asks ``GET /emulator/ready`` on the
address and port of the ``SMARTY_HOST`` and ``SMARTY_PORT`` variables, a wildcard bind being
asked on loopback. Only the standard library is imported, so it is quick.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT_SECONDS = 4.0


def ready_url(env: Mapping[str, str]) -> str:
    host = env.get("SMARTY_HOST", "127.0.0.1").strip()
    port = env.get("SMARTY_PORT", "8080").strip()
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/emulator/ready"


def main(env: Mapping[str, str] | None = None) -> int:
    url = ready_url(os.environ if env is None else env)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - a local URL
            ok = response.status == 200
    except urllib.error.HTTPError as exc:  # 503 while warming up
        print(f"not ready: {exc.code} {exc.read(500).decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
