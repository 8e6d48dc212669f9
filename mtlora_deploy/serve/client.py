"""A small KServe v2 HTTP client for Triton (standard library only): health, model metadata, statistics, and
inference with Triton's binary tensor extension, so images and maps travel as raw bytes, not JSON numbers.

One ``TritonClient`` keeps one HTTP connection; give each thread its own (as ``load`` does).
"""

from __future__ import annotations

import http.client
import json
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from mtlora_deploy.errors import ConfigError

DTYPES = {
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BOOL": np.bool_,
}
HEADER_LENGTH = "Inference-Header-Content-Length"


class InferenceError(Exception):
    """The server answered a request with an error (HTTP 4xx/5xx and Triton's message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


@dataclass(frozen=True)
class Input:
    """One request input: a numpy array, or a list of byte strings for a BYTES tensor of shape (len, 1)."""

    name: str
    data: np.ndarray | list[bytes]

    def encode(self) -> tuple[dict, bytes]:
        if isinstance(self.data, list):
            raw = b"".join(struct.pack("<I", len(item)) + bytes(item) for item in self.data)
            shape, datatype = [len(self.data), 1], "BYTES"
        else:
            array = np.ascontiguousarray(self.data)
            datatype = next((k for k, v in DTYPES.items() if np.dtype(v) == array.dtype), None)
            if datatype is None:
                raise ConfigError(f"input {self.name!r}: dtype {array.dtype} has no Triton equivalent")
            raw, shape = array.tobytes(), list(array.shape)
        header = {"name": self.name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}
        return header, raw


class TritonClient:
    """HTTP/REST client of one Triton server, e.g. ``TritonClient("http://127.0.0.1:8000")``."""

    def __init__(self, url: str, timeout: float = 300.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"got {url!r}, expected http://HOST:PORT (Triton's HTTP endpoint)", field="url")
        self.url, self.host, self.port, self.timeout = url, parts.hostname, parts.port or 80, timeout
        self.connection: http.client.HTTPConnection | None = None

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        for attempt in (0, 1):  # a kept-alive connection the server closed is reopened once
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.connection.request(method, path, body=body, headers=headers or {})
                response = self.connection.getresponse()
                return response, response.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def ready(self, model: str | None = None) -> bool:
        """The server (and ``model``) answer ready; False while starting or unreachable."""
        try:
            response, _ = self._request("GET", f"/v2/models/{model}/ready" if model else "/v2/health/ready")
        except OSError:
            return False
        return response.status == 200

    def _json(self, method: str, path: str, payload: dict | None = None) -> dict:
        try:
            response, body = self._request(method, path, json.dumps(payload).encode() if payload is not None else None)
        except OSError as exc:
            raise ConfigError(f"`url` {self.url}: no Triton answers ({exc})", field="url") from exc
        if response.status != 200:
            raise InferenceError(response.status, _message(body))
        return json.loads(body) if body else {}

    def repository_index(self) -> list[dict]:
        return self._json("POST", "/v2/repository/index", {})

    def model_config(self, model: str) -> dict:
        return self._json("GET", f"/v2/models/{model}/config")

    def statistics(self, model: str) -> dict:
        """Triton's statistics of ``model`` (counts and cumulative ns per phase, and executions per batch size)."""
        return self._json("GET", f"/v2/models/{model}/stats")["model_stats"][0]

    def infer(self, model: str, inputs: list[Input], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run ``model`` on ``inputs``; returns every (or each named) output as a numpy array."""
        encoded = [item.encode() for item in inputs]
        request: dict = {"inputs": [header for header, _ in encoded]}
        if outputs:
            request["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
        else:
            request["parameters"] = {"binary_data_output": True}
        header = json.dumps(request).encode()
        response, body = self._request(
            "POST",
            f"/v2/models/{model}/infer",
            header + b"".join(blob for _, blob in encoded),
            {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
        )
        if response.status != 200:
            raise InferenceError(response.status, _message(body))
        return _decode(body, int(response.getheader(HEADER_LENGTH) or len(body)))


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", body.decode(errors="replace")))
    except ValueError:
        return body.decode(errors="replace")[:300]


def _decode(body: bytes, header_length: int) -> dict[str, np.ndarray]:
    header, offset, out = json.loads(body[:header_length]), header_length, {}
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        dtype = DTYPES.get(output["datatype"])
        if size is None or dtype is None:
            raise ConfigError(
                f"output {output['name']!r}: expected binary {list(DTYPES)} data, got {output['datatype']}"
            )
        out[output["name"]] = np.frombuffer(body[offset : offset + size], dtype=dtype).reshape(output["shape"])
        offset += size
    return out
