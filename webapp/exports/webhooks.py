"""Outgoing webhooks: a signed POST when a version is ready or a training job ends.

The body is UTF-8 JSON; the header ``X-FGAM-Signature: sha256=<hex>`` is the HMAC-SHA256 of
the exact body bytes with the webhook's secret, and ``X-FGAM-Event`` names the event. A
receiver recomputes the HMAC and compares in constant time (``hmac.compare_digest``). Network
errors and 5xx/429 answers retry with exponential backoff up to ``FGAM_WEBHOOK_MAX_ATTEMPTS``;
other 4xx answers are permanent. Every attempt is logged on the ``WebhookDelivery``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webapp.exports.models import Webhook, WebhookDelivery

SIGNATURE_HEADER = "X-FGAM-Signature"
EVENT_HEADER = "X-FGAM-Event"


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC>`` of ``body``.

    >>> sign("s", b"{}")
    'sha256=143ca8d517ba1b181025d732b1cf275d90104fca57bb02a565542978aa18c4b6'
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(attempts: int) -> int:
    """Seconds before the next attempt: 10, 20, 40, ... at most an hour."""
    return min(10 * 2 ** max(attempts - 1, 0), 3600)


def send_event(event: str, data: dict[str, Any]) -> list[WebhookDelivery]:
    """Record one delivery per interested webhook and enqueue them after commit."""
    from webapp.exports.tasks import deliver_webhook

    body = json.dumps(
        {"event": event, "sent_at": timezone.now().isoformat(), "data": data}, sort_keys=True
    )
    deliveries = []
    with transaction.atomic():
        for hook in Webhook.objects.filter(active=True).order_by("id"):
            if hook.wants(event):
                delivery = WebhookDelivery.objects.create(webhook=hook, event=event, body=body)
                deliveries.append(delivery)
                deliver_webhook.delay_on_commit(delivery.pk)
    return deliveries


def attempt_delivery(*, delivery_id: int) -> WebhookDelivery:
    """One POST; the delivery ends ``delivered``, ``retrying`` or ``failed``."""
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    if delivery.status in (WebhookDelivery.Status.DELIVERED, WebhookDelivery.Status.FAILED):
        return delivery
    body = delivery.body.encode()
    request = urllib.request.Request(
        delivery.webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "fgam-studio-webhook",
            EVENT_HEADER: delivery.event,
            SIGNATURE_HEADER: sign(delivery.webhook.secret, body),
        },
    )
    code: int | None = None
    error = ""
    try:
        with urllib.request.urlopen(request, timeout=settings.FGAM_WEBHOOK_TIMEOUT) as resp:
            code = resp.status
    except urllib.error.HTTPError as exc:
        code, error = exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    delivery.attempts += 1
    delivery.response_code = code
    delivery.error = error
    delivery.log = [
        *delivery.log,
        {"at": timezone.now().isoformat(), "attempt": delivery.attempts, "code": code,
         "error": error},
    ]  # fmt: skip
    if code is not None and 200 <= code < 300:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
    elif code is not None and 400 <= code < 500 and code not in (408, 429):
        delivery.status = WebhookDelivery.Status.FAILED  # permanent: the receiver refused it
    elif delivery.attempts >= settings.FGAM_WEBHOOK_MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
    else:
        delivery.status = WebhookDelivery.Status.RETRYING
    delivery.save()
    return delivery
