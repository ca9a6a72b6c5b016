"""Where per-video work runs: the `compute:` section of params.yaml and a small map engine.

`engine: local` runs items in this process (`workers == 1`) or a process pool; `engine: ray` runs
each item as one Ray task: on a Ray instance started inside the stage (`address: null`, with
`num_cpus` CPUs) or on a cluster it joins (`address: auto` or `ray://host:port`). A task whose
worker dies is retried by Ray (`max_retries`); an exception raised by the work is not retried and
comes back as the item's result, so the caller skips and counts the item as it always did. The
work writes its own per-item files, so on a cluster every node must see the same filesystem.

    for item, result in run_map(fn, items, params, workers=4, desc="curate"):
        if isinstance(result, BaseException): ...

`fn` must be picklable for a pool or Ray (a module-level function or a `functools.partial` of one);
state a worker builds once (a face analyzer) belongs in a per-process cache inside `fn`.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from ingredients.config import load_section

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

RAY_VERSION = "2.60.0"  # pyproject.toml's pin
ADDRESS_PATTERN = re.compile(r"^(auto|ray://[^\s:/]+:\d+|[^\s:/]+:\d+)$")
MIB = 1024 * 1024


class ComputeParams(BaseModel):
    """The `compute:` section: the engine of per-video stages (curation, evaluation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description="null: start a local Ray instance; 'auto', 'ray://host:port' or 'host:port': join a cluster")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance; null = all of this machine's")
    object_store_mb: int | None = Field(None, ge=75, description="object store of a local Ray instance (MiB); null = Ray's default")
    task_cpus: float = Field(1.0, gt=0, description="CPUs one task reserves")
    task_gpus: float = Field(0.0, ge=0, description="GPUs one task reserves")
    task_memory_mb: int | None = Field(None, ge=1, description="memory one task reserves (MiB); null = no reservation")
    max_retries: int = Field(3, ge=0, description="reruns of an item whose worker died, on Ray and in the local pool (exceptions are not retried)")
    connect_timeout_s: float = Field(15.0, gt=0, description="seconds to reach `address` before the stage fails naming it")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not ADDRESS_PATTERN.match(value):
            raise ValueError("expected null (local instance), 'auto', 'ray://host:port' or 'host:port'")
        if value is not None and value.startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise ValueError(f"{value!r} is a Ray Client address, which needs Ray's client extra: "
                             f"pip install 'ray[client]=={RAY_VERSION}' (or join the cluster from one of its "
                             "nodes with address: auto)")
        return value

    def model_post_init(self, _context: Any) -> None:
        if self.address is not None and (self.num_cpus is not None or self.object_store_mb is not None):
            raise ValueError("num_cpus and object_store_mb size a local Ray instance; with an address the cluster sets them (remove them or set address: null)")


def compute_params(path: str | os.PathLike | None) -> ComputeParams:
    """The `compute:` section of a params file (defaults when the file or the section is absent)."""
    if path is None:
        return ComputeParams()
    return load_section(path, "compute", ComputeParams)


def run_map(fn: Callable[[T], R], items: Iterable[T], params: ComputeParams | None = None, *,
            workers: int = 1, desc: str = "work") -> Iterator[tuple[T, R | BaseException]]:
    """(item, fn(item) or the exception it raised) for every item, as results finish.

    `workers` sizes the local engine (1 = this process); Ray sizes itself from `params`.
    """
    params = params or ComputeParams()
    items = list(items)
    if not items:
        return
    if params.engine == "ray":
        yield from _run_ray(fn, items, params, desc)
    elif workers == 1:
        for item in tqdm(items, desc=desc, unit="item"):
            try:
                result = fn(item)
            except Exception as exc:  # noqa: BLE001 - the caller counts the failed item
                result = exc
            yield item, result
    else:
        yield from _run_pool(fn, items, workers, params.max_retries, desc)


