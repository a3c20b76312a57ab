"""QAT worker: `python -m keras_ghost.quantization.worker JOB.json RESULT.json`.

tfmot needs tf_keras, and importing it sets TF_USE_LEGACY_KERAS=1 for the whole process,
so everything tfmot does runs here, in a process of its own; the caller exchanges files.
The result file holds `{"ok": true, "result": ...}` or `{"ok": false, "error": ...}`.
"""

import os
import sys

# Before TensorFlow is imported anywhere in this process.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    import traceback

    job_path, result_path = (argv or sys.argv[1:])[:2]
    from keras_ghost.io_utils import write_atomic

    try:
        from keras_ghost.quantization import jobs, pipeline

        with open(job_path) as f:
            job = jobs.from_json(f.read())

        result = {"ok": True, "result": pipeline.run(job)}
    except Exception as e:  # reported to the parent, which raises it with context
        result = {"ok": False, "error": f"{type(e).__name__}: {e}",
                  "error_type": type(e).__name__, "traceback": traceback.format_exc()}
    write_atomic(result, result_path)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
