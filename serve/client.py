"""Client of a der-export Triton repository: ``der-infer --triton HOST:PORT`` (and the load generator).

Each image goes as its own request (the encoded file bytes, TYPE_STRING) to the ensemble entry; Triton's
dynamic batcher makes the batches, so concurrency here is what fills them. Results come back in input
order as the same :class:`Prediction` records local der-infer writes: the card travels in the served model
config, the labels are the server's per-class decisions (or, with ``threshold`` / ``top_k``, decided here
by the same rule as ``Predictor.decide``), and an image the server cannot decode is reported for that
file in local der-infer's words.

URL forms: ``HOST:PORT`` or ``http://HOST:PORT`` (HTTP), ``grpc://HOST:PORT`` (gRPC); a ``/MODEL`` suffix
picks the entry model, otherwise the one ensemble carrying a der card is used.
"""
from __future__ import annotations

import json
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from der_deploy.artifact.card import ModelCard
from der_deploy.artifact.keys import TRITON_CARD_PARAM
from der_deploy.errors import DerError, ImageError

from der_deploy.runtime.predictor import Prediction, Predictor, score_order

ITEM_PREFIX = "request item 0: "  # how the preprocessing model names the (only) image of a request


class TritonError(DerError):
    """The Triton server cannot be reached, has no usable model, or failed a request."""


def parse_url(url: str) -> tuple[str, str, str | None]:
    """'grpc://h:p/model' -> ('grpc', 'h:p', 'model'); 'h:p' -> ('http', 'h:p', None)."""
    protocol, rest = "http", url.strip()
    for scheme in ("http://", "grpc://"):
        if rest.lower().startswith(scheme):
            protocol, rest = scheme[:-3], rest[len(scheme):]
            break
    else:
        if "://" in rest:
            raise TritonError(f"{url}: unsupported scheme; use HOST:PORT (HTTP) or grpc://HOST:PORT")
    host, _, model = rest.partition("/")
    name, _, port = host.rpartition(":")
    if not name or not port.isdigit():
        raise TritonError(f"{url}: expected HOST:PORT, e.g. 127.0.0.1:8000 (HTTP) or grpc://127.0.0.1:8001")
    return protocol, host, model.strip("/") or None


def _module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod
    except ImportError:
        raise TritonError("talking to Triton needs tritonclient; pip install 'der-deploy[serve]'") from None
    return mod


