"""Where an invoke's instructions go: the plugin's translated blocks mapped to the functions
of the guest's libraries (the aarch64 LiteRT wheel keeps XNNPACK's kernel names in its
symbol table), and the graph's ops with their MACs and bytes moved."""

import bisect
import collections
import dataclasses
import re
import subprocess

import numpy as np

CLASSES = ("scalar", "simd", "dot", "i8mm", "sve")  # the plugin's, in its order

# XNNPACK kernel or runtime function -> what it does, first match wins.
CATEGORIES = [
    (r"dwconv", "depthwise conv"),
    (r"igemm", "conv kxk (igemm)"),
    (r"gemm", "conv 1x1 / dense (gemm)"),
    (r"vaddc?_|_vadd", "add"),
    (r"vmulc?_|_vmul", "mul"),
    (r"gavgpool|rsum|reduce|rdsum", "mean / reduce"),
    (r"avgpool|pavgpool", "average pool"),
    (r"maxpool|argmaxpool", "max pool"),
    (r"vhswish|vsigmoid|vlrelu|vclamp|vrelu|vtanh|lut|velu|vsilu", "activation"),
    (r"vcvt|requant|quantize", "convert / requantize"),
    (r"transpose|copy|pad|fill|memcpy|memmove|memset|concat|unpool|slice|ibilinear|"
     r"resize|zip|packw|pack_", "copy / pad / layout"),
]


@dataclasses.dataclass(frozen=True)
class Block:
    vaddr: int
    executions: int
    classes: tuple  # instructions per execution, per class (CLASSES)

    @property
    def instructions(self):
        return self.executions * sum(self.classes)


@dataclasses.dataclass
class KernelCost:
    function: str  # demangled symbol name
    library: str
    category: str
    instructions: int
    classes: dict

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class OpCost:
    index: int
    op: str
    output_shape: list
    macs: int
    bytes: int  # every input (weights too) and output read or written once
    dtype: str

    def as_dict(self):
        return dataclasses.asdict(self)


def category(function, library):
    name = function.lower()
    if name.startswith("[libc"):
        return "libc (memcpy, memset, malloc)"
    if name.startswith("["):
        return f"other ({library})"
    for pattern, label in CATEGORIES:
        if re.search(pattern, name):
            return label
    if name.startswith("xnn_") or "xnnpack" in name or "pthreadpool" in name:
        return "XNNPACK runtime"
    if "tflite" in name or "litert" in name:
        return "TFLite runtime"
    return f"other ({library})"


class Symbolizer:
    """Guest address -> (library, function), from the guest's /proc/self/maps and each
    library's symbol table (binutils' nm reads aarch64 ELF files on any host)."""

    def __init__(self, maps_text):
        self.spans = []  # (lo, hi, path, base)
        bases = {}
        for line in maps_text.splitlines():
            parts = line.split()
            if len(parts) < 6 or not parts[5].startswith("/"):
                continue
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            path = parts[5]
            if int(parts[2], 16) == 0:
                bases.setdefault(path, lo)
            if "x" in parts[1]:
                self.spans.append((lo, hi, path))
        self.bases = {p: (0 if _is_executable_elf(p) else b) for p, b in bases.items()}
        self.spans.sort()
        self._tables = {}

    def _table(self, path):
        if path not in self._tables:
            self._tables[path] = _symbols(path)
        return self._tables[path]

    def lookup(self, addr):
        i = bisect.bisect_right(self.spans, (addr, float("inf"), "")) - 1
        if i < 0 or not self.spans[i][0] <= addr < self.spans[i][1]:
            return "?", "[unknown]"
        path = self.spans[i][2]
        library = path.rsplit("/", 1)[-1]
        addresses, names = self._table(path)
        j = bisect.bisect_right(addresses, addr - self.bases.get(path, 0)) - 1
        return library, (names[j] if j >= 0 else f"[{library}]")


def _is_executable_elf(path):
    try:
        with open(path, "rb") as f:
            header = f.read(18)
    except OSError:
        return False
    return header[:4] == b"\x7fELF" and int.from_bytes(header[16:18], "little") == 2  # ET_EXEC


