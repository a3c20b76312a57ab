"""The emulated aarch64 environment: a Debian arm64 userland with Python, numpy and the same
ai-edge-litert as the host, run by Debian's qemu-user with a root-free `-L` prefix, and a
QEMU plugin that counts the guest's instructions.

Built once by `setup()` (`python tflite/benchmark.py --arm-setup`) under the user's cache dir:
- the userland is extracted by mmdebstrap (`--variant=extract --mode=chrootless`: no
  maintainer scripts, so no root, chroot, binfmt or emulation is needed to build it);
- the wheels are the package index's aarch64 builds, installed by the host's pip
  (`--platform manylinux_2_17_aarch64 --target`), so pip never runs emulated;
- the plugin is built with gcc against `qemu-plugin.h` from Debian's qemu source package
  (Debian ships no plugin binaries or headers); the dynamically linked `qemu-aarch64`
  loads it (the `-static` one cannot);
- each CPU gets a prefix of its own whose /proc/cpuinfo names that core: LiteRT's CPU
  detection reads it (an x86 file makes the interpreter crash; another core's picks
  kernels the emulated core lacks).
"""

import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from keras_ghost.export.arm.cpus import CPUS
from keras_ghost.io_utils import write_atomic

FORMAT = 1  # bump when the layout changes: an older cache is rebuilt
HOST_PACKAGES = {"qemu-aarch64": "qemu-user", "mmdebstrap": "mmdebstrap", "gcc": "gcc"}
GUEST_PACKAGES = ["python3", "libstdc++6", "libgcc-s1"]


class ArmSetupError(RuntimeError):
    """The aarch64 environment cannot be built or used here; the message says why and what
    to do."""


@dataclasses.dataclass
class ArmEnvironment:
    """A built environment (its manifest.json)."""

    path: str
    qemu: str
    qemu_version: str
    plugin: str
    python: str  # guest path of the interpreter
    python_version: str
    litert_version: str
    numpy_version: str
    suite: str
    harness: tuple  # guest address range of the interpreter's own code (see counting.c)
    plugin_source: str = ""  # sha256 of the counting.c the plugin was built from
    format: int = FORMAT

    def prefix(self, cpu):
        """The `-L` prefix for `cpu` (an ArmCpu)."""
        return os.path.join(self.path, "cpus", cpu.name)

    def command(self, cpu, argv, plugin_args=(), qemu=None, options=()):
        """The host command that runs guest `argv` on `cpu`, under this environment's QEMU
        or `qemu`, with QEMU `options` (e.g. `-d in_asm`)."""
        cmd = [qemu or self.qemu, "-cpu", cpu.qemu_cpu, "-L", self.prefix(cpu), *options]
        if plugin_args:
            cmd += ["-plugin", ",".join([self.plugin, *plugin_args])]
        return cmd + [os.path.join(self.path, "root", self.python.lstrip("/")), *argv]

    def guest_env(self):
        """The guest's environment: nothing of the host's Python or pip leaks in."""
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": "/opt/litert",
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "HOME": "/tmp"}


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras_ghost", "arm")


def _key():
    return f"aarch64-litert{_host_litert_version()}-v{FORMAT}"


def _host_litert_version():
    from importlib import metadata

    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        raise ArmSetupError("ai-edge-litert is not installed on the host: pip install "
                            "ai-edge-litert (the ARM side runs the same version).") from None


def find_environment(cache_dir=None):
    """The built environment, or ArmSetupError saying how to build it."""
    path = Path(cache_dir or default_cache_dir()) / _key()
    manifest = path / "manifest.json"
    if not manifest.is_file():
        raise ArmSetupError(f"no aarch64 environment in {path.parent} for ai-edge-litert "
                            f"{_host_litert_version()}: build it once with "
                            "`python tflite/benchmark.py --arm-setup` (about a minute).")
    data = json.loads(manifest.read_text())
    data["harness"] = tuple(data["harness"])
    env = ArmEnvironment(**data)
    for f in (env.qemu, env.plugin):
        if not os.path.exists(f):
            raise ArmSetupError(f"{f} of the aarch64 environment is gone: rerun "
                                "`python tflite/benchmark.py --arm-setup`.")
    if env.plugin_source != _plugin_source_hash():  # counting.c changed since the build
        build_plugin(path)
        env.plugin_source = _plugin_source_hash()
        write_atomic(dataclasses.asdict(env), manifest)
    return env


def _plugin_source_hash():
    import hashlib

    return hashlib.sha256(Path(__file__).with_name("counting.c").read_bytes()).hexdigest()


def build_plugin(env_dir):
    """Compiles counting.c against the qemu-plugin.h kept in `env_dir` (atomically)."""
    env_dir = Path(env_dir)
    fd, tmp = tempfile.mkstemp(dir=env_dir, prefix=".counting.", suffix=".so")
    os.close(fd)
    try:
        run_checked(["gcc", "-O2", "-shared", "-fPIC", "-Wall", f"-I{env_dir}", "-o", tmp,
                     str(Path(__file__).with_name("counting.c"))], "building the counting plugin")
        os.replace(tmp, env_dir / "counting.so")
    finally:
        Path(tmp).unlink(missing_ok=True)