def die_with_parent() -> None:
    """Pool initializer: the kernel kills this worker when the process that started it dies (Linux
    PR_SET_PDEATHSIG), so a stage killed with SIGKILL leaves no worker writing for minutes."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


# Pool workers are started by `spawn`, never `fork`: the stage process holds threads (torch's, tqdm's,
# MLflow's, and the reruns below submit from a thread pool), and a child forked while another thread
# holds a lock (the import lock, a logging handler's, malloc's) blocks on it forever at start: seen as a
# worker asleep on a futex with 0 s of CPU and a stage that never finishes. Spawned workers import the
# function by name (it must live in an importable module, as Ray requires too).
_POOL_CONTEXT = multiprocessing.get_context("spawn")


def _outcome(fut: Future) -> Any:
    exc = fut.exception()
    return exc if exc is not None else fut.result()


def _run_alone(fn: Callable[[T], R], item: T, retries: int) -> R | BaseException:
    """`fn(item)` in a process of its own, rerun up to `retries` times while that process dies."""
    for _ in range(retries + 1):
        with ProcessPoolExecutor(max_workers=1, mp_context=_POOL_CONTEXT, initializer=die_with_parent) as solo:
            result = _outcome(solo.submit(fn, item))
        if not isinstance(result, BrokenProcessPool):
            return result
    return result


def _run_pool(fn: Callable[[T], R], items: list[T], workers: int, retries: int,
              desc: str) -> Iterator[tuple[T, R | BaseException]]:
    """A pool of `workers` processes. A worker that dies (the OOM killer, a crash in native code)
    breaks the whole pool and every unfinished item with it; those items then run again, each in a
    process of its own (`workers` at a time, up to `retries` reruns), so only the item that kills its
    worker every time comes back failed (a BrokenProcessPool), as on Ray."""
    broken: list[T] = []
    with tqdm(total=len(items), desc=desc, unit="item") as bar:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_POOL_CONTEXT, initializer=die_with_parent) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                result = _outcome(fut)
                if isinstance(result, BrokenProcessPool):
                    broken.append(items[futures[fut]])
                    continue
                bar.update()
                yield items[futures[fut]], result
        if broken:
            logger.warning("%s: a worker died; %d unfinished items rerun one process each", desc, len(broken))
            with ThreadPoolExecutor(max_workers=workers) as threads:
                alone = {threads.submit(_run_alone, fn, item, retries): item for item in broken}
                for fut in as_completed(alone):
                    bar.update()
                    yield alone[fut], fut.result()


def _call(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


@contextmanager
def ray_session(params: ComputeParams) -> Iterator[Any]:
    """Ray, initialised from `params` unless it already is; shut down on exit if started here."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # workers inherit the driver's environment
    import ray

    started = not ray.is_initialized()
    if started:
        if params.address is None:
            ray.init(num_cpus=params.num_cpus or os.cpu_count(),
                     object_store_memory=params.object_store_mb * MIB if params.object_store_mb else None,
                     include_dashboard=False, configure_logging=False)
        else:
            check_reachable(params)
            try:
                ray.init(address=params.address, configure_logging=False)
            except ConnectionError as err:
                raise ConnectionError(f"compute.address: {params.address!r}: {err}") from err
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def check_reachable(params: ComputeParams) -> None:
    """Fail within `connect_timeout_s` when nothing answers at `compute.address` (host:port or
    ray://host:port): Ray's own connection attempt retries for minutes without naming the setting."""
    address = params.address or "auto"
    if address == "auto":  # Ray reads the local node's cluster file and fails at once without one
        return
    host, port = address.removeprefix("ray://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=params.connect_timeout_s).close()
    except OSError as err:
        raise ConnectionError(
            f"compute.address: nothing answers at {address!r} within {params.connect_timeout_s:g} s "
            f"({err.strerror or type(err).__name__}); start the cluster (`ray start --head`), fix the address, "
            "or set compute.address: null to start a local Ray instance in the stage") from err


def _run_ray(fn: Callable[[T], R], items: list[T], params: ComputeParams, desc: str) -> Iterator[tuple[T, R | BaseException]]:
    with ray_session(params) as ray:
        options: dict[str, Any] = {"num_cpus": params.task_cpus, "num_gpus": params.task_gpus,
                                   "max_retries": params.max_retries, "retry_exceptions": False}
        if params.task_memory_mb is not None:
            options["memory"] = params.task_memory_mb * MIB
        task = ray.remote(**options)(_call)
        fn_ref = ray.put(fn)
        # a bounded window of tasks in flight: the driver holds no more than a few per CPU
        window = max(2, int(4 * ray.cluster_resources().get("CPU", 1) / params.task_cpus))
        queue = iter(items)
        pending: dict[Any, T] = {}
        with tqdm(total=len(items), desc=desc, unit="item") as bar:
            while True:
                for item in queue:
                    pending[task.remote(fn_ref, item)] = item
                    if len(pending) >= window:
                        break
                if not pending:
                    break
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    item = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # the work raised: not retried
                        result = exc.cause if isinstance(exc.cause, BaseException) else exc
                    except ray.exceptions.RayError as exc:  # worker died past max_retries, node lost
                        result = exc
                    bar.update()
                    yield item, result
