"""Prints the Markdown table of registered variants: `python -m keras_ghost.models.table`."""

from keras_ghost.models.registry import create_model, get_spec, list_models
from keras_ghost.profiling import profile


def markdown_table(pattern="*", profiler=None):
    """The table; `profiler(name)` may supply each variant's `profile` (default: build it)."""
    profiler = profiler or (lambda name: profile(create_model(name)))
    lines = ["| model | input | params | MACs | activations | top-1 (dataset) | reference weights |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name in list_models(pattern):
        spec = get_spec(name)
        stats = profiler(name)
        top1 = f"{spec.top1:.2f} ({spec.dataset})" if spec.top1 else "-"
        weights = "yes" if spec.weights_url else "-"
        size = "x".join(str(d) for d in spec.input_size[:2])
        lines.append(f"| {name} | {size} | {stats.params:,} | {stats.macs / 1e6:.1f}M | "
                     f"{stats.activations / 1e6:.2f}M | {top1} | {weights} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
