"""Webhooks against a real HTTP receiver on loopback: signature, retries on 500, delivery log."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.api.conftest import make_user
from webapp.core.roles import CURATOR
from webapp.exports.models import Webhook, WebhookDelivery
from webapp.exports.services import cut_version
from webapp.exports.webhooks import send_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    """Answers the queued status codes in order (then 200) and keeps every request."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            server.received.append((self.headers, body))
            code = server.codes.pop(0) if server.codes else 200
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.received, server.codes = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield server
    server.shutdown()
    server.server_close()


def test_a_ready_version_is_posted_signed_and_retried_after_500s(
    reviewed, receiver, tmp_path, django_capture_on_commit_callbacks
):
    Webhook.objects.create(url=receiver.url, secret="s3cret", events=["version.ready"])
    Webhook.objects.create(url=receiver.url, secret="other", events=["job.finished"])
    receiver.codes = [500, 503]
    with django_capture_on_commit_callbacks(execute=True):
        version = cut_version(datasets=["street"], out_dir=tmp_path, reference=True)
    assert len(receiver.received) == 3  # two 500s, then delivered; the job hook not called
    headers, body = receiver.received[-1]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-FGAM-Signature"], expected)
    assert headers["X-FGAM-Event"] == "version.ready"
    payload = json.loads(body)
    version.refresh_from_db()
    assert payload["data"]["content_sha256"] == version.content_sha256
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 3, 200)
    assert [entry["code"] for entry in delivery.log] == [500, 503, 200]

    page = make_user("cur", CURATOR)
    from django.test import Client

    browser = Client()
    browser.force_login(page)
    html = browser.get("/versions/webhooks/").content.decode()
    assert receiver.url in html and "delivered" in html and "version.ready" in html


def test_a_refusal_is_permanent_and_retries_stop_at_the_limit(receiver, settings):
    settings.FGAM_WEBHOOK_MAX_ATTEMPTS = 3
    Webhook.objects.create(url=receiver.url, secret="k")
    receiver.codes = [404]
    refused = send_event("job.finished", {"job": 1})[0]
    from webapp.exports.tasks import deliver_webhook

    deliver_webhook.apply(args=[refused.pk])
    refused.refresh_from_db()
    assert (refused.status, refused.attempts) == ("failed", 1)

    receiver.codes = [500] * 10
    failing = send_event("job.finished", {"job": 2})[0]
    deliver_webhook.apply(args=[failing.pk])
    failing.refresh_from_db()
    assert (failing.status, failing.attempts) == ("failed", 3)
    assert failing.error == "HTTP 500"


def test_an_unreachable_endpoint_is_logged_and_retried(settings):
    settings.FGAM_WEBHOOK_MAX_ATTEMPTS = 2
    Webhook.objects.create(url="http://127.0.0.1:9/nothing-listens", secret="k")
    delivery = send_event("version.ready", {})[0]
    from webapp.exports.tasks import deliver_webhook

    deliver_webhook.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 2
    assert "Connection refused" in delivery.error or "Errno" in delivery.error