def setup(cache_dir=None, mirror=None, progress=print):
    """Builds the environment once (idempotent: returns the cached one when it is there);
    returns an ArmEnvironment. Needs Linux, Debian's packages and the package index.
    Concurrent callers (test workers) wait for one build."""
    import fcntl

    try:
        return find_environment(cache_dir)
    except ArmSetupError:
        pass
    cache = Path(cache_dir or default_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return find_environment(cache_dir)  # built while this one waited
        except ArmSetupError:
            return _build(cache, mirror, progress)


def _build(cache, mirror, progress):
    _check_host(progress)
    final = cache / _key()
    suite = host_suite()
    mirror = mirror or debian_mirror(suite)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".building-") as tmp:
        work = Path(tmp) / "env"
        work.mkdir()
        progress(f"[1/5] Debian {suite} arm64 userland from {mirror} (mmdebstrap)")
        python, python_version = _userland(work / "root", suite, mirror)
        progress(f"[2/5] aarch64 wheels: ai-edge-litert {_host_litert_version()}, numpy "
                 f"(cp{python_version.replace('.', '')}, host pip --target)")
        numpy_version = _wheels(work / "root", python_version)
        progress("[3/5] instruction-counting QEMU plugin (qemu-plugin.h from Debian's qemu "
                 "source package)")
        qemu_version = _plugin(work, Path(tmp) / "apt")
        progress(f"[4/5] per-CPU prefixes: {', '.join(CPUS)}")
        for cpu in CPUS.values():
            cpu_prefix(work / "cpus" / cpu.name, cpu)
        env = ArmEnvironment(
            path=str(final), qemu=shutil.which("qemu-aarch64"), qemu_version=qemu_version,
            plugin=str(final / "counting.so"), python=python, python_version=python_version,
            litert_version=_host_litert_version(), numpy_version=numpy_version, suite=suite,
            harness=(0, 0), plugin_source=_plugin_source_hash())
        progress("[5/5] smoke test: import ai_edge_litert on emulated cortex-a53")
        env.harness = _smoke_test(env, work)
        write_atomic(dataclasses.asdict(env), work / "manifest.json")
        if final.exists():  # a stale or half-removed one
            shutil.rmtree(final)
        os.replace(work, final)
    progress(f"aarch64 environment ready in {final}")
    return env


