"""Locate a local Fiji and start ImageJ2 in-process (pyimagej / scyjava), offline.

LiveSPT talks to Fiji's own plugins (TrackMate) through a JVM embedded in the
Python process by JPype. :func:`find_fiji` finds a Fiji.app installation (the
one ``scripts/install-fiji`` puts in ``~/.local/share/livespt/Fiji.app``);
:func:`start_imagej` starts ImageJ2 once, headless, from that directory and
returns the gateway (``net.imagej.ImageJ``), which stays for the life of the
process and is shut down at interpreter exit.

Offline start
-------------
``imagej.init(fiji_dir)`` puts the installation's ``jars/`` and ``plugins/``
on the class path, but two defaults of the pyimagej 1.8 / scyjava 1.12 stack
still reach the network:

* scyjava's ``fetch_java="always"`` downloads a Zulu JRE (via cjdk) even when
  a JDK is installed. :func:`start_imagej` sets
  ``scyjava.config.set_java_constraints(fetch="auto")``: the Java found through
  ``JAVA_HOME`` or ``PATH`` is used when it is >= 11, and a download is only
  tried when there is none. (``fetch="never"`` would be stricter but trips
  ``UnboundLocalError`` in pyimagej 1.8.0's ``_guess_java_version`` when no JVM
  is running yet.)
* importing ``imagej`` imports ``imglyb``, which appends the Maven endpoint
  ``net.imglib2:imglib2-imglyb`` to ``scyjava.config.endpoints``; any endpoint
  makes scyjava resolve it with jgo from Maven Central. Fiji 2.3.0 does not
  ship that jar. :func:`start_imagej` removes the endpoint and, when the jar is
  not in the installation, makes imglyb's JVM-start hooks tolerant of its
  absence. The cost: imglyb's zero-copy numpy <-> ImgLib2 views
  (``ij.py.to_java(ndarray)``) are unavailable; LiveSPT copies pixels into
  ImageJ 1 processors through JPype arrays instead (:mod:`livespt.server.io.trackmate`).

With those two settings no Maven or JDK download happens (checked on a machine
without internet). Script languages whose jars are absent from the mirror or
that need Nashorn (removed in Java 15) log ``Cannot create plugin: ...`` at
start; they are not used.

JVM lifetime
------------
One JVM per process, and it cannot be restarted once stopped (JPype). An
``atexit`` hook (:func:`shutdown_imagej`) disposes the ImageJ context and calls
``scyjava.shutdown_jvm()``. JPype's shutdown (``DestroyJavaVM``) waits for every
non-daemon Java thread, so one leaked thread pool (``TrackMate.execDetection``
in TrackMate 7.5.1 leaks one per call; :mod:`livespt.server.io.trackmate` does not call it)
would keep the process alive forever after the script ends. Pools still running
after the context is disposed are shut down first (by reflection; the JVM is
started with ``--add-opens=java.base/java.util.concurrent=ALL-UNNAMED`` for
that); only if threads still remain is JPype told not to destroy the JVM
(``jpype.config.destroy_jvm = False``).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "FIJI_DIR_ENV",
    "FijiNotFoundError",
    "JvmWorker",
    "default_fiji_dir",
    "fiji_search_paths",
    "find_fiji",
    "is_fiji_dir",
    "jvm_worker",
    "missing_fiji_message",
    "shutdown_imagej",
    "start_imagej",
]

_logger = logging.getLogger(__name__)

#: Environment variable naming a Fiji.app directory (searched first; also where
#: ``scripts/install-fiji`` installs).
FIJI_DIR_ENV = "LIVESPT_FIJI_DIR"

_IMGLYB_ENDPOINT_PREFIX = "net.imglib2:imglib2-imglyb"

_lock = threading.Lock()
_gateway: Any = None
_gateway_dir: Path | None = None
_class_loader: Any = None  # context class loader of the thread that started ImageJ
_started_off_main = False  # ImageJ started on a thread other than Python's main thread
_atexit_registered = False
_stopped = False


class FijiNotFoundError(RuntimeError):
    """No usable Fiji.app (with ``jars/TrackMate-*.jar``) was found."""


def default_fiji_dir() -> Path:
    """Where ``scripts/install-fiji`` installs Fiji: ``~/.local/share/livespt/Fiji.app``."""
    return Path.home() / ".local" / "share" / "livespt" / "Fiji.app"


def fiji_search_paths() -> list[Path]:
    """Directories :func:`find_fiji` checks, in order.

    Returns
    -------
    list of Path
        ``$LIVESPT_FIJI_DIR`` (when set), ``~/.local/share/livespt/Fiji.app``,
        ``~/Fiji.app``, ``/opt/Fiji.app``, ``/Applications/Fiji.app``.
    """
    paths = []
    env = os.environ.get(FIJI_DIR_ENV)
    if env:
        paths.append(Path(env).expanduser())
    paths += [default_fiji_dir(), Path.home() / "Fiji.app", Path("/opt/Fiji.app"),
              Path("/Applications/Fiji.app")]
    return paths


def is_fiji_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path/jars`` holds a ``TrackMate-*.jar`` (a Fiji with TrackMate)."""
    jars = Path(path) / "jars"
    try:
        return jars.is_dir() and any(jars.glob("TrackMate-*.jar"))
    except OSError:
        return False


