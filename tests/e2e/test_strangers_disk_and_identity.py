"""Safe among strangers (issue 24): what one visitor uploads never runs as the app, the disk stays within its
stated bounds, caps count who a client is rather than its session, uploads never clobber each other, and Stop
while waiting in line leaves the line. Each test runs against a fresh app started as a Space starts it.

A Space's proxy appends the address it sees to X-Forwarded-For; these tests play the proxy by ending that
header with the address a client "comes from", and play an attacker by writing anything before it.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, class_image, encoded, make_image_folder, skip_or_fail, space_app

pytestmark = pytest.mark.slow

EVIL = {  # each one, should a browser run it on the app's origin, writes a mark into the app's localStorage
    "evil.html": b"<html><body><script>localStorage.setItem('pwned-html', '1')</script>evil</body></html>",
    "evil.svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="localStorage.setItem(\'pwned-svg\', \'1\')">'
                b"<script>localStorage.setItem('pwned-svg-script', '1')</script></svg>",
    "evil.js": b"localStorage.setItem('pwned-js', '1');",
}
ACTIVE_TYPES = ("text/html", "image/svg", "javascript", "text/xml", "application/xml", "xhtml")


def png(label: int = 0, size: int = 16) -> bytes:
    return encoded(class_image(label, size, np.random.default_rng(label)), "PNG")


def data_zip(extra: dict[str, bytes] | None = None, per_class: int = 3) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k, name in enumerate(("red", "green")):
            for i in range(per_class):
                archive.writestr(f"{name}/{i}.png", png(k))
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
    return buffer.getvalue()


def proxied(address: str, forged: str | None = None) -> dict[str, str]:
    """The header a Space's proxy sends for a client at ``address`` that itself sent ``forged``."""
    return {"X-Forwarded-For": f"{forged}, {address}" if forged else address}


# --- a page's events, as the page (not gradio_client) sends them -----------------------------------------------


def bare_upload(url: str, name: str, content: bytes, headers=None) -> httpx.Response:
    return httpx.post(url + "gradio_api/upload", files=[("files", (name, content))], headers=headers, timeout=60)


def file_data(path: str, name: str) -> dict:
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def event_index(url: str, label: str, trigger: str) -> int:
    """The fn_index of the event that ``trigger`` on the component labelled ``label`` starts."""
    config = httpx.get(url + "config", timeout=30).json()
    ids = {c["id"] for c in config["components"] if c.get("props", {}).get("label") == label}
    return next(dep["id"] for dep in config["dependencies"] if any(t[0] in ids and t[1] == trigger
                                                                    for t in dep["targets"]))


