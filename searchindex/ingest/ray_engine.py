"""Indexing on Ray Data: reading, hashing, decoding and encoding spread over a Ray cluster.

The driver (the process running ``add_folder``) keeps what must stay single: the
scan, the plan (new / changed / moved / deleted / duplicate), the writer lock and
the batched commits into the catalog.  Ray Data does the rest, streaming:

    from_items(files) -> map_batches(read, hash, decode, preprocess)   tasks, CPU
                      -> map_batches(_EncodeActor, concurrency=N)      actors, model loaded once each
                      -> iter_batches()                                back to the driver, as they finish

The read/decode step is :func:`searchindex.ingest.produce.read_file`, the function the
local pipeline runs in its worker processes, so both paths feed the encoder the
same pixels.  Before any file is touched, one Ray task resolves and loads the
index's model where the workers run and compares it with the model recorded in
the index (:meth:`RayEngine.check_model`): a different checkpoint there is
refused with :class:`~searchindex.errors.ModelMismatchError`.

Nothing is materialised: Ray Data's streaming executor keeps a bounded number of
blocks in flight, and the driver commits each batch as it arrives, so a killed
driver loses at most what was in flight and the same command resumes.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import MissingExtraError, ModelMismatchError
from ..fileio import DEFAULT_MAX_FILE_BYTES
from ..models.spec import ModelSpec
from .produce import ReadLimits, Result
from .scan import FileEntry

__all__ = ["RayEngine"]

log = logging.getLogger(__name__)

_HINT = "indexing with --engine ray needs Ray Data: pip install 'searchindex[ray]'"


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingExtraError(_HINT) from None
    return ray


def _probe_model(spec: ModelSpec, device: str, precision: str) -> tuple[ModelSpec, int | None, Any]:
    """On a worker: the model as it resolves and loads there: (spec, vector size, pixel spec).

    Other weights than ``spec``'s come back without being loaded (size ``None``).
    """
    from ..models.backends import load_encoder
    from ..models.spec import resolve_model

    pretrained = None if spec.pretrained in ("hf-hub", "local-dir") else spec.pretrained
    found = resolve_model(spec.model, pretrained)
    if not found.same_weights(spec):
        return found, None, None
    encoder = load_encoder(spec, device, precision)
    return found, encoder.dim, encoder.pixel_spec


def _read_decode(batch: dict[str, np.ndarray], known: Set[str], pixel_spec: Any,
                 limits: ReadLimits) -> dict[str, np.ndarray]:
    """Ray Data task: read, hash, decode and preprocess a block of files (as the local workers do)."""
    from .produce import read_file

    out = []
    for path, size, mtime_ns in zip(batch["path"], batch["size"], batch["mtime_ns"], strict=True):
        entry = FileEntry(str(path), int(size), int(mtime_ns))
        out.append(pickle.dumps(read_file(entry, known, pixel_spec, limits)))
    return {"record": np.array(out, dtype=object), "order": batch["order"]}


class _EncodeActor:
    """Ray Data actor: loads the index's model once, then encodes the decoded records it is given."""

    def __init__(self, spec: ModelSpec, dim: int, device: str, precision: str, known: Set[str],
                 limits: ReadLimits) -> None:
        from ..models.backends import load_encoder

        self.encoder = load_encoder(spec, device, precision)
        if self.encoder.dim != dim:
            raise ModelMismatchError(f"{spec.describe()} makes {self.encoder.dim}-d vectors on this worker, "
                                     f"the index holds {dim}-d")
        self.known = known
        self.limits = limits

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .produce import ReadFile, read_file

        if "record" in batch:
            records = [pickle.loads(item) for item in batch["record"]]
        else:  # a model whose preprocessing only open_clip knows: decode here, with the model
            records = [read_file(FileEntry(str(p), int(s), int(m)), self.known, self.encoder, self.limits)
                       for p, s, m in zip(batch["path"], batch["size"], batch["mtime_ns"], strict=True)]
        todo = [r for r in records if isinstance(r, ReadFile) and r.pixels is not None]
        out: list[Any] = []
        if todo:
            inputs = [r.pixels for r in todo]
            if self.encoder.pixel_spec is not None and isinstance(inputs[0], np.ndarray):
                vectors = self.encoder.encode_pixels(inputs)
            else:
                vectors = self.encoder.encode_batch(inputs)
            encoded = {id(r): np.asarray(v, dtype=np.float32) for r, v in zip(todo, vectors, strict=True)}
        for r in records:  # the driver needs the vector, not the pixels
            if isinstance(r, ReadFile):
                vector = encoded.get(id(r)) if todo else None
                out.append(replace(r.produced, vector=vector))
            else:
                out.append(r)
        return {"record": np.array([pickle.dumps(r) for r in out], dtype=object), "order": batch["order"]}


