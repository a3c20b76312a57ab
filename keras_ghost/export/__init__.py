"""Export to TFLite: conversion, calibration data, inspection, local benchmark."""

from keras_ghost.export import benchmark
from keras_ghost.export.calibration import load_images, to_model_input
from keras_ghost.export.tflite import (MODES, convert, fidelity, op_histogram, read_tflite, report,
                                       run, write_atomic)

__all__ = ["MODES", "benchmark", "convert", "fidelity", "load_images", "op_histogram",
           "read_tflite", "report", "run", "to_model_input", "write_atomic"]