def call_events(url: str, calls: list[tuple[int, list]], session: str, headers=None, first_only: bool = False,
                timeout: float = 120) -> list[dict]:
    """Joins the queue with each (fn_index, data) of one session as a page does, then reads the session's one
    stream of answers: each event's completion message (or its first message), in the order of ``calls``."""
    ids = []
    for fn_index, data in calls:
        joined = httpx.post(url + "gradio_api/queue/join", json={"data": data, "fn_index": fn_index,
                            "session_hash": session, "event_data": None, "trigger_id": None},
                            headers=headers, timeout=timeout)
        if joined.status_code != 200:
            return [{"msg": "refused", "success": False, "output": {"error": joined.text}}] * len(calls)
        ids.append(joined.json()["event_id"])
    answers: dict[str, dict] = {}
    with httpx.stream("GET", url + f"gradio_api/queue/data?session_hash={session}", headers=headers,
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("event_id") in ids and message["event_id"] not in answers and (
                    message.get("msg") == "process_completed" or (first_only and message.get("msg") in (
                        "estimation", "process_generating", "process_starts"))):
                answers[message["event_id"]] = message
            if len(answers) == len(ids):
                break
    return [answers.get(event_id, {"msg": "closed", "success": False, "output": {}}) for event_id in ids]


def call_event(url: str, fn_index: int, data: list, session: str, headers=None, first_only: bool = False,
               timeout: float = 120) -> dict:
    return call_events(url, [(fn_index, data)], session, headers, first_only, timeout)[0]


def upload_zip(url: str, content: bytes, name: str, session: str, headers=None, index: int | None = None) -> dict:
    """The Train tab's zip upload: the file to Gradio's upload route, then the upload event (``index``)."""
    response = bare_upload(url, name, content, headers)
    if response.status_code != 200:
        return {"msg": "refused", "success": False, "output": {"error": response.text}}
    path = response.json()[0]
    index = event_index(url, "Zip", "upload") if index is None else index
    return call_event(url, index, [file_data(path, name), None], session, headers)


def until_there_is_room(attempt, tries: int = 5):
    """``attempt()``, again after the wait the server names when its disk is full with the work of visitors who
    are still here ("try again in 0.05 minutes": they count as away after 3 s here), as a client would; an answer
    or error of any other kind at once."""
    from gradio_client.exceptions import AppError

    for left in range(tries, 0, -1):
        try:
            answer = attempt()
        except AppError as error:
            if "disk is full" not in str(error) or left == 1:
                raise
            time.sleep(4)
            continue
        if not (isinstance(answer, dict) and "disk is full" in json.dumps(answer.get("output"))) or left == 1:
            return answer
        time.sleep(4)


def used_mb(home: Path) -> float:
    """What the bound counts: visitors' folders and Gradio's upload folder, hard links once."""
    seen, total = set(), 0
    for folder in (home / "visitors", home / "gradio"):
        for path in folder.rglob("*") if folder.exists() else []:
            try:
                st = path.lstat()
            except OSError:
                continue
            if path.is_file() and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total / 1e6


def app_pid(home: Path) -> int:
    """The process of the app whose home is ``home``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"ALEXNET_STUDIO_HOME={home}".encode() in (entry / "environ").read_bytes().split(b"\0") \
                        and b"gradio_app.py" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError("the app's process was not found")


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


# --- one Space for the serving, identity and queue tests -------------------------------------------------------


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """A fresh Space with a tiny data set of the server's own, small caps on runs (2 per visitor, 3 on the
    server), visitors away after 3 s without a request, and no epoch cap (a run lasts while another waits)."""
    home = tmp_path_factory.mktemp("strangers-home")
    make_image_folder(home / "uploads" / "tiny", classes=["red", "green"], n_per_class=8, size=32)
    with space_app(home, ALEXNET_STUDIO_MAX_EPOCHS="1000", ALEXNET_STUDIO_MAX_RUNS_PER_VISITOR="2",
                   ALEXNET_STUDIO_MAX_RUNS_PER_SERVER="3", ALEXNET_STUDIO_AWAY_MINUTES="0.05") as (url, log):
        yield url, home, log


def client(url: str, headers: dict):
    from gradio_client import Client

    return Client(url, verbose=False, headers=headers)


def settings(data: Path, epochs: int = 1) -> dict:
    """/train's settings object (docs/api.md) for a tiny run."""
    return {"model": "alexnet_cifar_small", "data": str(data), "device": "cpu", "epochs": epochs, "batch_size": 8,
            "lr": 0.01}


def train(c, data: Path, epochs: int = 1, **kwargs):
    return c.predict(settings=settings(data, epochs), api_name="/train", **kwargs)


def test_nothing_a_visitor_uploads_runs_as_the_app_in_chromium(space, tmp_path):
    """Defect 1: .html, .svg and .js in a zip and by bare upload. No URL of the app serves them as a document or
    a script (the zip keeps only its images; Gradio's upload folder answers attachments with nosniff), and a
    page of the app that loads each URL, as a page, a frame, an image and a script, runs none of them."""
    url, home, _ = space
    headers = proxied("203.0.113.1")
    answer = upload_zip(url, data_zip(EVIL), "evil.zip", secrets.token_hex(8), headers)
    assert answer["success"], answer
    # every file of those names anywhere under the app's home, by the path the server knows it by
    urls = [url + "gradio_api/file=" + str(p) for name in EVIL for p in home.rglob(name)]
    for name, content in EVIL.items():
        response = bare_upload(url, name, content, headers)
        assert response.status_code == 200, response.text
        urls.append(url + "gradio_api/file=" + response.json()[0])
    for file_url in urls:
        response = httpx.get(file_url, timeout=30)
        kind = response.headers.get("content-type", "")
        assert response.status_code != 200 or (
            not any(active in kind for active in ACTIVE_TYPES)
            and response.headers.get("content-disposition", "").startswith("attachment")
            and response.headers.get("x-content-type-options") == "nosniff"), (file_url, dict(response.headers))
    assert not [p for p in (home / "visitors").rglob("*") if p.suffix in (".html", ".svg", ".js")]

    if not Path(CHROMIUM).exists():
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.goto(url)
            for file_url in urls:  # as a page of its own
                try:
                    page.goto(file_url, timeout=15_000)
                    page.wait_for_timeout(300)
                except Error:  # an attachment is a download, not a page
                    pass
            page.goto(url)
            page.evaluate("""(urls) => { for (const u of urls) {
                const frame = document.createElement('iframe'); frame.src = u; document.body.appendChild(frame);
                const img = document.createElement('img'); img.src = u; document.body.appendChild(img);
                const obj = document.createElement('object'); obj.data = u; document.body.appendChild(obj);
                const script = document.createElement('script'); script.src = u; document.body.appendChild(script);
            } }""", urls)
            page.wait_for_timeout(2000)
            marks = page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('pwned'))")
            assert marks == [], f"scripts ran as the app: {marks}"
        finally:
            browser.close()


