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
    (r"_pad_|xx_pad|fill", "pad"),
    (r"transpose|copy|memcpy|memmove|memset|concat|unpool|slice|ibilinear|resize|zip|packw|"
     r"pack_", "copy / layout"),
]
# The function XNNPACK's runtime calls once per operator: where the plugin splits segments.
OPERATOR_ENTRY = ("libpywrap_litert_common.so", "xnn_run_operator_with_index")

# TFLite op -> the kernel kind (CATEGORIES' labels) XNNPACK runs it with.
OP_KINDS = {"DEPTHWISE_CONV_2D": "depthwise conv", "FULLY_CONNECTED": "conv 1x1 / dense (gemm)",
            "ADD": "add", "MUL": "mul", "MEAN": "mean / reduce", "SUM": "mean / reduce",
            "AVERAGE_POOL_2D": "average pool", "MAX_POOL_2D": "max pool",
            "HARD_SWISH": "activation", "LOGISTIC": "activation", "RELU": "activation",
            "RELU6": "activation", "TANH": "activation", "LEAKY_RELU": "activation",
            "QUANTIZE": "convert / requantize", "DEQUANTIZE": "convert / requantize"}
LAYOUT_OPS = ("CONCATENATION", "RESHAPE", "TRANSPOSE", "STRIDED_SLICE", "SLICE",
              "SPLIT", "SPLIT_V", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "DEPTH_TO_SPACE",
              "SPACE_TO_DEPTH")


@dataclasses.dataclass(frozen=True)
class Block:
    vaddr: int
    executions: int
    classes: tuple  # instructions per execution, per class (CLASSES)
    segment: int = 0  # 0 before the first operator, then one per XNNPACK operator

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
    name: str  # its output tensor's name (the Keras layer path, as the converter kept it)
    inputs: int  # tensor inputs, constants included
    output_shape: list
    macs: int
    bytes: int  # every input (weights too) and output read or written once
    dtype: str  # of the weights, for convs and dense layers
    kind: str  # the kernel kind that runs it (CATEGORIES' labels)

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


def symbol_offset(path, name):
    """The address of function `name` in the ELF file at `path` (its symbol table)."""
    addresses, names = _symbols(path)
    for address, symbol in zip(addresses, names):
        if symbol == name:
            return address
    raise LookupError(f"{name} is not in {path}'s symbol table")


@dataclasses.dataclass
class OperatorCost:
    """One XNNPACK operator of an invoke, in run order, matched to the TFLite op it runs."""

    position: int  # 1-based, in run order
    kind: str  # of its main kernel
    kernel: str
    instructions: int  # its kernel and the runtime code until the next operator
    classes: dict
    op_index: int = -1  # the matched TFLite op (-1: none)
    op: str = ""
    name: str = ""
    macs: int = 0
    bytes: int = 0

    def as_dict(self):
        return dataclasses.asdict(self)


def operator_costs(blocks, symbols, ops):
    """Splits the blocks of one invoke by segment (one per XNNPACK operator), names each by
    its main kernel and matches them to the graph's ops in order: an operator of kind K
    of the same kind (see below). Segment 0 (before the first operator) is left out."""
    by_segment = collections.defaultdict(list)
    for block in blocks:
        by_segment[block.segment].append(block)
    operators = []
    for segment in sorted(s for s in by_segment if s > 0):
        per_function = collections.defaultdict(int)
        classes = np.zeros(len(CLASSES), dtype=np.int64)
        for block in by_segment[segment]:
            library, function = symbols.lookup(block.vaddr)
            per_function[(library, function)] += block.instructions
            classes += block.executions * np.asarray(block.classes, dtype=np.int64)
        ranked = sorted(per_function.items(), key=lambda kv: -kv[1])
        # Its kernel: the costliest function of a known kernel kind (a copy operator's
        # kernel is a thin wrapper around memcpy), else the costliest one.
        known = {label for _, label in CATEGORIES}
        kernels = [kv for kv in ranked if category(kv[0][1], kv[0][0]) in known]
        (library, function), _ = (kernels or ranked)[0]
        operators.append(OperatorCost(
            position=len(operators) + 1, kind=category(function, library), kernel=function,
            instructions=int(classes.sum()), classes=dict(zip(CLASSES, map(int, classes)))))
    # XNNPACK runs the nodes in graph order, so within one kind the k-th operator runs the
    # k-th op (a concat of n inputs is n copy operators). Kinds whose counts differ (PADs
    # fused into convs) are left unmatched rather than guessed.
    # Convs are matched as one kind: XNNPACK picks gemm or igemm by stride and padding too.
    expected, found = collections.defaultdict(list), collections.defaultdict(list)
    for op in ops:
        expected[_match_key(op.kind)] += [op] * (op.inputs if op.op == "CONCATENATION" else 1)
    for operator in operators:
        found[_match_key(operator.kind)].append(operator)
    for kind, members in found.items():
        if len(members) != len(expected[kind]):
            continue
        for operator, op in zip(members, expected[kind]):
            operator.op_index, operator.op, operator.name = op.index, op.op, op.name
            operator.macs, operator.bytes = op.macs, op.bytes
    return operators


