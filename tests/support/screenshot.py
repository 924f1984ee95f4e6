"""`make screenshot`: the README's dashboard picture, taken in headless Debian chromium from a demo rig.

Run as ``python -m tests.support.screenshot OUT.png``. The rig lives in a temporary directory that is removed
afterwards; only OUT is written. Needs Playwright (a dev dependency) and /usr/bin/chromium.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys
import tempfile

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "screenshot password"


async def take(out: pathlib.Path) -> None:
    from playwright.async_api import async_playwright

    from edge.clock import SystemClock
    from edge.config import Secrets, WebConfig
    from edge.services.accounts import Accounts
    from edge.web.app import bound_port, start_web
    from tests.support.rigs.fridge import HOUR, start_fridge_rig

    with tempfile.TemporaryDirectory(prefix="vendedge-shot-") as state:
        rig = await start_fridge_rig(state, speed=2000.0)  # the cold-chain demo: a temperature chart too
        try:
            machine = rig.daemon.machine
            assert machine is not None
            await Accounts(machine.db).add("tech", "technician", PASSWORD)
            runner = await start_web(machine, WebConfig(host="127.0.0.1", port=0), Secrets(),
                                     session_clock=SystemClock())
            try:
                await rig.until(rig.sim_now() + 2 * HOUR)  # temperature history for the chart
                for slot in ("A1", "C1", "B2"):
                    await machine.sell(slot, "card:screenshot")
                base = f"http://127.0.0.1:{bound_port(runner)}"
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
                    page = await browser.new_page(viewport={"width": 1280, "height": 900})
                    await page.goto(base + "/login")
                    await page.fill("#name", "tech")
                    await page.fill("#password", PASSWORD)
                    await page.click("#login")
                    await page.wait_for_selector("#machine-id")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=str(out), full_page=True)
                    await browser.close()
            finally:
                await runner.cleanup()
        finally:
            await rig.stop()


def main(argv: list[str]) -> int:
    out = pathlib.Path(argv[1] if len(argv) > 1 else "docs/img/dashboard.png")
    asyncio.run(take(out))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