def test_two_uploads_with_the_same_name_in_the_same_second_both_stay(space):
    """Defect 5: two zips whose names share their first 40 characters, uploaded at once, are two data sets."""
    url, home, _ = space
    headers, session = proxied("203.0.113.5"), secrets.token_hex(8)
    stem = "a-data-set-whose-name-is-longer-than-forty-characters"
    names = [f"{stem}-{n}.zip" for n in (1, 2)]
    paths = [bare_upload(url, name, data_zip(), headers).json()[0] for name in names]
    index = event_index(url, "Zip", "upload")
    answers = call_events(url, [(index, [file_data(path, name), None]) for path, name in zip(paths, names)],
                          session, headers)  # one visitor, both in line at once: the same second
    assert all(answer["success"] for answer in answers), [answer["output"] for answer in answers]
    folders = [p for p in (home / "visitors").glob("*/uploads/*") if p.name.startswith(stem[:40])]
    assert len(folders) == 2 and all(any(f.rglob("*.png")) for f in folders), folders


def test_stop_while_queued_leaves_the_line_and_the_run_never_starts(space):
    """Defect 9: /train_stop while one's /train waits in line answers that it left the line, and no run starts."""
    url, home, _ = space
    data = home / "uploads" / "tiny"
    a, b = client(url, proxied("203.0.113.10")), client(url, proxied("203.0.113.11"))
    try:
        a_job = a.submit(settings=settings(data, 500), api_name="/train")
        from tests.helpers import wait_for

        assert wait_for(lambda: "Step" in str(a.predict(api_name="/train_status")[0]), 120)
        b_job = b.submit(settings=settings(data, 1), api_name="/train")
        time.sleep(2)  # b's Start is in line
        said = b.predict(api_name="/train_stop")
        assert "left the line" in said, said
        assert a.predict(api_name="/train_stop").startswith("Stopping")
        a_job.result(timeout=120)
        b_job.result(timeout=120)
        time.sleep(2)
        assert "No run yet" in b.predict(api_name="/train_status")[0]
        assert len(list((home / "visitors").glob("*/runs/*"))) <= 1  # a's run only
    finally:
        a.close()
        b.close()


def test_a_new_session_does_not_renew_the_caps_and_one_address_cannot_fill_the_server(space):
    """Defect 4: the per-visitor cap (2 runs here) counts the address, whatever session or forged header comes;
    another address has its own; and the server's cap (3 runs) is no lock-out: once their visitors have gone, the
    oldest runs make room for a new visitor's."""
    url, home, _ = space
    data = home / "uploads" / "tiny"
    from gradio_client.exceptions import AppError

    for forged in ("1.1.1.1", "2.2.2.2"):  # two sessions of one client at 198.51.100.1, each forging another way
        c = client(url, proxied("198.51.100.1", forged))
        try:
            train(c, data)
        finally:
            c.close()
    c = client(url, proxied("198.51.100.1", "3.3.3.3"))
    try:
        with pytest.raises(AppError, match="You have made 2 runs"):
            train(c, data)
    finally:
        c.close()
    time.sleep(4)  # everyone so far is away now
    for address in ("198.51.100.2", "198.51.100.3"):  # the server holds 3 or more runs: no restart needed
        c = client(url, proxied(address))
        try:
            train(c, data)
            assert "Finished" in c.predict(api_name="/train_status")[0]
        finally:
            c.close()
    assert len(list((home / "visitors").glob("*/runs/*"))) <= 3