def _match_key(kind):
    return "conv" if kind.startswith("conv ") else kind


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
        if name == "CONV_2D":
            pointwise = np.prod(tensors[inputs[1]]["shape"][1:3]) == 1
            kind = "conv 1x1 / dense (gemm)" if pointwise else "conv kxk (igemm)"
        else:
            kind = ("pad" if name in ("PAD", "PADV2") else "copy / layout" if name in LAYOUT_OPS
                    else OP_KINDS.get(name, name.lower()))
        tensor_name = tensors[outputs[0]]["name"] if outputs else ""
        costs.append(OpCost(index=op["index"], op=name, name=tensor_name[:120],
                            inputs=len(inputs), output_shape=out_shape, macs=macs,
                            bytes=sum(map(nbytes, inputs + outputs)), dtype=dtype, kind=kind))
    return costs


def model_kind(ops):
    """"int8" when the convs' weights are int8, else "fp32"."""
    weights = [op.dtype for op in ops if op.dtype]
    return "int8" if weights and weights.count("int8") * 2 >= len(weights) else "fp32"


def kernel_markdown(result, top=15):
    """The count of an ArmResult run with kernels=True by kernel kind, beside the graph's
    ops of that kind (MACs, bytes moved), then the top functions."""
    total = result.arm_instructions or 1
    kinds = collections.defaultdict(lambda: {"instructions": 0, "simd": 0, "dot": 0, "ops": 0,
                                             "macs": 0, "bytes": 0})
    for k in result.kernels:
        row = kinds[k["category"]]
        row["instructions"] += k["instructions"]
        row["simd"] += k["classes"]["simd"]
        row["dot"] += k["classes"]["dot"] + k["classes"]["i8mm"]
    for op in result.ops:
        row = kinds[op["kind"]]
        row["ops"] += 1
        row["macs"] += op["macs"]
        row["bytes"] += op["bytes"]
    lines = [f"{result.model} on {result.cpu}: {result.arm_instructions / 1e6:.2f}M "
             "instructions per invoke by kernel kind (exact counts of one steady-state invoke; "
             "memory stalls are not in them), beside the graph's ops of that kind", "",
             "| kind | M instr | share | SIMD M | dot+i8mm M | ops | M MACs | MB moved | "
             "instr / byte |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, r in sorted(kinds.items(), key=lambda kv: -kv[1]["instructions"]):
        per_byte = f"{r['instructions'] / r['bytes']:.2f}" if r["bytes"] else "-"
        lines.append(f"| {kind} | {r['instructions'] / 1e6:.2f} | "
                     f"{100 * r['instructions'] / total:.1f}% | {r['simd'] / 1e6:.2f} | "
                     f"{r['dot'] / 1e6:.2f} | {r['ops'] or '-'} | {r['macs'] / 1e6:.1f} | "
                     f"{r['bytes'] / 1e6:.2f} | {per_byte} |")
    lines += ["", "| function | kind | M instr | share |", "|---|---|---:|---:|"]
    for k in result.kernels[:top]:
        lines.append(f"| `{k['function'][:90]}` | {k['category']} | "
                     f"{k['instructions'] / 1e6:.3f} | {100 * k['instructions'] / total:.1f}% |")
    if result.operators:
        matched = sum(1 for o in result.operators if o["op_index"] >= 0)
        lines += ["", f"The {top} costliest of {len(result.operators)} XNNPACK operators, in "
                  f"run order ({matched} matched to a TFLite op):", "",
                  "| # | TFLite op | output | kernel | M instr | MACs / instr | KB moved |",
                  "|---:|---|---|---|---:|---:|---:|"]
        costly = sorted(result.operators, key=lambda o: -o["instructions"])[:top]
        for o in sorted(costly, key=lambda o: o["position"]):
            shape = "x".join(map(str, _output_shape(result, o))) or "-"
            ratio = f"{o['macs'] / o['instructions']:.2f}" if o["macs"] else "-"
            lines.append(f"| {o['position']} | {o['op'] or '?'} | {shape} | "
                         f"`{_short(o['kernel'])}` | {o['instructions'] / 1e6:.3f} | {ratio} | "
                         f"{o['bytes'] / 1e3:.0f} |")
    return "\n".join(lines)


def _output_shape(result, operator):
    for op in result.ops:
        if op["index"] == operator["op_index"]:
            return op["output_shape"][1:]
    return []


def _short(kernel):
    return re.sub(r"^xnn_|_ukernel", "", kernel)[:60]
