"""Container health check: exit 0 only while GET /ready answers 200 (model loaded and warmed up).

Used by the images' HEALTHCHECK and by docker-compose.yml, so `depends_on: condition:
service_healthy` waits for a server that can score, not just one that accepts connections.
Standard library only: the images carry no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("VIGOR_PORT", "8000")
    url = f"http://127.0.0.1:{port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
