"""Export to TFLite: conversion, calibration data, inspection, int8 error budget, local
benchmark."""

from keras_ghost.export import benchmark
from keras_ghost.export.calibration import load_images, to_model_input
from keras_ghost.export.optimize import (apply_rewrites, check_equivalent, deploy_pipeline,
                                         deploy_settings, optimize_for_inference)
from keras_ghost.export.sensitivity import error_budget
from keras_ghost.export.tflite import (MODES, convert, fidelity, op_histogram,
                                       read_tflite, report, run, write_atomic)

__all__ = ["MODES", "apply_rewrites", "benchmark", "check_equivalent", "convert", "deploy_pipeline",
           "deploy_settings", "error_budget",
           "fidelity", "load_images", "op_histogram", "optimize_for_inference", "read_tflite",
           "report", "run", "to_model_input", "write_atomic"]
