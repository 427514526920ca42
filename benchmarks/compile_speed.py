"""Does `torch.compile` pay on this CPU? Trains the classifier cell and the refiner at one thread
(as each worker of `--jobs 2` on 2 cores), on the fast path (`auto`: bf16 autocast and channels-last
where the CPU has bf16 instructions), eager against compiled (Inductor's C++ backend), the modes
alternating; the first call's time from an empty Inductor cache, and that of a second call on
fresh networks in the same process, stated apart. Writes a markdown table to stdout.

    python benchmarks/compile_speed.py [--classifier-steps 1000] [--refiner-steps 100] [--reps 3]

The compiled modes:
- classifier, compiled: the whole network (its forward and, through AOTAutograd, its backward);
- refiner, generators compiled: G's appearance and warp networks and F; the discriminators eager;
- refiner, every network compiled: the discriminators too (their spectral norms and the
  requires_grad switches between the phases make Dynamo recompile them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Compiled:
    """A Precision whose networks come back compiled (`which`: "all" or "generators")."""
    base: object
    which: str

    def net(self, module):
        module = self.base.net(module)
        kind = type(module).__name__
        if kind == "Refiner":
            for part in (module.appearance, getattr(module, "warp_body", None), module.warp):
                if part is not None:
                    part.compile(dynamic=False)
        elif kind != "Discriminator" or self.which == "all":
            module.compile(dynamic=False)
        return module

    def __getattr__(self, name):
        return getattr(self.base, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classifier-steps", type=int, default=1000)
    ap.add_argument("--refiner-steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # starts empty
    torch.set_num_threads(1)
    from torch._dynamo import config as dynamo
    dynamo.recompile_limit = 64  # the discriminators' recompiles stay compiled

    from classifiers.digits import ClassifierConfig, make_cnn, train_classifiers
    from gan.config import RefinerConfig
    from gan.train import train_refiner
    from synthgap.devices import resolve_precision
    from synthgap.study.bench import bench_images

    fast, why = resolve_precision("auto", "cpu")
    device = torch.device("cpu")
    real, real_labels, renders, labels = bench_images(5000)
    semantic = make_cnn(ClassifierConfig().width)

    def classifier(steps, precision):
        cells = [([(real, real_labels, 0.5), (renders, labels, 0.5)], 0)]
        train_classifiers(cells, ClassifierConfig(steps=steps), device, None, precision)

    def refiner(steps, precision):
        train_refiner(real[:2000], renders[:2000], labels[:2000],
                      RefinerConfig(steps=steps, log_every=10 ** 9), 0, device,
                      classifier=semantic, real_labels=real_labels[:2000], precision=precision)

    def seconds(fn, *a):
        start = time.perf_counter()
        fn(*a)
        return time.perf_counter() - start

    parts = [("classifier cell", classifier, args.classifier_steps,
              {"eager": fast, "compiled": Compiled(fast, "all")}),
             ("refiner", refiner, args.refiner_steps,
              {"eager": fast, "generators compiled": Compiled(fast, "generators"),
               "every network compiled": Compiled(fast, "all")})]
    rows = []
    for part, fn, steps, modes in parts:
        first = {name: (seconds(fn, 5, p), seconds(fn, 5, p)) for name, p in modes.items()}
        rates = {name: [] for name in modes}
        for rep in range(args.reps):
            for name, p in modes.items():
                rates[name].append(steps / seconds(fn, steps, p))
                print(f"{part}, {name}, run {rep + 1}: {rates[name][-1]:.2f} steps/s",
                      file=sys.stderr, flush=True)
        eager = statistics.median(rates["eager"])
        for name in modes:
            med = statistics.median(rates[name])
            rows.append(f"| {part} | {name} | {first[name][0]:.1f} s | {first[name][1]:.1f} s "
                        f"| {med:.2f} | {min(rates[name]):.2f} – {max(rates[name]):.2f} "
                        f"| {med / eager:.2f} |")
    print(f"torch {torch.__version__}, one thread; the fast path: {why}.")
    print(f"{args.reps} runs of each mode, alternating: {args.classifier_steps} classifier steps "
          f"(batch 128), {args.refiner_steps} refiner steps (batch {RefinerConfig().batch_size}).")
    print("First call: 5 steps from an empty Inductor cache; then 5 again in the same process, "
          "on fresh networks.\n")
    print("| part | mode | first call, cold | again, same process | steps/s | range | × eager |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
