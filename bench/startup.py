"""How fast the app starts and how much memory it holds when idle, as a Space would run it.

    python -m bench.startup [--repeats 3] [--json]

Each repeat starts `python gradio_app.py` in a fresh process (a free local port, its own empty data folder) and
measures:
- serving_s: from the process start until GET / answers 200 (the page a visitor opens);
- api_s: until GET /gradio_api/info answers (the API a client calls);
- warm_s: until the shipped checkpoints are loaded in the background (the first /predict then pays nothing),
  seen as the process's resident memory settling;
- idle_rss_mib: the resident memory once warm and idle, summed over the process and any children.
The figures are medians over the repeats. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _rss_mib(pid: int) -> float:
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(k) for k in kids] + [g for k in kids for g in _children(int(k))]


def measure_once(timeout: float = 180) -> dict:
    port = _free_port()
    home = tempfile.mkdtemp(prefix="studio-bench-")
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "ALEXNET_STUDIO_HOME": home, "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "gradio_app.py"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result: dict = {}
    try:
        base = f"http://127.0.0.1:{port}"
        while "serving_s" not in result:
            if proc.poll() is not None:
                raise RuntimeError(f"gradio_app.py exited with {proc.returncode} before serving")
            if time.perf_counter() - start > timeout:
                raise TimeoutError("the app did not serve within the timeout")
            if _answers(base + "/"):
                result["serving_s"] = time.perf_counter() - start
            time.sleep(0.05)
        while not _answers(base + "/gradio_api/info"):
            time.sleep(0.05)
        result["api_s"] = time.perf_counter() - start
        # Warm: the background preload grows the memory; call it settled once it holds still for 3 s.
        last, still_since = _rss_mib(proc.pid), time.perf_counter()
        while time.perf_counter() - still_since < 3 and time.perf_counter() - start < timeout:
            time.sleep(0.25)
            now = _rss_mib(proc.pid)
            if abs(now - last) > 2:
                last, still_since = now, time.perf_counter()
        result["warm_s"] = still_since - start
        result["idle_rss_mib"] = _rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [measure_once() for _ in range(args.repeats)]
    summary = {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}
    summary["repeats"] = args.repeats
    summary["cpus"] = os.cpu_count()
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>14}: {value}")


if __name__ == "__main__":
    main()
