"""Issue 16, item 7: secret masking's throughput and peak memory, for one secret of 10 B to
64 KiB (UTF-8), all ASCII or all non-ASCII (2- and 3-byte characters, so that every character
has a damaged form: the one Docker's json-file driver stores when it cuts a line inside it).

For each secret, in this process, no server or container:

- build: ``Masker([value])``, as the log pump does once per attempt;
- peak: tracemalloc's peak over the build and the three texts below, in bytes and as a
  multiple of the secret's UTF-8 size;
- clean line: masking a 120-byte log line that holds no secret (nearly every line of a log);
- holds value / holds damaged: a text of the value (or of the value cut as Docker cuts it)
  between two words, in MB/s of text;
- baseline (same run): ``str.replace`` of the one string that is there, the floor of any
  masker that knew which form to look for; ratio = ours / that, in time.

    python bench/masking.py [--smoke]

Run as a file: its directory, bench/, is then first on sys.path, so ``import common`` works.
The masker measured is the ``orchestrator`` Python imports (the title and the result name its
file): with no editable install of this checkout, run it with ``PYTHONPATH=.``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from random import Random
from typing import Any

from common import machine, print_table, summary_row, write_result

from orchestrator.rules import masking
from orchestrator.rules.masking import MASK, Masker

NAME = "masking"
SIZES = (10, 100, 1024, 8192, 65536)  # bytes of UTF-8
ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
NON_ASCII = "äöüßéèñçøåłžšđ€₤✓→ж"  # 2- and 3-byte characters
CLEAN_LINE = "2026-12-01T10:00:00.000Z worker-3 INFO processed batch 1234 of 5678 in 12.5 ms " * 2
GOAL_PEAK_RATIO = 8.0  # peak memory at most this many times the secret's size


def secret(kind: str, size: int, random: Random) -> str:
    """A value of ``size`` UTF-8 bytes (or just under: a character is not split) of ``kind``."""
    alphabet = ASCII if kind == "ascii" else NON_ASCII
    chars: list[str] = []
    used = 0
    while True:
        char = random.choice(alphabet)
        width = len(char.encode())
        if used + width > size:
            return "".join(chars)
        chars.append(char)
        used += width


def cut(value: str) -> str:
    """``value`` as Docker stores it when a line is cut inside its middle non-ASCII character
    (the value itself when it has none)."""
    places = [at for at, char in enumerate(value) if not char.isascii()]
    if not places:
        return value
    at = places[len(places) // 2]
    return value[:at] + "\ufffd" * len(value[at].encode()) + value[at + 1 :]


def per_call(function: Callable[[], Any], budget: float) -> float:
    """Seconds one call of ``function`` takes: the median of 5 batches, each about ``budget``
    / 5 seconds long (so that a fast call is timed over many)."""
    began = time.perf_counter()
    function()
    once = max(time.perf_counter() - began, 1e-7)
    repeat = max(1, int(budget / 5 / once))
    batches = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(repeat):
            function()
        batches.append((time.perf_counter() - began) / repeat)
    return statistics.median(batches)


def peak_bytes(value: str, texts: list[str], masker: Callable[[list[str]], Any]) -> int:
    """tracemalloc's peak while a masker of ``value`` is built and masks ``texts``."""
    gc.collect()
    tracemalloc.start()
    try:
        built = masker([value])
        for text in texts:
            built(text)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(
    kind: str, size: int, budget: float, masker: Callable[[list[str]], Any] = Masker
) -> dict[str, Any]:
    """One secret's row (``masker`` is the implementation measured)."""
    value = secret(kind, size, Random(size))
    bytes_ = len(value.encode())
    whole = f"token={value} sent\n"
    damaged_value = cut(value)
    damaged = f"token={damaged_value} sent\n"
    for text, form in ((whole, value), (damaged, damaged_value)):
        assert masker([value])(text) == text.replace(form, MASK), (kind, size)
    built = masker([value])
    peak = peak_bytes(value, [CLEAN_LINE, whole, damaged], masker)
    clean = per_call(lambda: built(CLEAN_LINE), budget)
    clean_floor = per_call(lambda: CLEAN_LINE.replace(value, MASK), budget)
    hit = per_call(lambda: built(whole), budget)
    hit_floor = per_call(lambda: whole.replace(value, MASK), budget)
    cut_time = per_call(lambda: built(damaged), budget)
    cut_floor = per_call(lambda: damaged.replace(damaged_value, MASK), budget)
    megabytes = len(whole.encode()) / 1e6
    return {
        "secret": kind,
        "bytes": bytes_,
        "build_us": per_call(lambda: masker([value]), budget) * 1e6,
        "peak_kib": peak / 1024,
        "peak_x": peak / bytes_,
        "clean_line_us": clean * 1e6,
        "clean_floor_us": clean_floor * 1e6,
        "value_MBps": megabytes / hit,
        "value_x_floor": hit / hit_floor,
        "damaged_MBps": megabytes / cut_time,
        "damaged_x_floor": cut_time / cut_floor,
    }


COLUMNS = [
    "secret",
    "bytes",
    "build_us",
    "peak_kib",
    "peak_x",
    "clean_line_us",
    "clean_floor_us",
    "value_MBps",
    "value_x_floor",
    "damaged_MBps",
    "damaged_x_floor",
]


def main() -> None:
    """Run the benchmark, print the table, write ``bench/results/masking.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny run (a few seconds)")
    args = parser.parse_args()
    record = machine()
    budget = 0.05 if args.smoke else 0.5  # seconds of timing per figure
    rows = [measure(kind, size, budget) for kind in ("ascii", "non-ascii") for size in SIZES]
    print_table(
        f"Masking one secret ({masking.__file__}; {record['cores']} cores, load before "
        f"{record['load_before']}); *_x_floor: time over str.replace of the one form there",
        rows,
        COLUMNS,
    )
    largest = rows[-1]
    met = largest["peak_x"] <= GOAL_PEAK_RATIO
    path = write_result(
        NAME,
        {
            "smoke": args.smoke,
            "module": masking.__file__,
            "figures": rows,
            "summary": [
                summary_row(
                    "masking peak memory, 64 KiB non-ASCII secret",
                    largest["peak_x"],
                    unit="x secret",
                    goal=f"<= {GOAL_PEAK_RATIO:g}x the secret",
                    met=met,
                ),
                summary_row(
                    "masking a clean log line, 64 KiB non-ASCII secret",
                    largest["clean_line_us"],
                    unit="us",
                    baseline=largest["clean_floor_us"],
                ),
                summary_row(
                    "masking a text holding it damaged, 64 KiB non-ASCII",
                    largest["damaged_MBps"],
                    unit="MB/s",
                    ratio=1 / largest["damaged_x_floor"],
                ),
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