def run_checked(cmd, what, env=None, cwd=None):
    """Runs `cmd`; a failure is an ArmSetupError naming `what` with the output's tail."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ArmSetupError(f"{what} failed (exit {done.returncode}): {' '.join(cmd[:4])} ...\n"
                            f"{tail}")
    return done.stdout


def _check_host(progress):
    if platform.system() != "Linux":
        raise ArmSetupError(f"the aarch64 environment needs Linux (qemu-user); this is "
                            f"{platform.system()}.")
    if not Path("/etc/debian_version").exists():
        raise ArmSetupError("the aarch64 environment is built from Debian's packages; this "
                            "is not a Debian-based system.")
    missing = [pkg for exe, pkg in HOST_PACKAGES.items() if shutil.which(exe) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ArmSetupError(f"missing host packages; as root: apt-get install "
                            f"{' '.join(missing)} (then rerun --arm-setup as this user).")
    progress(f"[0/5] apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run_checked(["apt-get", "update", "-q"], "apt-get update", env=env)
    run_checked(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                "apt-get install", env=env)


def host_suite():
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=(\w+)", text, re.M)
    if not match:
        raise ArmSetupError("cannot tell the Debian release (/etc/os-release has no "
                            "VERSION_CODENAME).")
    return match.group(1)


def debian_mirror(suite):
    """The Debian archive apt is configured with (deb822 .sources or sources.list)."""
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + sorted(
        Path("/etc/apt/sources.list.d").glob("*.list")) + [Path("/etc/apt/sources.list")]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text()
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and suite in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                return parts[1] if not parts[1].startswith("[") else parts[2]
    raise ArmSetupError(f"no Debian archive for '{suite}' in apt's sources; pass the mirror "
                        "(e.g. --arm-mirror http://deb.debian.org/debian).")


def _userland(root, suite, mirror):
    # chrootless: extracting runs no package's code, so neither root nor namespaces are needed.
    run_checked(["mmdebstrap", "--variant=extract", "--arch=arm64", "--mode=chrootless",
                 f"--include={','.join(GUEST_PACKAGES)}", "--quiet", suite, str(root), mirror],
                f"mmdebstrap (from the Debian archive {mirror})")
    for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                 "usr/share/locale"):
        shutil.rmtree(root / junk, ignore_errors=True)
    versions = sorted(p.name[len("python"):] for p in (root / "usr/bin").glob("python3.*")
                      if re.fullmatch(r"python3\.\d+", p.name))
    if not versions:
        raise ArmSetupError(f"the {suite} userland has no python3.X in /usr/bin.")
    return f"/usr/bin/python{versions[-1]}", versions[-1]


def _wheels(root, python_version):
    target = root / "opt" / "litert"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_ROOT",
                        "PIP_REQUIRE_VIRTUALENV", "PIP_ONLY_BINARY", "PIP_PLATFORM")}
    platforms = [f"manylinux_2_{n}_aarch64" for n in (36, 35, 34, 31, 28, 27, 24, 17)]
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--implementation", "cp", "--python-version",
           python_version, "--target", str(target), "--no-warn-script-location"]
    for p in platforms + ["manylinux2014_aarch64"]:
        cmd += ["--platform", p]
    run_checked(cmd + [f"ai-edge-litert=={_host_litert_version()}", "numpy"],
                "pip install of the aarch64 wheels (the package index must be reachable)",
                env=env)
    dist = sorted(target.glob("numpy-*.dist-info"))
    return dist[-1].name[len("numpy-"):-len(".dist-info")] if dist else "?"


def _plugin(work, apt_dir):
    version = run_checked(["dpkg-query", "-W", "-f=${source:Version}", "qemu-user"],
                          "dpkg-query qemu-user").strip()
    suite = host_suite()
    mirror = debian_mirror(suite)
    options = private_apt(apt_dir, f"deb-src {mirror} {suite} {suite}-updates main\n")
    (apt_dir / "src").mkdir()
    run_checked(["apt-get", *options, "update"], "apt-get update (Debian source index)")
    run_checked(["apt-get", *options, "source", "--download-only", f"qemu={version}"],
                f"apt-get source qemu={version}", cwd=apt_dir / "src")
    tarballs = sorted((apt_dir / "src").glob("qemu_*.orig.tar.*"))
    if not tarballs:
        raise ArmSetupError(f"apt-get source qemu={version} gave no .orig tarball.")
    run_checked(["tar", "-xf", str(tarballs[0]), "-C", str(apt_dir / "src"), "--wildcards",
                 "*/include/qemu/qemu-plugin.h"], "extracting qemu-plugin.h")
    header = next((apt_dir / "src").glob("*/include/qemu/qemu-plugin.h"))
    shutil.copy(header, work / "qemu-plugin.h")
    build_plugin(work)
    return version


def private_apt(apt_dir, sources):
    """apt-get options for a private apt state under `apt_dir` with `sources` (sources.list
    text): the system's lists and caches are neither read nor written."""
    apt_dir = Path(apt_dir)
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources.list").write_text(sources)
    return ["-o", f"Dir::Etc::SourceList={apt_dir / 'sources.list'}", "-o",
            "Dir::Etc::SourceParts=/nonexistent", "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
            "-o", f"Dir::Cache={apt_dir / 'cache'}", "-o", "Debug::NoLocking=1", "-q"]


def cpu_prefix(prefix, cpu):
    """A `-L` prefix: the userland's top folders linked in, and this core's cpuinfo."""
    prefix.mkdir(parents=True)
    for entry in ("bin", "etc", "lib", "opt", "sbin", "usr", "var"):
        os.symlink(os.path.join("..", "..", "root", entry), prefix / entry)
    (prefix / "proc").mkdir()
    (prefix / "proc" / "cpuinfo").write_text(cpu.cpuinfo())
    cpu_dir = prefix / "sys" / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True)
    for name in ("possible", "present", "online"):
        (cpu_dir / name).write_text("0\n")


_SMOKE = """
import ai_edge_litert.interpreter, numpy
for line in open("/proc/self/maps"):
    parts = line.split()
    if "x" in parts[1] and parts[-1].endswith("/python%s"):
        lo, hi = parts[0].split("-")
        print("harness", int(lo, 16), int(hi, 16))
print("ok", numpy.__version__)
"""


def _smoke_test(env, work):
    """Imports LiteRT in the guest; returns the address range of the interpreter's code."""
    cpu = CPUS["cortex-a53"]
    real = ArmEnvironment(**{**dataclasses.asdict(env), "path": str(work)})
    done = subprocess.run(real.command(cpu, ["-c", _SMOKE % env.python_version]),
                          capture_output=True, text=True, env=real.guest_env(), timeout=600)
    if done.returncode != 0 or "ok" not in done.stdout:
        raise ArmSetupError(f"the emulated Python does not import ai_edge_litert:\n"
                            f"{(done.stderr or done.stdout)[-2000:]}")
    spans = [tuple(map(int, line.split()[1:])) for line in done.stdout.splitlines()
             if line.startswith("harness")]
    if not spans:
        raise ArmSetupError("could not find the emulated interpreter's code in its maps.")
    return min(s[0] for s in spans), max(s[1] for s in spans)
