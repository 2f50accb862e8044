"""pytest fixtures: start the real herald binary per test (or per module).

HERALD_BIN selects the binary (CTest passes $<TARGET_FILE:herald>, so the ASan
build dir tests its own binary); default: build/herald under the repo root.
"""

import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from herald_helpers import HOST, http_call  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

SANITIZER_PATTERNS = [
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "SUMMARY: UndefinedBehaviorSanitizer",
]

LISTEN_RE = re.compile(r"herald: listening on (\S+):(\d+)")


def herald_bin():
    b = os.environ.get("HERALD_BIN") or os.path.join(REPO_ROOT, "build", "herald")
    if not os.path.isabs(b):
        b = os.path.join(REPO_ROOT, b)
    return b


def clean_env():
    """The caller's environment minus HERALD_* (herald reads its options from HERALD_<NAME>;
    a stray HERALD_PUBLISH_KEY or HERALD_CONFIG must not change what the tests see)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}


_asan_cache = {}


def binary_is_sanitized(path):
    if path not in _asan_cache:
        try:
            with open(path, "rb") as f:
                data = f.read()
            _asan_cache[path] = (b"__asan_init" in data) or (b"__tsan_init" in data)
        except OSError:
            _asan_cache[path] = False
    return _asan_cache[path]


class Herald:
    """One running herald process."""

    def __init__(self, args, workers=2, env_extra=None, tmpdir=None, nofile=None):
        self.binary = herald_bin()
        if not os.path.exists(self.binary):
            pytest.fail(f"herald binary not found: {self.binary} (build it with `make`)")
        args = [str(a) for a in args]
        if "--listen" not in args:
            args = ["--listen", f"{HOST}:0"] + args
        if "--workers" not in args and workers is not None:
            args = ["--workers", str(workers)] + args
        self.args = args
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="herald-it-")
        self.stderr_path = os.path.join(self.tmpdir, f"herald-{os.getpid()}-{id(self)}.stderr")
        self.stdout_path = self.stderr_path[:-7] + ".stdout"
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        env = clean_env()
        # keep sanitizer output recognisable; a smaller quarantine keeps RSS meaningful under ASan
        asan = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = ":".join(x for x in [asan, "detect_leaks=1", "abort_on_error=0"] if x)
        env["UBSAN_OPTIONS"] = ":".join(x for x in [env.get("UBSAN_OPTIONS", ""), "print_stacktrace=1"] if x)
        if env_extra:
            for k, v in env_extra.items():
                env[k] = (env.get(k, "") + ":" + v).strip(":") if k.endswith("_OPTIONS") else v
        self.signalled = None      # signal we sent on purpose
        self.killed = False        # we had to SIGKILL it
        preexec = None
        if nofile is not None:
            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen([self.binary] + args, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, env=env, preexec_fn=preexec)
        self.pid = self.proc.pid
        self.host, self.port = self._wait_listening()
        self._wait_healthy()

    # ---- startup
    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _wait_listening(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.stderr_text())
            if m:
                return m.group(1), int(m.group(2))
            if self.proc.poll() is not None:
                pytest.fail(f"herald exited with {self.proc.returncode} before listening; args={self.args}\n"
                            f"stderr:\n{self.stderr_text()[-4000:]}")
            time.sleep(0.01)
        self.proc.kill()
        self.proc.wait()
        pytest.fail(f"herald did not print 'herald: listening on HOST:PORT' within {timeout}s\n"
                    f"stderr:\n{self.stderr_text()[-4000:]}")

    def _wait_healthy(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                st, _, body = http_call(self.port, "GET", "/healthz", timeout=2)
                if st == 200:
                    return
                last = st
            except OSError as e:
                last = e
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        pytest.fail(f"/healthz did not answer 200 (last: {last!r})\nstderr:\n{self.stderr_text()[-4000:]}")

    # ---- runtime helpers
    @property
    def sanitized(self):
        return binary_is_sanitized(self.binary)

    def alive(self):
        return self.proc.poll() is None

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
        return 0

    def cpu_seconds(self):
        """user+system CPU time consumed so far (all threads)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def signal(self, sig=signal.SIGTERM):
        self.signalled = sig
        self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    # ---- teardown
    def stop(self):
        """Stop the process (SIGTERM, then SIGKILL) and return a list of problems."""
        problems = []
        if self.proc.poll() is None:
            if self.signalled is None:
                self.signalled = signal.SIGTERM
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait()
                problems.append("herald did not exit within 15 s of SIGTERM (SIGKILLed)")
        elif self.signalled is None:
            problems.append(f"herald exited on its own during the test with status {self.proc.returncode}")
        rc = self.proc.returncode
        self._err.close()
        self._out.close()
        err = self.stderr_text()
        for pat in SANITIZER_PATTERNS:
            if pat in err:
                problems.append(f"sanitizer report in stderr ({pat!r})")
                break
        if not self.killed and rc != 0 and not any("on its own" in p for p in problems):
            problems.append(f"herald exited with status {rc} after {signal.Signals(self.signalled).name}")
        if problems:
            problems.append(f"args: {self.args}\n--- herald stderr (tail) ---\n{err[-6000:]}")
        return problems


class HeraldFactory:
    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.servers = []

    def __call__(self, *args, workers=2, env_extra=None, nofile=None):
        h = Herald(list(args), workers=workers, env_extra=env_extra, tmpdir=self.tmpdir, nofile=nofile)
        self.servers.append(h)
        return h

    def finish(self):
        problems = []
        for h in self.servers:
            problems.extend(h.stop())
        self.servers = []
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def herald(tmp_path):
    """Factory: herald("--max-message-size", "1000") -> running Herald (port, pid, ...)."""
    f = HeraldFactory(str(tmp_path))
    yield f
    f.finish()


@pytest.fixture(scope="module")
def herald_module(tmp_path_factory):
    """Module-scoped factory, for suites that can share one server."""
    f = HeraldFactory(str(tmp_path_factory.mktemp("herald")))
    yield f
    f.finish()
