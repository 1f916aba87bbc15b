import http.server
import os
import shutil
import ssl
import subprocess
import threading
from functools import partial

import pytest
import torch

from zoo.classification.data import FASHION_MNIST_CLASSES
from zoo.classification.models import build_model
from zoo.metrics import count_params
from zoo.registry import ModelCard

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_card(model: torch.nn.Module, name: str = "resnet8.unit", **overrides) -> ModelCard:
    fields = dict(
        name=name, task="classification", architecture=f"resnet{model.config['depth']}", config=dict(model.config),
        dataset="fashion-mnist", split="test", metrics={"top1": 0.5}, params=count_params(model),
        preprocessing={"input_size": [1, 28, 28], "mean": [0.286], "std": [0.353]},
        labels=list(FASHION_MNIST_CLASSES),
    )
    fields.update(overrides)
    return ModelCard(**fields)


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet8", in_channels=1, num_classes=10).eval()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDZOO_HOME", str(tmp_path / "kdzoo-home"))


@pytest.fixture(autouse=True)
def _isolated_registry():
    """Entries a test registers (remote mocks) must not leak into the zoo other tests see."""
    from zoo import api

    saved, discovered = dict(api.REGISTRY._cards), api.REGISTRY._discovered
    yield
    api.REGISTRY._cards, api.REGISTRY._discovered = saved, discovered
    api._LOADED.clear()


# ---------------------------------------------------------------- a loopback HTTPS server (downloads without the network)
class Handler(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Handler.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def https_server(tmp_path, monkeypatch):
    """A loopback HTTPS server with a certificate made for 127.0.0.1, trusted through SSL_CERT_FILE."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                           "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr.strip()[:200]}")
    root = tmp_path / "served"
    root.mkdir()
    Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
