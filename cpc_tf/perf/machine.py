"""The machine a measurement ran on, and what a process used of it."""

import contextlib
import os
import platform
import re
import resource

_ISA_FLAG = re.compile(r"avx2|fma|avx512\w*|amx\w*")


def _cpuinfo(key):
  """The first "<key> : <value>" of /proc/cpuinfo, or None."""
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith(key):
          return line.split(":", 1)[1].strip()
  return None


def isa():
  """The vector and matrix extensions of this CPU that set its FLOP rate
  (the same "model name" comes with and without AVX-512), from
  /proc/cpuinfo; [] where there is none."""
  return sorted(flag for flag in (_cpuinfo("flags") or "").split()
                if _ISA_FLAG.fullmatch(flag))


def describe():
  """CPU, cores, ISA, TensorFlow's thread and oneDNN settings, and the
  kernel dispatch limits of oneDNN and OpenBLAS."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = _cpuinfo("model name") or platform.processor()
  return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa(),
          "tensorflow": tf.__version__, "python": platform.python_version(),
          "intra_op_threads": tf.config.threading
                              .get_intra_op_parallelism_threads(),
          "inter_op_threads": tf.config.threading
                              .get_inter_op_parallelism_threads(),
          "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
          "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA",
                                               "default (all)"),
          "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE",
                                              "default (detected)"),
          "ld_preload": os.environ.get("LD_PRELOAD", "")}


def load():
  try:
    return list(os.getloadavg())
  except OSError:
    return None


def _proc_bytes(path, key):
  """A "<key>: <n> kB" line of a /proc file, in bytes (None if absent)."""
  with contextlib.suppress(OSError):
    with open(path) as f:
      for line in f:
        if line.startswith(key + ":"):
          return int(line.split()[1]) * 1024
  return None


def available_bytes():
  """Memory available to this process now (MemAvailable), else all the
  physical memory."""
  return (_proc_bytes("/proc/meminfo", "MemAvailable") or
          os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def peak_rss_bytes():
  """High-water mark of this process's resident memory."""
  return (_proc_bytes("/proc/self/status", "VmHWM") or
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def cpu_seconds():
  """CPU time of this process (all threads), user + system."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def stats(values):
  import numpy as np  # pylint: disable=g-import-not-at-top
  values = np.asarray(values, np.float64)
  return {"median": float(np.median(values)), "min": float(values.min()),
          "max": float(values.max()), "n": int(values.size)}