def find_fiji() -> Path | None:
    """Find a local Fiji.app with TrackMate.

    Returns
    -------
    Path or None
        The first of :func:`fiji_search_paths` that :func:`is_fiji_dir`
        accepts (resolved), or None.
    """
    for p in fiji_search_paths():
        if is_fiji_dir(p):
            return p.resolve()
    return None


def _offline_config(fiji_dir: Path, fetch_java: str) -> None:
    """Configure scyjava so that starting from a local Fiji needs no network (see module doc)."""
    import scyjava
    import scyjava.config

    scyjava.config.set_java_constraints(fetch=fetch_java)
    # Reflection into thread pools at shutdown (see _shut_down_pools); pyimagej itself
    # adds --add-opens=java.base/java.lang=ALL-UNNAMED (Java >= 9).
    scyjava.config.add_option("--add-opens=java.base/java.util.concurrent=ALL-UNNAMED")
    eps = scyjava.config.endpoints
    eps[:] = [e for e in eps if not e.startswith(_IMGLYB_ENDPOINT_PREFIX)]
    if any((fiji_dir / "jars").glob("imglib2-imglyb-*.jar")):
        return  # on the class path with the installation's jars: imglyb works
    try:
        from scyjava import _jvm
        callbacks: list[Callable[[], None]] = _jvm._startup_callbacks
    except (ImportError, AttributeError):  # a scyjava without this list: nothing to relax
        return

    def tolerant(cb: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                cb()
            except TypeError as e:  # JPype's "Class ... is not found"
                _logger.debug("imglyb start hook %s skipped: %s", cb.__module__, e)
        run.__module__ = "livespt-tolerant:" + str(cb.__module__)
        return run

    logging.getLogger("imglyb.util").setLevel(logging.CRITICAL)  # its "Failed to import" error
    callbacks[:] = [tolerant(cb) if str(getattr(cb, "__module__", "")).startswith("imglyb")
                    else cb for cb in callbacks]


def start_imagej(fiji_dir: str | os.PathLike[str] | None = None, *,
                 fetch_java: str = "auto", max_heap: str | None = None) -> Any:
    """Start ImageJ2 headless in this process, once, and return its gateway.

    Parameters
    ----------
    fiji_dir : path-like, optional
        A Fiji.app directory; default :func:`find_fiji`.
    fetch_java : {"auto", "always", "never"}
        scyjava's Java policy: "auto" (default) uses the system Java (>= 11) and
        downloads one only when there is none. See the module docstring.
    max_heap : str, optional
        JVM maximum heap, e.g. ``"4g"`` (``-Xmx``); default: the JVM's default.

    Returns
    -------
    net.imagej.ImageJ
        The pyimagej gateway. A second call returns the same one (its
        ``fiji_dir`` must then be the same or None).

    Raises
    ------
    FijiNotFoundError
        No Fiji found (the message lists the places searched and how to
        install one with ``scripts/install-fiji``).
    RuntimeError
        A JVM was already started in this process by someone else, or was
        shut down (JPype cannot restart one), or ImageJ failed to start.
    """
    global _gateway, _gateway_dir, _atexit_registered, _class_loader, _started_off_main
    with _lock:
        want = Path(fiji_dir).expanduser().resolve() if fiji_dir is not None else None
        if _gateway is not None:
            if want is not None and want != _gateway_dir:
                raise RuntimeError(f"ImageJ already runs from {_gateway_dir}; one JVM per "
                                   f"process cannot also load {want}")
            return _gateway
        if _stopped:
            raise RuntimeError("the JVM of this process was shut down (shutdown_imagej); "
                               "JPype cannot start another one")
        if want is None:
            want = find_fiji()
            if want is None:
                raise FijiNotFoundError(missing_fiji_message())
        elif not is_fiji_dir(want):
            raise FijiNotFoundError(f"{want} is not a Fiji.app with jars/TrackMate-*.jar")

        import imagej
        import scyjava

        if scyjava.jvm_started():
            raise RuntimeError("a JVM is already running in this process; ImageJ must be "
                               "started by livespt.server.io.fiji.start_imagej before any "
                               "other Java use")
        _offline_config(want, fetch_java)
        if max_heap:
            scyjava.config.add_option(f"-Xmx{max_heap}")
        try:
            ij = imagej.init(str(want), mode="headless")
        except Exception as e:
            raise RuntimeError(f"ImageJ failed to start from {want}: {e}") from e
        if ij is None:
            raise RuntimeError(f"ImageJ failed to start from {want} (see the log above)")
        _gateway, _gateway_dir = ij, want
        from scyjava import jimport

        _class_loader = jimport("java.lang.Thread").currentThread().getContextClassLoader()
        _started_off_main = threading.current_thread() is not threading.main_thread()
        if not _atexit_registered:
            # Registered after JPype's own hook, so it runs before it (LIFO).
            atexit.register(shutdown_imagej)
            _atexit_registered = True
        _logger.info("ImageJ %s started from %s", ij.getVersion(), want)
        return ij


def shutdown_imagej() -> None:
    """Dispose the ImageJ context and stop the JVM (also run at interpreter exit).

    After this, no Java can be used in this process (JPype cannot restart a JVM).
    """
    global _gateway, _stopped
    with _lock:
        try:
            import scyjava
        except ImportError:
            return
        if not scyjava.jvm_started():
            _gateway = None
            return
        try:
            # ImageJ may have been started on another thread (JvmWorker); this one then
            # has no context class loader, which the dispose hooks need.
            thread = scyjava.jimport("java.lang.Thread").currentThread()
            if thread.getContextClassLoader() is None and _class_loader is not None:
                thread.setContextClassLoader(_class_loader)
            if _gateway is not None:
                _gateway.dispose()  # ends ImageJ's own non-daemon threads
            _release_stuck_threads()
            # Runs the remaining shutdown hooks (pyimagej's disposes the context
            # again, a no-op), then stops the JVM.
            scyjava.shutdown_jvm()
        except Exception as e:  # at exit, a failure must not mask the real status
            _logger.warning("JVM shutdown: %s", e)
        _stopped = True
        _gateway = None


def _non_daemon_threads() -> list[Any]:
    """Live non-daemon Java threads other than the calling one."""
    from scyjava import jimport

    thread = jimport("java.lang.Thread")
    me = thread.currentThread()
    return [t for t in thread.getAllStackTraces().keySet()
            if t.isAlive() and not t.isDaemon() and not t.equals(me)
            and str(t.getName()) != "DestroyJavaVM"]


def _shut_down_pools(threads: list[Any]) -> int:
    """Call ``shutdown()`` on the ``ThreadPoolExecutor`` of each pool worker thread.

    A worker's executor is not reachable through public API: this reads
    ``Thread.target`` (``Thread.holder.task`` on Java 19+) and
    ``ThreadPoolExecutor$Worker.this$0`` by reflection, which the
    ``--add-opens`` options added by :func:`start_imagej` allow. Returns the
    number of executors shut down.
    """
    from scyjava import jimport

    jclass = jimport("java.lang.Class")
    worker_cls = jclass.forName("java.util.concurrent.ThreadPoolExecutor$Worker")
    outer = worker_cls.getDeclaredField("this$0")
    outer.setAccessible(True)
    thread_cls = jclass.forName("java.lang.Thread")
    try:
        target = thread_cls.getDeclaredField("target")
        target.setAccessible(True)

        def runnable(t: Any) -> Any:
            return target.get(t)
    except Exception:  # Java 19+: Thread.holder.task
        holder = thread_cls.getDeclaredField("holder")
        holder.setAccessible(True)
        task = jclass.forName("java.lang.Thread$FieldHolder").getDeclaredField("task")
        task.setAccessible(True)

        def runnable(t: Any) -> Any:
            return task.get(holder.get(t))
    done = set()
    for t in threads:
        r = runnable(t)
        if r is not None and worker_cls.isInstance(r):
            executor = outer.get(r)
            key = int(executor.hashCode())
            if key not in done:
                executor.shutdown()  # idle workers end at once, busy ones after their task
                done.add(key)
    return len(done)


def _release_stuck_threads(wait_s: float = 2.0) -> None:
    """Keep JPype from waiting forever on non-daemon Java threads at shutdown.

    JPype stops the JVM with ``DestroyJavaVM``, which waits for every
    non-daemon thread. A thread pool that was never shut down (TrackMate 7.5.1's
    ``TrackMate.execDetection`` leaks one per call) would keep the process alive
    forever. Such pools are shut down (:func:`_shut_down_pools`) and the
    threads given ``wait_s`` to end. If some still remain, JPype is told not to
    destroy the JVM (``jpype.config.destroy_jvm = False``), the last resort:
    the process then exits, but Python 3.11 can abort at exit ("FATAL:
    exception not rethrown") when a Java thread touches Python during
    finalization.
    """
    import jpype.config

    deadline = time.monotonic() + wait_s
    pools_closed = False
    while True:
        stuck = _non_daemon_threads()
        if not stuck or time.monotonic() > deadline:
            break
        if not pools_closed and any(str(t.getName()).startswith("pool-") for t in stuck):
            try:
                n = _shut_down_pools(stuck)
                _logger.info("shut down %d leftover Java thread pool(s) at exit", n)
            except Exception as e:
                _logger.debug("could not shut down leftover thread pools: %s", e)
            pools_closed = True
        time.sleep(0.05)
    if stuck and _started_off_main and [str(t.getName()) for t in stuck] == ["main"]:
        # The JVM was created on a worker thread (JvmWorker), which Java keeps as its
        # non-daemon "main" thread; JPype shuts down from Python's main thread only, so
        # that thread cannot end first: expected, the JVM is left to the process exit.
        _logger.debug("JVM created on a worker thread: not destroying it at exit")
        jpype.config.destroy_jvm = False
        return
    if stuck:
        names = ", ".join(sorted(str(t.getName()) for t in stuck))
        _logger.warning("non-daemon Java threads left at shutdown (%s): not waiting for them",
                        names)
        jpype.config.destroy_jvm = False


def missing_fiji_message() -> str:
    """Why Fiji was not found and how to install it (for errors and test skips)."""
    where = ", ".join(str(p) for p in fiji_search_paths())
    return (f"no Fiji.app with jars/TrackMate-*.jar found (searched {where}); "
            f"install one with scripts/install-fiji (or `make fiji`), or set {FIJI_DIR_ENV}")


class JvmWorker:
    """The one thread that drives this process's JVM; ImageJ starts on its first job.

    A server that uses TrackMate calls Java only through :meth:`call`, so every
    Java call runs on one thread (TrackMate's objects are not documented as
    thread-safe) and the JVM's start-up cost is paid by the first job, not at
    server start. The JVM lives until the process exits (:func:`shutdown_imagej`
    at exit, from Python's main thread as JPype requires; the worker thread, Java's
    "main" thread since it created the JVM, is then expected to remain and the JVM is
    left to the process exit).

    Parameters
    ----------
    fiji_dir : path-like, optional
        The Fiji.app to start from; default :func:`find_fiji`.
    max_heap : str, optional
        JVM maximum heap (``-Xmx``), e.g. ``"2g"``.
    """

    def __init__(self, fiji_dir: str | os.PathLike[str] | None = None,
                 max_heap: str | None = None) -> None:
        self.fiji_dir = fiji_dir
        self.max_heap = max_heap
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...],
                                            concurrent.futures.Future[Any]] | None] = (
            queue.SimpleQueue())
        # A daemon thread: it never keeps the process alive.
        self._thread = threading.Thread(target=self._loop, name="livespt-jvm", daemon=True)
        self._thread.start()
        self.started = False

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                if not self.started:
                    start_imagej(self.fiji_dir, max_heap=self.max_heap)
                    self.started = True
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller
                fut.set_exception(exc)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the JVM thread and return its result (or raise its error)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((fn, args, fut))
        return fut.result()


_worker: JvmWorker | None = None


def jvm_worker(fiji_dir: str | os.PathLike[str] | None = None,
               max_heap: str | None = None) -> JvmWorker:
    """Return the process's :class:`JvmWorker` (created on the first call).

    Raises
    ------
    FijiNotFoundError
        When no Fiji is found (checked at once, before any JVM starts), so a server
        that asks for TrackMate fails at start-up with a message naming what is missing.
    """
    global _worker
    with _lock:
        path = Path(fiji_dir).expanduser() if fiji_dir is not None else find_fiji()
        if path is None:
            raise FijiNotFoundError(missing_fiji_message())
        if not is_fiji_dir(path):
            raise FijiNotFoundError(f"{path} is not a Fiji.app with jars/TrackMate-*.jar "
                                    "(install one with scripts/install-fiji)")
        if _worker is None:
            _worker = JvmWorker(path, max_heap)
        return _worker
