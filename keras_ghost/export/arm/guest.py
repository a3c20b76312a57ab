"""Runs inside the emulated aarch64 Python (standard library, numpy and ai_edge_litert only):
one .tflite model, XNNPACK, 1 thread, its invokes between the counting plugin's markers.

The host writes a GuestJob as JSON and runs `python guest.py JOB.json`; both sides share the
dataclass, so this module imports nothing at the top that the host or the guest lacks.
"""

import dataclasses
import json
import sys

MAGIC = 0x4B47000000000000  # "KG": see counting.c
SYS_LSEEK = 62  # aarch64

# Region ids the plugin reports.
EMPTY, INIT, FIRST, STEADY = 0, 1, 2, 10


@dataclasses.dataclass
class GuestJob:
    model: str  # .tflite
    inputs: str  # .npz: one array per model input, in input order ("0", "1", ...)
    outputs: str  # .npz written here: the raw output tensors
    maps: str  # the guest's /proc/self/maps, for symbolizing the plugin's blocks
    runs: int = 3  # steady-state invokes counted (after the first)
    num_threads: int = 1
    # Where the plugin starts a new segment (once per XNNPACK operator): a function's
    # offset in a library the interpreter loads; 0: no segments.
    split_library: str = ""
    split_offset: int = 0

    def to_json(self):
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


def main(argv):
    import ctypes
    import gc

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    with open(argv[0]) as f:
        job = GuestJob.from_json(f.read())
    syscall = ctypes.CDLL(None).syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long] * 4
    # Marker values and everything a region calls are made before it starts, and the
    # collector is off, so a region holds the work and a fixed call overhead only.
    marks = {r: (MAGIC | 1 << 32 | r, MAGIC | 2 << 32 | r)
             for r in [EMPTY, INIT, FIRST, *range(STEADY, STEADY + job.runs)]}

    def region(r, fn, *args):
        start, stop = marks[r]
        syscall(SYS_LSEEK, -1, start, 0)
        out = fn(*args)
        syscall(SYS_LSEEK, -1, stop, 0)
        return out

    if job.split_offset:
        base = _library_base(job.split_library)
        syscall(SYS_LSEEK, -1, MAGIC | 3 << 32, base + job.split_offset)
    with open(job.model, "rb") as f:
        content = f.read()
    inputs = np.load(job.inputs)
    gc.collect()
    gc.disable()
    region(EMPTY, int)

    def build():
        it = Interpreter(model_content=content, num_threads=job.num_threads)
        it.allocate_tensors()
        return it

    it = region(INIT, build)
    for k, detail in enumerate(it.get_input_details()):
        it.set_tensor(detail["index"], inputs[str(k)])
    invoke = it._interpreter.Invoke  # the C++ call itself, without the wrapper's checks
    region(FIRST, invoke)
    for r in range(STEADY, STEADY + job.runs):
        region(r, invoke)
    gc.enable()
    outputs = {str(k): it.get_tensor(d["index"]) for k, d in enumerate(it.get_output_details())}
    np.savez(job.outputs, **outputs)
    with open("/proc/self/maps") as f, open(job.maps, "w") as out:
        out.write(f.read())


def _library_base(name):
    """The load address of a loaded library (its mapping at file offset 0)."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].endswith("/" + name) and int(parts[2], 16) == 0:
                return int(parts[0].split("-")[0], 16)
    raise RuntimeError(f"{name} is not loaded")


if __name__ == "__main__":
    main(sys.argv[1:])
