"""The copy-paste curl of docs/webhooks.md works against the demo, as a reader would run it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.e2e.test_webhooks_live import wait_for_state
from tests.services import ROOT


def docs_snippet() -> str:
    """The first bash block of docs/webhooks.md."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    return re.search(r"```bash\n(.*?)```", text, re.S).group(1)


def test_the_documented_curl_confirms_a_demo_order(app, users, tmp_path: Path, live_server):
    from wfapp.demo import load_demo
    from wfapp.services.integrations import get_integration
    from wfapp.services.runs import start_run

    (tmp_path / "instance").mkdir()
    load_demo(str(tmp_path / "instance"))
    start_run(get_integration("SHOP_ORDERS"), "import",
              [{"key": "SO-4242", "status": "success", "data": {"number": "SO-4242",
                                                              "total": 10}}], "test")
    wait_for_state("SO-4242", "PENDING")
    snippet = docs_snippet()
    assert "http://127.0.0.1:5000/hooks/SHOP_ORDERS" in snippet
    snippet = snippet.replace("http://127.0.0.1:5000", live_server)
    out = subprocess.run(["bash", "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, env={"PATH": "/usr/bin:/bin", "ORDER": "SO-4242"})
    assert out.returncode == 0, out.stderr
    assert "event_id" in json.loads(out.stdout)
    assert wait_for_state("SO-4242", "CONFIRMED").vars["tracking_no"] == "TRK123456"
