"""One round of depth pruning's removal trials on SmolLM2-135M-Instruct (30 blocks): every trial model run whole
(how converters/prune.py measured them before) against converters.prune.removal_losses (each block's input
computed once per sequence, each trial running only the blocks after the one it leaves out), interleaved,
on the calibration sequences pruning uses; medians of the wall times, their ratio, and the largest difference
between the two sets of losses.

    .venv/bin/python benchmarks/bench_layer_removal.py [--seqs 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, Bench, interleaved, md_table, median  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqs", type=int, default=2, help="calibration sequences (pruning uses 8)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    from converters.prune import calibration_loss, removal_losses
    from edgechat.core.conversation import calibration_sequences
    from edgechat.core.sources import load_model

    torch.set_num_threads(THREADS)
    bench = Bench("bench_layer_removal")
    model = load_model(None)
    seqs = calibration_sequences(model, None)[: args.seqs]
    layers, keep = model.module.model.layers, list(range(len(model.module.model.layers)))

    def whole():
        out = {}
        try:
            for i in keep:
                model.module.model.layers = torch.nn.ModuleList(layers[j] for j in keep if j != i)
                out[i] = calibration_loss(model.module, seqs)
        finally:
            model.module.model.layers = layers
        return out

    ways = {"every trial model whole": whole, "cached block inputs": lambda: removal_losses(model.module, seqs, keep)}
    times, losses = interleaved(ways, args.rounds)
    a, b = (median(times[k]) for k in ways)
    diff = max(abs(losses["every trial model whole"][i] - losses["cached block inputs"][i]) for i in keep)
    md = (f"SmolLM2-135M-Instruct, one removal round (30 trials), {len(seqs)} calibration sequences "
          f"({sum(map(len, seqs))} tokens), {THREADS} threads, {args.rounds} interleaved rounds.\n\n"
          + md_table(["way", "median s", "runs s"], [[k, median(v), ", ".join(f"{x:.1f}" for x in v)]
                                                    for k, v in times.items()])
          + f"\n\nSpeed-up: {a / b:.2f}x; largest loss difference between the two: {diff:.2e} nats.\n")
    bench.write({"seqs": len(seqs), "tokens": sum(map(len, seqs)), "times_s": times, "speedup": a / b,
                 "max_loss_diff": diff}, md)


if __name__ == "__main__":
    main()
