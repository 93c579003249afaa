"""The pod sandbox's pause image, built here: no registry is reachable to pull one.

A static C binary that sleeps until SIGINT or SIGTERM and reaps the children the pod's
shared PID namespace may leave it, packed alone into an OCI archive with umoci. The
archive is cached by a hash of the source, so it is compiled once per machine.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from shardkeeper_dev import image
from shardkeeper_dev.tools import cache_root

# the name containerd's CRI plugin runs sandboxes from (its ``sandbox_image``)
REFERENCE_BASE = "shardkeeper.local/pause"
TAG = "1"
REFERENCE = f"{REFERENCE_BASE}:{TAG}"
# the conventional nobody uid of pause images
UID = 65535

SOURCE = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction action = {0};
    action.sa_handler = stop;
    sigaction(SIGINT, &action, 0);
    sigaction(SIGTERM, &action, 0);
    action.sa_handler = reap;
    action.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &action, 0);
    for (;;) pause();
}
"""


class PauseError(RuntimeError):
    """The pause image cannot be built; the message says what is missing."""


def archive() -> Path:
    """The pause image's OCI archive, built if it is not cached yet."""
    key = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    dest = cache_root() / "image" / f"pause-{key}.oci.tar"
    if dest.exists():
        return dest
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise PauseError("building the pause image needs a C compiler: `apt-get install gcc`")
    build_root = cache_root() / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_root, prefix="pause-") as tmp:
        work = Path(tmp)
        (work / "pause.c").write_text(SOURCE)
        root = work / "root"
        root.mkdir()
        proc = subprocess.run(
            [cc, "-static", "-Os", "-s", "-o", str(root / "pause"), str(work / "pause.c")],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise PauseError(f"compiling the pause binary failed:\n{proc.stderr}")
        config = ["--config.user", f"{UID}:{UID}", "--config.entrypoint", "/pause"]
        image.pack(root, work, TAG, config, dest)
    return dest
