"""Emulated ARM: run .tflite models on aarch64 LiteRT under QEMU, count their instructions
exactly, check their outputs against x86 and attribute the count to XNNPACK's kernels."""

from keras_ghost.export.arm.cpus import CPUS, ArmCpu, get_cpu
from keras_ghost.export.arm.environment import (ArmEnvironment, ArmSetupError,
                                                default_cache_dir, find_environment, setup)

__all__ = ["CPUS", "ArmCpu", "ArmEnvironment", "ArmSetupError", "default_cache_dir",
           "find_environment", "get_cpu", "setup"]
