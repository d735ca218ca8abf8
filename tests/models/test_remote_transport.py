"""The remote teacher's transport (models/teacher/remote_http.py) follows the environment as curl
and pip do: proxies from HTTP(S)_PROXY, the CA bundle from SSL_CERT_FILE, loopback reached
directly. Real sockets on 127.0.0.1, a real TLS handshake with a certificate made here."""
import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from potstill.models.teacher.remote_http import Client, RequestRejected

from fake_openai import FakeOpenAI


class Recorder(ThreadingHTTPServer):
    """A forward proxy that answers every request itself (as if it were the origin) and keeps
    the request lines it received."""

    def __init__(self):
        self.lines: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.lines.append(self.requestline)
                body = json.dumps({"object": "list", "data": [{"id": "via-proxy"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_a_proxy_from_the_environment_carries_requests_to_a_remote_host(monkeypatch):
    proxy = Recorder()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = Client("http://teacher.invalid:8000/v1", "sk-secret", max_retries=0)
        assert client.get("/models")["data"][0]["id"] == "via-proxy"
        client.close()
        # the proxy got the absolute URL, as a forward proxy does
        assert proxy.lines == ["GET http://teacher.invalid:8000/v1/models HTTP/1.1"]
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_loopback_server_is_reached_directly_whatever_the_proxy_says(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: a proxied call fails
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with FakeOpenAI() as fake:
        client = Client(fake.base_url, max_retries=0)
        assert client.get("/models")["data"][0]["id"] == "teacher"
        client.close()
        assert fake.received["/v1/models"] == 1


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for 127.0.0.1."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    fake = FakeOpenAI()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    fake.httpd.socket = ctx.wrap_socket(fake.httpd.socket, server_side=True)
    with fake:
        yield fake, d / "cert.pem"


def test_a_private_ca_from_ssl_cert_file_is_trusted_and_without_it_the_cert_is_refused(
        tls_server, monkeypatch):
    fake, cert = tls_server
    url = fake.base_url.replace("http://", "https://")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    client = Client(url, max_retries=0)
    assert client.get("/models")["data"][0]["id"] == "teacher"
    client.close()
    monkeypatch.delenv("SSL_CERT_FILE")
    refused = Client(url, max_retries=3, sleep=lambda s: None)
    with pytest.raises(RequestRejected, match="TLS certificate refused"):
        refused.get("/models")  # not retried: the same certificate would be refused again
    assert refused.take_usage()["requests"] == 1
    refused.close()
