"""Indexing on Ray Data: reading, hashing, decoding and encoding spread over a Ray cluster.

The driver (the process running ``add_folder``) keeps what must stay single: the
scan, the plan (new / changed / moved / deleted / duplicate), the writer lock and
the batched commits into the catalog.  Ray Data does the rest, streaming:

    from_items(batches) -> map_batches(read, hash, decode, preprocess)   tasks, CPU
                        -> map_batches(_EncodeActor, ActorPoolStrategy(N)) actors, model loaded once each
                        -> iter_batches()                                  back to the driver, as they finish

The read/decode step is :func:`searchindex.ingest.produce.read_file`, the function the
local pipeline runs in its worker processes, so both paths feed the encoder the
same pixels.  What the decode tasks make of a file (the model's input size and
resize rule, a :class:`~searchindex.models.pixels.PixelSpec`) is learnt on the
driver without loading the model when this machine has prepared the model's int8
tower (its record holds it), else from one load of the model here.  The model
itself is checked where it runs: each encoder actor resolves the index's model,
compares it with the one recorded in the index (weights, vector size, input) and
refuses a mismatch with :class:`~searchindex.errors.ModelMismatchError`, which
the driver raises on the first batch back, before committing anything.  No other
process loads the model, so a run pays one cold model load per actor.

Nothing is materialised: Ray Data's streaming executor keeps a bounded number of
blocks in flight, and the driver commits each batch as it arrives, so a killed
driver loses at most what was in flight and the same command resumes.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..defaults import DEFAULT_MAX_MEGAPIXELS
from ..errors import (
    EngineError,
    MissingExtraError,
    ModelError,
    ModelMismatchError,
    SearchIndexError,
    WeightsUnavailableError,
)
from ..fileio import DEFAULT_MAX_FILE_BYTES
from ..models.encoders import Encoder, OpenClipEncoder
from ..models.pixels import PixelSpec
from ..models.spec import ModelSpec, resolve_model, sha256_file
from .produce import ReadLimits, Result
from .scan import FileEntry

__all__ = ["RayEngine"]

log = logging.getLogger(__name__)

def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingExtraError("indexing with --engine ray needs Ray Data", extra="ray") from None
    return ray


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _workers_find_this_package() -> bool:
    """Whether a worker of a local Ray instance imports the searchindex this process runs.

    Such a worker is a fresh interpreter with this one's executable and environment, started in
    this working directory (Ray adds the driver's working directory and script directory to its
    path): it finds the package through the virtual environment, an editable install or
    ``PYTHONPATH``, but not through a ``sys.path`` entry added at run time.  Asked of a fresh
    interpreter, the same way, rather than guessed from ``sys.path``.
    """
    probe = ("import importlib.util, os; s = importlib.util.find_spec('searchindex'); "
             "print(os.path.dirname(os.path.abspath(s.origin)) if s and s.origin else '')")
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                              cwd=os.getcwd(), check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == _PACKAGE_DIR


def _pixel_spec_here(spec: ModelSpec) -> PixelSpec | None:
    """What the decode tasks make of a file for ``spec``: recorded with the int8 tower this machine
    prepared for it, else read from its config (models that run without torch), else learnt from one
    load of the model here (on the CPU, in fp32)."""
    from ..models.int8 import prepared_pixel_spec

    found = prepared_pixel_spec(spec)
    if found is not None:
        return found
    from ..models.towers import pixel_spec_of, torchless

    if torchless(spec):  # from the model's config, no weights loaded
        return pixel_spec_of(spec)
    t0 = time.perf_counter()
    pixel_spec = OpenClipEncoder(spec, device="cpu", precision="fp32").pixel_spec
    log.info("Ray: loaded %s here to learn its input in %.1f s", spec.describe(), time.perf_counter() - t0)
    return pixel_spec


def _weights_here(spec: ModelSpec) -> ModelSpec:
    """On a worker: the weights ``spec`` names, as they are there (checkpoint files hashed again).

    Without open_clip's name check (its import, torch's, costs a cold actor seconds): a name
    and pretrained tag are what the load itself fetches.

    Raises:
        WeightsUnavailableError: the recorded checkpoint file is not there.
    """
    if not spec.checkpoint_sha256:
        return spec
    if spec.pretrained in ("builtin", "local-dir"):
        return resolve_model(spec.model, None)
    path = Path(spec.pretrained)
    if not path.is_file():
        raise WeightsUnavailableError(f"checkpoint file {spec.pretrained} recorded with this index is not on "
                                      "the Ray workers")
    return replace(spec, checkpoint_sha256=sha256_file(path))


def _load_checked(spec: ModelSpec, dim: int, device: str, precision: str, pixel_spec: PixelSpec | None) -> Encoder:
    """On a worker: the index's model as it loads there, refused unless it is the one the index records.

    Raises:
        ModelMismatchError: the worker resolves the model to other weights (not loaded then), another
            vector size, or another input than the decode tasks make (``pixel_spec``, when given).
        ModelError, WeightsUnavailableError: the model cannot be loaded there.
    """
    from ..models.backends import load_encoder

    found = _weights_here(spec)
    if not found.same_weights(spec):
        raise ModelMismatchError(f"this index was built with {spec.describe()}, but the Ray workers load "
                                 f"{found.describe()}; vectors from different weights cannot be mixed")
    encoder = load_encoder(spec, device, precision)
    if encoder.dim != dim:
        raise ModelMismatchError(f"{spec.describe()} makes {encoder.dim}-d vectors on the Ray workers; "
                                 f"the index holds {dim}-d")
    if pixel_spec is not None and encoder.pixel_spec != pixel_spec:
        raise ModelMismatchError(f"{spec.describe()} wants {encoder.pixel_spec} input on the Ray workers but "
                                 f"{pixel_spec} on the driver (other open_clip versions?)")
    return encoder


def _read_decode(batch: dict[str, np.ndarray], known: Set[str], pixel_spec: Any,
                 limits: ReadLimits) -> dict[str, np.ndarray]:
    """Ray Data task: read, hash, decode and preprocess the files of a run's batch (as the local workers do).

    A row is one batch of the run: ``entries``, its files (pickled), become ``records``, what
    :func:`~searchindex.ingest.produce.read_file` makes of each (pickled).
    """
    from .produce import read_file

    out = [pickle.dumps([read_file(e, known, pixel_spec, limits) for e in pickle.loads(blob)])
           for blob in batch["entries"]]
    return {"batch": batch["batch"], "records": np.array(out, dtype=object)}


class _EncodeActor:
    """Ray Data actor: loads the index's model once, checked, then encodes the decoded records it is given.

    A model refused here (or failing to load) is not raised: Ray Data would retry the actor and
    report only a text.  Every batch then comes back as the error itself, which the driver raises
    before committing anything.
    """

    def __init__(self, spec: ModelSpec, dim: int, device: str, precision: str, pixel_spec: PixelSpec | None,
                 known: Set[str], limits: ReadLimits) -> None:
        self.known = known
        self.limits = limits
        self.refusal: Exception | None = None
        try:
            self.encoder = _load_checked(spec, dim, device, precision, pixel_spec)
            self.encoder.load()  # now, while the first batch is still being decoded
        except SearchIndexError as exc:
            self.refusal = exc
        except Exception as exc:  # sent to the driver as a value: one it can unpickle
            self.refusal = ModelError(f"{spec.describe()} failed to load on a Ray worker: "
                                      f"{type(exc).__name__}: {exc}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.refusal is not None:
            out = [pickle.dumps(self.refusal)] * len(batch["batch"])
        elif "records" in batch:
            out = [pickle.dumps(self._encode(pickle.loads(blob))) for blob in batch["records"]]
        else:  # a model whose preprocessing only open_clip knows: decode here, with the model
            from .produce import read_file

            out = [pickle.dumps(self._encode([read_file(e, self.known, self.encoder, self.limits)
                                              for e in pickle.loads(blob)])) for blob in batch["entries"]]
        return {"batch": batch["batch"], "results": np.array(out, dtype=object)}

    def _encode(self, records: list[Any]) -> list[Result]:
        from .produce import ReadFile

        todo = [r for r in records if isinstance(r, ReadFile) and r.pixels is not None]
        encoded: dict[int, np.ndarray] = {}
        if todo:
            inputs = [r.pixels for r in todo]
            if self.encoder.pixel_spec is not None and isinstance(inputs[0], np.ndarray):
                vectors = self.encoder.encode_pixels(inputs)
            else:
                vectors = self.encoder.encode_batch(inputs)
            encoded = {id(r): np.asarray(v, dtype=np.float32) for r, v in zip(todo, vectors, strict=True)}
        # The driver needs the vector, not the pixels.
        return [replace(r.produced, vector=encoded.get(id(r))) if isinstance(r, ReadFile) else r for r in records]


@dataclass
class RayEngine:
    """Where and how indexing runs on Ray; pass it as ``add_folder(..., engine=RayEngine(...))``.

    Attributes:
        address: a running cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); ``None`` starts a
            local Ray instance (and stops it in :meth:`close`).  Either way, a Ray already
            initialised in this process is used as it is.
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
    _input: tuple[PixelSpec | None] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Connect to the cluster (or start a local instance) unless Ray is already initialised here."""
        ray = _ray()
        if ray.is_initialized():
            return
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        if self.address is None:
            # "local": a new instance even where `ray start` left one that ray.init() would join.
            options.update(address="local", num_cpus=self.num_cpus)
            if self.object_store_memory:
                options["object_store_memory"] = self.object_store_memory
            # Workers import searchindex from where the driver does (a checkout, a venv); a runtime
            # environment is only set up when they would not find it there (it delays their start).
            if not _workers_find_this_package():
                root = os.path.dirname(_PACKAGE_DIR)
                path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
                options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        else:
            options["address"] = self.address
        t0 = time.perf_counter()
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            # A ConnectionError is an OSError, which would read as a failure to write the index.
            where = "start a local Ray instance" if self.address is None else f"connect to Ray at {self.address}"
            raise EngineError(f"cannot {where}: {exc}") from exc
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

    def bind(self, spec: ModelSpec, dim: int, device: str = "auto", precision: str = "auto",
             encoder: Encoder | None = None) -> None:
        """The index's model, which every encoder actor checks before it encodes a file.

        ``encoder``: the model already loaded in this process, if it is; its input is then known
        without looking further.
        """
        self._bound = (spec, dim, self._device(self.device or device), self.precision or precision)
        self._input = (encoder.pixel_spec,) if encoder is not None and encoder.spec.same_weights(spec) else None

    def _check_room_to_decode(self, ray: Any) -> None:
        """Refuse reservations that leave no CPU for the decode tasks: the run would wait forever."""
        cpus = float(ray.cluster_resources().get("CPU", 0))
        reserved = self.encoder_workers * self.cpus_per_worker
        if self.decode_cpus > 0 and cpus - reserved < self.decode_cpus:
            raise EngineError(
                f"{self.encoder_workers} encoder worker(s) of {self.cpus_per_worker:g} CPU leave "
                f"{max(cpus - reserved, 0):g} of the cluster's {cpus:g} CPUs, and each decode task needs "
                f"{self.decode_cpus:g}: fewer encoder workers or CPUs per worker"
            )

    def produce(self, batches: Sequence[Sequence[FileEntry]], known: Set[str]) -> Iterator[list[Result]]:
        """For each of ``batches`` in order, one result per file (see :class:`~searchindex.ingest.produce.Producer`).

        Results stream back as the pipeline finishes them, a batch at a time; a batch is handed
        over once it and those before it are back (Ray Data does not keep their order), so memory
        holds only the batches in flight.

        Raises:
            ModelMismatchError: the encoder actors load other weights than the index's (raised on
                the first batch back, before it is handed over).
            ModelError, WeightsUnavailableError: the model cannot be loaded on the workers.
            EngineError: the cluster cannot be reached, or the encoder workers would leave no CPU
                for decoding.
        """
        files = sum(len(b) for b in batches)
        if not files:
            return
        if self._bound is None:
            raise RuntimeError("RayEngine.bind must name the index's model first")
        spec, dim, device, precision = self._bound
        ray = _ray()
        self.start()
        if self._input is None:
            self._input = (_pixel_spec_here(spec),)
        pixel_spec = self._input[0]
        if pixel_spec is not None:
            self._check_room_to_decode(ray)
        known = frozenset(known)
        limits = ReadLimits(self.max_megapixels, self.max_file_bytes)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the library reports progress through its callback
        # One row, and one block, per batch of the run: each decode task and each actor call then
        # handles one batch and hands it on when done.  (Rows of files would be re-bundled across
        # blocks, and an actor's small results held back until its whole bundle is done.  Rows of
        # 16 files, one encoder call, were tried: encoding starts sooner, but each file costs more
        # in Ray's scheduling, and 3,000 images were not indexed faster.)
        rows = [{"batch": n, "entries": pickle.dumps(list(b))} for n, b in enumerate(batches)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        if pixel_spec is not None:
            # Its own resources keep Ray Data from fusing decoding into the encoder actors, where it
            # would run one file at a time per actor (on GPU nodes, too) instead of in parallel tasks.
            ds = ds.map_batches(_read_decode, batch_size=1, batch_format="numpy", num_cpus=self.decode_cpus,
                                fn_kwargs={"known": known, "pixel_spec": pixel_spec, "limits": limits})
        ds = ds.map_batches(
            _EncodeActor, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.encoder_workers),
            num_cpus=self.cpus_per_worker, num_gpus=self.num_gpus_per_worker or None,
            fn_constructor_kwargs={"spec": spec, "dim": dim, "device": device, "precision": precision,
                                   "pixel_spec": pixel_spec, "known": known if pixel_spec is None else frozenset(),
                                   "limits": limits},
        )  # A lost actor (its process killed, its node gone) is restarted and its batches retried: Ray Data's
        # default for actor pools (max_restarts=-1, max_task_retries=-1; tests/test_ray.py kills one).  Results
        # count once they reach the driver, so a retried batch is still committed once.
        arrived: dict[int, list[Result]] = {}
        nxt = 0  # the next batch to hand over
        t0 = time.perf_counter()
        # No prefetching: with it, each batch reached the driver only when the actor finished the next.
        for block in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            if not arrived and nxt == 0:
                log.info("Ray: first results back %.1f s after the pipeline started", time.perf_counter() - t0)
            for n, blob in zip(block["batch"], block["results"], strict=True):
                results = pickle.loads(blob)
                if isinstance(results, Exception):  # the model, refused on a worker: nothing is committed
                    raise results
                if int(n) >= nxt:
                    arrived[int(n)] = results
            while nxt in arrived:
                yield arrived.pop(nxt)
                nxt += 1
        if nxt < len(batches):
            raise RuntimeError(f"the Ray pipeline returned {nxt} of {len(batches)} batches")
        log.info("Ray: %d files through the pipeline in %.1f s", files, time.perf_counter() - t0)