def test_runs_and_uploads_per_address_are_rate_limited(space):
    """Defect 4: at most 6 runs and zip uploads a minute from one address (the Space's default)."""
    url, _, _ = space
    headers, answers = proxied("198.51.100.9"), []
    for _ in range(7):
        answers.append(upload_zip(url, data_zip(per_class=1), "r.zip", secrets.token_hex(8), headers))
    assert all(a["success"] for a in answers[:6]), answers
    assert "at most 6 runs and zip uploads a minute" in json.dumps(answers[6]), answers[6]


# --- the disk ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """A fresh Space whose disk bound is 8 MB, whose Gradio cache is cleaned of files 3 s old, and whose visitors
    are away after 3 s without a request."""
    home = tmp_path_factory.mktemp("small-disk-home")
    with space_app(home, ALEXNET_STUDIO_MAX_DISK_MB_PER_SERVER="8", ALEXNET_STUDIO_CACHE_SECONDS="3",
                   ALEXNET_STUDIO_AWAY_MINUTES="0.05", ALEXNET_STUDIO_MAX_UPLOADS_PER_MINUTE="0",
                   ALEXNET_STUDIO_MAX_RUNS_PER_MINUTE="0", ALEXNET_STUDIO_MAX_UPLOAD="3mb") as (url, log):
        yield url, home, log


def test_gradios_upload_folder_is_counted_bounded_and_cleaned(small_disk):
    """Defect 3: bare uploads with no event count against the server's disk bound (refused with 507 once it is
    reached, unless older ones can go), and Gradio's cache deletes them a few seconds later, so uploads are taken
    again."""
    url, home, _ = small_disk
    with ThreadPoolExecutor(16) as pool:  # all at once: faster than the cache is cleaned
        codes = list(pool.map(lambda i: bare_upload(url, f"blob{i}.bin", os.urandom(10**6),
                                                    proxied("192.0.2.1")).status_code, range(16)))
    # each one past the bound was refused (507), or made room by removing older ones of Gradio's (a loaded
    # machine takes long enough for the first to be 10 s old): either way no more than the bound is kept
    assert used_mb(home) <= 8 and len(list((home / "gradio").rglob("blob*.bin"))) <= 8, (codes, used_mb(home))
    assert 507 in codes or codes.count(200) > 8, codes
    from tests.helpers import wait_for

    assert wait_for(lambda: not list((home / "gradio").rglob("blob*.bin")), 30), "Gradio's cache was not cleaned"
    # taken again once the cache is cleaned (the server's room is free again within a few of its cleaning rounds)
    assert wait_for(lambda: bare_upload(url, "after.bin", os.urandom(10**6), proxied("192.0.2.1")).status_code == 200,
                    30, every=1.0)


def test_old_uploads_of_visitors_who_left_make_room_and_the_train_tab_says_so(small_disk):
    """Defect 3: when the disk bound is reached, the oldest uploads of visitors who are no longer around are
    removed for a new visitor's, and the Train tab says that this happens."""
    url, home, _ = small_disk
    assert "removes the oldest runs and uploads" in httpx.get(url + "config", timeout=30).text
    from tests.helpers import wait_for

    assert wait_for(lambda: not list((home / "gradio").rglob("*.bin")), 30)  # the last test's uploads are gone
    big = data_zip({f"red/x{i}.png": encoded(class_image(0, 600, np.random.default_rng(i)), "PNG")
                    for i in range(2)})
    first = upload_zip(url, big, "first.zip", secrets.token_hex(8), proxied("192.0.2.2"))
    assert first["success"], first["output"]
    first_folder = next((home / "visitors").glob("*/uploads/first-*"))
    time.sleep(4)  # the first visitor has gone
    answers = [until_there_is_room(lambda i=i: upload_zip(url, big, f"next{i}.zip", secrets.token_hex(8),
                                                          proxied("192.0.2.3"))) for i in range(3)]
    assert all(a["success"] for a in answers), [a["output"] for a in answers]
    assert not first_folder.exists() and used_mb(home) <= 8


# --- abuse -----------------------------------------------------------------------------------------------------

ABUSE_BOUND_MB = 40
ABUSE_RSS_BOUND_GB = 3.0


