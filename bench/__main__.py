"""`python -m bench` runs every benchmark with its defaults (see each module's docstring)."""

from __future__ import annotations

import asyncio
import json

from bench import throughput

if __name__ == "__main__":
    print(json.dumps(asyncio.run(throughput.main(throughput.parse_args([]))), indent=2))
