# tests/interop/tap.py - a small TAP producer for the python suites (no pytest needed, so the
# same file runs under Debian's /usr/bin/python3 and a newer python3). ok/eq/skip print one
# TAP line each; block() turns an unexpected exception into a failing test; done() prints the
# plan and "# N passed, N failed, N skipped" and returns the exit status.
import contextlib
import sys
import traceback


class TAP:
    def __init__(self):
        self.n = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []

    def _line(self, text):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def diag(self, *lines):
        for line in lines:
            for sub in str(line).splitlines() or [""]:
                self._line("#   " + sub[:600])

    def ok(self, cond, name, *diag, todo=None):
        """One test. todo="why": a check of something not built yet; if it fails it prints
        "not ok ... # TODO why", which TAP (and run.sh) do not count as a failure."""
        self.n += 1
        name = name.replace("\n", " ").replace("#", "%23")
        if cond:
            self._line("ok %d - %s" % (self.n, name))
        elif todo:
            self.skipped += 1
            self._line("not ok %d - %s # TODO %s" % (self.n, name, todo))
            self.diag(*diag)
        else:
            self.failed += 1
            self.failures.append(name)
            self._line("not ok %d - %s" % (self.n, name))
            self.diag(*diag)
        return bool(cond)

    def eq(self, got, want, name, *diag):
        return self.ok(got == want, name, "got:  %r" % (got,), "want: %r" % (want,), *diag)

    def skip(self, name, reason):
        self.n += 1
        self.skipped += 1
        self._line("ok %d # SKIP %s: %s" % (self.n, name.replace("\n", " "), reason))

    @contextlib.contextmanager
    def block(self, name):
        """Runs a group of checks; an exception escaping it is one failing test."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - any escape is a test failure
            self.ok(False, "%s: unexpected %s" % (name, type(e).__name__),
                    *traceback.format_exc().splitlines()[-12:])

    def done(self):
        self._line("1..%d" % self.n)
        self._line("# %d passed, %d failed, %d skipped"
                   % (self.n - self.failed - self.skipped, self.failed, self.skipped))
        return 1 if self.failed else 0
