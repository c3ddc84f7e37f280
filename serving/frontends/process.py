"""`python -m serving.frontends.process '<FrontEndOptions as JSON>'`: one front-end process, started
(and restarted) by the supervisor (serving/frontends/supervisor.py)."""

from __future__ import annotations

import sys

from serving.cli import configure_logging
from serving.frontends.frontend import FrontEnd, options_from


async def _main(text: str) -> int:
    return await FrontEnd(options_from(text)).run()


def main(argv: list[str]) -> int:
    options = options_from(argv[0])
    configure_logging(options.log_format, options.log_level)
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.run(_main(argv[0]))
    return int(uvloop.run(_main(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