def test_abuse_300_sessions_and_a_bare_upload_loop_leave_the_disk_bounded_and_a_new_visitor_served(tmp_path):
    """300 sessions from one address (each forging another X-Forwarded-For) upload a zip and start a run as fast as
    they may, while one client loops bare uploads; afterwards, and whenever it was looked at meanwhile, the app's
    disk is within its 40 MB bound, a new visitor's Start trains, and the app's peak resident memory stayed under
    3 GB (VmHWM of its process)."""
    home = tmp_path / "home"
    make_image_folder(home / "uploads" / "tiny", classes=["red", "green"], n_per_class=4, size=32)
    data = home / "uploads" / "tiny"
    with space_app(home, ALEXNET_STUDIO_MAX_DISK_MB_PER_SERVER=str(ABUSE_BOUND_MB), ALEXNET_STUDIO_MAX_RUN_MB="20",
                   ALEXNET_STUDIO_MAX_EPOCHS="1", ALEXNET_STUDIO_MAX_IMAGES="8", ALEXNET_STUDIO_CACHE_SECONDS="30",
                   ALEXNET_STUDIO_AWAY_MINUTES="0.05", ALEXNET_STUDIO_MAX_UPLOAD="2mb",
                   ALEXNET_STUDIO_MAX_UPLOAD_MB_PER_VISITOR="5", ALEXNET_STUDIO_MAX_RUNS_PER_SERVER="20") as (url, _):
        pid, zipped = app_pid(home), data_zip(per_class=2)
        config = httpx.get(url + "config", timeout=30).json()
        train_index = next(dep["id"] for dep in config["dependencies"] if dep.get("api_name") == "train")
        zip_index = event_index(url, "Zip", "upload")
        start = time.monotonic()
        deadline = start + 75  # bounded in time as in count (a loaded machine gets through fewer sessions)
        peak_used, outcomes, done = [0.0], [], [False]

        def session(i: int) -> None:
            if time.monotonic() > deadline:
                return
            headers, session_hash = proxied("203.0.113.66", f"10.0.{i // 256}.{i % 256}"), secrets.token_hex(8)
            uploaded = upload_zip(url, zipped, f"s{i}.zip", session_hash, headers, zip_index)
            started = call_event(url, train_index, ["alexnet_cifar_small", str(data), "cpu", None, 1, 4, 0.01, "sgd",
                                                    0.9, 0.0005, "onecycle", 0.0, False, False, None], session_hash,
                                 headers, first_only=True, timeout=30)
            outcomes.append((uploaded["success"], started.get("msg") != "process_completed" or started["success"]))

        def upload_loop() -> list[int]:
            codes = []
            while not done[0] and time.monotonic() < deadline:
                codes.append(bare_upload(url, f"loop{len(codes)}.bin", os.urandom(1_900_000),
                                         proxied("203.0.113.67")).status_code)
            return codes

        def watch() -> None:
            while not done[0]:
                peak_used[0] = max(peak_used[0], used_mb(home))
                time.sleep(0.25)

        with ThreadPoolExecutor(16) as pool:  # the uploading client uses three connections at once
            loops, watcher = [pool.submit(upload_loop) for _ in range(3)], pool.submit(watch)
            list(pool.map(session, range(300)))
            done[0] = True
            codes = [code for loop in loops for code in loop.result()]
            watcher.result()
        seconds = time.monotonic() - start
        used = used_mb(home)
        time.sleep(4)  # the flood's visitors are away now (ALEXNET_STUDIO_AWAY_MINUTES): their old work may go
        c = client(url, proxied("198.51.100.200"))
        try:
            until_there_is_room(lambda: train(c, data))
            status = c.predict(api_name="/train_status")[0]
        finally:
            c.close()
        peak_rss_gb = vm_kb(pid, "VmHWM") / 2**20
        print(f"abuse: {len(outcomes)} sessions in {seconds:.0f} s ({sum(u for u, _ in outcomes)} zips taken, "
              f"{sum(t for _, t in outcomes)} Starts not refused at once); {len(codes)} bare uploads, "
              f"{codes.count(200)} taken, {codes.count(507)} refused for room, {codes.count(429)} for rate; disk "
              f"{used:.1f} MB after, {peak_used[0]:.1f} MB at most seen (bound {ABUSE_BOUND_MB} MB); peak RSS "
              f"{peak_rss_gb:.2f} GiB")
        assert len(outcomes) == 300 or time.monotonic() > deadline  # every session ran, or the time bound came
        assert codes.count(507) + codes.count(429) > 0  # the uploading client was stopped, by the room or its share
        assert used <= ABUSE_BOUND_MB and peak_used[0] <= ABUSE_BOUND_MB
        assert "Finished" in status, status
        assert peak_rss_gb < ABUSE_RSS_BOUND_GB
