"""Remote sources: https:// (served from loopback) and hf:// (huggingface_hub, mocked or offline)."""
import http.server
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

import zoo
from zoo import download as dl
from zoo import hub
from zoo.download import OfflineError

from conftest import make_card


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (the stdlib handler ignores Range)."""

    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        RangeHandler.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_resumes_a_partial_file_with_range(server, tmp_path):
    root, base = server
    payload = bytes(range(256)) * 400
    (root / "f.bin").write_bytes(payload)
    import hashlib

    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    dest.with_name("f.bin.part").write_bytes(payload[:1000])  # an interrupted earlier download
    dl.download(f"{base}/f.bin", dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload
    assert RangeHandler.requests[-1] == ("/f.bin", "bytes=1000-")
    assert not dest.with_name("f.bin.part").exists()


def test_download_with_wrong_sha256_keeps_nothing(server, tmp_path):
    root, base = server
    (root / "f.bin").write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        dl.download(f"{base}/f.bin", tmp_path / "f.bin", sha256="0" * 64, progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_load_from_an_http_folder_url(server, tiny_model):
    root, base = server
    zoo.save(tiny_model, root / "ckpt", make_card(tiny_model))
    model = zoo.load(f"{base}/ckpt", progress=False)
    assert model.card.source == f"{base}/ckpt"
    assert [p.name for p in (hub.cache_dir() / "urls").iterdir()] == ["127.0.0.1:" + base.rsplit(":", 1)[1] + "--ckpt"]


def test_remote_registry_entry_downloads_once_then_uses_the_cache(server, tiny_model, monkeypatch):
    root, base = server
    card = zoo.save(tiny_model, root / "ckpt", make_card(tiny_model, name="remote.unit"))
    zoo.register(replace(card, source=f"{base}/ckpt"), replace=True)
    zoo.load("remote.unit", progress=False)
    n = len(RangeHandler.requests)
    zoo.load("remote.unit", progress=False)
    assert len(RangeHandler.requests) == n  # verified cache hit, no new request


def test_remote_entry_offline_says_what_to_download_and_where(tiny_model, tmp_path):
    card = make_card(tiny_model, name="offline.unit", source="http://127.0.0.1:9/kdzoo/offline.unit")
    card = replace(card, files=[hub.FileRef("model.safetensors", "a" * 64, 10)])
    zoo.register(card, replace=True)
    with pytest.raises(OfflineError) as err:
        zoo.load("offline.unit", progress=False)
    msg = str(err.value)
    assert "not bundled" in msg and "model.safetensors" in msg
    assert str(hub.cache_dir() / "hub" / "offline.unit") in msg


def test_hf_source_goes_through_huggingface_hub(tmp_path, tiny_model, monkeypatch):
    src = tmp_path / "hfrepo"
    card = zoo.save(tiny_model, src, make_card(tiny_model, name="hf.unit"))
    calls = []

    def fake_hf_hub_download(repo_id, filename, revision=None, local_dir=None, local_files_only=False):
        calls.append((repo_id, filename, revision))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / filename).write_bytes((src / filename).read_bytes())
        return str(Path(local_dir) / filename)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(dl, "_reachable", lambda endpoint: True)  # as if online
    zoo.register(replace(card, source="hf://kdzoo/hf.unit@v1"), replace=True)
    model = zoo.load("hf.unit")
    assert calls == [("kdzoo/hf.unit", "model.safetensors", "v1")]
    assert model.card.name == "hf.unit"


def test_an_unreachable_hub_uses_the_local_copy_without_retrying(tmp_path, monkeypatch):
    """Offline, huggingface_hub retried for ~25 s before failing (a failed name lookup, or a host that refuses the
    connection); now a Hub that cannot be reached sends the request to the local copy only (found there, or a
    clear OfflineError at once that names the endpoint)."""
    import socket

    import huggingface_hub

    seen = []

    def fake_hf_hub_download(repo_id, filename, revision=None, local_dir=None, local_files_only=False):
        seen.append(local_files_only)
        if not (Path(local_dir) / filename).exists():
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in the disk cache; set 'local_files_only'..")
        return str(Path(local_dir) / filename)

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    reachable, port = dl._reachable, server.getsockname()[1]
    assert reachable(f"http://127.0.0.1:{port}")
    server.close()
    closed = f"http://127.0.0.1:{port}"  # nothing listens there now: the connection is refused
    assert not reachable(closed) and not reachable("https://no-such-host.invalid") and not reachable("not a url")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(dl, "_hub_endpoint", lambda: closed)
    with pytest.raises(OfflineError, match=rf"the Hub \({closed}\) cannot be reached from here, and no copy is in") as e:
        dl.hf_download("kdzoo/x", "config.json", tmp_path)
    assert "local_files_only" not in str(e.value)  # huggingface_hub's advice is not the zoo user's to follow
    (tmp_path / "config.json").write_text("{}")
    assert dl.hf_download("kdzoo/x", "config.json", tmp_path) == tmp_path / "config.json"
    assert seen == [True, True]


def test_an_hf_endpoint_that_is_not_a_url_is_named(tmp_path):
    """huggingface_hub parses $HF_ENDPOINT when imported: a bad one was a bare ValueError from its import."""
    import subprocess
    import sys

    code = ("import zoo.download as dl\ntry:\n    dl.hf_download('a/b', 'c.json', '.')\n"
            "except dl.OfflineError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**__import__("os").environ, "HF_ENDPOINT": "http://[::1"}).stdout
    assert "huggingface_hub cannot start: Invalid IPv6 URL (is $HF_ENDPOINT='http://[::1' a URL?)" in out


def test_hf_source_offline_gives_a_clear_error(tiny_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    card = replace(make_card(tiny_model, name="hf.offline", source="hf://kdzoo/none"),
                   files=[hub.FileRef("model.safetensors", "b" * 64, 10)])
    zoo.register(card, replace=True)
    with pytest.raises(OfflineError, match="could not be fetched"):
        zoo.load("hf.offline", progress=False)
