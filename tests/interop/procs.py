# tests/interop/procs.py - child processes for the Python interop suites: a free loopback
# port, a bounded wait, a process with its own log file (stopped with a bounded wait, killed,
# paused, its log searched for sanitizer reports) and a cairn server that waits until it
# answers. Every process started here is in LIVE until reap() kills what is still running.
import os
import re
import signal
import socket
import subprocess
import time

import http.client

import s3raw

LIVE = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(pred, timeout, step=0.25):
    """Calls pred until it returns something true or timeout seconds pass; returns the last value."""
    end = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() >= end:
            return v
        time.sleep(step)


class Proc:
    """A child process with its own log file (appended to across restarts). argv is set by the
    caller or a subclass before spawn()."""

    def __init__(self, name, log, env=None):
        self.name = name
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.argv = []
        self.log = log
        self.paused = False

    def spawn(self):
        with open(self.log, "ab") as logf:
            logf.write(b"==== %s start %.3f\n" % (self.name.encode(), time.time()))
            logf.flush()
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, env=self.env)
        if self not in LIVE:
            LIVE.append(self)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.paused = False

    def pause(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Sends sig and waits, bounded. Returns the exit status, "timeout" (then it was
        killed), "never started", or "not running (status N)" if it had already exited."""
        if self.proc is None:
            return "never started"
        if not self.alive():
            return "not running (status %s)" % self.proc.returncode
        if self.paused:
            self.resume()
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            return "timeout"

    def text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=15):
        return ["%s: %s" % (self.name, line[:300]) for line in self.text().splitlines()[-n:]]

    def grep(self, pattern, n=10):
        rx = re.compile(pattern)
        return ["%s: %s" % (self.name, line[:300]) for line in self.text().splitlines() if rx.search(line)][-n:]

    def sanitizer_report(self):
        txt = self.text()
        m = re.search(r"(ERROR: \w+Sanitizer.*|runtime error:.*)", txt)
        return txt[m.start():].splitlines()[:30] if m else []

    def stopped_cleanly(self, t, what):
        """SIGTERM, then one TAP check: it exited 0 (or by that signal) and its log holds no
        sanitizer report."""
        rc = self.stop()
        rep = self.sanitizer_report()
        return t.ok(rc in (0, -signal.SIGTERM) and not rep,
                    "%s: %s stops cleanly on SIGTERM (status %s)" % (what, self.name, rc), *(rep or self.tail()))


class Cairn(Proc):
    """`cairn server --data DATA --listen 127.0.0.1:<free port> EXTRA...` with the given root
    keys; start() returns once it answers HTTP (self.raw is an S3Raw client for it)."""

    def __init__(self, binary, name, data, log, ak, sk, extra=(), env=None):
        super().__init__(name, log, dict(env or {}, CAIRN_ACCESS_KEY=ak, CAIRN_SECRET_KEY=sk))
        self.binary = binary
        self.data = data
        self.extra = list(extra)
        self.ak, self.sk = ak, sk
        self.port = None
        self.endpoint = None
        self.raw = None

    def start(self, *extra, timeout=30, probe="/", client_timeout=60):
        """Starts on a new free port; False if it exits or does not answer within timeout."""
        self.port = free_port()
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.argv = [self.binary, "server", "--data", self.data, "--listen",
                     "127.0.0.1:%d" % self.port] + self.extra + list(extra)
        self.spawn()
        self.raw = self.client(client_timeout)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                return False
            try:
                self.raw.send("GET", probe, {"host": self.raw.netloc})
                return True
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
        return False

    def client(self, timeout=120):
        return s3raw.S3Raw(self.endpoint, self.ak, self.sk, timeout=timeout)


def reap():
    """Kills every process started here that still runs (end of a suite, whatever happened)."""
    for p in LIVE:
        p.kill9()