@dataclass
class RayEngine:
    """Where and how indexing runs on Ray; pass it as ``add_folder(..., engine=RayEngine(...))``.

    Attributes:
        address: a running cluster (``auto``, ``ray://HOST:PORT``); ``None`` starts a
            local Ray instance (and stops it in :meth:`close`).
        encoder_workers: encoder actors (each loads the model once).
        num_gpus_per_worker: GPUs per encoder actor (0: CPU); the model then runs on ``cuda``.
        cpus_per_worker: CPUs each encoder actor reserves.
        decode_cpus: CPUs each read/decode task reserves (0.5: two tasks per core, as the
            local pipeline runs its decode processes beside the encoder).
        num_cpus: CPUs of a local instance (default: all).
        object_store_memory: bytes of a local instance's object store (default: Ray's).
        device, precision: as for the local path; ``None`` takes the index's.
        max_megapixels: larger images are failures (decompression bombs), as locally.
        max_file_bytes: larger files are failures without being read, as locally.
        max_file_bytes: larger files are failures without being read, as locally.
    """

    address: str | None = None
    encoder_workers: int = 1
    num_gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    decode_cpus: float = 0.5
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    num_cpus: int | None = None
    object_store_memory: int | None = None
    device: str | None = None
    precision: str | None = None
    _started: bool = field(default=False, init=False, repr=False)
    _bound: tuple[ModelSpec, int, str, str] | None = field(default=None, init=False, repr=False)
    _model: tuple[ModelSpec, int, str, str, Any] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Connect to the cluster (or start a local instance) unless Ray is already initialised here."""
        ray = _ray()
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        if self.address is None:
            options["num_cpus"] = self.num_cpus
            if self.object_store_memory:
                options["object_store_memory"] = self.object_store_memory
        else:
            options["address"] = self.address
        # Workers import searchindex from where the driver does (a checkout, a venv).
        path = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                           os.environ.get("PYTHONPATH")) if p)
        if self.address is None:
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        t0 = time.perf_counter()
        ray.init(**options)
        self._started = True
        log.info("Ray: %s in %.1f s", "local instance started" if self.address is None else
                 f"connected to {self.address}", time.perf_counter() - t0)

    def close(self) -> None:
        """Stop the local Ray instance this engine started (a cluster it joined keeps running)."""
        if self._started:
            _ray().shutdown()
            self._started = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _device(self, device: str) -> str:
        if self.num_gpus_per_worker > 0:
            return "cuda"
        return "cpu" if device == "auto" else device

    def bind(self, spec: ModelSpec, dim: int, device: str = "auto", precision: str = "auto") -> None:
        """The index's model, which :meth:`produce` checks on the workers before its first file."""
        self._bound = (spec, dim, self._device(self.device or device), self.precision or precision)
        self._model = None

    def check_model(self) -> None:
        """Load the bound model where the workers run and refuse it unless it is the index's.

        Raises:
            ModelMismatchError: the workers resolve the model to other weights or another vector size.
            ModelError, WeightsUnavailableError: the model cannot be loaded there.
        """
        ray = _ray()
        if self._bound is None:
            raise RuntimeError("RayEngine.bind must name the index's model first")
        spec, dim, device, precision = self._bound
        self.start()
        t0 = time.perf_counter()
        probe = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=self.num_gpus_per_worker or None)(_probe_model)
        try:
            found, found_dim, pixel_spec = ray.get(probe.remote(spec, device, precision))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            raise (cause if isinstance(cause, Exception) else exc) from None
        if not found.same_weights(spec):
            raise ModelMismatchError(f"this index was built with {spec.describe()}, but the Ray workers load "
                                     f"{found.describe()}; vectors from different weights cannot be mixed")
        if found_dim != dim:
            raise ModelMismatchError(f"{spec.describe()} makes {found_dim}-d vectors on the Ray workers; "
                                     f"the index holds {dim}-d")
        self._model = (spec, dim, device, precision, pixel_spec)
        log.info("Ray: the workers load %s (%d-d), checked in %.1f s", found.describe(), dim, time.perf_counter() - t0)

    def produce(self, batches: Sequence[Sequence[FileEntry]], known: Set[str]) -> Iterator[list[Result]]:
        """For each of ``batches`` in order, one result per file (see :class:`~searchindex.ingest.produce.Producer`).

        The model is checked on the workers (:meth:`check_model`) before the first file is read.
        Results stream back as the pipeline finishes them; a batch is handed over once all its
        files are back (Ray Data does not keep their order), so memory holds only batches in flight.
        """
        entries = [e for b in batches for e in b]
        if not entries:
            return
        ray = _ray()
        if self._model is None:
            self.check_model()
        assert self._model is not None
        spec, dim, device, precision, pixel_spec = self._model
        known = frozenset(known)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the library reports progress through its callback
        batch_size = max(len(b) for b in batches)
        items = [{"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns, "order": n} for n, e in enumerate(entries)]
        blocks = max(1, min(len(items) // max(1, batch_size), 1000))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        if pixel_spec is not None:
            # Its own resources keep Ray Data from fusing decoding into the encoder actors, where it
            # would run one file at a time per actor (on GPU nodes, too) instead of in parallel tasks.
            ds = ds.map_batches(_read_decode, batch_size=batch_size, batch_format="numpy",
                                num_cpus=self.decode_cpus,
                                fn_kwargs={"known": known, "pixel_spec": pixel_spec,
                                           "limits": ReadLimits(self.max_megapixels, self.max_file_bytes)})
        ds = ds.map_batches(
            _EncodeActor, batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.encoder_workers),
            num_cpus=self.cpus_per_worker, num_gpus=self.num_gpus_per_worker or None,
            fn_constructor_kwargs={"spec": spec, "dim": dim, "device": device, "precision": precision,
                                   "known": known if pixel_spec is None else frozenset(),
                                   "limits": ReadLimits(self.max_megapixels, self.max_file_bytes)},
        )  # Ray Data restarts lost actors and retries their batches (max_restarts=-1 by default)
        starts = [0]
        for b in batches:
            starts.append(starts[-1] + len(b))
        arrived: dict[int, Result] = {}
        nxt = 0  # the next batch to hand over
        t0 = time.perf_counter()
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
            if not arrived and nxt == 0:
                log.info("Ray: first results back %.1f s after the pipeline started", time.perf_counter() - t0)
            for n, blob in zip(batch["order"], batch["record"], strict=True):
                arrived[int(n)] = pickle.loads(blob)
            while nxt < len(batches) and all(k in arrived for k in range(starts[nxt], starts[nxt + 1])):
                yield [arrived.pop(k) for k in range(starts[nxt], starts[nxt + 1])]
                nxt += 1
        if nxt < len(batches):
            raise RuntimeError(f"the Ray pipeline returned {len(arrived)} files of the last batches only")
        log.info("Ray: %d files through the pipeline in %.1f s", len(entries), time.perf_counter() - t0)
