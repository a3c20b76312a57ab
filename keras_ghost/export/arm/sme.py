"""SME kernels' outputs: QEMU 7.2 (bookworm's qemu-user) emulates SME wrongly, so `-cpu max`
gives garbage int8 XNNPACK outputs there; bookworm-backports' QEMU 10 runs them right. Its
qemu-aarch64 is statically linked (no plugins), so this checks outputs, not counts.

The backports binary is fetched once into the environment's cache with apt-get download
(private apt state, nothing installed) and only qemu-aarch64 is unpacked from it.
"""

import dataclasses
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from keras_ghost.export.arm import measure
from keras_ghost.export.arm.cpus import CPUS
from keras_ghost.export.arm.environment import (ArmSetupError, cpu_prefix, debian_mirror,
                                                find_environment, host_suite, private_apt,
                                                run_checked)
from keras_ghost.export.arm.guest import GuestJob

SME_FEATURES = " sme smei16i64 smef64f64 smei8i32 smef16f32 smeb16f32 smef32f32 smefa64 sme2"
MAX_SME = dataclasses.replace(CPUS["max,sme=off"], name="max", qemu_cpu="max",
                              features=CPUS["max,sme=off"].features + SME_FEATURES,
                              description="every feature QEMU emulates, SME included")
# QEMU's in_asm log: "0xADDRESS:  WORD  mnemonic" (its disassembler prints most SME
# instructions as ".byte", so they are told by their encoding).
_LOG_LINE = re.compile(r"^0x[0-9a-f]+:\s+([0-9a-f]{8})\s")


def is_sme(word):
    """SME's encoding space (op0 0000 with bit 31 set), or SMSTART / SMSTOP (MSR SVCR*)."""
    return ((word >> 25) & 0xF == 0 and word >> 31 == 1) or (word & 0xFFFFF0FF) == 0xD503407F


@dataclasses.dataclass
class SmeCheck:
    model: str
    qemu_version: str
    sme_instructions_translated: int  # SME instructions QEMU translated (its in_asm log)
    arm_matches_x86: bool
    max_abs_diff: float
    outputs_differing: int

    def as_dict(self):
        return dataclasses.asdict(self)


def fetch_backports_qemu(env, progress=print):
    """bookworm-backports' qemu-aarch64 in the environment's cache (downloaded once)."""
    target = Path(env.path) / "qemu-backports" / "qemu-aarch64"
    if target.exists():
        return target
    suite = host_suite()
    mirror = debian_mirror(suite)
    progress(f"fetching qemu-user from {suite}-backports (about 60 MB, once)")
    with tempfile.TemporaryDirectory() as tmp:
        apt = Path(tmp)
        options = private_apt(apt, f"deb {mirror} {suite}-backports main\n")
        (apt / "dl").mkdir()
        run_checked(["apt-get", *options, "update"], f"apt-get update ({suite}-backports)")
        run_checked(["apt-get", *options, "download", f"qemu-user/{suite}-backports"],
                    "apt-get download qemu-user (backports)", cwd=apt / "dl")
        deb = next((apt / "dl").glob("qemu-user_*.deb"))
        unpack = apt / "unpack"
        unpack.mkdir()
        tar = subprocess.run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{unpack}' "
                             "./usr/bin/qemu-aarch64", shell=True, capture_output=True, text=True)
        if tar.returncode != 0:
            raise ArmSetupError(f"unpacking qemu-aarch64 from {deb.name} failed: {tar.stderr}")
        target.parent.mkdir(parents=True, exist_ok=True)
        (unpack / "usr/bin/qemu-aarch64").replace(target)
    return target


def _ensure_prefix(env, cpu):
    """Adds a -L prefix like the environment's per-CPU ones, for a core it does not have."""
    prefix = Path(env.prefix(cpu))
    if not prefix.exists():
        cpu_prefix(prefix, cpu)


def check(paths, env=None, qemu=None, cpu=MAX_SME, progress=print):
    """Runs each .tflite on `cpu` (default: `-cpu max`, SME on) under `qemu` (default: the
    backports QEMU) and compares its outputs with x86 XNNPACK."""
    env = env or find_environment()
    qemu = str(qemu or fetch_backports_qemu(env, progress))
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    version = version.split("\n")[0].replace("qemu-aarch64 version ", "")
    _ensure_prefix(env, cpu)
    results = []
    for path in map(Path, paths):
        content = path.read_bytes()
        inputs = measure.fixed_inputs(content)
        reference = measure.x86_outputs(content, inputs)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            np.savez(tmp / "inputs.npz", **{str(k): x for k, x in enumerate(inputs)})
            job = GuestJob(model=str(path.resolve()), inputs=str(tmp / "inputs.npz"),
                           outputs=str(tmp / "out.npz"), maps=str(tmp / "maps"), runs=1)
            (tmp / "job.json").write_text(job.to_json())
            cmd = env.command(cpu, [str(Path(measure.__file__).with_name("guest.py")),
                                    str(tmp / "job.json")], qemu=qemu,
                              options=["-d", "in_asm", "-D", str(tmp / "asm.log")])
            done = subprocess.run(cmd, capture_output=True, text=True, env=env.guest_env())
            if done.returncode != 0:
                raise RuntimeError(f"{path.name} on {cpu.qemu_cpu} under QEMU {version} failed "
                                   f"(exit {done.returncode}):\n{done.stderr[-2000:]}")
            with np.load(job.outputs) as data:
                actual = [data[str(k)] for k in range(len(data.files))]
            with open(tmp / "asm.log", errors="replace") as log:
                words = (_LOG_LINE.match(line) for line in log)
                sme = sum(1 for m in words if m and is_sme(int(m.group(1), 16)))
        match, diff = measure.outputs_match(reference, actual)
        differing = int(sum(np.sum(a != b) for a, b in zip(reference, actual)))
        results.append(SmeCheck(path.name, version, sme, match, diff, differing))
        progress(f"  {path.name} on -cpu {cpu.qemu_cpu}, QEMU {version}: {sme} SME instructions "
                 f"translated, outputs {'match' if match else 'DIFFER from'} x86 "
                 f"({differing} values differ, max {diff:.3g})")
    return results

