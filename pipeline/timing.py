"""Wall and process CPU seconds per stage of one case: where a case's time goes, and how many cores it used.

The stages are read (MR and mask from disk, checked), prepare (reorient, normalise, resample, pad), network (the
generator over every slice), restore (back to the input grid as HU, the sanity check, mask fill, clip, cast) and
write (the atomic .mha). CPU seconds are the whole process's (every thread, ONNX Runtime's included), so CPU / wall
during `network` is how many cores the network stage kept busy. A fallback model's stages add to the primary's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: The stages in the order a case runs them.
STAGES = ("read", "prepare", "network", "restore", "write")


@dataclass
class StageTimes:
    """Seconds per stage, accumulated (a stage entered twice, as with a fallback, adds up)."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage `name` (also when it raises: a failed stage still cost its time)."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu

    def as_dict(self) -> dict[str, dict[str, float]]:
        """{stage: {"seconds", "cpu_seconds", "cores"}} in stage order, for run_info.json and the benchmarks."""
        names = [n for n in STAGES if n in self.wall] + [n for n in self.wall if n not in STAGES]
        return {
            name: {
                "seconds": round(self.wall[name], 3),
                "cpu_seconds": round(self.cpu[name], 3),
                "cores": round(self.cpu[name] / self.wall[name], 2) if self.wall[name] > 0 else 0.0,
            }
            for name in names
        }

    def summary(self) -> str:
        """One line for the log: 'read 0.4 s, prepare 0.5 s, network 6.1 s on 1.9 cores, restore 0.3 s, ...'."""
        parts = []
        for name, row in self.as_dict().items():
            part = f"{name} {row['seconds']:.1f} s"
            parts.append(part + (f" on {row['cores']:.1f} cores" if name == "network" else ""))
        return ", ".join(parts)