def _symbols(path):
    """Sorted (addresses, names) of the functions in an ELF file's full symbol table; empty
    for a stripped library (Debian's libc keeps only exported names, and its memcpy
    variants would take the name of whatever exported function lies before them)."""
    rows = []
    try:
        out = subprocess.run(["nm", "-C", "--defined-only", path], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # "no symbols"
        out = ""
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwWiI" and not parts[2].startswith("$"):
            rows.append((int(parts[0], 16), parts[2]))
    rows.sort()
    return [a for a, _ in rows], [n for _, n in rows]


def kernel_costs(blocks, symbols):
    """Sums the blocks of one region by function; most instructions first."""
    totals = collections.defaultdict(lambda: np.zeros(len(CLASSES), dtype=np.int64))
    for block in blocks:
        key = symbols.lookup(block.vaddr)
        totals[key] += block.executions * np.asarray(block.classes, dtype=np.int64)
    costs = [KernelCost(function=name, library=library, category=category(name, library),
                        instructions=int(v.sum()),
                        classes={c: int(n) for c, n in zip(CLASSES, v)})
             for (library, name), v in totals.items()]
    return sorted(costs, key=lambda k: -k.instructions)


def op_costs(model_content):
    """Each op of the graph (TFLite's built-in view, before XNNPACK takes it) with its MACs
    and the bytes it reads and writes."""
    from keras_ghost.export.tflite import interpreter

    it = interpreter(model_content, xnnpack=False)
    tensors = {t["index"]: t for t in it.get_tensor_details()}

    def nbytes(i):
        t = tensors.get(i)
        return 0 if t is None else int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize

    costs = []
    for op in it._get_ops_details():
        inputs = [i for i in op["inputs"] if i >= 0]
        outputs = [i for i in op["outputs"] if i >= 0]
        out_shape = [int(d) for d in tensors[outputs[0]]["shape"]] if outputs else []
        macs = 0
        name = op["op_name"]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(inputs) > 1:
            w = tensors[inputs[1]]["shape"]
            per_output = {"CONV_2D": np.prod(w[1:]), "DEPTHWISE_CONV_2D": np.prod(w[1:3]),
                          "FULLY_CONNECTED": w[-1]}[name]
            macs = int(np.prod(out_shape)) * int(per_output)
        dtype = np.dtype(tensors[inputs[1]]["dtype"]).name if name in (
            "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") else ""
        costs.append(OpCost(index=op["index"], op=name, output_shape=out_shape, macs=macs,
                            bytes=sum(map(nbytes, inputs + outputs)), dtype=dtype))
    return costs


def model_kind(ops):
    """"int8" when the convs' weights are int8, else "fp32"."""
    weights = [op.dtype for op in ops if op.dtype]
    return "int8" if weights and weights.count("int8") * 2 >= len(weights) else "fp32"


def kernel_markdown(result, top=15):
    """Per-category and top-kernel tables of an ArmResult run with kernels=True."""
    kernels = result.kernels
    total = result.arm_instructions or 1
    by_cat = collections.defaultdict(lambda: [0, 0, 0])
    for k in kernels:
        row = by_cat[k["category"]]
        row[0] += k["instructions"]
        row[1] += k["classes"]["dot"] + k["classes"]["i8mm"]
        row[2] += k["classes"]["simd"]
    lines = [f"{result.model} on {result.cpu}: {result.arm_instructions / 1e6:.2f}M "
             "instructions per invoke, by XNNPACK kernel kind (exact counts; memory stalls "
             "are not in them)", "",
             "| kind | M instr | share | SIMD M | dot+i8mm M |", "|---|---:|---:|---:|---:|"]
    for cat, (n, dot, simd) in sorted(by_cat.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {cat} | {n / 1e6:.2f} | {100 * n / total:.1f}% | {simd / 1e6:.2f} | "
                     f"{dot / 1e6:.2f} |")
    lines += ["", "| function | kind | M instr | share |", "|---|---|---:|---:|"]
    for k in kernels[:top]:
        lines.append(f"| `{k['function'][:90]}` | {k['category']} | "
                     f"{k['instructions'] / 1e6:.3f} | {100 * k['instructions'] / total:.1f}% |")
    if result.ops:
        by_op = collections.defaultdict(lambda: [0, 0, 0])
        for op in result.ops:
            row = by_op[op["op"]]
            row[0] += 1
            row[1] += op["macs"]
            row[2] += op["bytes"]
        lines += ["", "| TFLite op | count | M MACs | MB moved |", "|---|---:|---:|---:|"]
        for name, (count, macs, moved) in sorted(by_op.items(), key=lambda kv: -kv[1][2]):
            lines.append(f"| {name} | {count} | {macs / 1e6:.1f} | {moved / 1e6:.2f} |")
    return "\n".join(lines)