class TritonPredictor:
    """``with TritonPredictor("127.0.0.1:8000") as p: p.predict_iter(paths)`` -- Predictor's API, served.

    ``concurrency``: requests in flight (each thread has its own connection); ``binary``: HTTP binary
    tensor encoding for outputs (JSON otherwise; gRPC is always binary).
    """

    decide = Predictor.decide  # the same decision rule as local inference, driven by self.card
    _check_rule = Predictor._check_rule

    def __init__(self, url: str, *, model: str | None = None, concurrency: int = 8, timeout: float = 60.0,
                 binary: bool = True):
        self.url = url
        self.protocol, self.host, url_model = parse_url(url)
        self.mod = _module(self.protocol)
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.binary = binary
        self.last_stats = None  # der-infer prints pipeline stats only for local runs
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        client = self.client()
        try:
            live = client.is_server_live()
        except Exception as err:  # tritonclient raises its own and socket errors alike
            raise TritonError(f"cannot reach Triton at {url} ({_first_line(err)}); start it with der-serve REPO "
                              "or check HOST:PORT (HTTP port for host:port, gRPC port for grpc://)") from None
        if not live:
            raise TritonError(f"Triton at {url} is not live; check the server log")
        self.model = model or url_model or self._discover()
        self.card = self._card(self.model)

    # --- connection -----------------------------------------------------------------------------
    def client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            kwargs = {"network_timeout": self.timeout, "connection_timeout": self.timeout} if self.protocol == "http" else {}
            c = self.mod.InferenceServerClient(self.host, **kwargs)
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def close(self) -> None:
        with self._lock:
            for c in self._clients:
                try:
                    c.close()
                except Exception:  # closing is best effort
                    pass
            self._clients.clear()

    def __enter__(self) -> "TritonPredictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _config(self, name: str) -> dict[str, Any]:
        c = self.client()
        try:
            cfg = c.get_model_config(name, as_json=True) if self.protocol == "grpc" else c.get_model_config(name)
        except Exception as err:
            raise TritonError(f"model {name!r} is not available on Triton at {self.url} ({_first_line(err)}); "
                              "serve a repository from der-export --triton with der-serve, or name the model as "
                              "HOST:PORT/MODEL") from None
        return cfg.get("config", cfg) if self.protocol == "grpc" else cfg

    def _discover(self) -> str:
        c = self.client()
        index = c.get_model_repository_index(as_json=True) if self.protocol == "grpc" else c.get_model_repository_index()
        rows = index.get("models", []) if isinstance(index, dict) else index
        found = []
        for row in rows:
            if row.get("state") != "READY":
                continue
            cfg = self._config(row["name"])
            if cfg.get("platform") == "ensemble" and TRITON_CARD_PARAM in cfg.get("parameters", {}):
                found.append(row["name"])
        if len(found) != 1:
            what = f"several ({', '.join(sorted(found))})" if found else "no ready der-export ensemble"
            raise TritonError(f"Triton at {self.url} serves {what}; name the entry model as HOST:PORT/MODEL")
        return found[0]

    def _card(self, name: str) -> ModelCard:
        cfg = self._config(name)
        inputs = [i.get("name") for i in cfg.get("input", [])]
        if inputs != ["image"]:
            raise TritonError(f"model {name!r} on {self.url} takes {inputs}, not encoded images; call the ensemble "
                              "written by der-export --triton (e.g. HOST:PORT/der_e2e)")
        try:
            return ModelCard.from_json(cfg["parameters"][TRITON_CARD_PARAM]["string_value"])
        except (KeyError, TypeError, json.JSONDecodeError, DerError) as err:
            raise TritonError(f"model {name!r} on {self.url} carries no der card ({_first_line(err)}); call the "
                              "ensemble written by der-export --triton (e.g. der_e2e)") from None

    # --- inference ------------------------------------------------------------------------------
    def infer_bytes(self, data: bytes | list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N, C) float32, decisions (N, C) bool) for encoded images sent as one request."""
        items = [data] if isinstance(data, (bytes, bytearray)) else list(data)
        mod = self.mod
        inp = mod.InferInput("image", [len(items), 1], "BYTES")
        arr = np.empty((len(items), 1), dtype=object)
        arr[:, 0] = [bytes(b) for b in items]
        if self.protocol == "http":
            inp.set_data_from_numpy(arr, binary_data=True)
            outs = [mod.InferRequestedOutput(n, binary_data=self.binary) for n in ("scores", "labels")]
            res = self.client().infer(self.model, [inp], outputs=outs)  # network_timeout bounds it
        else:
            inp.set_data_from_numpy(arr)
            outs = [mod.InferRequestedOutput(n) for n in ("scores", "labels")]
            res = self.client().infer(self.model, [inp], outputs=outs, client_timeout=self.timeout)
        scores, labels = res.as_numpy("scores"), res.as_numpy("labels")
        c = self.card.num_classes
        if scores is None or labels is None or scores.shape != (len(items), c) or labels.shape != (len(items), c):
            raise TritonError(f"model {self.model!r} on {self.url} answered outputs of shapes "
                              f"{getattr(scores, 'shape', None)} / {getattr(labels, 'shape', None)}, expected "
                              f"({len(items)}, {c}); re-export the repository with der-export --triton")
        return scores.astype(np.float32), labels.astype(bool)

    def _one(self, path: Path, threshold, top_k) -> Prediction:
        from der_deploy.images import read_image_bytes

        try:
            data = read_image_bytes(path)
            scores, decisions = self.infer_bytes(data)
        except ImageError as err:
            return Prediction(str(path), [], {}, error=str(err))
        except TritonError:
            raise
        except Exception as err:  # tritonclient's InferenceServerException and transport errors
            msg = _first_line(err, 400)
            at = msg.find(ITEM_PREFIX)
            if at >= 0:  # the preprocessing model could not decode this file: a per-file error, as locally
                return Prediction(str(path), [], {}, error=str(ImageError(path, msg[at + len(ITEM_PREFIX):])))
            raise TritonError(f"Triton model {self.model!r} at {self.url} failed on {path}: {msg}; check the "
                              "server's log (der-serve --verbose) and that the model is ready") from None
        p, d = scores[0], decisions[0]
        if threshold is None and top_k is None:  # the server's decisions from the card thresholds
            labels = [self.card.classes[i] for i in score_order(p) if d[i]]
        else:
            labels = self.decide(p, threshold=threshold, top_k=top_k)
        return Prediction(str(path), labels, {n: float(v) for n, v in zip(self.card.classes, p)})

    def predict_iter(self, items: Iterable[str | Path], *, threshold: float | None = None, top_k: int | None = None,
                     with_cadm: bool = False, progress: bool = False) -> Iterator[Prediction]:
        """One Prediction per path, in order, ``concurrency`` requests in flight."""
        self._check_rule(threshold, top_k)
        if with_cadm:
            self.require_cadm()
        paths = [Path(p) for p in items]
        stream = self._ordered(paths, threshold, top_k)
        if progress:
            from der_deploy.progress import track

            stream = track(stream, "infer (triton)", total=len(paths))
        return stream

    def _ordered(self, paths: list[Path], threshold, top_k) -> Iterator[Prediction]:
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="triton")
        pending: deque = deque()
        try:
            it = iter(paths)
            for p in it:  # keep a bounded window in flight; yield strictly in input order
                pending.append(pool.submit(self._one, p, threshold, top_k))
                if len(pending) >= 2 * self.concurrency:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)

    def require_cadm(self) -> None:
        raise TritonError("--cam needs the heat-map output of a local engine; run der-infer --engine MODEL.onnx")


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = (err.message() if hasattr(err, "message") and callable(err.message) else str(err)) or type(err).__name__
    line = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
