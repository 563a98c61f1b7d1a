"""A real OpenAI-compatible HTTP server on loopback, with scripted misbehaviour.

``POST /v1/chat/completions`` answers like an OpenAI chat endpoint. What it does for a request
is scripted by *key*: the first key of ``script`` found in the request's text picks a list of
actions, consumed one per request; when the list is used up (or no key matches) the answer is
valid: ``responder(request)`` when one is given (Stage-2 tests play M and the RM this way),
else a ``{"caption": "..."}``. Actions:

- ``ok``: a valid answer;
- ``429`` / ``500`` / ``503`` / ``400``: that HTTP error (429 carries ``Retry-After: 0``);
- ``429-wait:S``: a 429 with ``Retry-After: S`` seconds;
- ``slow``: sleeps ``slow_s`` (longer than the client's timeout) before a valid answer;
- ``sleep:S``: sleeps S seconds, then a valid answer;
- ``malformed``: content that is not JSON;
- ``refusal``: ``{"caption": "I'm sorry, I can't help with that."}``;
- ``refusal-field``: no content and the ``refusal`` field set, as OpenAI does.

Every answer with a body reports ``usage`` of ``PROMPT_TOKENS`` + ``COMPLETION_TOKENS``. The
server counts requests per key, keeps the last request body per key and the most requests it
had in flight at once, so tests assert on retries, on what was sent and on concurrency.
``latency`` delays every request (benchmarks).

In a test: ``with LLMServer(script={"dog": ["429", "ok"]}) as server: server.url``.
As a process (benchmarks): ``python -m tests.workers.llm_server --latency 0.05`` prints the
base URL on its first line and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROMPT_TOKENS = 120
COMPLETION_TOKENS = 12
REFUSAL_TEXT = "I'm sorry, I can't help with that."


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    state: LLMServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    # Headers and body go out in two writes; without this, Nagle's algorithm holds the body
    # back until the client's delayed ACK (~40 ms), which would dwarf a 50 ms latency.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        state = self.server.state
        state.enter()
        try:
            self._answer()
        finally:
            state.leave()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            request = json.loads(body)
        except ValueError:
            self._send(400, {"error": {"message": "body is not JSON"}})
            return
        state = self.server.state
        if state.latency:
            time.sleep(state.latency)
        action = state.next_action(request)
        if action == "slow":
            time.sleep(state.slow_s)
            action = "ok"
        elif action.startswith("sleep:"):
            time.sleep(float(action.split(":", 1)[1]))
            action = "ok"
        if action.startswith("429-wait:"):
            wait = action.split(":", 1)[1]
            self._send(429, _error("rate limited", "rate_limit"), {"Retry-After": wait})
        elif action == "429":
            self._send(429, _error("rate limited", "rate_limit"), {"Retry-After": "0"})
        elif action in ("500", "503", "400"):
            self._send(int(action), _error(f"scripted {action}", "server_error"))
        elif action == "malformed":
            self._send(200, _completion(request, "here is a caption: a dog, probably"))
        elif action == "refusal":
            self._send(200, _completion(request, json.dumps({"caption": REFUSAL_TEXT})))
        elif action == "refusal-field":
            self._send(200, _completion(request, None, refusal=REFUSAL_TEXT))
        elif state.responder is not None:
            self._send(200, _completion(request, state.responder(request)))
        else:
            caption = f"a region showing the {_phrase(request) or 'object'}"
            self._send(200, _completion(request, json.dumps({"caption": caption})))

    def _send(self, status: int, payload: Mapping, headers: Mapping[str, str] = {}) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left: that is the point of "slow"


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "code": None}}


def _texts(request: Mapping) -> list[str]:
    texts = []
    for message in request.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [part.get("text", "") for part in content if part.get("type") == "text"]
    return texts


def _phrase(request: Mapping) -> str:
    for text in _texts(request):
        found = re.search(r"^Phrase: (.*)$", text, re.MULTILINE)
        if found:
            return found.group(1).strip()
    return ""


def images_in(request: Mapping) -> list[str]:
    """The image URLs of a chat request."""
    urls = []
    for message in request.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            urls += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    return urls


def _completion(request: Mapping, content: str | None, refusal: str | None = None) -> dict:
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


class LLMServer:
    """The server, its script and its counters. Start with ``with`` or ``start()``."""

    def __init__(
        self,
        script: Mapping[str, Sequence[str]] | None = None,
        *,
        latency: float = 0.0,
        slow_s: float = 2.0,
        port: int = 0,
        responder: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> None:
        self.script = {key: list(actions) for key, actions in (script or {}).items()}
        self.latency, self.slow_s = latency, slow_s
        # What a valid answer ("ok") contains; by default a ``{"caption": ...}`` for the
        # captioner. Stage-2 tests pass a function of the request that plays M and the RM.
        self.responder = responder
        self.counts: Counter[str] = Counter()
        self.last_request: dict[str, dict] = {}
        self.total = 0
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.state = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def next_action(self, request: Mapping) -> str:
        text = "\n".join(_texts(request))
        key = next((k for k in self.script if k in text), "")
        with self._lock:
            self.counts[key] += 1
            self.total += 1
            self.last_request[key] = dict(request)
            actions = self.script.get(key)
            return actions.pop(0) if actions else "ok"

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def start(self) -> LLMServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    args = parser.parse_args(argv)
    server = LLMServer(latency=args.latency, port=args.port)
    print(server.url, flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
